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

#include "cell.hpp"
#include "concbench/docroot.hpp"
#include "concbench/host.hpp"
#include "concbench/interference.hpp"
#include "concbench/launch.hpp"
#include "concbench/profile.hpp"
#include "concbench/registry.hpp"
#include "concbench/results.hpp"
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
                        const ModelInfo* mi = find_model(registry, m);
                        if (!mi->serves(w) || !p.runs(m, w, c)) continue;
                        // --workers and CPU sets, where the profile gives several, each a cell
                        std::vector<int> workers = p.workers_list(*mi);
                        if (workers.size() < 2) workers = {-1};
                        std::vector<std::vector<int>> sets = p.server_cpu_sets;
                        if (sets.size() < 2) sets = {{}};
                        for (int n : workers)
                            for (const auto& set : sets) {
                                Cell base;
                                base.model = m;
                                base.workload = w;
                                base.connections = c;
                                base.repetition = r;
                                base.idle = i;
                                base.workers = n;
                                base.cpus = set;
                                cells.push_back(base);
                                for (std::size_t k = 0; k < p.rate_sweep.size(); ++k) {
                                    Cell step = base;
                                    step.step = int(k);
                                    step.fraction = p.rate_sweep[k];
                                    cells.push_back(step);
                                }
                            }
                    }
    return cells;
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

std::string human_duration(double s) {
    if (s < 60) return fmt::format("{:.0f}s", s);
    return fmt::format("{}m{:02d}s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
}

std::string percent_of_cpus(const char* role, const RoleReading& r) {
    return fmt::format("{} CPU{} {} {:.0f} %", role, r.cpus.size() > 1 ? "s" : "", fmt::join(r.cpus, ","),
                       100 * r.foreign);
}

std::string top_processes(const Interference& r) {
    std::vector<std::string> v;
    for (const ProcUse& u : r.top)
        v.push_back(fmt::format("{}[{}] {:.0f} %", u.comm, u.pid, 100 * u.cpu_s / std::max(1e-9, r.window_s)));
    return v.empty() ? "none" : fmt::format("{}", fmt::join(v, ", "));
}

// Adds a reading of the machine at rest to meta.json's `at_rest` list.
void record_at_rest(const fs::path& dir, const Interference& r, const Profile& p) {
    json meta = json::parse(std::ifstream(dir / "meta.json"), nullptr, false);
    if (meta.is_discarded() || !meta.is_object()) return;
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json entry = r.to_json(p.interference_threshold, p.slowdown_threshold);
    entry["at"] = ts;
    meta["at_rest"].push_back(entry);
    write_json_file((dir / "meta.json").string(), meta);
}

// Before a re-run: readings of a second until the cell's CPUs are quiet, for at most
// quiet_wait_s. Says how it ended.
std::string wait_for_quiet(const Profile& p, SpeedProbe& probe) {
    const auto t0 = steady_clock::now();
    std::string why;
    for (;;) {
        const double waited = duration<double>(steady_clock::now() - t0).count();
        if (g_interrupted) return "interrupted";
        if (waited >= p.quiet_wait_s) break;
        const Interference r = measure_at_rest(p.server_cpus, p.client_cpus, probe, std::min(1.0, p.quiet_wait_s));
        why = r.disturbed_by(p.interference_threshold, p.slowdown_threshold);
        if (why.empty())
            return fmt::format("quiet after {:.0f} s", duration<double>(steady_clock::now() - t0).count());
    }
    return why.empty() ? "no wait" : fmt::format("still busy after {:.0f} s ({})", p.quiet_wait_s, why);
}

}  // namespace

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
        // A model this platform runs only through an emulation measures the emulation: refused
        // (kqueue over the test-only kevent emulation), or recorded and labelled on request (Wine).
        for (const auto& name : p.models) {
            const ModelInfo* m = find_model(registry, name);
            if (!m->emulated) continue;
            if (!m->emulated->run)
                throw std::runtime_error(fmt::format("model '{}' is for verify only on {}: {} (concbench verify {} checks it)",
                                                     name, this_platform(), m->emulated->reason, name));
            if (!o.allow_emulated)
                throw std::runtime_error(fmt::format("model '{}' runs emulated by {} on {}: {}; add --allow-emulated to "
                                                     "record its cells, labelled 'emulated: {}'",
                                                     name, m->emulated->by, this_platform(), m->emulated->reason,
                                                     m->emulated->by));
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

    // The machine at rest, before the first cell: other work on the cell's CPUs now will disturb
    // the cells; and the speed probe learns how fast the CPUs are when nothing runs.
    SpeedProbe probe([&] {
        std::vector<int> all = p.server_cpus;
        all.insert(all.end(), p.client_cpus.begin(), p.client_cpus.end());
        return all;
    }());
    if (todo > 0 && p.rest_check_s > 0 && !g_interrupted) {
        const Interference rest = measure_at_rest(p.server_cpus, p.client_cpus, probe, p.rest_check_s);
        record_at_rest(dir, rest, p);
        const std::string why = rest.disturbed_by(p.interference_threshold, p.slowdown_threshold);
        if (!why.empty())
            fmt::print(stderr,
                       "concbench: warning: the machine is busy before the first cell — {}; busiest other "
                       "processes: {}. Disturbed cells are re-run (up to {} times) and then marked: close other "
                       "work for a quiet run (README: measuring on a busy machine)\n",
                       why, top_processes(rest), p.disturbed_reruns);
        else
            fmt::print("concbench: at rest for {:g} s: other work took {}, {} of a core; the CPUs' speed is "
                       "calibrated\n", p.rest_check_s, percent_of_cpus("server", rest.server),
                       percent_of_cpus("client", rest.client));
        std::fflush(stdout);
    }
    CellEnv env{p, registry, run_id, dir, &g_stop, &g_interrupted, &probe};

    auto t0 = steady_clock::now();
    size_t ran = 0, failed = 0, index = 0, disturbed = 0, reran = 0;
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
            cr = run_cell(cell, env, *m, closed_max);
            // A disturbed cell is run again once the CPUs are quiet; the attempts it replaces are
            // kept in reruns.jsonl, so results.jsonl holds one line per cell (resume never doubles).
            json earlier = json::array();
            int attempts = 1;
            for (; !cr.interrupted && !cr.line.value("disturbed_by", "").empty() && attempts <= p.disturbed_reruns;
                 ++attempts) {
                json old = cr.line;
                old["attempt"] = attempts;
                old["superseded"] = true;
                append_jsonl((dir / "reruns.jsonl").string(), old);
                earlier.push_back({{"attempt", attempts}, {"status", old["status"]},
                                   {"disturbed_by", old["disturbed_by"]},
                                   {"throughput_rps", old.value("throughput_rps", 0.0)}});
                fmt::print("disturbed: {}\n          waiting for quiet CPUs: ", old["disturbed_by"].get<std::string>());
                std::fflush(stdout);
                const std::string waited = wait_for_quiet(p, probe);
                fmt::print("{}; re-run {} of {}: ", waited, attempts, p.disturbed_reruns);
                std::fflush(stdout);
                if (g_interrupted) {
                    cr.interrupted = true;
                    break;
                }
                cr = run_cell(cell, env, *m, closed_max);
            }
            cr.line["verify"] = verify_set == "off" ? "skipped" : verify_set;
            cr.line["attempts"] = attempts;
            cr.line["earlier_attempts"] = earlier;
            cr.line["disturbed"] = !cr.line.value("disturbed_by", "").empty();
            reran += attempts > 1;
        }
        if (cr.interrupted) {
            fmt::print("interrupted\n");
            break;
        }
        append_jsonl(jsonl, cr.line);
        done[cell.id()] = cr.line["status"] == "ok" ? cr.line["throughput_rps"].get<double>() : 0.0;
        ++ran;
        failed += cr.line["status"] != "ok";
        disturbed += cr.line.value("disturbed", false);
        fmt::print("{}\n", summary_line(cr.line));
        std::fflush(stdout);
    }
    if (g_interrupted && already + ran < cells.size()) {
        fmt::print(stderr,
                   "concbench: interrupted; {} finished cell(s) kept in {}. Continue with: concbench run --resume {}\n",
                   already + ran, jsonl, run_id);
        return 130;
    }
    fmt::print("concbench: {} cell(s) run in {}, {} failed, {} re-run as disturbed, {} still disturbed (marked). "
               "Results: {}\n", ran, human_duration(duration<double>(steady_clock::now() - t0).count()), failed,
               reran, disturbed, jsonl);
    return failed ? 1 : 0;
}

}  // namespace concbench
