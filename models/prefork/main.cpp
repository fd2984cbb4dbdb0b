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

#include "server.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

constexpr ModelTraits kTraits{"prefork", true, 64};
constexpr std::size_t kReadBuffer = 16 * 1024;  // on each worker's stack
constexpr seconds kStopGrace{4};
constexpr int kRetryForkMs = 1000;

// SIGCHLD through a signalfd, so that the parent's poll also wakes when a worker ends.
int child_signal_fd() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) fatal("sigprocmask: %s", strerror(errno));
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) fatal("signalfd: %s", strerror(errno));
    return fd;
}

// Takes every worker that has ended; their pids leave the set only now.
void reap(int chldfd, std::unordered_set<pid_t>& workers) {
    signalfd_siginfo si;
    while (read(chldfd, &si, sizeof si) == sizeof si) {
    }
    pid_t pid;
    int status;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        workers.erase(pid);
        if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
            warn("worker %d killed by signal %d (%s): replacing it", static_cast<int>(pid),
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    }
}

// SIGTERM to every worker, then wait for them, at most kStopGrace; SIGKILL what is left.
void stop_workers(int chldfd, std::unordered_set<pid_t>& workers) {
    for (pid_t pid : workers) kill(pid, SIGTERM);
    auto deadline = steady_clock::now() + kStopGrace;
    while (!workers.empty()) {
        auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
        if (left <= 0) break;
        pollfd p{chldfd, POLLIN, 0};
        poll(&p, 1, static_cast<int>(left));
        reap(chldfd, workers);
    }
    if (workers.empty()) return;
    warn("%zu workers still running %lld s after SIGTERM: killing them", workers.size(),
         static_cast<long long>(kStopGrace.count()));
    for (pid_t pid : workers) kill(pid, SIGKILL);
    for (pid_t pid : workers) waitpid(pid, nullptr, 0);
    workers.clear();
}

void serve(int fd, Proto proto, const ServerIdentity& id) {
    std::unique_ptr<Session> session = make_session(proto, id);
    char buf[kReadBuffer];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;  // reset by the peer
        if (n == 0) session->peer_closed();
        else session->feed(buf, static_cast<std::size_t>(n));
        if (!write_outbox(fd, session->out())) break;
        if (session->close_after_write()) break;
    }
}

// A worker's life: accept, serve, close, forever (a SIGTERM ends it).
[[noreturn]] void worker(int lfd, Proto proto, const ServerIdentity& id) {
    for (;;) {
        int fd = accept_connection(lfd, false);  // blocks: the listening socket is blocking
        if (fd < 0) continue;                    // interrupted, aborted, or out of fds
        serve(fd, proto, id);
        close(fd);
    }
}

// Forks workers until there are `want`. False, with errno, if fork failed (try again later).
bool spawn_workers(std::unordered_set<pid_t>& workers, std::size_t want, int lfd, int sigfd,
                   int chldfd, Proto proto, const ServerIdentity& id) {
    while (workers.size() < want) {
        pid_t pid = fork();
        if (pid < 0) return false;
        if (pid == 0) {
            // The worker: drop the parent's signal plumbing, take signals again.
            close(sigfd);
            close(chldfd);
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, nullptr);
            worker(lfd, proto, id);
        }
        workers.insert(pid);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    ServerIdentity id = identity(kTraits);
    int sigfd = stop_signal_fd();
    int chldfd = child_signal_fd();
    int lfd = listen_socket(opts);
    if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) & ~O_NONBLOCK) != 0)
        fatal("fcntl: %s", strerror(errno));

    auto want = static_cast<std::size_t>(opts.workers);
    std::unordered_set<pid_t> workers;
    if (!spawn_workers(workers, want, lfd, sigfd, chldfd, opts.proto, id)) {
        int err = errno;
        std::size_t started = workers.size();
        stop_workers(chldfd, workers);
        fatal("fork: %s: cannot start worker %zu of %zu", strerror(err), started + 1, want);
    }
    announce_listening(lfd);

    bool complete = true;
    pollfd pfd[2] = {{sigfd, POLLIN, 0}, {chldfd, POLLIN, 0}};
    for (;;) {
        if (poll(pfd, 2, complete ? -1 : kRetryForkMs) < 0 && errno != EINTR)
            fatal("poll: %s", strerror(errno));
        if (pfd[0].revents) break;  // SIGTERM or SIGINT
        if (pfd[1].revents) reap(chldfd, workers);
        complete = spawn_workers(workers, want, lfd, sigfd, chldfd, opts.proto, id);
        if (!complete)
            warn("fork: %s: %zu of %zu workers running, retrying in %d ms", strerror(errno),
                 workers.size(), want, kRetryForkMs);
    }
    close(lfd);
    stop_workers(chldfd, workers);
    return 0;
}
