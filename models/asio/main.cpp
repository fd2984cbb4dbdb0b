// server-asio: Boost.Asio in its classic callback style. A tcp::acceptor with async_accept, one
// Conn per connection held by std::shared_ptr (enable_shared_from_this): every pending operation's
// handler owns a reference, and the Conn (with its socket) goes away when the last handler drops it.
//   - read: socket.async_wait(wait_read), then a non-blocking read_some into the io_context's one
//     read buffer, fed to the sans-IO session. No read is in flight while idle, so an idle
//     connection holds no buffer (async_read_some would pin a buffer per connection until data
//     comes: the buffer must stay valid while the read is pending);
//   - the session is freed whenever it is at rest (Session::at_rest(), when flush() goes back to
//     wait_readable) and made again by on_readable when bytes come, as Boost.Beast makes a
//     parser per request: an idle connection holds no session;
//   - write: async_write of the Outbox's segments (Outbox::fill -> asio::const_buffer), one write
//     in flight, consume() in its handler; no read while it is pending (backpressure: a client
//     that never reads cannot make us buffer without bound);
//   - --workers N: N io_contexts, one thread each, each with its own acceptor on an SO_REUSEPORT
//     socket on the same port (the nginx layout);
//   - stop: the project's signalfd (stop_signal_fd) wrapped in a posix::stream_descriptor; worker 0
//     waits on it and posts a shutdown to every io_context: close the acceptor and every socket
//     in the worker's registry, so run() returns;
//   - EMFILE: async_accept fails with no_descriptors; accept_connection() then drops the pending
//     connection with the reserved fd (libuv's trick, as the epoll model does) and we re-arm
//     after a 10 ms pause (accept4 keeps failing at once while out of fds: no spinning).
// Effects (the session's busy(): the client is not read meanwhile), allocated on a connection's
// first effect so an idle connection carries one null pointer for them:
//   - wait: a steady_timer (made once per connection, reused) and its async_wait;
//   - fanout: K calls at once on the worker's pool of keep-alive tcp::socket connections to the
//     backend (async_connect when the pool is empty, async_write, async_read_some into a
//     BackendReader); a shared Fanout with a counter answers when the K-th is back;
//   - file: sendfile(2) on the socket's native handle until it would block, then
//     async_wait(wait_write) (Asio's documented native_non_blocking idiom);
//   - a client reset completes a wait_error armed on the socket: close() cancels the timer, closes
//     the fan-out's in-flight backend connections (never pooled again), closes the file.
// Asio runs sockets on its epoll_reactor on Linux (edge-triggered, registered once per socket).
// Needs Boost >= 1.81 (Asio, header-only), C++20, Linux.
// Run: server-asio --proto http --host 127.0.0.1 --port 0 [--workers N]
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "asio_common.hpp"
#include "server.hpp"

using namespace concbench;
namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace concbench::asio_models;

namespace {

constexpr ModelTraits kTraits{"asio", true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;
// Asio's reactive_wait_op for wait_readable's handler (a shared_ptr and the allocator): 112 bytes
// with Boost 1.81 on x86-64. A larger operation still works, from the heap (HandlerMemory).
constexpr std::size_t kWaitMemory = 112;

struct Worker;
class Conn;

// One keep-alive connection to the fan-out backend. It sits in its worker's pool between calls
// and is owned by the call's handlers (shared_ptr) while a call is in flight.
struct Backend {
    explicit Backend(Worker& w);
    ~Backend();
    Worker& w;
    Socket sock;
    BackendReader reader;
    std::string req;
    bool reused = false;  // came from the pool: may have been closed by the backend meanwhile
    bool got_bytes = false;
    std::array<char, 2048> buf;   // one answer is ~150 bytes; the reader takes it in pieces
    Backend *prev = nullptr, *next = nullptr;  // the worker's registry of backend connections
};

// One fan-out: K calls in flight, a counter, the bodies by call index. Holds its Conn alive
// until the last call is back, whatever happened to the client meanwhile.
struct Fanout {
    std::shared_ptr<Conn> conn;
    std::vector<std::string> bodies;
    std::vector<Backend*> in_flight;  // call i's connection while it is out (closed on abandon)
    int pending = 0;
    bool ok = true;
    bool abandoned = false;
    int ms = 0;
};

// What a connection needs only once it has met an effect: allocated on the first one, so an
// idle connection that only ever asked for / carries one pointer.
struct Effects {
    std::optional<Timer> timer;
    Fanout* fanout = nullptr;  // valid while the fan-out is pending (it owns a ref to the Conn)
    int file_fd = -1;
    off_t file_off = 0;
    std::size_t file_left = 0;
    bool watching = false;  // a wait_error is armed on the client socket (reset detection)
    ~Effects() {
        if (file_fd >= 0) ::close(file_fd);
    }
};

class Conn : public std::enable_shared_from_this<Conn> {
public:
    Conn(Worker& w, Socket sock);
    ~Conn();
    void start() {
        error_code ec;
        sock_.non_blocking(true, ec);  // read_some must report would_block, never block the loop
        wait_readable();  // no session yet: on_readable makes one when the first bytes come
    }
    // Closes the socket and cancels whatever effect is pending: the timer, the fan-out's backend
    // calls, the file. Pending handlers complete with errors and drop their references.
    void close();
    void fanout_done(Fanout& f);
    Conn *prev = nullptr, *next = nullptr;  // the worker's registry of open connections

private:
    void wait_readable() {
        // The wait's operation is built in wait_mem_ (see HandlerMemory): an idle connection is
        // then two allocations, this Conn and Asio's reactor state for its socket.
        sock_.async_wait(tcp::socket::wait_read,
                         asio::bind_allocator(HandlerAllocator<int, kWaitMemory>(wait_mem_),
                                              [self = shared_from_this()](error_code ec) {
                                                  if (!ec) self->on_readable();
                                              }));
    }
    void on_readable();
    // Writes out(), then carries out the pending effect if any, then reads again (or closes).
    void flush() {
        // A handler that completed just before close() (a write, say) must not go on: the
        // session may be mid-effect with its state (the file) already released.
        if (!sock_.is_open()) return;
        Outbox& out = session_->out();
        if (!out.empty()) {
            write_out(sock_, out, [self = shared_from_this()](error_code ec, std::size_t n) {
                if (ec) return self->close();
                self->session_->out().consume(n);
                self->flush();
            });
        } else if (fx_ && fx_->file_fd >= 0) {
            send_file();
        } else if (session_->busy()) {
            start_effect();
        } else if (session_->close_after_write()) {
            close();
        } else {
            // Between requests the session holds nothing a fresh one would not: free it, and
            // make a new one when bytes next arrive (on_readable), so an idle keep-alive
            // connection holds no session.
            if (session_->at_rest()) session_.reset();
            wait_readable();
        }
    }
    void start_effect();
    void send_file();
    void start_call(const std::shared_ptr<Fanout>& f, int i, std::shared_ptr<Backend> b);

    Worker& w_;
    Socket sock_;
    std::unique_ptr<Session> session_;  // null while the connection is at rest (and before its first bytes)
    std::unique_ptr<Effects> fx_;
    HandlerMemory<kWaitMemory> wait_mem_;  // the pending wait_readable's operation
};

struct Worker {
    // One thread runs it and only it touches its sockets: no locking in the reactor's per-socket
    // state (the scheduler keeps its lock, so other threads may still post to it).
    asio::io_context ctx{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    Acceptor acceptor{ctx};
    ServerOptions opts;
    ServerIdentity id = identity(kTraits);
    Conn* conns = nullptr;
    asio::steady_timer emfile_pause{ctx};
    char buf[kReadBuffer];
    // Fan-out: the backend's address, the pool of idle keep-alive connections to it (grows on
    // demand, LIFO so the warmest is reused), and every backend connection for shutdown.
    bool has_backend = false;
    tcp::endpoint backend;
    std::vector<std::shared_ptr<Backend>> pool;
    Backend* backends = nullptr;
    bool stopping = false;

    void accept() {
        acceptor.async_accept([this](error_code ec, Socket sock) {
            if (!acceptor.is_open()) return;  // shut down
            if (!ec) {
                sock.set_option(tcp::no_delay(true), ec);
                std::make_shared<Conn>(*this, std::move(sock))->start();
            } else if (ec.value() == EMFILE || ec.value() == ENFILE) {
                int fd = accept_connection(acceptor.native_handle(), true);  // drops one pending
                if (fd >= 0) {
                    adopt(fd);  // fds freed up meanwhile
                } else {
                    // Out of fds accept4 fails at once even with nothing pending: re-arming now
                    // would spin. Pause 10 ms (as the uring model does), then try again.
                    emfile_pause.expires_after(std::chrono::milliseconds(10));
                    emfile_pause.async_wait([this](error_code) {
                        if (acceptor.is_open()) accept();
                    });
                    return;
                }
            }
            accept();
        });
    }
    void adopt(int fd) {
        Socket sock(ctx);
        error_code ec;
        sock.assign(acceptor.local_endpoint().protocol(), fd, ec);
        if (ec) {
            ::close(fd);
            return;
        }
        std::make_shared<Conn>(*this, std::move(sock))->start();
    }
    std::shared_ptr<Backend> take_backend() {
        if (pool.empty()) return std::make_shared<Backend>(*this);
        std::shared_ptr<Backend> b = std::move(pool.back());
        pool.pop_back();
        b->reused = true;
        return b;
    }
    void shutdown() {
        stopping = true;
        error_code ec;
        acceptor.close(ec);
        emfile_pause.cancel();
        for (Conn* c = conns; c; c = c->next) c->close();
        pool.clear();
        for (Backend* b = backends; b; b = b->next) b->sock.close(ec);
    }
};

Backend::Backend(Worker& w) : w(w), sock(w.ctx), next(w.backends) {
    if (next) next->prev = this;
    w.backends = this;
}

Backend::~Backend() {
    if (prev) prev->next = next;
    else w.backends = next;
    if (next) next->prev = prev;
}

Conn::Conn(Worker& w, Socket sock)
    : w_(w), sock_(std::move(sock)) {  // the session comes with the first bytes (on_readable)
    next = w_.conns;
    if (next) next->prev = this;
    w_.conns = this;
}

Conn::~Conn() {
    if (prev) prev->next = next;
    else w_.conns = next;
    if (next) next->prev = prev;
}

void Conn::close() {
    error_code ec;
    sock_.close(ec);  // pending operations complete with operation_aborted and drop us
    if (!fx_) return;
    if (fx_->timer) fx_->timer->cancel();
    if (Fanout* f = fx_->fanout; f && !f->abandoned) {
        f->abandoned = true;  // the calls' answers are not wanted: close their connections
        for (Backend* b : f->in_flight)
            if (b) b->sock.close(ec);
    }
    if (fx_->file_fd >= 0) {
        ::close(fx_->file_fd);
        fx_->file_fd = -1;
    }
}

void Conn::on_readable() {
    error_code ec;
    std::size_t n = sock_.read_some(asio::buffer(w_.buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::interrupted) return wait_readable();
    if (ec == asio::error::eof) {
        if (!session_) return close();  // at rest: nothing left to answer
        session_->peer_closed();
    } else if (ec) {
        return close();  // reset by peer: drop the connection
    } else {
        if (!session_) session_ = make_session(w_.opts.proto, w_.id);
        session_->feed(w_.buf, n);
    }
    flush();
}

void Conn::start_effect() {
    if (!fx_) fx_ = std::make_unique<Effects>();
    if (!fx_->watching) {
        // While an effect is pending the client is not read; a reset (EPOLLERR/EPOLLHUP) still
        // completes a wait_error, so a client that goes away cancels its effect at once. Armed
        // once and left armed for the connection's life (one epoll_ctl, no per-request cost). A
        // FIN alone does not complete it: a half-closed client still gets its answer.
        fx_->watching = true;
        sock_.async_wait(tcp::socket::wait_error, [self = shared_from_this()](error_code ec) {
            if (!ec) self->close();
        });
    }
    const Effect& e = session_->effect();
    switch (e.kind) {
    case Effect::Kind::wait: {
        if (!fx_->timer) fx_->timer.emplace(w_.ctx);
        fx_->timer->expires_after(std::chrono::milliseconds(e.ms));
        fx_->timer->async_wait([self = shared_from_this()](error_code ec) {
            if (ec || !self->sock_.is_open()) return;
            self->session_->complete_wait();
            self->flush();
        });
        return;
    }
    case Effect::Kind::fanout: {
        if (!w_.has_backend) {
            session_->complete_fanout({}, false);
            return flush();
        }
        auto f = std::make_shared<Fanout>();
        f->conn = shared_from_this();
        f->bodies.resize(e.calls);
        f->in_flight.assign(e.calls, nullptr);
        f->pending = e.calls;
        f->ms = e.ms;
        fx_->fanout = f.get();
        for (int i = 0; i < e.calls; ++i) start_call(f, i, w_.take_backend());
        return;
    }
    case Effect::Kind::file: {
        long long size = 0;
        int fd = open_docroot_file(w_.opts, e.file, size);
        std::size_t n = session_->complete_file(fd < 0 ? -1 : size);
        if (n == 0) {
            if (fd >= 0) ::close(fd);
        } else {
            fx_->file_fd = fd;
            fx_->file_off = 0;
            fx_->file_left = n;
        }
        return flush();  // the head first, then send_file()
    }
    case Effect::Kind::none:
        return flush();
    }
}

// The file's bytes with sendfile(2) on the socket's native handle, the way Asio's own
// documentation does it (native_non_blocking): send until the socket is full, then
// async_wait(wait_write) and go on. At most 2 MiB per turn so one fast client cannot hold the
// loop (nginx's sendfile_max_chunk).
void Conn::send_file() {
    error_code ec;
    sock_.native_non_blocking(true, ec);
    std::size_t turn = 0;
    while (fx_->file_left > 0 && turn < 2 * 1024 * 1024) {
        ssize_t n = ::sendfile(sock_.native_handle(), fx_->file_fd, &fx_->file_off, fx_->file_left);
        if (n > 0) {
            fx_->file_left -= static_cast<std::size_t>(n);
            turn += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            return close();  // an error, or the file shrank under us: the answer cannot be finished
        }
    }
    if (fx_->file_left > 0) {
        sock_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code ec) {
            if (ec || self->fx_->file_fd < 0) return self->close();
            self->send_file();
        });
        return;
    }
    ::close(fx_->file_fd);
    fx_->file_fd = -1;
    session_->file_sent();
    flush();
}

// Backend call i of fan-out f on connection b: connect if new, write the request, read until the
// reader has one whole answer. Each step's handler owns f and b.
void Conn::start_call(const std::shared_ptr<Fanout>& f, int i, std::shared_ptr<Backend> b) {
    f->in_flight[i] = b.get();
    b->req = backend_request(f->ms, i);
    b->reader.reset();
    b->got_bytes = false;

    struct Call {
        std::shared_ptr<Fanout> f;
        int i;
        std::shared_ptr<Backend> b;

        void finish(bool ok) const {
            Fanout& fo = *f;
            Worker& w = b->w;
            fo.in_flight[i] = nullptr;
            if (!ok && b->reused && !b->got_bytes && !fo.abandoned && !w.stopping) {
                // A pooled connection the backend had closed: retry once on a fresh one (as
                // HTTP client pools do for idempotent requests). The stale one is dropped.
                auto fresh = std::make_shared<Backend>(w);
                return fo.conn->start_call(f, i, std::move(fresh));
            }
            if (ok) {
                fo.bodies[i] = b->reader.body();
                if (b->reader.keep_alive() && !fo.abandoned && !w.stopping) w.pool.push_back(b);
            } else {
                fo.ok = false;  // b is dropped: a failed or abandoned connection is never reused
            }
            if (--fo.pending == 0) fo.conn->fanout_done(fo);
        }
        void send() const {
            asio::async_write(b->sock, asio::buffer(b->req), [c = *this](error_code ec, std::size_t) {
                if (ec) return c.finish(false);
                c.receive();
            });
        }
        void receive() const {
            b->sock.async_read_some(asio::buffer(b->buf), [c = *this](error_code ec, std::size_t n) {
                if (ec) return c.finish(false);
                c.b->got_bytes = true;
                switch (c.b->reader.feed(c.b->buf.data(), n)) {
                case BackendReader::State::more: return c.receive();
                case BackendReader::State::done: return c.finish(c.b->reader.status() == 200);
                case BackendReader::State::error: return c.finish(false);
                }
            });
        }
    };
    Call call{f, i, std::move(b)};
    if (call.b->sock.is_open()) return call.send();
    call.b->sock.async_connect(w_.backend, [call](error_code ec) {
        if (ec) return call.finish(false);
        call.b->sock.set_option(tcp::no_delay(true), ec);
        call.send();
    });
}

void Conn::fanout_done(Fanout& f) {
    fx_->fanout = nullptr;
    if (f.abandoned || !sock_.is_open()) return;  // the client went away: nothing to answer
    session_->complete_fanout(f.bodies, f.ok);
    flush();
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    int sigfd = stop_signal_fd();  // before any thread starts: they inherit the blocked mask
    const int n = opts.workers;

    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < n; ++i) {
        auto w = std::make_unique<Worker>();
        int fd = listen_socket(opts, n > 1);
        w->opts = opts;
        w->has_backend = backend_endpoint(opts, w->backend);
        adopt_listener(w->acceptor, fd);
        w->accept();
        workers.push_back(std::move(w));
    }

    // Worker 0 watches the signalfd and tells every worker (itself included) to shut down.
    asio::posix::basic_stream_descriptor<Executor> sig(workers[0]->ctx.get_executor(), sigfd);
    sig.async_wait(asio::posix::stream_descriptor::wait_read, [&](error_code) {
        signalfd_siginfo si;
        while (read(sigfd, &si, sizeof si) == sizeof si) {
        }
        for (auto& w : workers) asio::post(w->ctx, [w = w.get()] { w->shutdown(); });
    });

    run_workers(n, workers[0]->acceptor.native_handle(), [&](int i) { workers[i]->ctx.run(); });
    return 0;
}
