// Runner: plan the profile's cells, run each against a fresh server, record every finished cell.
#include "concbench/runner.hpp"

#include <signal.h>
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

struct Cell {
    std::string model, workload;
    int connections;
    int repetition;
    std::string id() const { return fmt::format("{}/{}/c{}/r{}", model, workload, connections, repetition); }
    std::string stem() const { return fmt::format("{}_{}_c{}_r{}", model, workload, connections, repetition); }
};

// Repetition-major, models innermost: every model is measured once before any is measured
// again, so drift on a shared machine spreads over all models alike.
std::vector<Cell> plan(const Profile& p) {
    std::vector<Cell> cells;
    for (int r = 1; r <= p.repetitions; ++r)
        for (const auto& w : p.workloads)
            for (int c : p.connections_of(w))
                for (const auto& m : p.models) cells.push_back({m, w, c, r});
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

std::set<std::string> finished_cells(const std::string& jsonl) {
    std::set<std::string> done;
    std::ifstream in(jsonl);
    std::string line;
    while (std::getline(in, line)) {
        json j = json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.contains("cell") && j["cell"].is_string())
            done.insert(j["cell"].get<std::string>());
    }
    return done;
}

json latency_json(const Histogram& h) {
    auto us = [](uint64_t ns) { return ns / 1000.0; };
    return {{"p50", us(h.percentile_ns(50))},   {"p90", us(h.percentile_ns(90))},
            {"p99", us(h.percentile_ns(99))},   {"p999", us(h.percentile_ns(99.9))},
            {"max", us(h.max_ns())},            {"mean", h.mean_ns() / 1000.0},
            {"min", us(h.min_ns())}};
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

CellRun run_cell(const Cell& cell, const Profile& p, const ModelInfo& model,
                 const std::vector<ModelInfo>& registry, const std::string& run_id, const fs::path& dir) {
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
    j["status"] = "failed";
    j["error"] = "";
    const Workload* w = find_workload(cell.workload);
    if (!model.serves(cell.workload)) {
        j["error"] = fmt::format("model '{}' does not serve workload '{}' (see {})", cell.model,
                                 cell.workload, model.toml_path);
        return out;
    }

    // A fan-out's backend: a server of its own on the client's CPUs, so its work is not charged
    // to the model measured, started fresh for the cell.
    std::unique_ptr<ServerProcess> backend;
    std::string err;
    if (w->needs_backend) {
        const ModelInfo* bm = find_model(registry, p.backend);
        ServerCommand bc;
        bc.binary = bm->binary_path;
        bc.args = {"--proto", "http", "--host", "127.0.0.1", "--port", "0"};
        bc.cpus = p.client_cpus;
        bc.log_path = (dir / "logs" / (cell.stem() + ".backend.log")).string();
        backend = ServerProcess::start(bc, milliseconds(static_cast<long>(p.ready_timeout_s * 1000)), err,
                                       &g_interrupted);
        if (!backend) {
            out.interrupted = g_interrupted;
            j["error"] = "the fan-out backend (" + p.backend + ") did not start: " + err;
            return out;
        }
        j["backend"] = {{"model", p.backend}, {"cpus", p.client_cpus}};
    }

    ServerCommand cmd;
    cmd.binary = model.binary_path;
    cmd.args = {"--proto", proto_name(w->proto), "--host", "127.0.0.1", "--port", "0"};
    if (backend) {
        cmd.args.push_back("--backend");
        cmd.args.push_back(fmt::format("{}:{}", backend->host(), backend->port()));
    }
    if (!w->file_name.empty()) {
        cmd.args.push_back("--docroot");
        cmd.args.push_back(fs::absolute(dir / "docroot").string());
    }
    if (int n = p.workers_for(model)) {
        cmd.args.push_back("--workers");
        cmd.args.push_back(std::to_string(n));
        j["workers"] = n;
    }
    cmd.cpus = p.server_cpus;
    cmd.log_path = (dir / "logs" / (cell.stem() + ".log")).string();
    auto server = ServerProcess::start(cmd, milliseconds(static_cast<long>(p.ready_timeout_s * 1000)),
                                       err, &g_interrupted);
    if (!server) {
        out.interrupted = g_interrupted;
        j["error"] = "server did not start: " + err;
        return out;
    }

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
    double rps = r.measured_s > 0 ? r.requests / r.measured_s : 0;
    double req = std::max<double>(1, static_cast<double>(r.requests));
    double client_util = r.measured_s > 0 ? r.client_cpu_s / (r.measured_s * std::max(1, r.client_threads)) : 0;
    double server_util = r.measured_s > 0 ? server_cpu / (r.measured_s * p.server_cpus.size()) : 0;
    uint64_t errors_total = 0;
    for (auto& [k, v] : r.errors) errors_total += v;

    j["duration_s"] = r.measured_s;
    j["requests"] = r.requests;
    j["throughput_rps"] = rps;
    j["latency_us"] = latency_json(r.latency);
    j["errors"] = r.errors;
    j["errors_total"] = errors_total;
    j["connections_established"] = r.connections_established;
    Fairness f = fairness(r.per_connection);
    j["fairness"] = {{"per_connection_min", f.min}, {"per_connection_median", f.median},
                     {"per_connection_max", f.max}, {"starved_connections", f.starved},
                     {"jain_index", f.jain}, {"oldest_pending_s", r.oldest_pending_s}};
    j["server"] = {{"pss_kib_peak", s.pss_kib_peak},     {"pss_kib_mean", s.pss_kib_mean},
                   {"rss_kib_peak", s.rss_kib_peak},     {"threads_peak", s.threads_peak},
                   {"processes_peak", s.processes_peak}, {"fds_peak", s.fds_peak},
                   {"cpu_user_s", s.cpu_user_s},         {"cpu_sys_s", s.cpu_sys_s},
                   {"cpu_s", s.cpu_s},
                   {"cpu_us_per_req", server_cpu * 1e6 / req},
                   {"cpu_util", server_util},            {"ctx_voluntary", s.ctx_voluntary},
                   {"ctx_involuntary", s.ctx_involuntary}, {"samples", s.samples},
                   {"cpus", p.server_cpus}};
    // The server's CPUs: how busy they were in the window, and how much of that was not the
    // server's own tree (other processes, interrupt work not charged to it). Tick-based, so
    // small values are noise; a large one means the machine was not quiet.
    double window = std::max(1e-9, r.measured_s) * p.server_cpus.size();
    double busy = (cpu1.busy_s - cpu0.busy_s) / window;
    double others = std::max(0.0, (cpu1.busy_s - cpu0.busy_s) - server_cpu) / window;
    j["server_cpus"] = {{"busy", busy}, {"not_server", others},
                        {"steal", (cpu1.steal_s - cpu0.steal_s) / window}};
    j["kernel"] = {{"tcp_mem_kib", s.tcp_mem_kib_peak}, {"tcp_mem_scope", "machine"}};
    j["client"] = {{"cpu_util", client_util},
                   {"cpu_s", r.client_cpu_s},
                   {"cpu_us_per_req", r.client_cpu_s * 1e6 / req},
                   {"threads", r.client_threads},
                   {"cpus", p.client_cpus}};
    // Which side ran out of CPU: with a one-core client, a fast server is never the limit, and
    // throughput then measures the client (server CPU per request stays comparable).
    bool client_bound = client_util >= 0.9;
    bool server_bound = server_util >= 0.9;
    j["client_bound"] = client_bound;
    j["saturated"] = client_bound && server_bound ? "both" : client_bound ? "client"
                     : server_bound ? "server" : "neither";
    // Little's law for a closed loop: connections in use = throughput x mean latency.
    double in_flight = rps * r.latency.mean_ns() / 1e9;
    double little = r.connections_established ? in_flight / r.connections_established : 0;
    j["checks"] = {{"little_law_ratio", little}, {"little_law_ok", std::abs(little - 1) <= 0.2}};
    j["shutdown"] = {{"clean", stop.clean()}, {"exit_code", stop.exit_code}, {"killed", stop.killed},
                     {"leftover_processes", stop.leftover}, {"stop_s", stop.stop_s},
                     {"describe", stop.describe()}};

    if (!r.fatal.empty()) j["error"] = r.fatal;
    else if (!died.empty()) j["error"] = "server died during the cell: " + died + " (" + last_line_of(cmd.log_path) + ")";
    else if (out.interrupted) j["error"] = "interrupted";
    else if (!stop.clean()) j["error"] = "server broke the shutdown contract: " + stop.describe();
    else if (r.requests == 0) j["error"] = "no request was answered correctly";
    else j["status"] = "ok";

    write_json_file((dir / "hist" / (cell.stem() + ".json")).string(), r.latency.spectrum_json());
    json series = json::array();
    for (const TreeSample& t : sampler.samples())
        series.push_back({t.t_s, t.pss_kib, t.rss_kib, t.threads, t.processes, t.fds,
                          t.cpu_user_s, t.cpu_sys_s, t.tcp_mem_kib});
    write_json_file((dir / "series" / (cell.stem() + ".json")).string(),
                    {{"columns", {"t_s", "pss_kib", "rss_kib", "threads", "processes", "fds",
                                  "cpu_user_s", "cpu_sys_s", "tcp_mem_kib"}},
                     {"rows", series}});
    return out;
}

std::string summary_line(const json& j) {
    if (j["status"] != "ok") return "FAILED: " + j["error"].get<std::string>();
    const json& s = j["server"];
    std::string line = fmt::format(
        "{:>9.0f} req/s  p50 {:>7.0f} µs  p99 {:>7.0f} µs  server {:>5.1f} µs/req  PSS {:>6.1f} MiB  fds {:>5}",
        j["throughput_rps"].get<double>(), j["latency_us"]["p50"].get<double>(),
        j["latency_us"]["p99"].get<double>(), s["cpu_us_per_req"].get<double>(),
        s["pss_kib_peak"].get<double>() / 1024.0, s["fds_peak"].get<uint64_t>());
    if (j["client_bound"].get<bool>()) line += "  [client-bound]";
    if (j.contains("server_cpus") && j["server_cpus"]["not_server"].get<double>() > 0.15)
        line += fmt::format("  [server CPU {:.0f} % busy with other work: machine not quiet]",
                            100 * j["server_cpus"]["not_server"].get<double>());
    if (j["errors_total"].get<uint64_t>()) line += fmt::format("  errors {}", j["errors"].dump());
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
        write_json_file((dir / "meta.json").string(), make_meta(run_id, p));
    }
    for (const char* sub : {"logs", "hist", "series", "docroot"}) fs::create_directories(dir / sub);
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

    std::vector<Cell> cells = plan(p);
    std::set<std::string> done = finished_cells(jsonl);
    size_t todo = 0;
    for (const auto& c : cells) todo += !done.count(c.id());

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    pin_thread(p.client_cpus);  // the runner, its sampler and its load threads stay off the server's CPUs

    fmt::print("concbench: run {} — profile '{}': {} cells ({} to run), server on CPU {}, client on CPU {}\n",
               run_id, p.name, cells.size(), todo, fmt::join(p.server_cpus, ","), fmt::join(p.client_cpus, ","));
    fmt::print("concbench: results in {}\n", dir.string());
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
        fmt::print("[{:>3}/{}] {:<10} {:<10} c={:<6} r{}  (ETA {}) ", index, cells.size(), cell.model,
                   cell.workload, cell.connections, cell.repetition, human_duration(per * (todo - ran)));
        std::fflush(stdout);
        const ModelInfo* m = find_model(registry, cell.model);
        CellRun cr;
        if (auto it = refused.find(cell.model); it != refused.end()) {
            cr.line = {{"schema", kResultsSchema}, {"run_id", run_id}, {"cell", cell.id()},
                       {"model", cell.model}, {"mechanism", m->mechanism}, {"workload", cell.workload},
                       {"connections", cell.connections}, {"repetition", cell.repetition},
                       {"status", "failed"}, {"error", it->second}, {"verify", "failed"}};
        } else {
            cr = run_cell(cell, p, *m, registry, run_id, dir);
            cr.line["verify"] = verify_set == "off" ? "skipped" : verify_set;
        }
        if (cr.interrupted) {
            fmt::print("interrupted\n");
            break;
        }
        append_jsonl(jsonl, cr.line);
        ++ran;
        failed += cr.line["status"] != "ok";
        fmt::print("{}\n", summary_line(cr.line));
        std::fflush(stdout);
    }
    if (g_interrupted && done.size() + ran < cells.size()) {
        fmt::print(stderr,
                   "concbench: interrupted; {} finished cell(s) kept in {}. Continue with: concbench run --resume {}\n",
                   done.size() + ran, jsonl, run_id);
        return 130;
    }
    fmt::print("concbench: {} cell(s) run in {}, {} failed. Results: {}\n", ran,
               human_duration(duration<double>(steady_clock::now() - t0).count()), failed, jsonl);
    return failed ? 1 : 0;
}

}  // namespace concbench
