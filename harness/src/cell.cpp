// One cell: start the server (and a fan-out backend), sample it, run the load, read what else
// used the cell's CPUs, stop everything, and build the cell's results line.
#include "cell.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>

#include "concbench/host.hpp"
#include "platform.hpp"
#include "concbench/launch.hpp"
#include "concbench/loadgen.hpp"
#include "concbench/results.hpp"
#include "concbench/sampler.hpp"
#include "concbench/workloads.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono;

namespace concbench {

// `closed_max`: for a sweep step, the throughput of its closed-loop cell (0: it failed).
CellRun run_cell(const Cell& cell, const CellEnv& env, const ModelInfo& model, double closed_max) {
    const Profile& p = env.p;
    const fs::path& dir = env.dir;
    // The server's CPUs: the cell's set when the profile runs several, else the profile's.
    const std::vector<int>& server_cpus = cell.cpus.empty() ? p.server_cpus : cell.cpus;
    CellRun out;
    json& j = out.line;
    j["schema"] = kResultsSchema;
    j["run_id"] = env.run_id;
    j["cell"] = cell.id();
    j["model"] = cell.model;
    j["series"] = cell.series();
    j["mechanism"] = model.mechanism;
    // A model run under an emulation (--allow-emulated) measures the emulation: its series says so,
    // so every plot legend and summary row carries the label.
    if (model.emulated) {
        j["emulated"] = model.emulated->by;
        j["series"] = fmt::format("{} (emulated: {})", cell.series(), model.emulated->by);
    }
    j["workload"] = cell.workload;
    j["connections"] = cell.connections;
    j["repetition"] = cell.repetition;
    j["idle_connections"] = cell.idle;
    j["status"] = "failed";
    j["error"] = "";
    if (cell.step >= 0) {
        j["load"] = {{"shape", "open"}, {"rate_fraction", cell.fraction}, {"closed_max_rps", closed_max},
                     {"closed_cell", cell.closed_id()}};
    }
    const Workload* w = find_workload(cell.workload);
    if (!model.serves(cell.workload)) {
        j["error"] = fmt::format("model '{}' does not serve workload '{}' (see {})", cell.model,
                                 cell.workload, model.toml_path);
        return out;
    }
    if (cell.step >= 0 && !(closed_max > 0)) {
        j["error"] = fmt::format("no closed-loop maximum to sweep from: cell {} failed", cell.closed_id());
        return out;
    }
    if (p.pipeline > 1 && !w->keep_alive) {
        j["error"] = fmt::format("pipeline = {} needs a keep-alive workload; '{}' opens a connection per request",
                                 p.pipeline, w->name);
        return out;
    }
    if (cell.idle > 0 && !w->keep_alive) {
        j["error"] = fmt::format("idle connections need a keep-alive workload; '{}' closes after each answer", w->name);
        return out;
    }

    // A fan-out's backend: a server of its own on the client's CPUs, so its work is not charged
    // to the model measured, started fresh for the cell.
    std::unique_ptr<ServerProcess> backend;
    std::string err;
    if (w->needs_backend) {
        LaunchOptions bo;  // HTTP on loopback, port 0, the model's default workers
        bo.cpus = p.client_cpus;
        bo.log_path = (dir / "logs" / (cell.stem() + ".backend.log")).string();
        backend = launch_server(*find_model(env.registry, p.backend), bo,
                                milliseconds(static_cast<long>(p.ready_timeout_s * 1000)), err, env.interrupted);
        if (!backend) {
            out.interrupted = *env.interrupted;
            j["error"] = "the fan-out backend (" + p.backend + ") did not start: " + err;
            return out;
        }
        j["backend"] = {{"model", p.backend}, {"cpus", p.client_cpus}};
    }

    LaunchOptions lo;
    lo.proto = proto_name(w->proto);
    lo.workers = cell.workers >= 0 ? cell.workers : p.workers_for(model);
    if (lo.workers) j["workers"] = lo.workers;
    if (backend) lo.backend = fmt::format("{}:{}", backend->host(), backend->port());
    // The run's docroot: given to our models for the file workloads (--docroot), and always the
    // /file/ directory of a reference server's configuration.
    lo.docroot = fs::absolute(dir / "docroot").string();
    lo.docroot_flag = !w->file_name.empty();
    lo.cpus = server_cpus;
    lo.log_path = (dir / "logs" / (cell.stem() + ".log")).string();
    lo.work_dir = (dir / "servers" / cell.stem()).string();  // a reference server's own files
    lo.raise_nofile = true;
    if (model.reference) j["reference"] = {{"dir", lo.work_dir}};
    auto server = launch_server(model, lo, milliseconds(static_cast<long>(p.ready_timeout_s * 1000)), err,
                                env.interrupted);
    if (!server) {
        out.interrupted = *env.interrupted;
        j["error"] = "server did not start: " + err;
        return out;
    }

    const pid_t server_pid = server->pid();  // stop() forgets it
    // The server's memory before any connection: what idle connections cost is measured from it.
    const TreeSample at_start = sample_tree(server->pid());
    Sampler sampler(server->pid());
    sampler.start();
    LoadSpec spec;
    spec.host = server->host();
    spec.port = server->port();
    spec.workload = w;
    spec.connections = cell.connections;
    spec.threads = std::min(p.client_threads, cell.connections);
    spec.cpus = p.client_cpus;
    spec.warmup_s = p.warmup_s;
    spec.duration_s = p.duration_s;
    spec.request_timeout_s = p.request_timeout_s;
    spec.pipeline = p.pipeline;
    spec.primer_stall_s = p.primer_stall_s;
    spec.primer_timeout_s = p.primer_timeout_s;
    spec.idle_connections = cell.idle;
    if (w->idle) {  // C10K: the cell's count is held idle beside a small active load
        spec.idle_connections += cell.connections;
        spec.connections = kIdleWorkloadActive;
        spec.threads = std::min(p.client_threads, kIdleWorkloadActive);
        j["active_connections"] = kIdleWorkloadActive;
    }
    if (cell.step >= 0) spec.rate = cell.fraction * closed_max;
    spec.stop = env.stop;
    // The window's edges: the sampler, the speed probe, and a reading of every CPU and process
    // (who else used the cell's CPUs). The probe threads on the server's CPUs are ours, not its.
    Mark m0, m1;
    double self0 = 0, self1 = 0, probe0 = 0, probe1 = 0;
    auto probe_on_server = [&] {
        double t = 0;
        for (int c : server_cpus) t += env.probe->thread_cpu_s(c);
        return t;
    };
    // work-US: the probe — GET / at kProbeRate/s (open loop, so its latency counts the waits the
    // work causes) on kProbeConnections more connections, started as the window opens and
    // stopped before it closes, so it measures only under the full load.
    LoadSpec probe_spec;
    LoadResult probe;
    std::thread probe_thread;
    if (w->probe) {
        probe_spec = spec;
        probe_spec.workload = find_workload("hello");
        probe_spec.connections = kProbeConnections;
        probe_spec.threads = 1;
        probe_spec.idle_connections = 0;
        probe_spec.rate = kProbeRate;
        probe_spec.warmup_s = 0;
        probe_spec.duration_s = 0.9 * p.duration_s;
    }
    LoadResult r = run_load(
        spec,
        [&] {
            if (w->probe) probe_thread = std::thread([&] { probe = run_load(probe_spec); });
            sampler.mark_start();
            env.probe->mark_start();
            self0 = process_cpu_s();
            probe0 = probe_on_server();
            m0 = take_mark();
        },
        [&] {
            m1 = take_mark();
            sampler.mark_end();
            env.probe->mark_end();
            self1 = process_cpu_s();
            probe1 = probe_on_server();
        });
    if (probe_thread.joinable()) probe_thread.join();
    sampler.stop();
    std::string died = server->died();
    StopReport stop = server->stop(milliseconds(static_cast<long>(p.stop_grace_s * 1000)));
    out.interrupted = r.interrupted || *env.interrupted;

    SamplerSummary s = sampler.summary();
    double server_cpu = s.cpu_s;
    double req = std::max<double>(1, static_cast<double>(r.requests));
    double server_util = r.measured_s > 0 ? server_cpu / (r.measured_s * server_cpus.size()) : 0;
    const bool measured = m1.t > m0.t;  // the window opened and closed

    json lj = load_json(spec, r);  // the client's side: load shape, latency, errors, fairness, ...
    if (cell.step >= 0)
        lj["load"].update(j["load"]);
    lj.erase("connections");
    j.update(lj);
    j["server"] = {{"pss_kib_peak", s.pss_kib_peak},     {"pss_kib_mean", s.pss_kib_mean},
                   {"rss_kib_peak", s.rss_kib_peak},     {"threads_peak", s.threads_peak},
                   {"processes_peak", s.processes_peak}, {"fds_peak", s.fds_peak},
                   {"cpu_user_s", s.cpu_user_s},         {"cpu_sys_s", s.cpu_sys_s},
                   {"cpu_s", s.cpu_s},
                   {"cpu_us_per_req", server_cpu * 1e6 / req},
                   {"cpu_util", server_util},            {"ctx_voluntary", s.ctx_voluntary},
                   {"ctx_involuntary", s.ctx_involuntary}, {"samples", s.samples},
                   {"cpus", server_cpus},              {"pss_kib_at_start", at_start.pss_kib},
                   {"run_queue_peak", s.run_queue_peak}, {"run_queue_mean", s.run_queue_mean}};
    // C10K: what one idle connection costs — the tree's PSS in the window over its PSS before
    // the first connection, per idle connection held (the 10 active ones are in it too, a
    // rounding error at thousands of idle ones).
    // A metric this platform cannot read is null ("not measured"), never 0 (platform.hpp).
    const platform::Measures& pm = platform::measures();
    if (!pm.pss)
        for (const char* k : {"pss_kib_peak", "pss_kib_mean", "pss_kib_at_start"}) j["server"][k] = nullptr;
    if (!pm.ctx_switches) j["server"]["ctx_voluntary"] = j["server"]["ctx_involuntary"] = nullptr;
    if (!pm.run_queue) j["server"]["run_queue_peak"] = j["server"]["run_queue_mean"] = nullptr;
    if (pm.pss && j.contains("idle") && r.idle.established > 0)
        j["idle"]["pss_bytes_per_idle"] =
            (s.pss_kib_mean - static_cast<double>(at_start.pss_kib)) * 1024.0 / r.idle.established;
    // Interference: what other processes took of the server's and the client's CPUs in the
    // window, and how fast those CPUs ran (interference.hpp). Judged against the profile's
    // thresholds; the runner re-runs a disturbed cell.
    if (measured) {
        const double probe_s = std::max(0.0, probe1 - probe0);
        OwnUse own;
        own.server_s = server_cpu + probe_s;
        own.client_s = std::max(0.0, self1 - self0 - probe_s) + others_of_ours_s(m0, m1, server_pid);
        const Interference inter = measure_interference(m0, m1, server_cpus, p.client_cpus, own, env.probe);
        j["interference"] = inter.to_json(p.interference_threshold, p.slowdown_threshold);
        j["disturbed_by"] = inter.disturbed_by(p.interference_threshold, p.slowdown_threshold);
    }
    if (w->probe) {
        json pj = load_json(probe_spec, probe);
        j["probe"] = {{"path", "/"},
                      {"rate_rps", kProbeRate},
                      {"connections", kProbeConnections},
                      {"requests", pj["requests"]},
                      {"sent", pj["sent"]},
                      {"throughput_rps", pj["throughput_rps"]},
                      {"latency_us", pj["latency_us"]},
                      {"latency_uncorrected_us", pj["latency_uncorrected_us"]},
                      {"errors", pj["errors"]},
                      {"errors_total", pj["errors_total"]}};
        if (!probe.fatal.empty()) j["probe"]["error"] = probe.fatal;
    }
    j["kernel"] = {{"tcp_mem_kib", s.tcp_mem_kib_peak}, {"tcp_mem_scope", "machine"}};
    if (!pm.tcp_mem) j["kernel"]["tcp_mem_kib"] = nullptr;
    // Which side ran out of CPU: with a one-core client, a fast server is never the limit, and
    // throughput then measures the client (server CPU per request stays comparable).
    bool client_bound = j["client_bound"].get<bool>();
    bool server_bound = server_util >= 0.9;
    j["saturated"] = client_bound && server_bound ? "both" : client_bound ? "client"
                     : server_bound ? "server" : "neither";
    j["shutdown"] = {{"clean", stop.clean()}, {"exit_code", stop.exit_code}, {"killed", stop.killed},
                     {"leftover_processes", stop.leftover}, {"stop_s", stop.stop_s},
                     {"describe", stop.describe()}};

    if (!r.fatal.empty()) j["error"] = r.fatal;
    else if (!died.empty()) j["error"] = "server died during the cell: " + died + " (" + last_line_of(lo.log_path) + ")";
    else if (out.interrupted) j["error"] = "interrupted";
    else if (!stop.clean()) j["error"] = "server broke the shutdown contract: " + stop.describe();
    else if (r.requests == 0) j["error"] = "no request was answered correctly";
    else j["status"] = "ok";

    json hist = r.latency.spectrum_json();
    if (spec.rate > 0) hist["uncorrected"] = r.latency_uncorrected.spectrum_json();
    write_json_file((dir / "hist" / (cell.stem() + ".json")).string(), hist);
    json series = json::array();
    for (const TreeSample& t : sampler.samples())
    {
        series.push_back({t.t_s, t.pss_kib, t.rss_kib, t.threads, t.processes, t.fds,
                          t.cpu_user_s, t.cpu_sys_s, t.tcp_mem_kib});
        if (!pm.pss) series.back()[1] = nullptr;
        if (!pm.tcp_mem) series.back()[8] = nullptr;
    }
    write_json_file((dir / "series" / (cell.stem() + ".json")).string(),
                    {{"columns", {"t_s", "pss_kib", "rss_kib", "threads", "processes", "fds",
                                  "cpu_user_s", "cpu_sys_s", "tcp_mem_kib"}},
                     {"rows", series},
                     {"load", load_series_json(r)}});
    return out;
}


std::string summary_line(const json& j) {
    if (j["status"] != "ok") return "FAILED: " + j["error"].get<std::string>();
    const json& s = j["server"];
    std::string line;
    if (j.contains("latency_uncorrected_us"))
        line += fmt::format("open {:>9.0f} req/s offered  p99 uncorrected {:>7.0f} µs  ",
                            j["load"]["offered_rps"].get<double>(), j["latency_uncorrected_us"]["p99"].get<double>());
    line += fmt::format(
        "{:>9.0f} req/s  p50 {:>7.0f} µs  p99 {:>7.0f} µs  server {:>5.1f} µs/req  PSS {:>6.1f} MiB  fds {:>5}",
        j["throughput_rps"].get<double>(), j["latency_us"]["p50"].get<double>(),
        j["latency_us"]["p99"].get<double>(), s["cpu_us_per_req"].get<double>(),
        s["pss_kib_peak"].is_null() ? s["rss_kib_peak"].get<double>() / 1024.0 : s["pss_kib_peak"].get<double>() / 1024.0,
        s["fds_peak"].get<uint64_t>());
    if (s["pss_kib_peak"].is_null()) line += "  [RSS: PSS not measured on this platform]";
    if (j["client_bound"].get<bool>()) line += "  [client-bound]";
    if (!j.value("disturbed_by", "").empty()) line += fmt::format("  [disturbed: {}]", j["disturbed_by"].get<std::string>());
    if (j["errors_total"].get<uint64_t>()) line += fmt::format("  errors {}", j["errors"].dump());
    if (j.contains("probe"))
        line += fmt::format("  probe GET / p50 {:.0f} µs p99 {:.0f} µs", j["probe"]["latency_us"]["p50"].get<double>(),
                            j["probe"]["latency_us"]["p99"].get<double>());
    if (j.contains("idle") && j["idle"].contains("pss_bytes_per_idle"))
        line += fmt::format("  {:.0f} B PSS per idle connection", j["idle"]["pss_bytes_per_idle"].get<double>());
    if (j.contains("idle") && j["idle"]["dropped"].get<int>() > 0)
        line += fmt::format("  [{} of {} idle connections dropped]", j["idle"]["dropped"].get<int>(),
                            j["idle"]["established"].get<int>());
    if (j.contains("primer") && j["primer"]["ended"] != "all")
        line += fmt::format("  [primer {}: {} of {} answered once]", j["primer"]["ended"].get<std::string>(),
                            j["primer"]["answered"].get<int>(), j["primer"]["connections"].get<int>());
    if (int starved = j["fairness"]["starved_connections"].get<int>())
        line += fmt::format("  [{} of {} connections got no answer in the window]", starved,
                            j["connections_established"].get<int>());
    return line;
}


}  // namespace concbench
