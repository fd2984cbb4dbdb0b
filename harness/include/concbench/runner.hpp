// Runner: runs a profile's cells one by one, each in a fresh server, and appends one JSON line
// per finished cell to results/<run-id>/results.jsonl.
#pragma once
#include <string>
#include <vector>

namespace concbench {

struct RunOptions {
    std::string profile = "quick";
    std::string resume;                 // run id to continue (skips its finished cells)
    std::string results_root = "results";
    std::vector<std::string> models;    // restrict the profile's models (empty: all of them)
    bool no_verify = false;             // skip the conformance check (the profile's verify = "off")
    bool allow_emulated = false;        // record cells of models emulated here (iocp under Wine), labelled
};

// Returns the process exit code: 0 done, 1 some cells failed, 2 bad input, 130 interrupted.
int run_profile(const RunOptions& opts);

// A new run's id under `root`: "<YYYYmmdd-HHMMSS>-<what>", with "-2", "-3"... if taken.
std::string make_run_id(const std::string& root, const std::string& what);

// Points root/latest at run_id (atomically: a new symlink renamed over the old one).
void point_latest(const std::string& root, const std::string& run_id);

}  // namespace concbench
