// concbench: the command line — list the models, verify them, run a profile, drive one load by hand.
#include <CLI/CLI.hpp>
#include <signal.h>

#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "concbench/external.hpp"
#include "concbench/host.hpp"
#include "concbench/loadgen.hpp"
#include "concbench/micro.hpp"
#include "concbench/profile.hpp"
#include "concbench/registry.hpp"
#include "concbench/results.hpp"
#include "concbench/runner.hpp"
#include "concbench/verify.hpp"
#include "concbench/workloads.hpp"

using namespace concbench;

namespace {

// The model registry; false (after one line on stderr) when a model.toml is wrong.
bool read_registry(std::vector<ModelInfo>& reg) {
    try {
        reg = load_registry(models_dir(), bin_dir());
        return true;
    } catch (const std::exception& e) {
        fmt::print(stderr, "concbench: {}\n", e.what());
        return false;
    }
}

int cmd_list() {
    std::vector<ModelInfo> reg;
    if (!read_registry(reg)) return 2;
    std::size_t w = 12;
    for (const auto& m : reg) w = std::max(w, m.name.size() + 1);
    fmt::print("{:<{}} {:<11} {:<6} {}\n", "MODEL", w, "MECHANISM", "BUILT", "STRUCTURE");
    for (const auto& m : reg)
        fmt::print("{:<{}} {:<11} {:<6} {}{}\n", m.name, w, m.mechanism,
                   m.built ? "yes" : "no (" + m.how_to_build() + ")", m.structure,
                   m.emulated ? fmt::format(" [emulated here by {}: {}]", m.emulated->by,
                                            m.emulated->run ? "run needs --allow-emulated" : "verify only")
                              : "");
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
    if (!read_registry(reg)) return 2;
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
            if (!m->unavailable.empty())
                fmt::print(stderr, "concbench verify: {}: {}\n", name, m->unavailable);
            else
                fmt::print(stderr, "concbench verify: model '{}' is not built ({} is missing; {})\n", name,
                           m->binary_path, m->how_to_build());
            return a.skip_unbuilt ? 77 : 2;
        }
        models.push_back(m);
    }
    if (a.models.empty())
        for (const auto& m : reg) {
            if (m.built) models.push_back(&m);
            else if (!m.unavailable.empty()) fmt::print(stderr, "concbench verify: {}: {}\n", m.name, m.unavailable);
        }
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
    // The fan-out case's backend: the one a profile uses unless it names another.
    if (const ModelInfo* b = find_model(reg, Profile{}.backend); b && b->built) o.backend = b;
    std::vector<std::string> failed;
    for (const ModelInfo* m : models) {
        fmt::print("verify {} ({} set){}\n", m->name, a.full ? "full" : "quick",
                   m->emulated ? fmt::format(", emulated by {} on {}", m->emulated->by, this_platform()) : "");
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
    std::string target, workload, proto = "http", path, json_path, client = "loadgen";
    int connections = 100, threads = 1, pipeline = 1, idle = 0;
    double duration = 5, warmup = 1, rate = 0, request_timeout = 10;
    bool close = false;
    std::vector<int> cpus;
};

void print_summary(const LoadArgs& a, const nlohmann::json& j) {
    auto num = [](const nlohmann::json& v) { return v.is_number() ? v.get<double>() : 0.0; };
    const auto& l = j["latency_us"];
    fmt::print("{}: {} connections ({} established), {} thread(s), {:.2f} s: {} requests, {:.0f} req/s\n",
               j["client"]["tool"].get<std::string>(), a.connections,
               j.value("connections_established", a.connections), j["client"]["threads"].get<int>(),
               num(j["duration_s"]), num(j["requests"]), num(j["throughput_rps"]));
    auto lat = [&](const char* what, const nlohmann::json& x) {
        fmt::print("{} µs: p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  p99.9 {}  max {:.1f}  mean {:.1f}\n", what,
                   num(x["p50"]), num(x["p90"]), num(x["p99"]),
                   x["p999"].is_number() ? fmt::format("{:.1f}", num(x["p999"])) : "n/a", num(x["max"]),
                   num(x["mean"]));
    };
    if (j.contains("latency_uncorrected_us")) {
        fmt::print("open loop at {:.0f} req/s offered ({:.0f} % achieved)\n", num(j["load"]["offered_rps"]),
                   100 * num(j["checks"]["achieved_ratio"]));
        lat("latency from intended send (corrected)", l);
        lat("latency from actual send (uncorrected)", j["latency_uncorrected_us"]);
    } else {
        lat(a.pipeline > 1 ? "latency per request" : "latency", l);
    }
    fmt::print("client CPU: {:.2f} µs/request, {:.0f} % of {} thread(s){}\n", num(j["client"]["cpu_us_per_req"]),
               100 * num(j["client"]["cpu_util"]), j["client"]["threads"].get<int>(),
               j["client_bound"].get<bool>() ? "  <- client-bound: the client, not the server, may be the limit" : "");
    if (j.contains("checks") && j["checks"]["little_law_ok"].is_boolean()) {
        // Little's law: in a closed loop every connection should have its requests in flight.
        // Fewer means some connections were rarely answered (or the client lagged).
        fmt::print("Little's law: in flight (req/s x mean latency) {:.1f} of {:.0f} expected{}\n",
                   num(j["checks"].value("in_flight", nlohmann::json(0))),
                   num(j["checks"].value("in_flight_expected", nlohmann::json(a.connections * a.pipeline))),
                   j["checks"]["little_law_ok"].get<bool>() ? "" : "  <- off by more than 20 %");
    }
    if (j.contains("fairness")) {
        const auto& f = j["fairness"];
        fmt::print("per connection: min {} median {} max {} answers, Jain's index {:.3f}, {} starved\n",
                   f["per_connection_min"].get<uint64_t>(), f["per_connection_median"].get<uint64_t>(),
                   f["per_connection_max"].get<uint64_t>(), num(f["jain_index"]),
                   f["starved_connections"].get<int>());
    }
    if (j.contains("primer")) {
        const auto& p = j["primer"];
        fmt::print("primer: {} of {} connections answered once before the load ({}), last first answer "
                   "{:.2f} s after set-up began\n", p["answered"].get<int>(), p["connections"].get<int>(),
                   p["ended"].get<std::string>(), num(p["seconds"]));
    }
    if (j.contains("idle")) {
        const auto& i = j["idle"];
        fmt::print("idle connections: {} asked, {} established, {} lost while idle, {} answered at the end, "
                   "{} dropped\n", i["requested"].get<int>(), i["established"].get<int>(),
                   i["lost_while_idle"].get<int>(), i["answered_at_end"].get<int>(), i["dropped"].get<int>());
    }
    for (auto& [k, v] : j["errors"].items()) fmt::print("errors {}: {}\n", k, v.get<uint64_t>());
}

int cmd_load(const LoadArgs& a) {
    auto fail = [](const std::string& why) {
        fmt::print(stderr, "concbench load: {}\n", why);
        return 2;
    };
    auto colon = a.target.rfind(':');
    if (colon == std::string::npos || colon == 0) return fail("--target must be HOST:PORT");
    const int port = std::atoi(a.target.c_str() + colon + 1);
    if (port < 1 || port > 65535) return fail("--target: port must be 1 to 65535");
    // --workload names a row of the workload table; otherwise --proto (and --path, --close) say
    // what to send.
    std::string wname = a.workload;
    if (wname.empty()) wname = a.proto == "echo" ? "echo" : a.close ? "hello-close" : "hello";
    const Workload* w = find_workload(wname);
    if (!w) {
        std::string names;
        for (const auto& x : all_workloads()) names += (names.empty() ? "" : ", ") + x.name;
        return fail("unknown workload '" + wname + "' (valid: " + names + ")");
    }
    if (!a.workload.empty() && (a.close || !a.path.empty()))
        return fail("--close and --path build their own request; leave out --workload");
    if (w->proto == Proto::echo && (!a.path.empty() || a.close)) return fail("--path and --close are for HTTP");
    LoadSpec spec;
    spec.host = a.target.substr(0, colon);
    spec.port = static_cast<uint16_t>(port);
    spec.workload = w;
    std::string path = "/";
    if (!a.path.empty()) {
        if (a.path[0] != '/' || a.path.find_first_of(" \r\n") != std::string::npos)
            return fail("--path must start with / and hold no spaces or line breaks");
        path = a.path;
        // Any path: the answer's status must be 200; its body is not known, so not checked.
        spec.request = "GET " + path + " HTTP/1.1\r\nHost: " + spec.host +
                       (a.close ? "\r\nConnection: close" : "") + "\r\n\r\n";
        spec.check_body = path == "/";
    }
    spec.connections = a.connections;
    spec.threads = std::min(a.threads, a.connections);
    spec.cpus = a.cpus;
    spec.duration_s = a.duration;
    spec.warmup_s = a.warmup;
    spec.pipeline = a.pipeline;
    spec.rate = a.rate;
    spec.idle_connections = a.idle;
    spec.request_timeout_s = a.request_timeout;

    nlohmann::json j;
    LoadResult r;
    if (a.client == "loadgen") {
        r = run_load(spec);
        if (!r.fatal.empty()) {
            fmt::print(stderr, "concbench load: {}\n", r.fatal);
            return 1;
        }
        j = load_json(spec, r);
    } else {
        j = run_external_client(a.client, spec, path);
        if (j.contains("fatal")) {
            fmt::print(stderr, "concbench load: {}\n", j["fatal"].get<std::string>());
            return 1;
        }
    }
    j["schema"] = kResultsSchema;
    j["workload"] = w->name;
    j["target"] = a.target;
    if (!a.path.empty()) j["path"] = path;
    print_summary(a, j);
    if (!a.json_path.empty()) {
        if (a.client == "loadgen") {
            j["histogram"] = r.latency.spectrum_json();
            if (spec.rate > 0) j["histogram_uncorrected"] = r.latency_uncorrected.spectrum_json();
            j["series"] = load_series_json(r);
        }
        try {
            write_json_file(a.json_path, j);
        } catch (const std::exception& e) {
            fmt::print(stderr, "concbench load: {}\n", e.what());
            return 1;
        }
    }
    return r.interrupted ? 130 : 0;
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
    run_cmd->add_flag("--allow-emulated", run.allow_emulated,
                      "record cells of a model this platform runs only under an emulation (iocp under Wine), "
                      "labelled 'emulated: <by>' in results, plots and summary");
    run_cmd->add_flag("--no-verify", run.no_verify,
                      "measure without verifying each model first (results then say verify: skipped)");

    LoadArgs load;
    auto* load_cmd = app.add_subcommand("load", "drive one load against a running server");
    load_cmd->add_option("--target", load.target, "HOST:PORT")->required();
    load_cmd->add_option("--connections,-c", load.connections, "active connections")
        ->check(CLI::Range(1, 100000))->capture_default_str();
    load_cmd->add_option("--threads,-t", load.threads, "client threads")->check(CLI::Range(1, 256))->capture_default_str();
    load_cmd->add_option("--duration,-d", load.duration, "measured seconds")->check(CLI::PositiveNumber)->capture_default_str();
    load_cmd->add_option("--warmup", load.warmup, "seconds of load before measuring")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    load_cmd->add_option("--rate,-R", load.rate,
                         "open loop: requests/s over all connections, latency from the intended send time")
        ->check(CLI::PositiveNumber);
    load_cmd->add_option("--pipeline,-P", load.pipeline, "requests sent together per connection (pipelining)")
        ->check(CLI::Range(1, 1024))->capture_default_str();
    load_cmd->add_option("--proto", load.proto, "http or echo")->check(CLI::IsMember({"http", "echo"}))->capture_default_str();
    load_cmd->add_option("--path", load.path, "HTTP: GET this path (status 200 checked; body only for /)");
    load_cmd->add_flag("--close", load.close, "HTTP: Connection: close, a new connection per request");
    load_cmd->add_option("--workload,-w", load.workload, "a workload by name instead (concbench list shows them)");
    load_cmd->add_option("--idle", load.idle,
                         "hold this many idle keep-alive connections (one request each before, one after)")
        ->check(CLI::Range(0, 100000));
    load_cmd->add_option("--request-timeout", load.request_timeout, "seconds before an answer counts as timed out")
        ->check(CLI::PositiveNumber)->capture_default_str();
    load_cmd->add_option("--cpus", load.cpus, "pin client threads to these CPUs");
    load_cmd->add_option("--client", load.client, "loadgen, or Debian's wrk or ab on the same cell")
        ->check(CLI::IsMember({"loadgen", "wrk", "ab"}))->capture_default_str();
    load_cmd->add_option("--json", load.json_path, "write the result (results schema) as JSON here");

    MicroOptions micro;
    auto* micro_cmd = app.add_subcommand(
        "micro", "the micro suite (Google Benchmark): creation, switching, waiting, memory, Dahl's latency table");
    micro_cmd->add_option("--filter", micro.filter, "only benchmarks whose name matches this regex (see --list)");
    micro_cmd->add_option("--repetitions", micro.repetitions, "repetitions of each benchmark (median and spread kept)")
        ->check(CLI::Range(1, 100))->capture_default_str();
    micro_cmd->add_option("--min-time", micro.min_time_s, "seconds each benchmark runs at least (Google Benchmark)")
        ->check(CLI::Range(0.001, 60.0))->capture_default_str();
    micro_cmd->add_flag("--short", micro.short_set, "every row once and briefly (what make bench runs)");
    micro_cmd->add_option("--run", micro.run, "write micro.json into this existing run (id or latest); default: a new run");
    micro_cmd->add_option("--results", micro.results_root, "results root directory")->capture_default_str();
    micro_cmd->add_flag("--list", micro.list, "list the benchmarks (those --filter selects) and exit");
    micro_cmd->add_option("--table", micro.table, "print the latency table of this run (id, directory or micro.json)");
    micro_cmd->add_option("--compare", micro.compare, "two runs side by side (ids, directories or micro.json files)")
        ->expected(2);

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
    if (app.got_subcommand("micro")) return run_micro(micro);
    if (!models.empty()) {
        std::stringstream ss(models);
        for (std::string m; std::getline(ss, m, ',');)
            if (!m.empty()) run.models.push_back(m);
    }
    return run_profile(run);
}
