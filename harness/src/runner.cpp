// Runner: plan the profile's cells, run each against a fresh server, record every finished cell.
#include "concbench/runner.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "concbench/docroot.hpp"
#include "concbench/host.hpp"
#include "concbench/launch.hpp"
#include "concbench/loadgen.hpp"
#include "concbench/profile.hpp"
#include "concbench/registry.hpp"
#include "concbench/results.hpp"
#include "concbench/sampler.hpp"
#include "concbench/verify.hpp"
#include "concbench/workloads.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono;

namespace concbench {
namespace {

// Ctrl-C (or SIGTERM) ends the current cell at once; finished cells are already on disk.
std::atomic<bool> g_stop{false};
volatile bool g_interrupted = false;
void on_signal(int) {
    g_stop.store(true);
    g_interrupted = true;
}

// The `idle` workload: its cell's connection count is held idle while this many connections
// run the measured load (GET / keep-alive).
constexpr int kIdleWorkloadActive = 10;

struct Cell {
    std::string model, workload;
    int connections;
    int repetition;
    int idle = 0;         // idle connections held through the load
    int step = -1;        // -1: closed loop; else the index into the profile's rate_sweep
    double fraction = 0;  // rate_sweep[step]: the open-loop rate as a fraction of the closed maximum
    std::string suffix(char sep) const {
        std::string s;
        if (idle > 0) s += fmt::format("{}i{}", sep, idle);
        s += fmt::format("{}r{}", sep, repetition);
        if (step >= 0) s += fmt::format("{}rate{:g}", sep, fraction * 100);
        return s;
    }
    std::string id() const { return fmt::format("{}/{}/c{}{}", model, workload, connections, suffix('/')); }
    std::string stem() const { return fmt::format("{}_{}_c{}{}", model, workload, connections, suffix('_')); }
    // The closed-loop cell a sweep step takes its maximum from.
    std::string closed_id() const {
        Cell c = *this;
        c.step = -1;
        return c.id();
    }
};

// Repetition-major, models innermost: every model is measured once before any is measured
// again, so drift on a shared machine spreads over all models alike. A rate sweep's steps follow
// their closed-loop cell, whose throughput they are fractions of.
// A model that does not serve a workload (its model.toml does not list the family: nginx has no
// /delay route) gets no cells for it: it is named in `skipped`, not counted as a failure.
std::vector<Cell> plan(const Profile& p, const std::vector<ModelInfo>& registry,
                       std::vector<std::string>& skipped) {
    std::vector<Cell> cells;
    for (const auto& w : p.workloads)
        for (const auto& m : p.models)
            if (!find_model(registry, m)->serves(w)) skipped.push_back(m + " x " + w);
    for (int r = 1; r <= p.repetitions; ++r)
        for (const auto& w : p.workloads)
            for (int c : p.connections_of(w))
                for (int i : p.idle_connections)
                    for (const auto& m : p.models) {
                        if (!find_model(registry, m)->serves(w)) continue;
                        cells.push_back({m, w, c, r, i});
                        for (std::size_t k = 0; k < p.rate_sweep.size(); ++k)
                            cells.push_back({m, w, c, r, i, int(k), p.rate_sweep[k]});
                    }
    return cells;
}

std::string make_run_id(const std::string& root, const std::string& profile) {
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", localtime(&now));
    std::string id = fmt::format("{}-{}", ts, profile);
    for (int i = 2; fs::exists(fs::path(root) / id); ++i) id = fmt::format("{}-{}-{}", ts, profile, i);
    return id;
}

void point_latest(const std::string& root, const std::string& run_id) {
    fs::path tmp = fs::path(root) / ".latest.tmp";
    std::error_code ec;
    fs::remove(tmp, ec);
    fs::create_directory_symlink(run_id, tmp, ec);
    if (!ec) fs::rename(tmp, fs::path(root) / "latest", ec);
}

// Finished cells of a run: id -> throughput of the ok ones (0 for failed), for --resume and for
// the rate sweep's maxima.
std::map<std::string, double> finished_cells(const std::string& jsonl) {
    std::map<std::string, double> done;
    std::ifstream in(jsonl);
    std::string line;
    while (std::getline(in, line)) {
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("cell") || !j["cell"].is_string()) continue;
        const bool ok = j.value("status", "") == "ok" && j.contains("throughput_rps") &&
                        j["throughput_rps"].is_number();
        done[j["cell"].get<std::string>()] = ok ? j["throughput_rps"].get<double>() : 0.0;
    }
    return done;
}

// Busy and steal time of some CPUs from /proc/stat, in seconds: how much of the server's CPUs
// went to anything at all, so that time not charged to the server (other processes, interrupt
// work) is visible instead of silently slowing a model down.
struct CpuTimes {
    double busy_s = 0, steal_s = 0;
};
CpuTimes cpu_times(const std::vector<int>& cpus) {
    CpuTimes t;
    std::ifstream in("/proc/stat");
    std::string line;
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    while (std::getline(in, line)) {
        int cpu;
        unsigned long long v[8] = {};
        if (std::sscanf(line.c_str(), "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1],
                        &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9)
            continue;
        if (std::find(cpus.begin(), cpus.end(), cpu) == cpus.end()) continue;
        t.busy_s += (v[0] + v[1] + v[2] + v[5] + v[6]) / hz;  // user nice system irq softirq
        t.steal_s += v[7] / hz;
    }
    return t;
}

std::string human_duration(double s) {
    if (s < 60) return fmt::format("{:.0f}s", s);
    return fmt::format("{}m{:02d}s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
}

struct CellRun {
    json line;
    bool interrupted = false;
};

// `closed_max`: for a sweep step, the throughput of its closed-loop cell (0: it failed).
CellRun run_cell(const Cell& cell, const Profile& p, const ModelInfo& model,
                 const std::vector<ModelInfo>& registry, const std::string& run_id, const fs::path& dir,
                 double closed_max) {
    CellRun out;
    json& j = out.line;
    j["schema"] = kResultsSchema;
    j["run_id"] = run_id;
    j["cell"] = cell.id();
    j["model"] = cell.model;
    j["mechanism"] = model.mechanism;
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
        backend = launch_server(*find_model(registry, p.backend), bo,
                                milliseconds(static_cast<long>(p.ready_timeout_s * 1000)), err, &g_interrupted);
        if (!backend) {
            out.interrupted = g_interrupted;
            j["error"] = "the fan-out backend (" + p.backend + ") did not start: " + err;
            return out;
        }
        j["backend"] = {{"model", p.backend}, {"cpus", p.client_cpus}};
    }

    LaunchOptions lo;
    lo.proto = proto_name(w->proto);
    lo.workers = p.workers_for(model);
    if (lo.workers) j["workers"] = lo.workers;
    if (backend) lo.backend = fmt::format("{}:{}", backend->host(), backend->port());
    // The run's docroot: given to our models for the file workloads (--docroot), and always the
    // /file/ directory of a reference server's configuration.
    lo.docroot = fs::absolute(dir / "docroot").string();
    lo.docroot_flag = !w->file_name.empty();
    lo.cpus = p.server_cpus;
    lo.log_path = (dir / "logs" / (cell.stem() + ".log")).string();
    lo.work_dir = (dir / "servers" / cell.stem()).string();  // a reference server's own files
    lo.raise_nofile = true;
    if (model.reference) j["reference"] = {{"dir", lo.work_dir}};
    auto server = launch_server(model, lo, milliseconds(static_cast<long>(p.ready_timeout_s * 1000)), err,
                                &g_interrupted);
    if (!server) {
        out.interrupted = g_interrupted;
        j["error"] = "server did not start: " + err;
        return out;
    }

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
    spec.idle_connections = cell.idle;
    if (w->idle) {  // C10K: the cell's count is held idle beside a small active load
        spec.idle_connections += cell.connections;
        spec.connections = kIdleWorkloadActive;
        spec.threads = std::min(p.client_threads, kIdleWorkloadActive);
        j["active_connections"] = kIdleWorkloadActive;
    }
    if (cell.step >= 0) spec.rate = cell.fraction * closed_max;
    spec.stop = &g_stop;
    CpuTimes cpu0, cpu1;
    LoadResult r = run_load(
        spec, [&] { sampler.mark_start(); cpu0 = cpu_times(p.server_cpus); },
        [&] { sampler.mark_end(); cpu1 = cpu_times(p.server_cpus); });
    sampler.stop();
    std::string died = server->died();
    StopReport stop = server->stop(milliseconds(static_cast<long>(p.stop_grace_s * 1000)));
    out.interrupted = r.interrupted || g_interrupted;

    SamplerSummary s = sampler.summary();
    double server_cpu = s.cpu_s;
    double req = std::max<double>(1, static_cast<double>(r.requests));
    double server_util = r.measured_s > 0 ? server_cpu / (r.measured_s * p.server_cpus.size()) : 0;

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
                   {"cpus", p.server_cpus},              {"pss_kib_at_start", at_start.pss_kib}};
    // C10K: what one idle connection costs — the tree's PSS in the window over its PSS before
    // the first connection, per idle connection held (the 10 active ones are in it too, a
    // rounding error at thousands of idle ones).
    if (j.contains("idle") && r.idle.established > 0)
        j["idle"]["pss_bytes_per_idle"] =
            (s.pss_kib_mean - static_cast<double>(at_start.pss_kib)) * 1024.0 / r.idle.established;
    // The server's CPUs: how busy they were in the window, and how much of that was not the
    // server's own tree (other processes, interrupt work not charged to it). Tick-based, so
    // small values are noise; a large one means the machine was not quiet.
    double window = std::max(1e-9, r.measured_s) * p.server_cpus.size();
    double busy = (cpu1.busy_s - cpu0.busy_s) / window;
    double others = std::max(0.0, (cpu1.busy_s - cpu0.busy_s) - server_cpu) / window;
    j["server_cpus"] = {{"busy", busy}, {"not_server", others},
                        {"steal", (cpu1.steal_s - cpu0.steal_s) / window}};
    j["kernel"] = {{"tcp_mem_kib", s.tcp_mem_kib_peak}, {"tcp_mem_scope", "machine"}};
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
        series.push_back({t.t_s, t.pss_kib, t.rss_kib, t.threads, t.processes, t.fds,
                          t.cpu_user_s, t.cpu_sys_s, t.tcp_mem_kib});
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
        s["pss_kib_peak"].get<double>() / 1024.0, s["fds_peak"].get<uint64_t>());
    if (j["client_bound"].get<bool>()) line += "  [client-bound]";
    if (j.contains("server_cpus") && j["server_cpus"]["not_server"].get<double>() > 0.15)
        line += fmt::format("  [server CPU {:.0f} % busy with other work: machine not quiet]",
                            100 * j["server_cpus"]["not_server"].get<double>());
    if (j["errors_total"].get<uint64_t>()) line += fmt::format("  errors {}", j["errors"].dump());
    if (j.contains("idle") && j["idle"].contains("pss_bytes_per_idle"))
        line += fmt::format("  {:.0f} B PSS per idle connection", j["idle"]["pss_bytes_per_idle"].get<double>());
    if (j.contains("idle") && j["idle"]["dropped"].get<int>() > 0)
        line += fmt::format("  [{} of {} idle connections dropped]", j["idle"]["dropped"].get<int>(),
                            j["idle"]["established"].get<int>());
    if (int starved = j["fairness"]["starved_connections"].get<int>())
        line += fmt::format("  [{} of {} connections got no answer in the window]", starved,
                            j["connections_established"].get<int>());
    return line;
}

}  // namespace

int run_profile(const RunOptions& o) {
    std::vector<ModelInfo> registry;
    Profile p;
    std::string run_id;
    fs::path dir;
    try {
        registry = load_registry(models_dir(), bin_dir());
        if (!o.resume.empty()) {
            run_id = o.resume;
            dir = fs::path(o.results_root) / run_id;
            if (!fs::exists(dir / "profile.toml"))
                throw std::runtime_error(fmt::format("{}: no such run to resume (no profile.toml)", dir.string()));
            p = load_profile((dir / "profile.toml").string(), registry);
            std::ifstream meta(dir / "meta.json");
            json m = json::parse(meta, nullptr, false);
            if (!m.is_discarded() && m.contains("profile") && m["profile"].contains("name"))
                p.name = m["profile"]["name"].get<std::string>();  // not the saved copy's file name
        } else {
            p = load_profile(o.profile, registry);
        }
        if (!o.models.empty()) {
            for (const auto& m : o.models)
                if (std::find(p.models.begin(), p.models.end(), m) == p.models.end())
                    throw std::runtime_error(fmt::format("--models: '{}' is not in profile '{}' (it has: {})",
                                                         m, p.name, fmt::join(p.models, ", ")));
            p.models = o.models;
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "concbench: {}\n", e.what());
        return 2;
    }

    if (o.resume.empty()) {
        fs::create_directories(o.results_root);
        run_id = make_run_id(o.results_root, p.name);
        dir = fs::path(o.results_root) / run_id;
        fs::create_directories(dir);
        std::ofstream(dir / "profile.toml") << p.text;
        json meta = make_meta(run_id, p);
        // The reference servers' versions and effective settings (Apache's MPM defaults of Debian).
        for (const auto& name : p.models)
            if (const ModelInfo* m = find_model(registry, name); m && m->reference)
                meta["reference_servers"][name] = reference_meta(*m, p.workers_for(*m));
        write_json_file((dir / "meta.json").string(), meta);
    }
    for (const char* sub : {"logs", "hist", "series", "servers", "docroot"}) fs::create_directories(dir / sub);
    // The client holds as many connections as the profile asks for: one fd each, up to the hard limit.
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        int most = 0;
        for (const auto& wname : p.workloads)
            for (int c : p.connections_of(wname)) most = std::max(most, c);
        if (rl.rlim_cur != RLIM_INFINITY && static_cast<rlim_t>(most) + 64 > rl.rlim_cur)
            fmt::print(stderr,
                       "concbench: warning: open files are limited to {} (hard limit), fewer than {} "
                       "connections need on each side: cells that large will establish fewer (raise "
                       "`ulimit -Hn`)\n", rl.rlim_cur, most + 64);
    }
    // The files the profile's file workloads ask for, made once per run (pattern bytes, so the
    // client checks every byte without reading them).
    for (const auto& wname : p.workloads) {
        const Workload* w = find_workload(wname);
        std::string err;
        if (!w->file_name.empty() && !write_docroot_file((dir / "docroot").string(), *w, err)) {
            fmt::print(stderr, "concbench: {}\n", err);
            return 2;
        }
    }
    point_latest(o.results_root, run_id);
    const std::string jsonl = (dir / "results.jsonl").string();

    std::vector<std::string> skipped;
    std::vector<Cell> cells = plan(p, registry, skipped);
    std::map<std::string, double> done = finished_cells(jsonl);
    const size_t already = done.size();
    size_t todo = 0;
    for (const auto& c : cells) todo += !done.count(c.id());

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    pin_thread(p.client_cpus);  // the runner, its sampler and its load threads stay off the server's CPUs
    // Servers inherit the descriptor limit: raise the soft one to the hard one before any starts,
    // so a C10K cell measures the model, not a default of 1024.
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    fmt::print("concbench: run {} — profile '{}': {} cells ({} to run), server on CPU {}, client on CPU {}\n",
               run_id, p.name, cells.size(), todo, fmt::join(p.server_cpus, ","), fmt::join(p.client_cpus, ","));
    fmt::print("concbench: results in {}\n", dir.string());
    if (!skipped.empty())
        fmt::print("concbench: not served, so not run (see each model.toml's workloads): {}\n",
                   fmt::join(skipped, ", "));
    std::fflush(stdout);

    // Verify before measuring: a model that fails a case is not measured; its cells are recorded
    // as refused, naming the case.
    std::map<std::string, std::string> refused;  // model -> why
    std::string verify_set = o.no_verify ? "off" : p.verify;
    json verify_log = json::object();
    if (verify_set != "off" && todo > 0) {
        std::set<std::string> to_verify;
        for (const auto& c : cells)
            if (!done.count(c.id())) to_verify.insert(c.model);
        raise_fd_limit();
        VerifyOptions vo;
        vo.set = verify_set == "full" ? VerifySet::full : VerifySet::quick;
        vo.server_cpus = p.server_cpus;
        vo.log_dir = (dir / "logs").string();
        vo.interrupted = &g_interrupted;
        vo.stop_at_first_failure = true;
        vo.backend = find_model(registry, p.backend);
        for (const auto& name : to_verify) {
            const ModelInfo* m = find_model(registry, name);
            int workers = p.workers_for(*m);
            vo.workers = workers;
            fmt::print("verify {:<10} ({} set) ", name, verify_set);
            std::fflush(stdout);
            auto v0 = steady_clock::now();
            ModelVerdict v = verify_model(*m, vo, [](const CaseResult&) {
                fmt::print(".");
                std::fflush(stdout);
            });
            json cases = json::array();
            for (const auto& c : v.cases)
                cases.push_back({{"case", c.name}, {"status", status_name(c.status)}, {"detail", c.detail},
                                 {"declared", c.declared}, {"seconds", c.seconds}});
            verify_log[name] = {{"set", verify_set}, {"ok", v.ok()}, {"cases", cases}};
            if (g_interrupted) break;
            double secs = duration<double>(steady_clock::now() - v0).count();
            if (v.ok()) {
                int deviates = 0;
                for (const auto& c : v.cases) deviates += c.status == CaseStatus::deviates;
                fmt::print(" OK ({} cases, {:.1f} s{})\n", v.cases.size(), secs,
                           deviates ? fmt::format(", {} deviate as declared in model.toml", deviates) : "");
            } else {
                const CaseResult* f = v.first_failure();
                refused[name] = fmt::format("refused: model failed verify case '{}': {}", f->name, f->detail);
                fmt::print(" FAILED\n{}\n  -> {} is not measured\n", format_case_line(*f), name);
            }
            std::fflush(stdout);
        }
        write_json_file((dir / "verify.json").string(), verify_log);
        if (g_interrupted) {
            fmt::print(stderr, "concbench: interrupted during verify. Continue with: concbench run --resume {}\n", run_id);
            return 130;
        }
    }

    auto t0 = steady_clock::now();
    size_t ran = 0, failed = 0, index = 0;
    double est_cell = p.warmup_s + p.duration_s + 0.5;
    for (const auto& cell : cells) {
        ++index;
        if (done.count(cell.id())) continue;
        double elapsed = duration<double>(steady_clock::now() - t0).count();
        double per = ran ? elapsed / ran : est_cell;
        fmt::print("[{:>3}/{}] {:<10} {:<10} c={:<6}{} r{}{}  (ETA {}) ", index, cells.size(), cell.model,
                   cell.workload, cell.connections, cell.idle ? fmt::format(" idle={}", cell.idle) : "",
                   cell.repetition, cell.step >= 0 ? fmt::format(" open {:g} %", cell.fraction * 100) : "",
                   human_duration(per * (todo - ran)));
        std::fflush(stdout);
        const ModelInfo* m = find_model(registry, cell.model);
        const double closed_max = cell.step >= 0 && done.count(cell.closed_id()) ? done[cell.closed_id()] : 0;
        CellRun cr;
        if (auto it = refused.find(cell.model); it != refused.end()) {
            cr.line = {{"schema", kResultsSchema}, {"run_id", run_id}, {"cell", cell.id()},
                       {"model", cell.model}, {"mechanism", m->mechanism}, {"workload", cell.workload},
                       {"connections", cell.connections}, {"repetition", cell.repetition},
                       {"status", "failed"}, {"error", it->second}, {"verify", "failed"}};
        } else {
            cr = run_cell(cell, p, *m, registry, run_id, dir, closed_max);
            cr.line["verify"] = verify_set == "off" ? "skipped" : verify_set;
        }
        if (cr.interrupted) {
            fmt::print("interrupted\n");
            break;
        }
        append_jsonl(jsonl, cr.line);
        done[cell.id()] = cr.line["status"] == "ok" ? cr.line["throughput_rps"].get<double>() : 0.0;
        ++ran;
        failed += cr.line["status"] != "ok";
        fmt::print("{}\n", summary_line(cr.line));
        std::fflush(stdout);
    }
    if (g_interrupted && already + ran < cells.size()) {
        fmt::print(stderr,
                   "concbench: interrupted; {} finished cell(s) kept in {}. Continue with: concbench run --resume {}\n",
                   already + ran, jsonl, run_id);
        return 130;
    }
    fmt::print("concbench: {} cell(s) run in {}, {} failed. Results: {}\n", ran,
               human_duration(duration<double>(steady_clock::now() - t0).count()), failed, jsonl);
    return failed ? 1 : 0;
}

}  // namespace concbench
