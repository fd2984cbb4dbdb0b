// concbench: the command line — list the models, verify them, run a profile, drive one load by hand.
#include <CLI/CLI.hpp>
#include <signal.h>

#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "concbench/host.hpp"
#include "concbench/loadgen.hpp"
#include "concbench/registry.hpp"
#include "concbench/runner.hpp"
#include "concbench/verify.hpp"
#include "concbench/workloads.hpp"

using namespace concbench;

namespace {

int cmd_list() {
    std::vector<ModelInfo> reg;
    try {
        reg = load_registry(models_dir(), bin_dir());
    } catch (const std::exception& e) {
        fmt::print(stderr, "concbench: {}\n", e.what());
        return 2;
    }
    fmt::print("{:<12} {:<11} {:<6} {}\n", "MODEL", "MECHANISM", "BUILT", "STRUCTURE");
    for (const auto& m : reg)
        fmt::print("{:<12} {:<11} {:<6} {}\n", m.name, m.mechanism, m.built ? "yes" : "no", m.structure);
    fmt::print("\nworkloads: ");
    for (const auto& w : all_workloads()) fmt::print("{} ", w.name);
    fmt::print("\n");
    return 0;
}

struct VerifyArgs {
    std::vector<std::string> models;
    std::vector<std::string> cases;
    bool full = false, list_cases = false, keep_logs = false, skip_unbuilt = false;
    int workers = 0;
    std::string log_dir;
};

volatile bool g_verify_interrupted = false;

int cmd_verify(const VerifyArgs& a) {
    if (a.list_cases) {
        for (const auto& c : verify_cases())
            fmt::print("{:<20} {:<10} {:<4} {}{}\n", c.name, c.group, c.proto, c.description,
                       c.full_only ? "  [--full]" : "");
        return 0;
    }
    std::vector<ModelInfo> reg;
    try {
        reg = load_registry(models_dir(), bin_dir());
    } catch (const std::exception& e) {
        fmt::print(stderr, "concbench: {}\n", e.what());
        return 2;
    }
    for (const auto& c : a.cases)
        if (!find_verify_case(c)) {
            fmt::print(stderr, "concbench verify: unknown case '{}' (see concbench verify --list-cases)\n", c);
            return 2;
        }
    std::vector<const ModelInfo*> models;
    for (const auto& name : a.models) {
        const ModelInfo* m = find_model(reg, name);
        std::vector<std::string> names;
        for (const auto& r : reg) names.push_back(r.name);
        if (!m) {
            fmt::print(stderr, "concbench verify: unknown model '{}' (valid: {})\n", name, fmt::join(names, ", "));
            return 2;
        }
        if (!m->built) {
            fmt::print(stderr, "concbench verify: model '{}' is not built ({} is missing; make build)\n", name, m->binary_path);
            return a.skip_unbuilt ? 77 : 2;
        }
        models.push_back(m);
    }
    if (a.models.empty())
        for (const auto& m : reg)
            if (m.built) models.push_back(&m);
    struct sigaction sa{};
    sa.sa_handler = [](int) { g_verify_interrupted = true; };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    raise_fd_limit();

    VerifyOptions o;
    o.set = a.full ? VerifySet::full : VerifySet::quick;
    o.only = a.cases;
    o.workers = a.workers;
    o.log_dir = a.log_dir;
    o.keep_passing_logs = a.keep_logs;
    o.interrupted = &g_verify_interrupted;
    std::vector<std::string> failed;
    for (const ModelInfo* m : models) {
        fmt::print("verify {} ({} set)\n", m->name, a.full ? "full" : "quick");
        std::fflush(stdout);
        ModelVerdict v = verify_model(*m, o, [](const CaseResult& r) {
            fmt::print("{}\n", format_case_line(r));
            std::fflush(stdout);
        });
        int n[6] = {};
        for (const auto& c : v.cases) ++n[static_cast<int>(c.status)];
        fmt::print("{}: {} — {} passed, {} failed, {} deviate as declared, {} not applicable\n\n", m->name,
                   v.ok() ? "OK" : "FAILED", n[0] + n[3], n[1], n[2], n[4]);
        if (!v.ok()) failed.push_back(m->name + " (" + v.first_failure()->name + ")");
        if (g_verify_interrupted) {
            fmt::print(stderr, "concbench verify: interrupted\n");
            return 130;
        }
    }
    if (!failed.empty()) {
        fmt::print("verify: FAILED: {}\n", fmt::join(failed, ", "));
        return 1;
    }
    fmt::print("verify: {} model(s) OK\n", models.size());
    return 0;
}

struct LoadArgs {
    std::string target, workload = "hello", json_path;
    int connections = 100, threads = 1;
    double duration = 5, warmup = 1;
    std::vector<int> cpus;
};

int cmd_load(const LoadArgs& a) {
    const Workload* w = find_workload(a.workload);
    auto colon = a.target.rfind(':');
    if (!w || colon == std::string::npos) {
        fmt::print(stderr, "concbench load: {}\n", !w ? "unknown workload '" + a.workload + "'"
                                                        : "--target must be HOST:PORT");
        return 2;
    }
    LoadSpec spec;
    spec.host = a.target.substr(0, colon);
    spec.port = static_cast<uint16_t>(std::atoi(a.target.c_str() + colon + 1));
    spec.workload = w;
    spec.connections = a.connections;
    spec.threads = a.threads;
    spec.cpus = a.cpus;
    spec.duration_s = a.duration;
    spec.warmup_s = a.warmup;
    LoadResult r = run_load(spec);
    if (!r.fatal.empty()) {
        fmt::print(stderr, "concbench load: {}\n", r.fatal);
        return 1;
    }
    auto us = [&](double p) { return r.latency.percentile_ns(p) / 1000.0; };
    double rps = r.requests / r.measured_s;
    fmt::print("{} connections ({} established), {} thread(s), {:.2f} s: {} requests, {:.0f} req/s\n",
               a.connections, r.connections_established, r.client_threads, r.measured_s, r.requests, rps);
    fmt::print("latency µs: p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}  mean {:.1f}\n",
               us(50), us(90), us(99), us(99.9), r.latency.max_ns() / 1000.0, r.latency.mean_ns() / 1000.0);
    fmt::print("client CPU: {:.2f} µs/request, {:.0f} % of {} thread(s)\n",
               r.client_cpu_s * 1e6 / std::max<uint64_t>(1, r.requests),
               100 * r.client_cpu_s / (r.measured_s * r.client_threads), r.client_threads);
    // Little's law: in a closed loop every connection should have a request in flight. Fewer
    // means some connections were never (or rarely) answered — a server that serves only N
    // connections at a time shows here, not in the error counts.
    double in_flight = rps * r.latency.mean_ns() / 1e9;
    fmt::print("in flight (req/s x mean latency): {:.1f} of {} connections{}\n", in_flight,
               r.connections_established,
               in_flight < 0.8 * r.connections_established ? "  <- some connections were starved" : "");
    Fairness f = fairness(r.per_connection);
    fmt::print("per connection: min {} median {} max {} answers, Jain's index {:.3f}, {} starved\n",
               f.min, f.median, f.max, f.jain, f.starved);
    for (auto& [k, v] : r.errors) fmt::print("errors {}: {}\n", k, v);
    if (!a.json_path.empty()) {
        nlohmann::json j = {{"workload", a.workload}, {"connections", a.connections},
                            {"connections_established", r.connections_established},
                            {"duration_s", r.measured_s}, {"requests", r.requests},
                            {"throughput_rps", rps}, {"errors", r.errors},
                            {"latency_us", {{"p50", us(50)}, {"p90", us(90)}, {"p99", us(99)},
                                            {"p999", us(99.9)}, {"max", r.latency.max_ns() / 1000.0},
                                            {"mean", r.latency.mean_ns() / 1000.0}}},
                            {"client", {{"cpu_s", r.client_cpu_s}, {"threads", r.client_threads}}},
                            {"histogram", r.latency.spectrum_json()}};
        std::ofstream(a.json_path) << j.dump(2) << "\n";
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"concbench: which concurrency model should an IO-bound server use? Measured."};
    app.require_subcommand(1);

    app.add_subcommand("list", "list the models in the registry and whether each is built");

    VerifyArgs ver;
    auto* verify_cmd = app.add_subcommand("verify", "run the conformance and hostile-input table against models");
    verify_cmd->add_option("models", ver.models, "models to verify (default: every built model)");
    verify_cmd->add_flag("--full", ver.full, "the full set: slowloris, 1,100 connections, 20,000 leak cycles (make test)");
    verify_cmd->add_option("--case", ver.cases, "run only this case (repeatable; see --list-cases)")
        ->allow_extra_args(false);
    verify_cmd->add_option("--workers", ver.workers, "--workers N for models that take it (default: the model's)")
        ->check(CLI::Range(1, 4096));
    verify_cmd->add_option("--logs", ver.log_dir, "keep the servers' stderr here (default: a temp dir, failing cases only)");
    verify_cmd->add_flag("--keep-logs", ver.keep_logs, "keep the logs of passing cases too");
    verify_cmd->add_flag("--list-cases", ver.list_cases, "list the cases and exit");
    verify_cmd->add_flag("--skip-unbuilt", ver.skip_unbuilt, "exit 77 (ctest: skipped) if a named model is not built");

    RunOptions run;
    std::string models;
    auto* run_cmd = app.add_subcommand("run", "run a profile: every cell against a fresh server");
    run_cmd->add_option("--profile,-p", run.profile, "profile name (profiles/NAME.toml) or path")
        ->capture_default_str();
    run_cmd->add_option("--resume", run.resume, "continue the run with this id, skipping finished cells");
    run_cmd->add_option("--results", run.results_root, "results root directory")->capture_default_str();
    run_cmd->add_option("--models", models, "comma-separated subset of the profile's models");
    run_cmd->add_flag("--no-verify", run.no_verify,
                      "measure without verifying each model first (results then say verify: skipped)");

    LoadArgs load;
    auto* load_cmd = app.add_subcommand("load", "drive one load against a running server");
    load_cmd->add_option("--target", load.target, "HOST:PORT")->required();
    load_cmd->add_option("--workload,-w", load.workload, "workload name")->capture_default_str();
    load_cmd->add_option("--connections,-c", load.connections)->check(CLI::Range(1, 100000))->capture_default_str();
    load_cmd->add_option("--threads,-t", load.threads)->check(CLI::Range(1, 256))->capture_default_str();
    load_cmd->add_option("--duration,-d", load.duration, "measured seconds")->check(CLI::PositiveNumber)->capture_default_str();
    load_cmd->add_option("--warmup", load.warmup, "seconds before measuring")->check(CLI::NonNegativeNumber)->capture_default_str();
    load_cmd->add_option("--cpus", load.cpus, "pin client threads to these CPUs");
    load_cmd->add_option("--json", load.json_path, "write the result as JSON here");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        fmt::print(stderr, "concbench: {} (see --help)\n", e.what());
        return 2;
    }
    if (app.got_subcommand("list")) return cmd_list();
    if (app.got_subcommand("load")) return cmd_load(load);
    if (app.got_subcommand("verify")) return cmd_verify(ver);
    if (!models.empty()) {
        std::stringstream ss(models);
        for (std::string m; std::getline(ss, m, ',');)
            if (!m.empty()) run.models.push_back(m);
    }
    return run_profile(run);
}
