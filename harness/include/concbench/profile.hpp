// Profile: a run's matrix (models x workloads x connection counts x repetitions) and its timing,
// read from profiles/<name>.toml and checked in full before anything runs.
#pragma once
#include <algorithm>
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
    std::vector<int> server_cpus;          // with several sets: all of them (verify, the rest check)
    // server_cpus = [[0], [0, 1]]: every cell runs once on each set (one core, then two), so a
    // run shows what a second core gives each model. Empty: server_cpus is the one set.
    std::vector<std::vector<int>> server_cpu_sets;
    std::vector<int> client_cpus;
    int client_threads = 0;                // 0: one per client CPU
    // [workers] model = N: --workers for that model; model = [1, 2]: a cell with each
    std::map<std::string, std::vector<int>> workers;
    std::string verify = "quick";          // verify each model before measuring: quick | full | off
    // [connections_for] workload = [..]: that workload's connection counts instead of `connections`
    // (for `idle`: the idle connections held).
    std::map<std::string, std::vector<int>> connections_for;
    // [cells_for] model = { workload = [counts] }: that model runs only these cells (a subset of
    // the profile's), e.g. the Python and Node.js models at hello 100 in `quick`.
    std::map<std::string, std::map<std::string, std::vector<int>>> cells_for;
    std::string backend = "epoll";         // the model serving fan-out calls, on the client's CPUs
    // The primer: before warm-up every keep-alive connection is answered once; it ends when no
    // new first answer came for primer_stall_s, or after primer_timeout_s.
    double primer_stall_s = 2;
    double primer_timeout_s = 30;
    // Interference: a cell is disturbed when other processes (or the hypervisor's steal) took more
    // than interference_threshold of a core on its server or client CPUs, or when a CPU ran more
    // than slowdown_threshold slower than at rest. It is re-run up to disturbed_reruns times, each
    // after waiting (at most quiet_wait_s) for quiet CPUs, then kept and marked.
    double interference_threshold = 0.05;
    double slowdown_threshold = 0.35;
    int disturbed_reruns = 2;
    double quiet_wait_s = 20;
    double rest_check_s = 2;   // the machine at rest before the first cell (0: no check)

    const std::vector<int>& connections_of(const std::string& workload) const {
        auto it = connections_for.find(workload);
        return it == connections_for.end() ? connections : it->second;
    }

    // Whether `model` runs `workload` at `conns` connections, as far as [cells_for] says.
    bool runs(const std::string& model, const std::string& workload, int conns) const {
        auto m = cells_for.find(model);
        if (m == cells_for.end()) return true;
        auto w = m->second.find(workload);
        return w != m->second.end() && std::find(w->second.begin(), w->second.end(), conns) != w->second.end();
    }

    // --workers for `model` in this profile: the profile's [workers] entry, else the model's
    // default; 0 when the model takes no --workers.
    int workers_for(const ModelInfo& model) const;
    // Every --workers the profile runs `model` with: [workers_for] unless [workers] lists several.
    std::vector<int> workers_list(const ModelInfo& model) const;
};

// `name_or_path`: "quick" (profiles/quick.toml in the checkout) or a path to a .toml file.
// Throws std::runtime_error("<file>:<line>: <what> (valid: ...)") on any problem.
Profile load_profile(const std::string& name_or_path, const std::vector<ModelInfo>& registry);

}  // namespace concbench
