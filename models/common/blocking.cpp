// Shared by the blocking models (see blocking.hpp).
#include "blocking.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "server.hpp"

namespace concbench {

using namespace std::chrono;

void serve_blocking(int fd, Proto proto, const ServerIdentity& id) {
    std::unique_ptr<Session> session = make_session(proto, id);
    char buf[16 * 1024];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;  // reset by the peer, or shut down by the server
        if (n == 0) session->peer_closed();
        else session->feed(buf, static_cast<std::size_t>(n));
        if (!write_outbox(fd, session->out())) break;
        if (session->close_after_write()) break;
    }
}

Children::Children() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) fatal("sigprocmask: %s", strerror(errno));
    chldfd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (chldfd_ < 0) fatal("signalfd: %s", strerror(errno));
}

int Children::reap(bool warn_signals) {
    signalfd_siginfo si;
    while (read(chldfd_, &si, sizeof si) == sizeof si) {
    }
    int n = 0;
    pid_t pid;
    int status;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        pids_.erase(pid);
        ++n;
        if (warn_signals && WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
            warn("child %d killed by signal %d (%s)", static_cast<int>(pid), WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    }
    return n;
}

void Children::stop_all(seconds grace) {
    for (pid_t pid : pids_) kill(pid, SIGTERM);
    auto deadline = steady_clock::now() + grace;
    while (!pids_.empty()) {
        auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
        if (left <= 0) break;
        pollfd p{chldfd_, POLLIN, 0};
        poll(&p, 1, static_cast<int>(left));
        reap();
    }
    if (pids_.empty()) return;
    warn("%zu children still running %lld s after SIGTERM: killing them", pids_.size(),
         static_cast<long long>(grace.count()));
    for (pid_t pid : pids_) kill(pid, SIGKILL);
    for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
    pids_.clear();
}

void Children::forget_in_child() {
    close(chldfd_);
    chldfd_ = -1;
    pids_.clear();
}

}  // namespace concbench
