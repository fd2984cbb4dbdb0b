// verify: every model proves itself before it is measured. One table of conformance and
// hostile-input cases, run against real server processes (through host.hpp) of any model in the
// registry; nothing here names a model. A model whose nature makes a case come out differently
// (select past FD_SETSIZE, a fixed pool under slowloris) declares it in its model.toml:
//   [verify]
//   slowloris = "one-line reason"
// The case still runs; its observed outcome is reported as that model's expected result.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "concbench/registry.hpp"

namespace concbench {

// quick: what the runner checks before measuring (a few seconds per model).
// full: adds the heavy cases (slowloris, 1,100 connections, Date over 1.5 s) and 20,000 leak
// cycles instead of 2,000; `make test` runs it.
enum class VerifySet { quick, full };

struct VerifyCaseInfo {
    std::string name;         // the key a model.toml [verify] table uses
    std::string group;        // framing, headers, bad-input, effects, hostile, exhaustion, leaks, shutdown
    std::string proto;        // "http" or "echo": skipped for a model serving no such workload
    std::string description;  // the expected outcome, one line
    bool full_only = false;
    std::string family{};     // a workload family the case needs (bytes, delay, fanout, file); "" = none
};

// The table, in run order.
const std::vector<VerifyCaseInfo>& verify_cases();
const VerifyCaseInfo* find_verify_case(const std::string& name);

struct VerifyOptions {
    VerifySet set = VerifySet::quick;
    std::vector<std::string> only;   // run only these cases (empty: the whole set)
    std::vector<int> server_cpus;    // pin the servers here (empty: no pinning)
    int workers = 0;                 // --workers N for models that take it (0: the model's default)
    const ModelInfo* backend = nullptr;  // serves the fan-out case's backend calls (the runner's:
                                         // the profile's `backend`); null: that case is N/A
    std::string log_dir;             // servers' stderr, one file per case ("" = a temp dir)
    bool keep_passing_logs = false;  // otherwise logs of passing cases are removed
    bool stop_at_first_failure = false;  // the runner: one failing case is enough to refuse
    const volatile bool* interrupted = nullptr;  // set (by a signal handler): stop soon
};

enum class CaseStatus {
    pass,
    fail,
    deviates,       // failed as its model.toml declares (the model's nature): not a failure
    declared_pass,  // declared to deviate but passed: reported, not a failure
    not_applicable, // skipped by the model.toml, or it serves no workload of the case's protocol or family
    interrupted,
};
const char* status_name(CaseStatus s);

struct CaseResult {
    std::string name;
    CaseStatus status = CaseStatus::fail;
    std::string detail;    // why it failed, or what was observed (figures)
    std::string declared;  // the model.toml reason, if the case is declared
    std::string log_path;  // the server's stderr, kept when the case did not pass
    double seconds = 0;
};

struct ModelVerdict {
    std::string model;
    std::vector<CaseResult> cases;
    bool ok() const;                           // no case failed (or was interrupted)
    const CaseResult* first_failure() const;   // nullptr when ok()
};

// Runs the set against one model; `on_case` (if given) is called after each case.
ModelVerdict verify_model(const ModelInfo& model, const VerifyOptions& opts,
                          const std::function<void(const CaseResult&)>& on_case = {});

// One line per case for a terminal: "  PASS  framing  pipelined-16  0.05 s  detail".
std::string format_case_line(const CaseResult& r);

// Raises this process's soft RLIMIT_NOFILE to its hard limit (the client side of the
// 1,100-connection case needs it; servers started afterwards inherit it).
void raise_fd_limit();

}  // namespace concbench
