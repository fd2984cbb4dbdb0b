// server-epoll (and server-poll, server-select, server-kqueue): the hand-rolled reactor. Non-blocking sockets,
// one state machine per connection, level-triggered readiness from the reactor core
// (models/common/reactor.hpp). This file is the one server loop of the three reactor models:
// each model folder compiles it against its backend library (reactor_epoll, reactor_poll,
// reactor_select, reactor_kqueue), so the models differ in the backend and nothing else.
//   - read once per readiness into the loop's one shared buffer and feed the sans-IO session;
//   - write at once; only on EAGAIN wait for writability, and stop reading until the output has
//     drained (backpressure: a client that never reads cannot make us buffer without bound);
//   - an idle connection holds its parser state and nothing else;
//   - effects, the reactor way (nginx's): wait arms a timer of the reactor; fan-out sends K
//     calls on non-blocking backend connections from the worker's pool (kept open, re-used,
//     watched while idle so a backend close is noticed) and a counter completes it; a file goes
//     out with non-blocking sendfile() as the socket takes it. A connection with an effect in
//     progress is still read (a reset is seen at once; pipelined input is held by the session)
//     until 64 KiB have arrived meanwhile;
//   - --workers N: N such loops, one thread each, each with its own listening socket on the same
//     port (SO_REUSEPORT: the kernel spreads new connections) — nginx's worker layout. The thread
//     that reads SIGTERM from the signalfd writes an eventfd every other loop watches.
// Linux (signalfd, eventfd, SO_REUSEPORT); on FreeBSD and macOS (server-kqueue, poll, select) a
// self-pipe and a pipe instead, and their sendfile(2): platform.hpp. Run: server-epoll --proto
//   http --host 127.0.0.1 --port 0 [--workers N]
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "platform.hpp"
#include "reactor.hpp"
#include "server.hpp"

using namespace concbench;

namespace {

// CONCBENCH_MODEL is the model folder's name ("epoll", "poll", "select"): see concbench_add_model.
constexpr ModelTraits kTraits{CONCBENCH_MODEL, true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr std::size_t kMaxHeldInput = 64 * 1024;  // input held while an effect is under way

struct Worker;
struct Conn;

// One call of a fan-out on a backend connection (pooled between calls).
struct Backend final : Watcher {
    Worker* wk;
    BackendReader reader;
    std::string request;       // unsent part of the call's request
    Conn* client = nullptr;    // the connection whose fan-out this call serves (null: pooled)
    int index = 0;             // which call of it
    bool connecting = false, dead = false;
    void on_ready(int ready) override;
};

// What a connection holds while an effect is in progress (made on demand: idle ones hold none).
struct EffectState final : Timer {
    Conn* conn;
    bool active = false;              // the effect is under way (a timer armed, calls out)
    bool starting = false;            // fan-out: its calls are being sent (completions wait)
    std::size_t held_input = 0;       // bytes read while it was under way (held by the session)
    std::vector<std::string> bodies;  // fan-out: the answers so far
    std::vector<Backend*> calls;      // fan-out: the calls still out
    int pending = 0;
    bool ok = true;
    int file = -1;                    // file: the open file and what is left to send
    off_t file_off = 0;
    std::size_t file_left = 0;
    void on_timer() override;
};

struct Conn final : Watcher {
    Worker* wk;
    std::unique_ptr<Session> session;
    std::unique_ptr<EffectState> fx;
    bool closed = false;
    bool eof = false;  // the peer closed its side (nothing more to read)
    Conn *prev = nullptr, *next = nullptr;  // the worker's list of open connections
    void on_ready(int ready) override;
};

// Out of fds, it sheds what is pending and stops watching the listener for 10 ms (a timer), as
// the uring and Asio models do, instead of spinning on a listener that stays readable.
struct Listener final : Watcher, Timer {
    Worker* wk;
    void on_ready(int) override;
    void on_timer() override;
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
    std::vector<Backend*> pool;                   // idle backend connections
    std::vector<Conn*> dead_conns;                // closed in this batch, freed after it
    std::vector<Backend*> dead_backends;
    sockaddr_in backend_addr{};
    bool has_backend = false;
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
    // Closes the socket and abandons its effect at once; the memory goes after the batch, since
    // a watcher of this batch (a backend call) may still point at it.
    void close_conn(Conn* c) {
        if (c->closed) return;
        c->closed = true;
        reactor.set(*c, 0);
        close(c->fd);
        if (EffectState* fx = c->fx.get()) {
            reactor.disarm(*fx);
            for (Backend* b : fx->calls) drop_backend(b);  // an answer left unread: not reusable
            fx->calls.clear();
            if (fx->file >= 0) close(fx->file);
            fx->file = -1;
        }
        if (c->prev) c->prev->next = c->next;
        else conns = c->next;
        if (c->next) c->next->prev = c->prev;
        dead_conns.push_back(c);
    }
    void free_dead() {
        for (Conn* c : dead_conns) delete c;
        dead_conns.clear();
        for (Backend* b : dead_backends) delete b;
        dead_backends.clear();
    }

    // Moves a connection on after anything happened to it: write its output (and a file's
    // bytes), carry out its next effect, then wait for what comes next. False if it was closed.
    bool progress(Conn* c) {
        for (;;) {
            Session& s = *c->session;
            Outbox& out = s.out();
            if (!write_outbox(c->fd, out)) return close_conn(c), false;
            if (!out.empty()) {
                reactor.set(*c, kWritable);
                return true;
            }
            EffectState* fx = c->fx.get();
            if (fx && fx->file >= 0) {
                int r = send_file_part(c);
                if (r < 0) return close_conn(c), false;
                if (r == 0) {
                    reactor.set(*c, kWritable);
                    return true;
                }
                s.file_sent();
                continue;
            }
            if (s.busy()) {
                if (fx && fx->active) {
                    // Under way. Keep reading (the session holds what comes, and a reset is seen
                    // at once) unless more than kMaxHeldInput arrived meanwhile: backpressure.
                    reactor.set(*c, fx->held_input < kMaxHeldInput && !c->eof ? kReadable : 0);
                    return true;
                }
                start_effect(c);
                continue;
            }
            if (s.close_after_write()) return close_conn(c), false;
            reactor.set(*c, kReadable);
            return true;
        }
    }

    void start_effect(Conn* c) {
        if (!c->fx) {
            c->fx = std::make_unique<EffectState>();
            c->fx->conn = c;
        }
        EffectState& fx = *c->fx;
        Session& s = *c->session;
        const Effect& e = s.effect();
        fx.held_input = 0;
        switch (e.kind) {
            case Effect::Kind::wait:
                fx.active = true;
                reactor.arm(fx, e.ms);
                return;
            case Effect::Kind::fanout:
                return start_fanout(c, e);
            case Effect::Kind::file: {
                long long size = 0;
                int f = open_docroot_file(opts, e.file, size);
                std::size_t n = s.complete_file(f < 0 ? -1 : size);
                if (n == 0) {
                    if (f >= 0) close(f);
                    return;
                }
                fx.file = f;
                fx.file_off = 0;
                fx.file_left = n;
                return;
            }
            case Effect::Kind::none:
                return;
        }
    }
    // 1: the whole file is sent; 0: the socket is full; -1: an error.
    int send_file_part(Conn* c) {
        EffectState& fx = *c->fx;
        while (fx.file_left > 0) {
            ssize_t w = platform::send_file(c->fd, fx.file, &fx.file_off, fx.file_left);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && errno == EAGAIN) return 0;
            if (w <= 0) return -1;  // an error, or the file shrank under us
            fx.file_left -= static_cast<std::size_t>(w);
        }
        close(fx.file);
        fx.file = -1;
        return 1;
    }

    void start_fanout(Conn* c, const Effect& e) {
        EffectState& fx = *c->fx;
        fx.active = true;
        fx.ok = true;
        fx.pending = e.calls;
        fx.bodies.assign(static_cast<std::size_t>(e.calls), std::string());
        fx.calls.clear();
        // Calls that fail right away only count down here; the fan-out completes after the loop
        // (the caller, progress(), goes on with the connection), never in the middle of it.
        fx.starting = true;
        const int calls = e.calls, ms = e.ms;
        for (int i = 0; i < calls; ++i) {
            Backend* b = take_backend();
            if (!b) {
                call_done(c, false);
                continue;
            }
            b->client = c;
            b->index = i;
            b->request = backend_request(ms, i);
            b->reader.reset();
            fx.calls.push_back(b);
            if (!b->connecting) backend_send(b);
        }
        fx.starting = false;
        if (fx.pending == 0) finish_fanout(c);
    }
    Backend* take_backend() {
        if (!has_backend) return nullptr;
        if (!pool.empty()) {
            Backend* b = pool.back();
            pool.pop_back();
            return b;
        }
        int fd = platform::stream_socket();
        if (fd < 0) return nullptr;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int r = connect(fd, reinterpret_cast<const sockaddr*>(&backend_addr), sizeof backend_addr);
        if (r != 0 && errno != EINPROGRESS) {
            close(fd);
            return nullptr;
        }
        Backend* b = new Backend;
        b->fd = fd;
        b->wk = this;
        b->connecting = r != 0;
        if (!reactor.try_set(*b, b->connecting ? kWritable : kReadable)) {
            close(fd);
            delete b;
            return nullptr;
        }
        return b;
    }
    void backend_send(Backend* b) {
        while (!b->request.empty()) {
            ssize_t n = send(b->fd, b->request.data(), b->request.size(), platform::kSendFlags);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return reactor.set(*b, kWritable);
            if (n <= 0) return backend_failed(b);
            b->request.erase(0, static_cast<std::size_t>(n));
        }
        reactor.set(*b, kReadable);
    }
    void backend_failed(Backend* b) {
        Conn* c = b->client;
        drop_backend(b);
        if (c) {
            auto& calls = c->fx->calls;
            calls.erase(std::find(calls.begin(), calls.end(), b));
            call_done(c, false);
        }
    }
    void drop_backend(Backend* b) {
        if (b->dead) return;
        b->dead = true;
        reactor.set(*b, 0);
        close(b->fd);
        if (!b->client) pool.erase(std::remove(pool.begin(), pool.end(), b), pool.end());
        b->client = nullptr;
        dead_backends.push_back(b);
    }
    void backend_answered(Backend* b) {
        Conn* c = b->client;
        EffectState& fx = *c->fx;
        bool ok = b->reader.status() == 200;
        if (ok) fx.bodies[static_cast<std::size_t>(b->index)] = b->reader.body();
        fx.calls.erase(std::find(fx.calls.begin(), fx.calls.end(), b));
        if (b->reader.keep_alive()) {
            b->client = nullptr;
            pool.push_back(b);  // stays watched for readable: a backend close is noticed
        } else {
            b->client = nullptr;
            drop_backend(b);
        }
        call_done(c, ok);
    }
    void call_done(Conn* c, bool ok) {
        EffectState& fx = *c->fx;
        fx.ok = fx.ok && ok;
        if (--fx.pending > 0 || fx.starting) return;
        finish_fanout(c);
        progress(c);
    }
    void finish_fanout(Conn* c) {
        EffectState& fx = *c->fx;
        fx.active = false;
        std::vector<std::string> bodies;
        bodies.swap(fx.bodies);
        c->session->complete_fanout(bodies, fx.ok);
    }

    // Serves until stopped, then closes the listener and every connection.
    void run() {
        has_backend = backend_address(opts, backend_addr);
        reactor.run([this] { free_dead(); });
        reactor.disarm(listener);
        reactor.set(listener, 0);
        close(listener.fd);
        while (conns) close_conn(conns);
        while (!pool.empty()) drop_backend(pool.back());
        free_dead();
    }
};

void EffectState::on_timer() {
    active = false;
    conn->session->complete_wait();
    conn->wk->progress(conn);
}

void Backend::on_ready(int ready) {
    Worker& w = *wk;
    if (dead) return;
    if (connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) return w.backend_failed(this);
        connecting = false;
        if (client) return w.backend_send(this);
        return w.reactor.set(*this, kReadable);
    }
    if ((mask & kWritable) && (ready & kWritable)) return w.backend_send(this);
    ssize_t n = recv(fd, w.buf, sizeof w.buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0 || !client) return w.backend_failed(this);  // closed, reset, or bytes unasked for
    switch (reader.feed(w.buf, static_cast<std::size_t>(n))) {
        case BackendReader::State::more: return;
        case BackendReader::State::done: return w.backend_answered(this);
        case BackendReader::State::error: return w.backend_failed(this);
    }
}

void Conn::on_ready(int ready) {
    Worker& w = *wk;
    if (closed) return;
    if (mask & kWritable) {  // waiting for output to drain
        if (ready & kWritable) w.progress(this);
        return;
    }
    ssize_t n = read(fd, w.buf, sizeof w.buf);
    if (n > 0) {
        if (fx && fx->active) fx->held_input += static_cast<std::size_t>(n);
        session->feed(w.buf, static_cast<std::size_t>(n));
        w.progress(this);
    } else if (n == 0) {
        eof = true;
        session->peer_closed();
        w.progress(this);
    } else if (errno != EAGAIN && errno != EINTR) {
        w.close_conn(this);  // reset by peer
    }
}

void Listener::on_ready(int) {
    // Take what is pending, in a bounded batch so established connections are not starved.
    for (int i = 0; i < 64; ++i) {
        int fd = accept_connection(this->fd, true);
        if (fd >= 0) {
            wk->open_conn(fd);
        } else if (errno == EMFILE) {
            wk->reactor.set(*this, 0);
            wk->reactor.arm(*this, 10);
            return;
        } else {
            break;
        }
    }
}

void Listener::on_timer() {
    if (wk->reactor.running()) wk->reactor.set(*this, kReadable);
}

void Stop::on_ready(int) {
    if (is_signalfd) {
        platform::drain_stop_signal(fd);
        if (wake_fd >= 0 && !platform::wake(wake_fd)) fatal("wake-up write: %s", strerror(errno));
    }
    // The eventfd (pipe) is never read: it stays readable, so every worker watching it sees it.
    wk->reactor.stop();
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    // A signalfd on Linux, a self-pipe's read end elsewhere (server.hpp); before any thread starts:
    // they inherit the blocked mask.
    int sigfd = stop_signal_fd();
    const int n = opts.workers;
    platform::Wake stopfd;  // Linux: one eventfd; FreeBSD/macOS: a pipe
    if (n > 1 && !platform::make_wake(stopfd)) fatal("eventfd: %s", strerror(errno));

    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < n; ++i) {
        auto w = std::make_unique<Worker>();
        w->opts = opts;
        w->id = identity(kTraits);
        w->listener.fd = listen_socket(opts, n > 1);
        w->listener.wk = w.get();
        w->stop.wk = w.get();
        w->stop.is_signalfd = i == 0;
        w->stop.fd = i == 0 ? sigfd : stopfd.watch;
        w->stop.wake_fd = i == 0 ? stopfd.signal : -1;
        w->reactor.set(w->listener, kReadable);
        w->reactor.set(w->stop, kReadable);
        workers.push_back(std::move(w));
    }

    run_workers(n, workers[0]->listener.fd, [&](int i) { workers[i]->run(); });
    return 0;
}
