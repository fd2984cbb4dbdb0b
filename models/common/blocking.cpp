// Shared by the blocking models (see blocking.hpp).
#include "blocking.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#ifdef __linux__
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#else
#include <sys/types.h>
#include <sys/uio.h>  // sendfile on FreeBSD and macOS
#endif
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "server.hpp"

namespace concbench {

using namespace std::chrono;

namespace {

// This thread's persistent backend connections (a thread of the threads model, a pooled thread,
// a process): closed when the thread ends.
struct BackendPool {
    std::vector<int> idle;
    ~BackendPool() {
        for (int fd : idle) close(fd);
    }
    int take(const sockaddr_in& addr) {
        if (!idle.empty()) {
            int fd = idle.back();
            idle.pop_back();
            return fd;
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
};
thread_local BackendPool t_backends;

bool send_all(int fd, const std::string& s) {
    for (std::size_t off = 0; off < s.size();) {
        ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        off += static_cast<std::size_t>(n);
    }
    return true;
}

// Sleeps `ms`, unless the client connection hangs up first (returns false then).
bool sleep_unless_hangup(int client, int ms) {
    auto deadline = steady_clock::now() + milliseconds(ms);
    for (;;) {
        auto now = steady_clock::now();
        if (now >= deadline) return true;
        // Rounded up: a wait never ends before its time.
        auto left = ceil<milliseconds>(deadline - now).count();
        pollfd p{client, 0, 0};  // no events asked: only POLLHUP / POLLERR wake it
        int r = poll(&p, 1, static_cast<int>(left));
        if (r > 0) return false;
    }
}

// One blocking read of a backend answer; false on error, reset, or the client hanging up.
bool read_answer(int backend, int client, BackendReader& reader) {
    char buf[4096];
    for (;;) {
        pollfd p[2] = {{backend, POLLIN, 0}, {client, 0, 0}};
        if (poll(p, 2, 30 * 1000) <= 0) return false;  // 30 s: a stuck backend ends the call
        if (p[1].revents) return false;
        ssize_t n = recv(backend, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        switch (reader.feed(buf, static_cast<std::size_t>(n))) {
            case BackendReader::State::more: continue;
            case BackendReader::State::done: return reader.status() == 200;
            case BackendReader::State::error: return false;
        }
    }
}

// The K calls of a fan-out: write every request, then read every answer.
void fanout(Session& s, int client, const ServerOptions& opts) {
    const Effect& e = s.effect();
    sockaddr_in addr;
    if (!backend_address(opts, addr)) return s.complete_fanout({}, false);
    std::vector<int> fds;
    bool ok = true;
    for (int i = 0; ok && i < e.calls; ++i) {
        int fd = t_backends.take(addr);
        if (fd < 0 || !send_all(fd, backend_request(e.ms, i))) {
            if (fd >= 0) close(fd);
            ok = false;
            break;
        }
        fds.push_back(fd);
    }
    std::vector<std::string> bodies(fds.size());
    BackendReader reader;
    for (std::size_t i = 0; i < fds.size(); ++i) {
        reader.reset();
        bool got = ok && read_answer(fds[i], client, reader);
        if (got && reader.keep_alive()) t_backends.idle.push_back(fds[i]);
        else close(fds[i]);  // failed, or an answer left unread: never reused
        if (got) bodies[i] = reader.body();
        ok = ok && got;
    }
    s.complete_fanout(bodies, ok);
}

// Up to `count` bytes of file f from *off to the socket; advances *off. Linux's signature;
// FreeBSD and macOS swap the fds and report the bytes sent through a pointer. <= 0: error or EOF.
ssize_t sendfile_some(int sock, int f, off_t* off, std::size_t count) {
#if defined(__linux__)
    return sendfile(sock, f, off, count);
#else
#if defined(__APPLE__)
    off_t sent = static_cast<off_t>(count);  // in: how many; out: how many went
    int r = sendfile(f, sock, *off, &sent, nullptr, 0);
#else
    off_t sent = 0;  // FreeBSD: nbytes 0 would mean "to the end of the file"; count is > 0 here
    int r = sendfile(f, sock, *off, count, nullptr, &sent, 0);
#endif
    *off += sent;
    if (r < 0 && sent == 0) return -1;  // EINTR with bytes sent counts as progress
    return static_cast<ssize_t>(sent);
#endif
}

// Sends the file's head (in the outbox) and then its bytes. False if the client is gone.
bool send_file(Session& s, int client, const ServerOptions& opts) {
    long long size = 0;
    int f = open_docroot_file(opts, s.effect().file, size);
    std::size_t n = s.complete_file(f < 0 ? -1 : size);
    bool ok = write_outbox(client, s.out());
    off_t off = 0;
    while (ok && static_cast<std::size_t>(off) < n) {
        ssize_t w = sendfile_some(client, f, &off, n - static_cast<std::size_t>(off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) ok = false;  // an error, or the file shrank under us
    }
    if (f >= 0) close(f);
    if (ok && n) s.file_sent();
    return ok;
}

// Carries out effects until the session needs input again. False: drop the connection.
bool run_effects(Session& s, int client, const ServerOptions& opts) {
    while (s.busy()) {
        if (!write_outbox(client, s.out())) return false;  // answers before the effect go first
        switch (s.effect().kind) {
            case Effect::Kind::wait:
                if (!sleep_unless_hangup(client, s.effect().ms)) return false;
                s.complete_wait();
                break;
            case Effect::Kind::fanout:
                fanout(s, client, opts);
                break;
            case Effect::Kind::file:
                if (!send_file(s, client, opts)) return false;
                break;
            case Effect::Kind::none:
                break;
        }
    }
    return true;
}

}  // namespace

void serve_blocking(int fd, const ServerOptions& opts, const ServerIdentity& id) {
    std::unique_ptr<Session> session = make_session(opts.proto, id);
    char buf[16 * 1024];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;  // reset by the peer, or shut down by the server
        if (n == 0) session->peer_closed();
        else session->feed(buf, static_cast<std::size_t>(n));
        if (!run_effects(*session, fd, opts)) break;
        if (!write_outbox(fd, session->out())) break;
        if (session->close_after_write()) break;
        if (n == 0) break;  // nothing more will come
    }
}

Children::Children() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
#ifdef __linux__
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) fatal("sigprocmask: %s", strerror(errno));
    chldfd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (chldfd_ < 0) fatal("signalfd: %s", strerror(errno));
#else
    chldfd_ = signal_pipe({SIGCHLD});
#endif
}

int Children::reap(bool warn_signals) {
#ifdef __linux__
    signalfd_siginfo si;
    while (read(chldfd_, &si, sizeof si) == sizeof si) {
    }
#else
    char drain[64];
    while (read(chldfd_, drain, sizeof drain) > 0) {
    }
#endif
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
#ifndef __linux__
    signal(SIGCHLD, SIG_DFL);  // the self-pipe's handler would write to the parent's pipe
#endif
    close(chldfd_);
    chldfd_ = -1;
    pids_.clear();
}

}  // namespace concbench
