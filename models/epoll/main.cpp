// server-epoll (and server-poll, server-select): the hand-rolled reactor. Non-blocking sockets,
// one state machine per connection, level-triggered readiness from the reactor core
// (models/common/reactor.hpp). This file is the one server loop of the three reactor models:
// each model folder compiles it against its backend library (reactor_epoll, reactor_poll,
// reactor_select), so the models differ in the backend and nothing else.
//   - read once per readiness into the loop's one shared buffer and feed the sans-IO session;
//   - write at once; only on EAGAIN wait for writability, and stop reading until the output has
//     drained (backpressure: a client that never reads cannot make us buffer without bound);
//   - an idle connection holds its parser state and nothing else;
//   - --workers N: N such loops, one thread each, each with its own listening socket on the same
//     port (SO_REUSEPORT: the kernel spreads new connections) — nginx's worker layout. The thread
//     that reads SIGTERM from the signalfd writes an eventfd every other loop watches.
// Linux (epoll, eventfd, SO_REUSEPORT). Run: server-epoll --proto http --host 127.0.0.1 --port 0
//   [--workers N]
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <thread>
#include <vector>

#include "reactor.hpp"
#include "server.hpp"

using namespace concbench;

namespace {

// CONCBENCH_MODEL is the model folder's name ("epoll", "poll", "select"): see concbench_add_model.
constexpr ModelTraits kTraits{CONCBENCH_MODEL, true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;

struct Worker;

struct Conn final : Watcher {
    Worker* wk;
    std::unique_ptr<Session> session;
    Conn *prev = nullptr, *next = nullptr;  // the worker's list of open connections
    void on_ready(int ready) override;
};

struct Listener final : Watcher {
    Worker* wk;
    void on_ready(int) override;
};

// The signalfd (one worker) or the shared stop eventfd (the others, with --workers N > 1).
struct Stop final : Watcher {
    Worker* wk;
    bool is_signalfd = false;
    int wake_fd = -1;  // the eventfd to write when the signal comes, if there are other workers
    void on_ready(int) override;
};

struct Worker {
    Reactor reactor;
    ServerOptions opts;
    ServerIdentity id;
    Listener listener;
    Stop stop;
    Conn* conns = nullptr;
    char buf[kReadBuffer];

    void open_conn(int fd) {
        Conn* c = new Conn;
        c->fd = fd;
        c->wk = this;
        if (!reactor.try_set(*c, kReadable)) {  // e.g. select: fd >= FD_SETSIZE
            refused(fd, errno);
            close(fd);
            delete c;
            return;
        }
        c->session = make_session(opts.proto, id);
        c->next = conns;
        if (conns) conns->prev = c;
        conns = c;
    }
    void refused(int fd, int err) {
        static std::atomic<long> last_warn{0};  // at most one line a second, all workers together
        long now = static_cast<long>(time(nullptr));
        if (last_warn.exchange(now) == now) return;
        const char* why = err == EMFILE ? "beyond the backend's fd limit" : strerror(err);  // see backend_set
        warn("%s: cannot watch fd %d (%s): connection refused", reactor.backend(), fd, why);
    }
    void close_conn(Conn* c) {
        reactor.set(*c, 0);
        close(c->fd);
        if (c->prev) c->prev->next = c->next;
        else conns = c->next;
        if (c->next) c->next->prev = c->prev;
        delete c;
    }
    // After the session produced output: write what the socket takes, then decide what to wait
    // for next. Returns false if the connection was closed.
    bool flush(Conn* c) {
        Outbox& out = c->session->out();
        if (!write_outbox(c->fd, out)) {
            close_conn(c);
            return false;
        }
        if (!out.empty()) {
            reactor.set(*c, kWritable);
            return true;
        }
        if (c->session->close_after_write()) {
            close_conn(c);
            return false;
        }
        reactor.set(*c, kReadable);
        return true;
    }
    // Serves until stopped, then closes the listener and every connection.
    void run() {
        reactor.run();
        reactor.set(listener, 0);
        close(listener.fd);
        while (conns) close_conn(conns);
    }
};

void Conn::on_ready(int ready) {
    Worker& w = *wk;
    if (mask & kWritable) {  // waiting for output to drain
        if (ready & kWritable) w.flush(this);
        return;
    }
    ssize_t n = read(fd, w.buf, sizeof w.buf);
    if (n > 0) {
        session->feed(w.buf, static_cast<std::size_t>(n));
        w.flush(this);
    } else if (n == 0) {
        session->peer_closed();
        w.flush(this);
    } else if (errno != EAGAIN && errno != EINTR) {
        w.close_conn(this);  // reset by peer
    }
}

void Listener::on_ready(int) {
    // Take what is pending, in a bounded batch so established connections are not starved.
    for (int i = 0; i < 64; ++i) {
        int fd = accept_connection(this->fd, true);
        if (fd >= 0) wk->open_conn(fd);
        else if (errno != EMFILE) break;
    }
}

void Stop::on_ready(int) {
    if (is_signalfd) {
        signalfd_siginfo si;
        while (read(fd, &si, sizeof si) == sizeof si) {
        }
        uint64_t one = 1;
        if (wake_fd >= 0 && write(wake_fd, &one, sizeof one) != sizeof one)
            fatal("eventfd write: %s", strerror(errno));
    }
    // The eventfd is never read: it stays readable, so every worker watching it sees it.
    wk->reactor.stop();
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    int sigfd = stop_signal_fd();  // before any thread starts: they inherit the blocked mask
    const int n = opts.workers;
    int stopfd = n > 1 ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
    if (n > 1 && stopfd < 0) fatal("eventfd: %s", strerror(errno));

    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < n; ++i) {
        auto w = std::make_unique<Worker>();
        w->opts = opts;
        w->id = identity(kTraits);
        w->listener.fd = listen_socket(opts, n > 1);
        w->listener.wk = w.get();
        w->stop.wk = w.get();
        w->stop.is_signalfd = i == 0;
        w->stop.fd = i == 0 ? sigfd : stopfd;
        w->stop.wake_fd = i == 0 ? stopfd : -1;
        w->reactor.set(w->listener, kReadable);
        w->reactor.set(w->stop, kReadable);
        workers.push_back(std::move(w));
    }

    run_workers(n, workers[0]->listener.fd, [&](int i) { workers[i]->run(); });
    return 0;
}
