// server-fork: one process per connection, the classic Unix daemon (inetd's "nowait" services,
// CGI-era servers). The parent polls the listening socket, the stop signal and SIGCHLD; for each
// accepted connection it forks, closes its own copy of the socket and goes back to accepting.
// The child serves the connection with blocking read/writev until the peer leaves, then _exits.
//   - Children are reaped as they end: SIGCHLD arrives through a signalfd in the parent's poll,
//     and waitpid(WNOHANG) takes every finished child, so no zombie outlives a poll round.
//   - The parent blocks SIGTERM/SIGINT/SIGCHLD for its signalfds; a forked child inherits that
//     mask, so the child clears it at once: a SIGTERM (from the parent, or to the whole process
//     group) then ends the child. SIGPIPE stays ignored in the child.
//   - A pid is removed from the parent's set only when reaped, so kill() never hits a reused pid.
//   - fork() failing (EAGAIN: RLIMIT_NPROC, pid_max, memory) closes that connection; the
//     parent warns at most once a second and goes on.
//   - SIGTERM/SIGINT: stop accepting, SIGTERM every child, wait for them (at most 4 s, then
//     SIGKILL), exit 0.
// Linux (signalfd). Run: server-fork --proto http --host 127.0.0.1 --port 0
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <unordered_set>

#include "server.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

constexpr ModelTraits kTraits{"fork", false, 1};
constexpr std::size_t kReadBuffer = 16 * 1024;  // on the child's stack
constexpr seconds kStopGrace{4};

// SIGCHLD through a signalfd, so that the parent's poll also wakes when a child ends.
int child_signal_fd() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) fatal("sigprocmask: %s", strerror(errno));
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) fatal("signalfd: %s", strerror(errno));
    return fd;
}

// Takes every child that has ended; their pids leave the set only now.
void reap(int chldfd, std::unordered_set<pid_t>& children) {
    signalfd_siginfo si;
    while (read(chldfd, &si, sizeof si) == sizeof si) {
    }
    pid_t pid;
    while ((pid = waitpid(-1, nullptr, WNOHANG)) > 0) children.erase(pid);
}

// SIGTERM to every child, then wait for them, at most kStopGrace; SIGKILL what is left.
void stop_children(int chldfd, std::unordered_set<pid_t>& children) {
    for (pid_t pid : children) kill(pid, SIGTERM);
    auto deadline = steady_clock::now() + kStopGrace;
    while (!children.empty()) {
        auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
        if (left <= 0) break;
        pollfd p{chldfd, POLLIN, 0};
        poll(&p, 1, static_cast<int>(left));
        reap(chldfd, children);
    }
    if (children.empty()) return;
    warn("%zu children still running %lld s after SIGTERM: killing them", children.size(),
         static_cast<long long>(kStopGrace.count()));
    for (pid_t pid : children) kill(pid, SIGKILL);
    for (pid_t pid : children) waitpid(pid, nullptr, 0);
    children.clear();
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

void warn_fork_failed(int err) {
    static time_t last = 0;
    time_t now = time(nullptr);
    if (now == last) return;
    last = now;
    warn("fork: %s: closing new connections until processes free up", strerror(err));
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    ServerIdentity id = identity(kTraits);
    int sigfd = stop_signal_fd();
    int chldfd = child_signal_fd();
    int lfd = listen_socket(opts);
    announce_listening(lfd);

    std::unordered_set<pid_t> children;
    pollfd pfd[3] = {{sigfd, POLLIN, 0}, {chldfd, POLLIN, 0}, {lfd, POLLIN, 0}};
    for (;;) {
        if (poll(pfd, 3, -1) < 0 && errno != EINTR) fatal("poll: %s", strerror(errno));
        if (pfd[0].revents) break;  // SIGTERM or SIGINT
        if (pfd[1].revents) reap(chldfd, children);
        if (!(pfd[2].revents & POLLIN)) continue;
        // Take every pending connection before polling again (bounded, so signals are seen).
        for (int i = 0; i < 64; ++i) {
            int fd = accept_connection(lfd, false);
            if (fd < 0) {
                if (errno == EMFILE) continue;
                break;
            }
            pid_t pid = fork();
            if (pid == 0) {
                // The child: drop the parent's sockets and signal plumbing, take signals again.
                close(lfd);
                close_reserve_fd();
                close(sigfd);
                close(chldfd);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, nullptr);
                serve(fd, opts.proto, id);
                close(fd);
                _exit(0);
            }
            if (pid < 0) warn_fork_failed(errno);
            else children.insert(pid);
            close(fd);  // the parent's copy; the child holds the connection
        }
    }
    close(lfd);
    stop_children(chldfd, children);
    return 0;
}
