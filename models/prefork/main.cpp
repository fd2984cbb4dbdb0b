// server-prefork: N worker processes forked up front, each blocked in accept() on the shared
// listening socket and serving one connection at a time — Apache's prefork MPM in miniature.
//   - The listening socket is made blocking before the workers are forked (the flag belongs to
//     the shared open file, so it is set once): a worker sleeps in accept(), and Linux wakes one
//     waiter per incoming connection (exclusive wait), so there is no thundering herd and, with
//     one listening socket, no accept mutex (Apache's SINGLE_LISTEN_UNSERIALIZED_ACCEPT).
//   - A worker serves its connection with blocking read/writev until the peer leaves, then
//     accepts the next. A keep-alive connection holds its worker: with more clients than
//     workers, the extra ones wait in the kernel's listen backlog without an answer.
//   - The parent only supervises. It polls the stop signal and SIGCHLD (signalfds); a worker
//     that ends is reaped and replaced. A pid leaves the parent's set only when reaped, so
//     kill() never hits a reused pid. If fork fails the parent retries once a second.
//   - Workers inherit the parent's blocked SIGTERM/SIGINT/SIGCHLD and clear that mask at once,
//     so a SIGTERM ends them. SIGTERM/SIGINT to the parent: SIGTERM every worker, wait (at most
//     4 s, then SIGKILL), exit 0. Only the parent prints the readiness line, once all are forked.
// Linux (signalfd). Run: server-prefork --proto http --host 127.0.0.1 --port 0 --workers 64
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_set>

#include "blocking.hpp"
#include "server.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

constexpr ModelTraits kTraits{"prefork", true, 64};
constexpr seconds kStopGrace{4};
constexpr int kRetryForkMs = 1000;

// A worker's life: accept, serve, close, forever (a SIGTERM ends it).
[[noreturn]] void worker(int lfd, const ServerOptions& opts, const ServerIdentity& id) {
    for (;;) {
        int fd = accept_connection(lfd, false);  // blocks: the listening socket is blocking
        if (fd < 0) continue;                    // interrupted, aborted, or out of fds
        serve_blocking(fd, opts, id);
        close(fd);
    }
}

// Forks workers until there are `want`. False, with errno, if fork failed (try again later).
bool spawn_workers(Children& workers, std::size_t want, int lfd, int sigfd, const ServerOptions& opts,
                   const ServerIdentity& id) {
    while (workers.size() < want) {
        pid_t pid = fork();
        if (pid < 0) return false;
        if (pid == 0) {
            // The worker: drop the parent's signal plumbing, take signals again.
            close(sigfd);
            workers.forget_in_child();
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, nullptr);
            worker(lfd, opts, id);
        }
        workers.add(pid);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    ServerIdentity id = identity(kTraits);
    int sigfd = stop_signal_fd();
    Children workers;
    int lfd = listen_socket(opts);
    if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) & ~O_NONBLOCK) != 0)
        fatal("fcntl: %s", strerror(errno));

    auto want = static_cast<std::size_t>(opts.workers);
    if (!spawn_workers(workers, want, lfd, sigfd, opts, id)) {
        int err = errno;
        std::size_t started = workers.size();
        workers.stop_all(kStopGrace);
        fatal("fork: %s: cannot start worker %zu of %zu", strerror(err), started + 1, want);
    }
    announce_listening(lfd);

    bool complete = true;
    pollfd pfd[2] = {{sigfd, POLLIN, 0}, {workers.signal_fd(), POLLIN, 0}};
    for (;;) {
        if (poll(pfd, 2, complete ? -1 : kRetryForkMs) < 0 && errno != EINTR)
            fatal("poll: %s", strerror(errno));
        if (pfd[0].revents) break;  // SIGTERM or SIGINT
        if (pfd[1].revents) workers.reap(true);  // a worker that died is replaced below
        complete = spawn_workers(workers, want, lfd, sigfd, opts, id);
        if (!complete)
            warn("fork: %s: %zu of %zu workers running, retrying in %d ms", strerror(errno),
                 workers.size(), want, kRetryForkMs);
    }
    close(lfd);
    workers.stop_all(kStopGrace);
    return 0;
}
