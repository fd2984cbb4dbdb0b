// concbench: the command line — list the models, run a profile, drive one load by hand.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "concbench/external.hpp"
#include "concbench/host.hpp"
#include "concbench/loadgen.hpp"
#include "concbench/registry.hpp"
#include "concbench/results.hpp"
#include "concbench/runner.hpp"
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
    std::size_t w = 12;
    for (const auto& m : reg) w = std::max(w, m.name.size() + 1);
    fmt::print("{:<{}} {:<11} {:<6} {}\n", "MODEL", w, "MECHANISM", "BUILT", "STRUCTURE");
    for (const auto& m : reg)
        fmt::print("{:<{}} {:<11} {:<6} {}\n", m.name, w, m.mechanism,
                   m.built ? "yes" : "no (" + m.how_to_build() + ")", m.structure);
    fmt::print("\nworkloads: ");
    for (const auto& w : all_workloads()) fmt::print("{} ", w.name);
    fmt::print("\n");
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

    RunOptions run;
    std::string models;
    auto* run_cmd = app.add_subcommand("run", "run a profile: every cell against a fresh server");
    run_cmd->add_option("--profile,-p", run.profile, "profile name (profiles/NAME.toml) or path")
        ->capture_default_str();
    run_cmd->add_option("--resume", run.resume, "continue the run with this id, skipping finished cells");
    run_cmd->add_option("--results", run.results_root, "results root directory")->capture_default_str();
    run_cmd->add_option("--models", models, "comma-separated subset of the profile's models");

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

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        fmt::print(stderr, "concbench: {} (see --help)\n", e.what());
        return 2;
    }
    if (app.got_subcommand("list")) return cmd_list();
    if (app.got_subcommand("load")) return cmd_load(load);
    if (!models.empty()) {
        std::stringstream ss(models);
        for (std::string m; std::getline(ss, m, ',');)
            if (!m.empty()) run.models.push_back(m);
    }
    return run_profile(run);
}
