// server-epoll: a single-threaded reactor. Non-blocking sockets, one state machine per
// connection, level-triggered readiness from the reactor core (models/common/reactor.hpp).
//   - read once per readiness into the loop's one shared buffer and feed the sans-IO session;
//   - write at once; only on EAGAIN wait for writability, and stop reading until the output has
//     drained (backpressure: a client that never reads cannot make us buffer without bound);
//   - an idle connection holds its parser state and nothing else.
// Linux (epoll). Run: server-epoll --proto http --host 127.0.0.1 --port 0
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "reactor.hpp"
#include "server.hpp"

using namespace concbench;

namespace {

constexpr ModelTraits kTraits{"epoll", false, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;

struct Server;

struct Conn final : Watcher {
    Server* srv;
    std::unique_ptr<Session> session;
    Conn *prev = nullptr, *next = nullptr;  // the server's list of open connections
    void on_ready(int ready) override;
};

struct Listener final : Watcher {
    Server* srv;
    void on_ready(int) override;
};

struct StopSignal final : Watcher {
    Server* srv;
    void on_ready(int) override;
};

struct Server {
    Reactor reactor;
    ServerOptions opts;
    ServerIdentity id;
    Listener listener;
    StopSignal stop;
    Conn* conns = nullptr;
    char buf[kReadBuffer];

    void open_conn(int fd) {
        Conn* c = new Conn;
        c->fd = fd;
        c->srv = this;
        c->session = make_session(opts.proto, id);
        c->next = conns;
        if (conns) conns->prev = c;
        conns = c;
        reactor.set(*c, kReadable);
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
};

void Conn::on_ready(int ready) {
    Server& s = *srv;
    if (mask & kWritable) {  // waiting for output to drain
        if (ready & kWritable) s.flush(this);
        return;
    }
    ssize_t n = read(fd, s.buf, sizeof s.buf);
    if (n > 0) {
        session->feed(s.buf, static_cast<std::size_t>(n));
        s.flush(this);
    } else if (n == 0) {
        session->peer_closed();
        s.flush(this);
    } else if (errno != EAGAIN && errno != EINTR) {
        s.close_conn(this);  // reset by peer
    }
}

void Listener::on_ready(int) {
    // Take what is pending, in a bounded batch so established connections are not starved.
    for (int i = 0; i < 64; ++i) {
        int fd = accept_connection(this->fd, true);
        if (fd >= 0) srv->open_conn(fd);
        else if (errno != EMFILE) break;
    }
}

void StopSignal::on_ready(int) {
    signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == sizeof si) {
    }
    srv->reactor.stop();
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    int sigfd = stop_signal_fd();
    auto srv = std::make_unique<Server>();
    srv->opts = opts;
    srv->id = identity(kTraits);
    srv->listener.fd = listen_socket(opts);
    srv->listener.srv = srv.get();
    srv->stop.fd = sigfd;
    srv->stop.srv = srv.get();
    srv->reactor.set(srv->listener, kReadable);
    srv->reactor.set(srv->stop, kReadable);
    announce_listening(srv->listener.fd);

    srv->reactor.run();

    srv->reactor.set(srv->listener, 0);
    close(srv->listener.fd);
    while (srv->conns) srv->close_conn(srv->conns);
    return 0;
}
