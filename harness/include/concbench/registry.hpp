// Registry: the models, discovered from models/*/model.toml. Nothing in the harness lists models
// by hand; it reads mechanism, structure and workloads from here.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace concbench {

// How a real server that the project does not build (mechanism "reference": nginx, Apache) is
// launched, from the [reference] table of its model.toml. The runner writes `config` (a template
// in the model's folder, @name@ placeholders) and `files` into the cell's own directory, runs
// `command` in the foreground, and knows it is ready by connecting to its port (`readiness`).
struct ReferenceLaunch {
    std::vector<std::string> command;          // argv; command[0] an absolute path; @name@ placeholders
    std::string config_template;               // absolute path of the template
    std::string config_name;                   // the file name it is written to
    std::map<std::string, std::string> files;  // more files written beside it: name -> content
    std::vector<std::string> version_command;  // prints the server's version (recorded in meta.json)
    std::string package;                       // the Debian package that installs command[0]
    std::string run_as;                        // user its workers run as when started by root
    // It prints no listening line. "connect": ready when its port accepts; "http": when it
    // answers `GET / HTTP/1.0` with any HTTP status line (listening is not yet serving).
    std::string readiness = "connect";
    // Settings stated in the results and usable in the template as @name@ (e.g. Apache's MPM
    // defaults): name -> value as written.
    std::map<std::string, std::string> settings;
};

// What a model written in an interpreted runtime (Python, Node.js) needs besides its launcher,
// from the [runtime] table of its model.toml: paths that must exist (the interpreter, a module's
// folder) and the Debian package that installs them.
struct RuntimeNeeds {
    std::vector<std::string> paths;  // absolute
    std::string package;             // e.g. "python3-uvloop"
    std::vector<std::string> version_command;  // prints the runtime's version (meta.json)
};

// A model that runs on this machine only through an emulation of another platform's interface
// (kqueue on Linux through a test-only kevent emulation; IOCP under Wine), from its model.toml's
// [emulated.<platform>] table for this platform. Its numbers would measure the emulation.
struct Emulation {
    std::string by;      // "wine": recorded as `emulated` in results, shown in plots and summary
    bool run = false;    // run = "allowed": cells are recorded with --allow-emulated; "refused": verify only
    std::string reason;  // one line: what its numbers would measure
};

// This machine's platform as model.toml's `platforms` spells it: linux, macos, freebsd, windows.
const char* this_platform();

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
    std::string binary_path;  // absolute (a reference model: its command[0])
    bool built = false;       // the binary exists (a reference model: its package is installed;
                              // a runtime model: its launcher and every path it needs)
    std::optional<ReferenceLaunch> reference;      // set exactly when mechanism is "reference"
    std::optional<RuntimeNeeds> runtime;           // a Python or Node.js model
    std::optional<Emulation> emulated;             // set when this platform runs it only emulated
    // A runtime model whose launcher is built but whose interpreter or module is missing:
    // "not available: install Debian package X (make deps)"; empty otherwise.
    std::string unavailable;
    // [verify] skip: conformance cases this model does not take part in -> why (e.g. a reference
    // server's configuration has no /bytes route). Every other case applies to it.
    std::map<std::string, std::string> verify_skip;
    // [verify] case = "reason": verify cases whose outcome shows the model's nature (select past
    // FD_SETSIZE, a fixed pool under slowloris): still run, reported DEVIATES instead of failing.
    std::map<std::string, std::string> verify_expect;

    bool serves(const std::string& workload) const;
    bool is_reference() const { return reference.has_value(); }
    // Runs here natively: this platform is in `platforms` and it is not emulated here. A profile's
    // models = "all" means these.
    bool native() const;
    // Empty if the conformance case applies to this model, else the reason it does not.
    std::string skips(const std::string& verify_case) const;
    // What to do when it is not built: "run make build" or "install Debian package nginx (make deps)".
    std::string how_to_build() const;
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
