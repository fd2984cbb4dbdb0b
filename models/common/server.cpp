// Shared server plumbing (see server.hpp).
#include "server.hpp"

#include "concbench/work.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#ifdef __linux__
#include <sys/signalfd.h>
#endif
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <mutex>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>
#include <thread>
#include <vector>

namespace concbench {
namespace {

std::string g_prog = "server";
int g_reserve_fd = -1;  // kept open so EMFILE can be answered (see accept_connection)

void vprint(const char* fmt, va_list ap) {
    char msg[512];
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    std::fprintf(stderr, "%s: %s\n", g_prog.c_str(), msg);
}

}  // namespace

void fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
    std::exit(2);
}

void warn(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
}

ServerOptions parse_options(int argc, char** argv, const ModelTraits& traits) {
    g_prog = std::string("server-") + traits.name;
    ServerOptions o;
    o.workers = traits.default_workers;
    CLI::App app{std::string("concbench server, model '") + traits.name + "'", g_prog};
    std::string proto = "http";
    app.add_option("--proto", proto, "protocol: http or echo")
        ->check(CLI::IsMember({"http", "echo"}));
    app.add_option("--host", o.host, "address to listen on (an IP literal)");
    app.add_option("--port", o.port, "port to listen on; 0 picks a free one")
        ->check(CLI::Range(0, 65535));
    std::string backend;
    app.add_option("--backend", backend, "HOST:PORT of the server fan-out calls go to");
    app.add_option("--docroot", o.docroot, "directory /file/NAME is served from")
        ->check(CLI::ExistingDirectory);
    if (traits.has_workers)
        app.add_option("--workers", o.workers, "worker count")->check(CLI::Range(1, 4096));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) std::exit(app.exit(e));
        // CLI11 messages are one line already; keep them to one line with our prefix.
        fatal("%s (see --help)", e.what());
    }
    parse_proto(proto, o.proto);
    if (!backend.empty()) {
        std::size_t colon = backend.rfind(':');
        unsigned long port = 0;
        char* end = nullptr;
        if (colon != std::string::npos) port = std::strtoul(backend.c_str() + colon + 1, &end, 10);
        in_addr a;
        if (colon == std::string::npos || !end || *end || port == 0 || port > 65535 ||
            inet_pton(AF_INET, backend.substr(0, colon).c_str(), &a) != 1)
            fatal("--backend: '%s' is not IPv4-ADDRESS:PORT", backend.c_str());
        o.backend_host = backend.substr(0, colon);
        o.backend_port = static_cast<uint16_t>(port);
    }
    in6_addr a6;
    in_addr a4;
    if (inet_pton(AF_INET, o.host.c_str(), &a4) != 1 && inet_pton(AF_INET6, o.host.c_str(), &a6) != 1)
        fatal("--host: '%s' is not an IPv4 or IPv6 address", o.host.c_str());
    // GET /work/US's rounds per µs, measured before the server listens (and before a pre-forking
    // model forks, so its processes share one figure) rather than in the first request.
    if (o.proto == Proto::http) calibrate_work();
    return o;
}

ServerIdentity identity(const ModelTraits& traits) {
    return ServerIdentity{std::string("concbench-") + traits.name};
}

int stop_signal_fd() {
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
#ifdef __linux__
    if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) fatal("sigprocmask: %s", strerror(errno));
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) fatal("signalfd: %s", strerror(errno));
    return fd;
#else
    return signal_pipe({SIGTERM, SIGINT});
#endif
}

#ifndef __linux__
namespace {
std::atomic<int> g_signal_pipe[NSIG];  // write end per signal number, 0 = none

void on_signal(int sig) {
    int saved = errno;
    int fd = g_signal_pipe[sig].load(std::memory_order_relaxed);
    if (fd > 0) (void)!write(fd, "s", 1);  // full pipe: a wake-up is already pending
    errno = saved;
}

void set_flags(int fd, int fl) {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | fl);
}
}  // namespace

int signal_pipe(std::initializer_list<int> sigs) {
    int p[2];
    if (pipe(p) != 0) fatal("pipe: %s", strerror(errno));
    set_flags(p[0], O_NONBLOCK);
    set_flags(p[1], O_NONBLOCK);
    for (int sig : sigs) {
        g_signal_pipe[sig] = p[1];
        struct sigaction sa{};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
        if (sigaction(sig, &sa, nullptr) != 0) fatal("sigaction: %s", strerror(errno));
    }
    return p[0];
}
#endif

int listen_socket(ServerOptions& opts, bool reuseport) {
    sockaddr_storage ss{};
    socklen_t len;
    int family;
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, opts.host.c_str(), &s4->sin_addr) == 1) {
        family = s4->sin_family = AF_INET;
        s4->sin_port = htons(opts.port);
        len = sizeof *s4;
    } else if (inet_pton(AF_INET6, opts.host.c_str(), &s6->sin6_addr) == 1) {
        family = s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(opts.port);
        len = sizeof *s6;
    } else {
        fatal("--host: '%s' is not an IP address", opts.host.c_str());
    }
#ifdef __APPLE__
    int fd = socket(family, SOCK_STREAM, 0);  // macOS: no SOCK_NONBLOCK / SOCK_CLOEXEC
    if (fd >= 0) set_flags(fd, O_NONBLOCK);
#else
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#endif
    if (fd < 0) fatal("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        fatal("SO_REUSEPORT: %s", strerror(errno));
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
        fatal("bind %s:%u: %s", opts.host.c_str(), opts.port, strerror(errno));
    if (listen(fd, SOMAXCONN) != 0) fatal("listen: %s", strerror(errno));
    if (opts.port == 0) {
        len = sizeof ss;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
            fatal("getsockname: %s", strerror(errno));
        opts.port = ntohs(family == AF_INET ? s4->sin_port : s6->sin6_port);
    }
    if (g_reserve_fd < 0) g_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd;
}

void announce_listening(int listen_fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        fatal("getsockname: %s", strerror(errno));
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss.ss_family == AF_INET) {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
        std::printf("listening %s:%u\n", host, port);
    } else {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
        std::printf("listening [%s]:%u\n", host, port);
    }
    std::fflush(stdout);
}

void close_reserve_fd() {
    if (g_reserve_fd >= 0) close(g_reserve_fd);
    g_reserve_fd = -1;
}

void run_workers(int n, int listen_fd, const std::function<void(int)>& run) {
    std::vector<std::thread> threads;
    try {
        for (int i = 1; i < n; ++i) threads.emplace_back(run, i);
    } catch (const std::system_error& e) {
        fatal("cannot start worker %zu: %s", threads.size() + 1, e.what());
    }
    announce_listening(listen_fd);
    run(0);
    for (auto& t : threads) t.join();
}

#ifdef __APPLE__
// macOS has no accept4: the flags are set after accept (no exec can happen in between in a
// server), and SO_NOSIGPIPE stands in for MSG_NOSIGNAL.
static int accept4(int listen_fd, sockaddr* addr, socklen_t* len, int nonblocking_flag) {
    int fd = accept(listen_fd, addr, len);
    if (fd < 0) return fd;
    set_flags(fd, nonblocking_flag ? O_NONBLOCK : 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    return fd;
}
#define SOCK_CLOEXEC 0
#define SOCK_NONBLOCK 1
#endif

int accept_connection(int listen_fd, bool nonblocking) {
    int flags = SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
    int fd = accept4(listen_fd, nullptr, nullptr, flags);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
    }
    if (errno == EMFILE || errno == ENFILE) {
        // Out of fds: the pending connection would keep the listener readable forever. Free the
        // reserve, take the connection and close it, then re-arm the reserve (libuv's trick).
        static std::atomic<long> last_warn{0};
        long now = static_cast<long>(time(nullptr));
        if (last_warn.exchange(now) != now)
            warn("accept: %s: closing new connections until fds free up", strerror(errno));
        static std::mutex reserve_mu;  // workers share the reserve fd
        std::lock_guard<std::mutex> lock(reserve_mu);
        // Lost last time (another thread took the freed number first): try to get it back.
        if (g_reserve_fd < 0) g_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (g_reserve_fd < 0 && !nonblocking) {
            // Nothing to shed with: the listener stays readable, and a blocking acceptor would
            // spin on it. Pause instead (an event loop pauses its listener by its own timer).
            poll(nullptr, 0, 10);
        }
        if (g_reserve_fd >= 0) {
            close(g_reserve_fd);
            // Linux reports EMFILE before it waits, so on a blocking listener take the pending
            // connection only if there is one (never block here and discard the next client).
            pollfd p{listen_fd, POLLIN, 0};
            if (poll(&p, 1, 0) == 1) {
                int c = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (c >= 0) close(c);
            }
            g_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
        errno = EMFILE;
        return -1;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) errno = EAGAIN;
    return -1;
}

int open_docroot_file(const ServerOptions& opts, const std::string& name, long long& size) {
    if (opts.docroot.empty()) return -1;
    std::string path = opts.docroot + "/" + name;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    size = static_cast<long long>(st.st_size);
    return fd;
}

bool backend_address(const ServerOptions& opts, sockaddr_in& addr) {
    if (opts.backend_host.empty()) return false;
    addr = sockaddr_in{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(opts.backend_port);
    return inet_pton(AF_INET, opts.backend_host.c_str(), &addr.sin_addr) == 1;
}

bool write_outbox(int fd, Outbox& out) {
    iovec iov[64];
    while (!out.empty()) {
        int n = out.fill(iov, 64);
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN;  // the socket is full: wait for it to drain
        }
        out.consume(static_cast<std::size_t>(w));
    }
    return true;
}

}  // namespace concbench
