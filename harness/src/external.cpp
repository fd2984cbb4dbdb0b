// external: drive a cell with Debian's wrk or ab and read their figures (wrk reports through a
// Lua done() hook as one JSON line; ab through its summary and its -e percentile CSV).
#include "concbench/external.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace concbench {
namespace {

using json = nlohmann::json;

// wrk's done() hook: the figures as one JSON line (latency in µs).
constexpr const char* kWrkDone = R"LUA(
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('CONCBENCH-WRK {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50":%g,"p90":%g,"p99":%g,"p999":%g,"max":%g,"min":%g,"mean":%g,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.min, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
)LUA";

std::string temp_file(const std::string& suffix, const std::string& content) {
    std::string path = "/tmp/concbench-XXXXXX" + suffix;
    std::vector<char> buf(path.begin(), path.end());
    buf.push_back('\0');
    int fd = mkstemps(buf.data(), int(suffix.size()));
    if (fd < 0) return {};
    if (!content.empty() && write(fd, content.data(), content.size()) != ssize_t(content.size())) {
        close(fd);
        return {};
    }
    close(fd);
    return buf.data();
}

struct ChildRun {
    std::string out;
    int exit_code = -1;
    double cpu_s = 0;
    double wall_s = 0;
    std::string error;
};

// Runs argv with stdout (and stderr) captured, pinned to `cpus`, killed after `limit_s`.
ChildRun run_child(const std::vector<std::string>& argv, const std::vector<int>& cpus, double limit_s) {
    ChildRun r;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        r.error = std::string("pipe: ") + std::strerror(errno);
        return r;
    }
    const auto t0 = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid < 0) {
        r.error = std::string("fork: ") + std::strerror(errno);
        return r;
    }
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        if (!cpus.empty()) {
            cpu_set_t set;
            CPU_ZERO(&set);
            for (int c : cpus) CPU_SET(c, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execv(args[0], args.data());
        std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    std::thread reader([&] {
        char buf[4096];
        for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;) r.out.append(buf, std::size_t(n));
    });
    int status = 0;
    rusage ru{};
    bool killed = false;
    for (;;) {
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) break;
        if (!killed && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit_s) {
            kill(pid, SIGKILL);
            killed = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    reader.join();
    close(pipefd[0]);
    r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.cpu_s = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
    if (killed) r.error = fmt::format("{} did not finish within {:.0f} s and was killed", argv[0], limit_s);
    else if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    else r.error = fmt::format("{} died of signal {}", argv[0], WTERMSIG(status));
    return r;
}

std::string last_line(const std::string& s) {
    std::string t = s;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    auto nl = t.rfind('\n');
    return nl == std::string::npos ? t : t.substr(nl + 1);
}

json client_part(const std::string& tool, const LoadSpec& spec, const ChildRun& c, double requests,
                 double seconds, int threads) {
    const double util = seconds > 0 ? c.cpu_s / (seconds * std::max(1, threads)) : 0;
    return {{"tool", tool},
            {"cpu_s", c.cpu_s},
            {"cpu_scope", "whole process, whole run (wait4)"},
            {"cpu_util", util},
            {"cpu_us_per_req", c.cpu_s * 1e6 / std::max(1.0, requests)},
            {"threads", threads},
            {"cpus", spec.cpus}};
}

json base(const std::string& tool, const LoadSpec& spec) {
    json j;
    j["load"] = {{"shape", "closed"},
                 {"connection_per_request", spec.workload && !spec.workload->keep_alive},
                 {"pipeline", spec.pipeline},
                 {"offered_rps", nullptr},
                 {"idle_connections", 0},
                 {"request_timeout_s", spec.request_timeout_s}};
    j["connections"] = spec.connections;
    j["client_checks_body"] = false;  // wrk and ab check the status (ab: also the length)
    (void)tool;
    return j;
}

json run_wrk(const LoadSpec& spec, const std::string& path) {
    std::string script;
    if (spec.pipeline > 1)
        script = fmt::format("init = function(args)\n  local r = {{}}\n  for i = 1, {} do r[i] = wrk.format() end\n"
                             "  req = table.concat(r)\nend\nrequest = function() return req end\n",
                             spec.pipeline);
    if (!spec.workload->keep_alive)
        script += "wrk.headers[\"Connection\"] = \"close\"\n";
    script += kWrkDone;
    const std::string lua = temp_file(".lua", script);
    if (lua.empty()) return {{"fatal", std::string("cannot write wrk's script: ") + std::strerror(errno)}};
    const int threads = std::min(spec.threads, spec.connections);
    const std::vector<std::string> argv = {
        "/usr/bin/wrk", "-t", std::to_string(threads), "-c", std::to_string(spec.connections),
        "-d", fmt::format("{}s", std::max(1L, std::lround(spec.duration_s))),
        "--timeout", fmt::format("{}s", std::max(1L, std::lround(spec.request_timeout_s))),
        "-s", lua, fmt::format("http://{}:{}{}", spec.host, spec.port, path)};
    ChildRun c = run_child(argv, spec.cpus, spec.duration_s + spec.request_timeout_s + 30);
    unlink(lua.c_str());
    if (!c.error.empty()) return {{"fatal", c.error}};
    std::smatch m;
    static const std::regex line("CONCBENCH-WRK (\\{.*\\})");
    if (c.exit_code != 0 || !std::regex_search(c.out, m, line))
        return {{"fatal", fmt::format("wrk failed (exit {}): {}", c.exit_code, last_line(c.out))}};
    json w = json::parse(m[1].str(), nullptr, false);
    if (w.is_discarded()) return {{"fatal", "wrk's figures did not parse: " + m[1].str()}};
    json j = base("wrk", spec);
    const double secs = w["duration_us"].get<double>() / 1e6;
    const double requests = w["requests"].get<double>();
    j["duration_s"] = secs;
    j["requests"] = requests;
    j["throughput_rps"] = secs > 0 ? requests / secs : 0;
    // wrk records one latency per pipelined batch (from its first byte written to the batch's
    // last answer), not per request.
    j["latency_us"] = {{"p50", w["p50"]}, {"p90", w["p90"]}, {"p99", w["p99"]}, {"p999", w["p999"]},
                       {"max", w["max"]}, {"mean", w["mean"]}, {"min", w["min"]}};
    j["latency_per"] = spec.pipeline > 1 ? "pipelined batch" : "request";
    json errors = json::object();
    auto add = [&](const char* kind, const char* key) {
        if (uint64_t n = w[key].get<uint64_t>()) errors[kind] = errors.value(kind, uint64_t(0)) + n;
    };
    add("connect", "connect");
    add("reset", "read");
    add("reset", "write");
    add("bad_status", "status");
    add("timeout", "timeout");
    uint64_t total = 0;
    for (auto& [k, v] : errors.items()) total += v.get<uint64_t>();
    j["errors"] = errors;
    j["errors_total"] = total;
    j["client"] = client_part("wrk", spec, c, requests, secs, threads);
    j["client_bound"] = j["client"]["cpu_util"].get<double>() >= 0.9;
    const LittleCheck l = little_law(j["throughput_rps"].get<double>(), w["mean"].get<double>() / 1e6,
                                     spec.connections, 1);  // per batch: one batch per connection
    j["checks"] = {{"little_law_ratio", l.ratio}, {"little_law_ok", l.ok}, {"in_flight", l.in_flight},
                   {"in_flight_expected", l.expected}};
    return j;
}

double number_after(const std::string& out, const std::string& label, bool* found = nullptr) {
    auto p = out.find(label);
    if (found) *found = p != std::string::npos;
    if (p == std::string::npos) return 0;
    return std::atof(out.c_str() + p + label.size());
}

json run_ab(const LoadSpec& spec, const std::string& path) {
    if (spec.connections > 20000) return {{"fatal", "ab handles at most 20000 connections"}};
    const std::string csv = temp_file(".csv", "");
    if (csv.empty()) return {{"fatal", std::string("cannot create ab's CSV file: ") + std::strerror(errno)}};
    std::vector<std::string> argv = {"/usr/bin/ab", "-q", "-r",
                                     "-t", std::to_string(std::max(1L, std::lround(spec.duration_s))),
                                     // After -t (which implies -n 50000). ab keeps 32 bytes per
                                     // request, so the bound is what it can reach in the time.
                                     "-n", std::to_string(std::max(50000L, std::lround(spec.duration_s * 100000))),
                                     "-c", std::to_string(spec.connections),
                                     "-s", std::to_string(std::max(1L, std::lround(spec.request_timeout_s))),
                                     "-e", csv};
    if (spec.workload->keep_alive) argv.push_back("-k");
    argv.push_back(fmt::format("http://{}:{}{}", spec.host, spec.port, path));
    ChildRun c = run_child(argv, spec.cpus, spec.duration_s + spec.request_timeout_s + 30);
    if (!c.error.empty()) {
        unlink(csv.c_str());
        return {{"fatal", c.error}};
    }
    bool found = false;
    const double requests = number_after(c.out, "Complete requests:", &found);
    if (c.exit_code != 0 || !found) {
        unlink(csv.c_str());
        return {{"fatal", fmt::format("ab failed (exit {}): {}", c.exit_code, last_line(c.out))}};
    }
    const double secs = number_after(c.out, "Time taken for tests:");
    // ab's -e CSV: "Percentage served,Time in ms", one row per whole percent 0..100.
    std::vector<double> pct(101, 0);
    {
        std::ifstream in(csv);
        std::string row;
        std::getline(in, row);
        while (std::getline(in, row)) {
            int p;
            double ms;
            if (std::sscanf(row.c_str(), "%d,%lf", &p, &ms) == 2 && p >= 0 && p <= 100) pct[p] = ms * 1000;
        }
    }
    unlink(csv.c_str());
    json j = base("ab", spec);
    j["duration_s"] = secs;
    j["requests"] = requests;
    j["throughput_rps"] = secs > 0 ? requests / secs : 0;
    // ab gives whole percentiles only: p99.9 is not known (null), max is its 100 % row.
    j["latency_us"] = {{"p50", pct[50]}, {"p90", pct[90]}, {"p99", pct[99]}, {"p999", nullptr},
                       {"max", pct[100]}, {"min", pct[0]},
                       {"mean", number_after(c.out, "Time per request:") * 1000}};
    json errors = json::object();
    auto add = [&](const char* kind, double n) {
        if (n > 0) errors[kind] = errors.value(kind, uint64_t(0)) + uint64_t(n);
    };
    // "Failed requests: N" is followed, when N > 0, by "(Connect: a, Receive: b, Length: c,
    // Exceptions: d)"; read those after it ("Document Length:" comes earlier in the output).
    const auto failed_at = c.out.find("(Connect: ");
    const std::string failed = failed_at == std::string::npos ? "" : c.out.substr(failed_at, c.out.find(')', failed_at) - failed_at);
    add("connect", number_after(failed, "(Connect: "));
    add("reset", number_after(failed, "Receive: "));
    add("bad_body", number_after(failed, "Length: "));
    add("reset", number_after(failed, "Exceptions: "));
    add("bad_status", number_after(c.out, "Non-2xx responses:"));
    uint64_t total = 0;
    for (auto& [k, v] : errors.items()) total += v.get<uint64_t>();
    j["errors"] = errors;
    j["errors_total"] = total;
    j["client"] = client_part("ab", spec, c, requests, secs, 1);
    j["client_bound"] = j["client"]["cpu_util"].get<double>() >= 0.9;
    return j;
}

}  // namespace

json run_external_client(const std::string& tool, const LoadSpec& spec, const std::string& path) {
    if (!spec.workload || spec.workload->proto != Proto::http)
        return {{"fatal", tool + " speaks HTTP only"}};
    if (spec.rate > 0)
        return {{"fatal", tool + " has no constant-rate mode (that is wrk2, not in Debian); drop --rate"}};
    if (spec.idle_connections > 0) return {{"fatal", tool + " cannot hold idle connections; drop --idle"}};
    const std::string binary = tool == "wrk" ? "/usr/bin/wrk" : tool == "ab" ? "/usr/bin/ab" : "";
    if (binary.empty()) return {{"fatal", "unknown client '" + tool + "' (valid: loadgen, wrk, ab)"}};
    if (access(binary.c_str(), X_OK) != 0)
        return {{"fatal", binary + " not found (scripts/deps.sh installs " +
                              (tool == "wrk" ? "wrk" : "apache2-utils") + ")"}};
    if (tool == "ab" && spec.pipeline > 1) return {{"fatal", "ab cannot pipeline; drop --pipeline"}};
    return tool == "wrk" ? run_wrk(spec, path) : run_ab(spec, path);
}

}  // namespace concbench
