// The reactor server's platform bits (models/epoll/main.cpp): how SIGTERM/SIGINT reach the loop,
// how the signalled worker wakes the others, sendfile, sockets that raise no SIGPIPE.
//   Linux: a signalfd (concbench::stop_signal_fd), an eventfd, sendfile(2) of <sys/sendfile.h>,
//   MSG_NOSIGNAL. FreeBSD and macOS: the self-pipe trick (concbench::stop_signal_fd's: a
//   SIGTERM/SIGINT handler writes a byte to a pipe the loop watches — EVFILT_SIGNAL is not
//   reachable through the reactor interface), a pipe written once and never read for the
//   wake-up, each one's own sendfile(2), and SO_NOSIGPIPE where MSG_NOSIGNAL is missing (macOS).
// The FreeBSD/macOS branches have not been compiled on those systems yet.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "server.hpp"

#if defined(__linux__)
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#elif defined(__APPLE__) || defined(__FreeBSD__)
#include <sys/uio.h>
#else
#error "models/epoll/platform.hpp: Linux, FreeBSD or macOS"
#endif

namespace concbench::platform {

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;
#else
constexpr int kSendFlags = 0;  // macOS: SO_NOSIGPIPE on the socket instead (stream_socket)
#endif

// A non-blocking, close-on-exec TCP socket that raises no SIGPIPE (-1 with errno on failure).
inline int stream_socket() {
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
    return socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else  // macOS
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
#endif
}

#if defined(__linux__)

inline void drain_stop_signal(int fd) {
    signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == sizeof si) {
    }
}

// The wake-up the signalled worker gives the others: `watch` stays readable once woken.
struct Wake {
    int watch = -1, signal = -1;
};
inline bool make_wake(Wake& w) {
    w.watch = w.signal = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return w.watch >= 0;
}
inline bool wake(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == sizeof one;
}

// sendfile(2) from `file` at *off (advanced) to socket `s`: bytes sent (0: the file ended), or -1
// with errno (EAGAIN: the socket is full).
inline ssize_t send_file(int s, int file, off_t* off, std::size_t count) { return sendfile(s, file, off, count); }

#else  // FreeBSD, macOS

inline bool nonblocking_pipe(int p[2]) {
    if (pipe(p) != 0) return false;
    for (int i = 0; i < 2; ++i)
        if (fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK) != 0 || fcntl(p[i], F_SETFD, FD_CLOEXEC) != 0)
            return false;
    return true;
}

inline void drain_stop_signal(int fd) {
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

struct Wake {
    int watch = -1, signal = -1;
};
// A pipe written once and never read: its read end stays readable for every worker.
inline bool make_wake(Wake& w) {
    int p[2];
    if (!nonblocking_pipe(p)) return false;
    w.watch = p[0];
    w.signal = p[1];
    return true;
}
inline bool wake(int fd) {
    char c = 1;
    return write(fd, &c, 1) == 1;
}

// The same contract as Linux's: bytes sent, 0 at the file's end, -1 with errno (EAGAIN: full).
// BSD sendfile reports partial progress beside EAGAIN/EINTR: that is returned as a success, and
// the next call meets the full socket.
inline ssize_t send_file(int s, int file, off_t* off, std::size_t count) {
#if defined(__FreeBSD__)
    off_t sent = 0;
    int r = sendfile(file, s, *off, count, nullptr, &sent, 0);
#else  // macOS: len in = bytes to send, out = bytes sent
    off_t sent = static_cast<off_t>(count);
    int r = sendfile(file, s, *off, &sent, nullptr, 0);
#endif
    if (r != 0 && !((errno == EAGAIN || errno == EINTR) && sent > 0)) return -1;
    *off += sent;
    return static_cast<ssize_t>(sent);
}

#endif

}  // namespace concbench::platform
