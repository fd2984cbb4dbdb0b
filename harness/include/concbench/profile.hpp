// Profile: a run's matrix (models x workloads x connection counts x repetitions) and its timing,
// read from profiles/<name>.toml and checked in full before anything runs.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "concbench/registry.hpp"

namespace concbench {

struct Profile {
    std::string name;
    std::string description;
    std::string path;
    std::string text;                      // the file as read, kept in meta.json
    std::vector<std::string> models;
    std::vector<std::string> workloads;
    std::vector<int> connections;
    std::vector<int> idle_connections = {0};  // idle keep-alive connections held through each cell
    std::vector<double> rate_sweep;        // open-loop steps, fractions of the closed-loop maximum
    int pipeline = 1;                      // requests in flight per connection (closed loop)
    double request_timeout_s = 10;
    int repetitions = 1;
    double warmup_s = 1;
    double duration_s = 5;
    double ready_timeout_s = 10;
    double stop_grace_s = 5;
    std::vector<int> server_cpus;
    std::vector<int> client_cpus;
    int client_threads = 0;                // 0: one per client CPU
    std::map<std::string, int> workers;    // [workers] model = N: --workers for that model
    // [connections_for] workload = [..]: that workload's connection counts instead of `connections`
    // (for `idle`: the idle connections held).
    std::map<std::string, std::vector<int>> connections_for;
    std::string backend = "epoll";         // the model serving fan-out calls, on the client's CPUs

    const std::vector<int>& connections_of(const std::string& workload) const {
        auto it = connections_for.find(workload);
        return it == connections_for.end() ? connections : it->second;
    }

    // --workers for `model` in this profile: the profile's [workers] entry, else the model's
    // default; 0 when the model takes no --workers.
    int workers_for(const ModelInfo& model) const;
};

// `name_or_path`: "quick" (profiles/quick.toml in the checkout) or a path to a .toml file.
// Throws std::runtime_error("<file>:<line>: <what> (valid: ...)") on any problem.
Profile load_profile(const std::string& name_or_path, const std::vector<ModelInfo>& registry);

}  // namespace concbench
