// Results files: meta.json (where the numbers came from) and results.jsonl (one line per cell).
#include "concbench/results.hpp"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "concbench/host.hpp"
#include "concbench/registry.hpp"
#include "platform.hpp"

namespace concbench {
namespace {

std::string command_output(const std::string& cmd) {
    std::string out;
    if (FILE* f = popen(cmd.c_str(), "r")) {
        char buf[256];
        while (fgets(buf, sizeof buf, f)) out += buf;
        pclose(f);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
}

}  // namespace

nlohmann::json machine_context() {
    utsname u{};
    uname(&u);
    nlohmann::json m;
    m["hostname"] = u.nodename;
    m["kernel"] = u.release;
    m["arch"] = u.machine;
    m["cpu_model"] = platform::cpu_model();
    m["cpus"] = std::thread::hardware_concurrency();
    m["cpus_allowed"] = allowed_cpus();
    m["memory_kib"] = platform::memory_kib();
    m["os"] = platform::os_name();
    return m;
}

nlohmann::json make_meta(const std::string& run_id, const Profile& p) {
    nlohmann::json j;
    j["schema"] = kResultsSchema;
    j["run_id"] = run_id;
    j["machine"] = machine_context();
    j["compiler"] = fmt::format("g++ {}", __VERSION__);
    std::string commit = command_output("git -C '" + source_dir() +
                                        "' describe --always --dirty --abbrev=12 2>/dev/null");
    j["commit"] = commit.empty() ? "unknown" : commit;
    j["profile"] = {{"name", p.name},
                    {"description", p.description},
                    {"path", p.path},
                    {"models", p.models},
                    {"workloads", p.workloads},
                    {"connections", p.connections},
                    {"idle_connections", p.idle_connections},
                    {"rate_sweep", p.rate_sweep},
                    {"pipeline", p.pipeline},
                    {"request_timeout_s", p.request_timeout_s},
                    {"repetitions", p.repetitions},
                    {"warmup_s", p.warmup_s},
                    {"duration_s", p.duration_s},
                    {"server_cpus", p.server_cpus},
                    {"client_cpus", p.client_cpus},
                    {"client_threads", p.client_threads},
                    {"workers", p.workers},
                    {"primer_stall_s", p.primer_stall_s},
                    {"primer_timeout_s", p.primer_timeout_s},
                    {"interference_threshold", p.interference_threshold},
                    {"slowdown_threshold", p.slowdown_threshold},
                    {"disturbed_reruns", p.disturbed_reruns},
                    {"quiet_wait_s", p.quiet_wait_s},
                    {"rest_check_s", p.rest_check_s},
                    {"text", p.text}};
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    j["started_at"] = ts;
    return j;
}

void append_jsonl(const std::string& path, const nlohmann::json& line) {
    std::string s = line.dump() + "\n";
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(fmt::format("{}: {}", path, strerror(errno)));
    ssize_t w = write(fd, s.data(), s.size());  // one write: a line is whole or absent
    fsync(fd);
    close(fd);
    if (w != static_cast<ssize_t>(s.size()))
        throw std::runtime_error(fmt::format("{}: short write", path));
}

void write_json_file(const std::string& path, const nlohmann::json& value) {
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp);
        out << value.dump(2) << "\n";
        if (!out) throw std::runtime_error(fmt::format("{}: cannot write", tmp));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        throw std::runtime_error(fmt::format("{}: cannot write", path));
}

nlohmann::json latency_json(const Histogram& h) {
    auto us = [](uint64_t ns) { return ns / 1000.0; };
    return {{"p50", us(h.percentile_ns(50))},   {"p90", us(h.percentile_ns(90))},
            {"p99", us(h.percentile_ns(99))},   {"p999", us(h.percentile_ns(99.9))},
            {"max", us(h.max_ns())},            {"mean", h.mean_ns() / 1000.0},
            {"min", us(h.min_ns())}};
}

nlohmann::json load_json(const LoadSpec& spec, const LoadResult& r) {
    nlohmann::json j;
    const bool open = r.offered_rps > 0;
    const bool per_request = spec.workload && !spec.workload->keep_alive;
    const double rps = r.measured_s > 0 ? double(r.requests) / r.measured_s : 0;
    const double req = std::max<double>(1, double(r.requests));
    uint64_t errors_total = 0;
    for (const auto& [k, v] : r.errors) errors_total += v;
    j["load"] = {{"shape", open ? "open" : "closed"},
                 {"connection_per_request", per_request},
                 {"pipeline", r.pipeline},
                 {"offered_rps", open ? nlohmann::json(r.offered_rps) : nlohmann::json(nullptr)},
                 {"idle_connections", spec.idle_connections},
                 {"request_timeout_s", spec.request_timeout_s}};
    j["duration_s"] = r.measured_s;
    j["requests"] = r.requests;
    j["sent"] = r.sent;
    j["throughput_rps"] = rps;
    j["latency_us"] = latency_json(r.latency);
    if (open) j["latency_uncorrected_us"] = latency_json(r.latency_uncorrected);
    j["errors"] = r.errors;
    j["errors_total"] = errors_total;
    j["connections"] = r.connections_requested;
    j["connections_established"] = r.connections_established;
    const Fairness f = fairness(r.per_connection);
    j["fairness"] = {{"per_connection_min", f.min}, {"per_connection_median", f.median},
                     {"per_connection_max", f.max}, {"starved_connections", f.starved},
                     {"jain_index", f.jain}, {"oldest_pending_s", r.oldest_pending_s}};
    const double client_util =
        r.measured_s > 0 ? r.client_cpu_s / (r.measured_s * std::max(1, r.client_threads)) : 0;
    j["client"] = {{"tool", "loadgen"},
                   {"cpu_util", client_util},
                   {"cpu_s", r.client_cpu_s},
                   {"cpu_us_per_req", r.client_cpu_s * 1e6 / req},
                   {"threads", r.client_threads},
                   {"cpus", spec.cpus}};
    j["client_bound"] = client_util >= 0.9;
    // Little's law holds for a closed loop only: an open loop's in-flight count follows the rate.
    if (!open) {
        const LittleCheck l = little_law(rps, r.latency.mean_ns() / 1e9, r.connections_established,
                                         r.pipeline);
        j["checks"] = {{"little_law_ratio", l.ratio}, {"little_law_ok", l.ok},
                       {"in_flight", l.in_flight}, {"in_flight_expected", l.expected}};
    } else {
        j["checks"] = {{"little_law_ratio", nullptr}, {"little_law_ok", nullptr},
                       {"offered_rps", r.offered_rps},
                       {"achieved_ratio", r.offered_rps > 0 ? rps / r.offered_rps : 0}};
    }
    j["setup_s"] = r.setup_s;
    if (!r.primer.ended.empty())
        j["primer"] = {{"connections", r.primer.connections}, {"answered", r.primer.answered},
                       {"seconds", r.primer.seconds}, {"ended", r.primer.ended},
                       {"not_opened", r.primer.not_opened}};
    if (spec.idle_connections > 0)
        j["idle"] = {{"requested", r.idle.requested}, {"established", r.idle.established},
                     {"lost_while_idle", r.idle.lost_while_idle},
                     {"answered_at_end", r.idle.answered_at_end}, {"dropped", r.idle.dropped}};
    return j;
}

nlohmann::json load_series_json(const LoadResult& r) {
    nlohmann::json rows = nlohmann::json::array();
    for (const SecondStats& s : r.series)
        rows.push_back({s.t_s, s.requests, s.length_s > 0 ? s.requests / s.length_s : 0.0, s.p99_us,
                        s.errors, s.sent});
    return {{"columns", {"t_s", "requests", "throughput_rps", "p99_us", "errors", "sent"}},
            {"rows", std::move(rows)}};
}

}  // namespace concbench
