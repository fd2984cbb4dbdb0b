// Registry: the models, discovered from models/*/model.toml. Nothing in the harness lists models
// by hand; it reads mechanism, structure and workloads from here.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace concbench {

struct ModelInfo {
    std::string name;
    std::string description;
    std::string mechanism;   // blocking | readiness | completion | reference
    std::string structure;
    std::string like;
    std::vector<std::string> platforms;
    std::vector<std::string> workloads;
    std::vector<std::string> notes;
    int workers = 0;          // > 0: the model takes --workers N and this is its default
    std::string binary;       // file name under the bin dir
    std::string toml_path;
    std::string binary_path;  // absolute
    bool built = false;
    // [verify] case = "reason": cases whose outcome shows the model's nature (select past
    // FD_SETSIZE, a fixed pool under slowloris) or that do not apply to it (a reference server).
    std::map<std::string, std::string> verify_expect;

    bool serves(const std::string& workload) const;
};

inline const std::vector<std::string> kMechanisms = {"blocking", "readiness", "completion", "reference"};

// Reads every models/<dir>/model.toml. Throws std::runtime_error("<file>:<line>: <what>") on a
// malformed entry.
std::vector<ModelInfo> load_registry(const std::string& models_dir, const std::string& bin_dir);
const ModelInfo* find_model(const std::vector<ModelInfo>& reg, const std::string& name);

std::string source_dir();   // the checkout (compiled in; CONCBENCH_SOURCE_DIR overrides)
std::string bin_dir();      // where this executable and the servers live
std::string models_dir();   // source_dir()/models

}  // namespace concbench
