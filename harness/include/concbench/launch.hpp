// Launch: one way to start any model of the registry — our servers through the server contract's
// command line, reference servers (nginx, Apache) from the [reference] table of their model.toml:
// configuration rendered into a directory of their own, started in the foreground, ready when
// their port accepts. The runner and the tests both start servers through here.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concbench/host.hpp"
#include "concbench/registry.hpp"

namespace concbench {

struct LaunchOptions {
    std::string proto = "http";      // http | echo
    std::string host = "127.0.0.1";
    uint16_t port = 0;               // 0: the server (ours) or the launcher (reference) picks one
    int workers = 0;                 // 0: the model's default (none if it takes no --workers)
    std::vector<int> cpus;           // pin the server's whole tree here
    std::string log_path;            // the server's stderr (and a reference server's stdout)
    std::string work_dir;            // a reference server's configuration, pid, logs, temp files
    std::string docroot;             // served as /file/NAME ("" = an empty work_dir/docroot)
    bool docroot_flag = true;        // our models: pass --docroot (when docroot is set)
    std::string backend;             // our models: --backend HOST:PORT for the fan-out routes
    bool raise_nofile = false;       // soft RLIMIT_NOFILE to the hard limit in the server
    unsigned long nofile = 0;        // > 0: the server's soft RLIMIT_NOFILE (verify's fd-limit case)
};

// Starts `model` and waits until it is ready. nullptr and a one-line `error` on failure (binary
// missing: which package or target provides it; bad template; the server's own last log line).
// A reference server's port is chosen free on `host` and chosen again if another process takes
// it before the server binds it.
std::unique_ptr<ServerProcess> launch_server(const ModelInfo& model, const LaunchOptions& opts,
                                             std::chrono::milliseconds ready_timeout, std::string& error,
                                             const volatile bool* interrupted = nullptr);

// Replaces every @name@ in `text` by vars[name]; @name/N@ is the integer vars[name] divided by N,
// rounded up. An '@' not followed by a name and '@' is left as it is. Throws std::runtime_error
// naming `what` and the unknown placeholder.
std::string render_template(const std::string& text, const std::map<std::string, std::string>& vars,
                            const std::string& what);

// A TCP port on `host` that nothing listens on right now (bind port 0, read it, close).
uint16_t pick_free_port(const std::string& host);

// What a run records about a reference model: its version line, package, the effective settings
// with `workers` (e.g. Apache's MPM defaults of Debian). Empty for our own models.
nlohmann::json reference_meta(const ModelInfo& model, int workers);

}  // namespace concbench
