// What the blocking models (threads, threadpool, fork, prefork) share: the loop that serves one
// connection with blocking calls, and the supervision of child processes. What differs between
// them — who runs serve_blocking(), a new thread, a pooled one, a new or a pre-forked process —
// is their model.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <unordered_set>

#include "concbench/session.hpp"

namespace concbench {

struct ServerOptions;

// Reads, feeds the session, writes its answers, until the peer leaves, an error, or the session
// asks to close. The read buffer (16 KiB) is on the calling thread's stack. The caller closes fd.
// Effects are carried out with blocking calls on the calling thread, as such servers do:
//   - wait: the thread sleeps (in poll() on the client socket with no events, so that only a
//     hang-up — the client reset, or the model's shutdown() at SIGTERM — cuts the sleep short);
//   - fanout: K blocking backend sockets from the thread's own pool (kept open across requests
//     and, in a pooled thread or process, across connections): all K requests are written
//     first, then the K answers are read in turn, so the calls overlap in time;
//   - file: sendfile() of the whole file on the blocking socket.
void serve_blocking(int fd, const ServerOptions& opts, const ServerIdentity& id);

// Child processes of a process model, reaped through a SIGCHLD signalfd.
class Children {
public:
    Children();  // blocks SIGCHLD (before any fork) and opens the signalfd
    int signal_fd() const { return chldfd_; }
    void add(pid_t pid) { pids_.insert(pid); }
    std::size_t size() const { return pids_.size(); }
    // Takes every child that has ended (a pid leaves the set only once reaped, so kill() never
    // reaches a reused pid). Returns how many; with `warn_signals`, a child ended by a signal
    // other than SIGTERM is reported.
    int reap(bool warn_signals = false);
    // SIGTERM to every child, wait up to `grace`, SIGKILL what is left, reap all.
    void stop_all(std::chrono::seconds grace);
    // In a new child: the parent's signalfd is not its business.
    void forget_in_child();

private:
    int chldfd_;
    std::unordered_set<pid_t> pids_;
};

}  // namespace concbench
