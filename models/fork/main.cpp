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

#include "blocking.hpp"
#include "server.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

constexpr ModelTraits kTraits{"fork", false, 1};
constexpr seconds kStopGrace{4};

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
    Children children;
    int lfd = listen_socket(opts);
    announce_listening(lfd);

    pollfd pfd[3] = {{sigfd, POLLIN, 0}, {children.signal_fd(), POLLIN, 0}, {lfd, POLLIN, 0}};
    for (;;) {
        if (poll(pfd, 3, -1) < 0 && errno != EINTR) fatal("poll: %s", strerror(errno));
        if (pfd[0].revents) break;  // SIGTERM or SIGINT
        if (pfd[1].revents) children.reap();
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
                children.forget_in_child();
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, nullptr);
                serve_blocking(fd, opts, id);
                close(fd);
                _exit(0);
            }
            if (pid < 0) warn_fork_failed(errno);
            else children.add(pid);
            close(fd);  // the parent's copy; the child holds the connection
        }
    }
    close(lfd);
    children.stop_all(kStopGrace);
    return 0;
}
