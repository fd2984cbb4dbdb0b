// server-threads: one thread per connection, blocking sockets. The acceptor waits (poll) on the
// listening socket and the stop signal; each connection's thread reads, feeds the sans-IO
// session and writes until the peer leaves. On SIGTERM the acceptor stops, shuts every
// connection down (unblocking its thread) and waits for the threads to finish.
// Linux. Run: server-threads --proto http --host 127.0.0.1 --port 0
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_set>

#include "blocking.hpp"
#include "server.hpp"

using namespace concbench;

namespace {

constexpr ModelTraits kTraits{"threads", false, 1};

// The open connections, so that shutdown can unblock their threads. A thread removes and
// closes its fd under the lock, so shutdown() never touches a reused fd number.
struct Connections {
    std::mutex mu;
    std::condition_variable idle;
    std::unordered_set<int> fds;

    void add(int fd) {
        std::lock_guard lk(mu);
        fds.insert(fd);
    }
    void close_fd(int fd) {
        std::lock_guard lk(mu);
        fds.erase(fd);
        close(fd);
        if (fds.empty()) idle.notify_all();
    }
    // Unblocks every connection thread and waits (bounded) for all of them to finish.
    bool shutdown_all(std::chrono::seconds limit) {
        std::unique_lock lk(mu);
        for (int fd : fds) shutdown(fd, SHUT_RDWR);
        return idle.wait_for(lk, limit, [&] { return fds.empty(); });
    }
};

void serve(int fd, const ServerOptions& opts, const ServerIdentity& id, Connections& conns) {
    serve_blocking(fd, opts, id);
    conns.close_fd(fd);
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    ServerIdentity id = identity(kTraits);
    int sigfd = stop_signal_fd();  // before any thread starts: they inherit the blocked mask
    int lfd = listen_socket(opts);
    announce_listening(lfd);

    Connections conns;
    pollfd pfd[2] = {{lfd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    for (;;) {
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) fatal("poll: %s", strerror(errno));
        if (pfd[1].revents) break;  // SIGTERM or SIGINT
        if (!(pfd[0].revents & POLLIN)) continue;
        // Take every pending connection before polling again (bounded, so SIGTERM is seen).
        for (int i = 0; i < 64; ++i) {
            int fd = accept_connection(lfd, false);
            if (fd < 0) {
                if (errno == EMFILE) continue;
                break;
            }
            conns.add(fd);
            try {
                std::thread(serve, fd, std::cref(opts), std::cref(id), std::ref(conns)).detach();
            } catch (const std::system_error& e) {
                warn("cannot start a thread for a new connection (%s): closing it", e.what());
                conns.close_fd(fd);
            }
        }
    }
    close(lfd);
    if (!conns.shutdown_all(std::chrono::seconds(4)))
        warn("some connection threads did not finish within 4 s");
    return 0;
}
