// `concbench micro`: runs the micro suite (bin/concbench-micro, Google Benchmark) group by
// group, keeps its JSON as results/<run-id>/micro.json, prints Dahl's latency table from it, and
// compares two runs.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace concbench {

struct MicroOptions {
    std::string filter;                 // a regex over benchmark names (Google Benchmark's filter)
    int repetitions = 3;
    double min_time_s = 0.2;            // Google Benchmark's --benchmark_min_time per benchmark
    bool short_set = false;             // the set `make bench` runs: every row once, briefly
    std::string run;                    // write into this existing run (id or "latest"); "" = a new run
    std::string results_root = "results";
    bool list = false;                  // list the benchmarks the filter selects and exit
    std::string table;                  // print the latency table of this run (id, dir or micro.json)
    std::vector<std::string> compare;   // two runs (ids, dirs or micro.json files) side by side
};

// Returns the process exit code: 0 done, 1 some group failed, 2 bad input, 130 interrupted.
int run_micro(const MicroOptions& opts);

// A benchmark's name without Google Benchmark's suffixes ("/real_time", "/min_time:0.500",
// "/iterations:1", ...): "switch/thread_pipe/cpus:2/real_time" -> "switch/thread_pipe/cpus:2".
std::string base_name(const std::string& name);

// One figure per benchmark (base) name: the median of its repetitions (or its only run), in ns per
// operation (the `per_op` counter where one iteration holds several operations).
struct MicroFigure {
    std::string name;
    double ns = 0;
    std::vector<double> samples_ns;     // each repetition's figure
    std::string error;                  // why the row was skipped ("" = it ran)
    std::string label;
};
std::vector<MicroFigure> micro_figures(const nlohmann::json& micro);

// Dahl's table: per device the essay's cycles and "humanified" seconds (3 cycles = 1 s), and
// ours: ns, cycles at the measured clock, humanified with our L1 = 1 s; the benchmark each row
// comes from. {"measured_mhz": ..., "rows": [...]}, kept in micro.json for the plots.
nlohmann::json latency_rows(const nlohmann::json& micro);
// The same as text lines, for the terminal.
std::vector<std::string> latency_table(const nlohmann::json& micro);

// Two-sided Mann-Whitney U test p-value of two samples (NaN with fewer than 2 in either).
double mann_whitney_p(const std::vector<double>& x, const std::vector<double>& y);

// Side by side: per benchmark, A's and B's figures, the change, and the Mann-Whitney U test's
// p-value over the repetitions (Google Benchmark's compare.py statistics). Text lines.
std::vector<std::string> compare_micro(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace concbench
