// Host: how the runner reaches a server — start it, wait for its readiness line, stop it, know
// its process tree. Local today (fork/exec in its own process group, pinned to CPUs), behind
// this small interface so that nothing else assumes the server runs on the client's machine.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace concbench {

struct ServerCommand {
    std::string binary;              // absolute path
    std::vector<std::string> args;   // without argv[0]
    std::vector<int> cpus;           // pin the server (and what it forks) here; empty: no pinning
    std::string log_path;            // the server's stderr goes here ("" = /dev/null)
    // Readiness: 0 = the server prints "listening <host>:<port>" on stdout (our models); else it
    // prints nothing (nginx, Apache: its stdout goes to log_path too) and is ready once a TCP
    // connection to ready_host:ready_port succeeds and, if ready_probe is set, the bytes it
    // sends there are answered with a reply starting with ready_expect. (A bare connect only
    // says listen() was called: Apache listens before it installs its signal handlers and forks
    // its children.)
    std::string ready_host = "127.0.0.1";
    uint16_t ready_port = 0;
    std::string ready_probe;
    std::string ready_expect;
    // Raise the server's soft RLIMIT_NOFILE to the hard limit (a run holds 10,000 connections).
    // Off, it inherits ours: tests lower it to see a server run out of fds.
    bool raise_nofile = false;
    unsigned long nofile = 0;        // > 0: the server's soft RLIMIT_NOFILE (verify's fd-limit case)
};

struct StopReport {
    bool exited = false;        // the root process exited by itself after SIGTERM
    int exit_code = -1;         // its exit code, if it exited normally
    int signal = 0;             // the signal that ended it, if any
    bool killed = false;        // SIGKILL was needed
    int leftover = 0;           // processes of its group still alive after the root had gone
    double stop_s = 0;          // SIGTERM -> root gone
    bool clean() const { return exited && exit_code == 0 && !killed && leftover == 0; }
    std::string describe() const;
};

class ServerProcess {
public:
    // Starts the server and waits up to `ready_timeout` for it to be ready (see ServerCommand).
    // The server gets SIGTERM if the calling thread ends first (PR_SET_PDEATHSIG): start servers
    // from a thread that outlives them (the runner's and the tests' main thread). On
    // failure returns nullptr and sets `error` to one line (including the server's last stderr
    // line when it died). `interrupted`, if set during the wait, abandons it.
    static std::unique_ptr<ServerProcess> start(const ServerCommand& cmd,
                                                std::chrono::milliseconds ready_timeout,
                                                std::string& error,
                                                const volatile bool* interrupted = nullptr);
    ~ServerProcess();  // stops the server if still running

    pid_t pid() const { return pid_; }
    const std::string& host() const { return host_; }
    uint16_t port() const { return port_; }
    // Non-empty if the server has died on its own (how), without waiting.
    std::string died() ;

    // SIGTERM to the group, wait up to `grace` for the root to exit, then SIGKILL the group.
    StopReport stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
    // `f` runs once, when stop() (or the destructor) has reaped the server and its group: a
    // reference server keeps its logs and removes its runtime directory there.
    void at_stop(std::function<void()> f) { at_stop_ = std::move(f); }

private:
    ServerProcess() = default;
    bool wait_connectable(const ServerCommand& cmd, std::chrono::steady_clock::time_point deadline,
                          std::chrono::milliseconds ready_timeout, std::string& error,
                          const volatile bool* interrupted);
    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = 0;
    std::string host_;
    uint16_t port_ = 0;
    std::string log_path_;
    std::function<void()> at_stop_;
};

// Processes (not zombies) whose process group is `pgid`.
int live_processes_in_group(pid_t pgid);
// The last non-empty line of a text file ("" if none), for error messages.
std::string last_line_of(const std::string& path);
// CPUs this process may run on.
std::vector<int> allowed_cpus();
// Pins the calling thread to `cpus` (no-op when empty). Returns false on failure.
bool pin_thread(const std::vector<int>& cpus);

}  // namespace concbench
