// One cell of a run: a fresh server, its sampler, the load, the interference reading, and the
// cell's results line. Internal to the runner (runner.cpp plans and repeats cells; this runs one).
#pragma once
#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "concbench/interference.hpp"
#include "concbench/profile.hpp"
#include "concbench/registry.hpp"

namespace concbench {

// The `idle` workload: its cell's connection count is held idle while this many connections
// run the measured load (GET / keep-alive).
constexpr int kIdleWorkloadActive = 10;

struct Cell {
    std::string model, workload;
    int connections = 0;
    int repetition = 1;
    int idle = 0;         // idle connections held through the load
    int step = -1;        // -1: closed loop; else the index into the profile's rate_sweep
    double fraction = 0;  // rate_sweep[step]: the open-loop rate as a fraction of the closed maximum
    // Set only when the profile runs the model with several --workers / on several CPU sets (so
    // names stay as they were otherwise): -1 / empty means the profile's one value.
    int workers = -1;
    std::vector<int> cpus;
    std::string suffix(char sep) const {
        std::string s;
        if (workers >= 0) s += fmt::format("{}w{}", sep, workers);
        if (!cpus.empty()) s += fmt::format("{}cpu{}", sep, fmt::join(cpus, "-"));
        if (idle > 0) s += fmt::format("{}i{}", sep, idle);
        s += fmt::format("{}r{}", sep, repetition);
        if (step >= 0) s += fmt::format("{}rate{:g}", sep, fraction * 100);
        return s;
    }
    std::string id() const { return fmt::format("{}/{}/c{}{}", model, workload, connections, suffix('/')); }
    // The line a chart draws it on: the model, with its --workers and CPUs when they vary.
    std::string series() const {
        std::string s = model;
        if (workers >= 0) s += fmt::format(" ×{}", workers);
        if (!cpus.empty()) s += fmt::format(" ({} core{})", cpus.size(), cpus.size() > 1 ? "s" : "");
        return s;
    }
    std::string stem() const { return fmt::format("{}_{}_c{}{}", model, workload, connections, suffix('_')); }
    // The closed-loop cell a sweep step takes its maximum from.
    std::string closed_id() const {
        Cell c = *this;
        c.step = -1;
        return c.id();
    }
};

// What every cell of a run shares.
struct CellEnv {
    const Profile& p;
    const std::vector<ModelInfo>& registry;
    std::string run_id;
    std::filesystem::path dir;
    std::atomic<bool>* stop;       // set on Ctrl-C: the load ends at once
    volatile bool* interrupted;    // set on Ctrl-C: a server start gives up
    SpeedProbe* probe;             // on the server's and the client's CPUs
};

struct CellRun {
    nlohmann::json line;
    bool interrupted = false;
};

// `closed_max`: for a sweep step, the throughput of its closed-loop cell (0: it failed).
CellRun run_cell(const Cell& cell, const CellEnv& env, const ModelInfo& model, double closed_max);

// The progress line's account of a finished cell.
std::string summary_line(const nlohmann::json& j);

}  // namespace concbench
