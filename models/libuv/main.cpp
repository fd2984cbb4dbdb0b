// server-libuv: libuv's event loop (the loop under Node.js). On Linux libuv runs sockets on epoll,
// so this is a readiness model; what it measures is libuv's bookkeeping on top of epoll.
// main.cpp: loops, connections, writes, the wait effect; fanout.cpp, file.cpp: those effects.
//   - uv_tcp_open adopts the listening socket from models/common (port 0, SO_REUSEPORT) and
//     uv_listen's connection callback uv_accepts; libuv accepts inside its loop, so libuv's own
//     EMFILE trick (a reserved fd per loop, freed to accept-and-close) is the one that applies;
//   - uv_read_start with an alloc callback that hands out the loop's one 64 KiB buffer: an idle
//     connection holds no read buffer;
//   - the Session is freed whenever it is at rest (Session::at_rest(), checked when reading
//     resumes after an answer) and made again by on_read when bytes come, as Boost.Beast makes
//     a parser per request: an idle keep-alive connection is its Conn (uv_tcp_t) alone;
//   - write at once with uv_try_write; only when the socket is full, queue the rest with uv_write
//     (a write request allocated per queued write, as Node's WriteWrap) and uv_read_stop until its
//     callback: backpressure;
//   - effects, the way Node does them (callbacks all the way down):
//       wait:   a uv_timer_t, allocated only while the connection waits, closed after;
//       fanout: K backend calls at once on keep-alive uv_tcp_t connections from a per-loop pool
//               that grows on demand (Node's http.Agent), a counter per fan-out;
//       file:   open on libuv's threadpool (uv_queue_work around the shared open_docroot_file),
//               then 64 KiB uv_fs_read chunks on the threadpool, written with uv_try_write/
//               uv_write while the next one is read (Node's fs.createReadStream piped into the
//               socket: one chunk read ahead);
//   - uv_close with a close callback that frees the connection; effect state that a callback may
//     still reach (a fan-out's calls, a threadpool request) outlives a connection that goes away
//     and is freed by the last callback;
//   - --workers N: N loops, one thread each, each with its own listening socket on the same port
//     (SO_REUSEPORT). The signalfd of models/common is watched with a uv_poll_t on the main loop,
//     which uv_async_sends every other loop; each loop then uv_walks and closes all its handles.
// libuv >= 1.44 (Debian libuv1-dev), Linux. Run: server-libuv --proto http --host 127.0.0.1
//   --port 0 [--workers N] [--backend H:P] [--docroot DIR]
#include <netinet/in.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <ctime>
#include <memory>
#include <vector>

#include "libuv.hpp"

using namespace concbench;
using namespace concbench::uvm;

namespace {
constexpr ModelTraits kTraits{"libuv", true, 1};
}  // namespace

namespace concbench::uvm {

void warn_once_a_second(const char* what, int err) {
    static std::atomic<long> last_warn{0};  // all workers together
    long now = static_cast<long>(time(nullptr));
    if (last_warn.exchange(now) != now) warn("%s: %s", what, uv_strerror(err));
}

static void on_timer_closed(uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); }

static void drop_timer(Conn* c) {
    uv_timer_t* t = c->timer();
    if (!t) return;
    uv_close(reinterpret_cast<uv_handle_t*>(t), on_timer_closed);  // stops it first
    c->set_fx(Conn::Fx::none, nullptr);
}

// The connection's handle is closed: every write callback has run (with UV_ECANCELED if it was
// still queued). What a callback may still reach is detached, the rest freed.
static void on_closed(uv_handle_t* h) {
    Conn* c = Conn::of(h);
    if (Fanout* f = c->fanout()) f->conn = nullptr;  // its calls drain, the last one frees it
    if (FileSend* f = c->file()) {
        if (f->fs_busy) f->conn = nullptr;  // the threadpool callback frees it
        else close_file(f);
    }
    delete c->session;
    delete c;
}

void close_conn(Conn* c) {
    if (c->closing()) return;
    drop_timer(c);
    uv_close(c->handle(), on_closed);
}

// libuv calls alloc_cb and then read_cb at once, on the loop's thread, and read_cb feeds every
// byte on before it returns; so one buffer per loop serves all its connections and backends.
void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    Worker& w = worker_of(h);
    *buf = uv_buf_init(w.buf, sizeof w.buf);
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
static void on_write(uv_write_t* req, int status);
void advance(Conn* c);

static void stop_reading(Conn* c) {
    if (c->reading) uv_read_stop(c->stream());
    c->reading = false;
}

// Writes bufs now as far as the socket takes them; queues the rest (bytes owned by the caller,
// alive until on_write). Returns false if the connection was closed, and sets c->writing when a
// write is queued.
bool write_now_or_queue(Conn* c, uv_buf_t* bufs, int n, std::size_t total, bool file_chunk) {
    int r = uv_try_write(c->stream(), bufs, n);
    if (r < 0 && r != UV_EAGAIN) {
        close_conn(c);
        return false;
    }
    std::size_t done = r > 0 ? static_cast<std::size_t>(r) : 0;
    if (done == total) {
        if (!file_chunk) c->session->out().consume(done);
        return true;
    }
    // The socket is full: queue what is left. uv_write copies the uv_buf_t array, not the bytes.
    std::size_t skip = done;
    int first = 0;
    while (skip >= bufs[first].len) skip -= bufs[first++].len;
    bufs[first].base += skip;
    bufs[first].len -= skip;
    auto* w = new WriteReq{{}, file_chunk ? 0 : total, file_chunk};
    w->req.data = c;
    if (uv_write(&w->req, c->stream(), bufs + first, n - first, on_write) != 0) {
        delete w;
        close_conn(c);
        return false;
    }
    c->writing = true;
    stop_reading(c);
    return true;
}

// ---- wait ----

static void on_timer(uv_timer_t* t) {
    Conn* c = static_cast<Conn*>(t->data);
    c->session->complete_wait();
    // Keep the timer for a pipelined wait right behind; otherwise it goes.
    if (!(c->session->busy() && c->session->effect().kind == Effect::Kind::wait)) drop_timer(c);
    advance(c);
}

static bool start_wait(Conn* c) {
    uv_timer_t* t = c->timer();
    if (!t) {
        t = new uv_timer_t;
        uv_timer_init(c->tcp.loop, t);
        t->data = c;
        c->set_fx(Conn::Fx::timer, t);
    } else if (uv_is_active(reinterpret_cast<uv_handle_t*>(t))) {
        return true;  // already waiting
    }
    // libuv's timers run on the loop's clock: whole milliseconds of a coarse clock, taken at the
    // start of the iteration, so a plain uv_timer_start(ms) may fire up to ~2 ms early (Node's
    // setTimeout does). Every model must hold a request at least MS ms, so: bring the loop's clock
    // to now, and add the whole milliseconds by which it lags the precise clock.
    uv_loop_t* loop = c->tcp.loop;
    uv_update_time(loop);
    uint64_t now_ns = uv_hrtime(), loop_ns = uv_now(loop) * 1000000;
    uint64_t lag_ms = now_ns > loop_ns ? (now_ns - loop_ns + 999999) / 1000000 : 0;
    uv_timer_start(t, on_timer, static_cast<uint64_t>(c->session->effect().ms) + lag_ms, 0);
    return true;
}

// ---- the connection's driver ----

static void read_on(Conn* c) {
    if (!c->reading && uv_read_start(c->stream(), on_alloc, on_read) != 0) return close_conn(c);
    c->reading = true;
}

// After anything happened on a connection (bytes read, a write done, an effect completed):
// write out() as far as the socket takes it; then carry out the session's effect, if any, or read
// on, or close if the session says so. Returns when the connection waits on something.
void advance(Conn* c) {
    if (worker_of(c).stopping) return close_conn(c);  // a completion while the loop stops
    if (!c->session) return read_on(c);                // a new connection: no session yet
    for (;;) {
        if (c->closing() || c->writing) return;
        Outbox& out = c->session->out();
        if (!out.empty()) {
            iovec iov[kMaxBufs];
            uv_buf_t bufs[kMaxBufs];
            int n = out.fill(iov, kMaxBufs);
            std::size_t total = 0;
            for (int i = 0; i < n; ++i) {
                bufs[i] = uv_buf_init(static_cast<char*>(iov[i].iov_base), iov[i].iov_len);
                total += iov[i].iov_len;
            }
            if (!write_now_or_queue(c, bufs, n, total, false)) return;
            if (c->writing) return;
            continue;  // more than kMaxBufs segments
        }
        if (!c->session->busy()) break;
        stop_reading(c);  // bytes that arrive meanwhile wait in the socket
        const Effect& e = c->session->effect();
        switch (e.kind) {
            case Effect::Kind::wait:
                start_wait(c);
                return;
            case Effect::Kind::fanout:
                if (c->fanout()) return;  // calls in flight
                if (!worker_of(c).has_backend) {
                    c->session->complete_fanout({}, false);  // no --backend: 502
                    continue;
                }
                start_fanout(c);
                return;
            case Effect::Kind::file: {
                FileSend* f = c->file();
                if (!f) {
                    start_file(c);
                    return;
                }
                if (!f->sending) return;  // opening
                if (!pump_file(c, f)) return;
                c->set_fx(Conn::Fx::none, nullptr);
                close_file(f);
                c->session->file_sent();
                continue;
            }
            case Effect::Kind::none:
                break;
        }
    }
    if (c->session->close_after_write()) return close_conn(c);
    // Between requests the session holds nothing a fresh one would not: free it, and make a new
    // one when bytes next arrive (on_read), so an idle keep-alive connection is the Conn alone.
    if (c->session->at_rest()) {
        delete c->session;
        c->session = nullptr;
    }
    read_on(c);
}

static void on_write(uv_write_t* req, int status) {
    auto* w = reinterpret_cast<WriteReq*>(req);
    Conn* c = static_cast<Conn*>(req->data);
    std::size_t bytes = w->bytes;
    bool file_chunk = w->file_chunk;
    delete w;
    c->writing = false;
    if (status < 0) return close_conn(c);  // UV_ECANCELED when the handle is closing, or a reset
    if (file_chunk) {
        FileSend* f = c->file();
        f->left -= f->chunk;
        f->wbuf = -1;
    } else {
        c->session->out().consume(bytes);
    }
    advance(c);
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Conn* c = Conn::of(s);
    if (n > 0) {
        if (!c->session) c->session = make_session(worker_of(c).opts.proto, worker_of(c).id).release();
        c->session->feed(buf->base, static_cast<std::size_t>(n));
    } else if (n == UV_EOF) {
        c->reading = false;  // libuv stops reading at EOF
        if (!c->session) return close_conn(c);  // at rest: nothing left to answer
        c->session->peer_closed();
    } else if (n < 0) {
        return close_conn(c);  // reset by peer
    } else {
        return;  // EAGAIN
    }
    advance(c);
}

static void on_connection(uv_stream_t* server, int status) {
    if (status < 0) return warn_once_a_second("accept", status);  // after libuv's EMFILE trick
    Conn* c = new Conn;
    uv_tcp_init(server->loop, &c->tcp);  // no socket yet: uv_accept brings it
    if (int err = uv_accept(server, c->stream()); err != 0) {
        warn_once_a_second("uv_accept", err);
        return close_conn(c);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    advance(c);  // no session until the first bytes come (on_read makes it): starts reading
}

// Stop: close every handle of this loop (listener, connections, backends, the stop handle
// itself; a connection's timer goes with it). The loop's uv_run returns once nothing is left
// active: threadpool requests in flight finish first and free what they hold.
static void close_all(uv_loop_t* loop) {
    auto* w = static_cast<Worker*>(loop->data);
    w->stopping = true;
    for (Backend* b = w->backends; b; b = b->next) close_backend(b);  // fails the calls in flight
    uv_walk(loop, [](uv_handle_t* h, void* arg) {
        if (uv_is_closing(h) || h->type == UV_TIMER) return;  // timers: closed by their Conn
        auto* w = static_cast<Worker*>(arg);
        if (h->type == UV_TCP && h != reinterpret_cast<uv_handle_t*>(&w->listener)) close_conn(Conn::of(h));
        else uv_close(h, nullptr);
    }, w);
}

static void on_signal(uv_poll_t* p, int, int) {
    uv_os_fd_t fd;
    signalfd_siginfo si;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(p), &fd) == 0)
        while (read(fd, &si, sizeof si) == sizeof si) {
        }
    Worker& w = worker_of(reinterpret_cast<uv_handle_t*>(p));
    for (Worker* o : w.others) uv_async_send(&o->stop);
    close_all(p->loop);
}

static void on_stop(uv_async_t* a) { close_all(a->loop); }

static void run(Worker& w) {
    uv_run(&w.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w.loop) != 0) warn("uv_loop_close: handles left open");
}

static void check(int err, const char* what) {
    if (err != 0) fatal("%s: %s", what, uv_strerror(err));
}

}  // namespace concbench::uvm

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    int sigfd = stop_signal_fd();  // before any thread starts: they inherit the blocked mask
    const int n = opts.workers;

    std::vector<std::unique_ptr<Worker>> workers;
    int listen_fd0 = -1;
    for (int i = 0; i < n; ++i) {
        auto w = std::make_unique<Worker>();
        w->opts = opts;
        w->id = identity(kTraits);
        w->has_backend = backend_address(opts, w->backend);
        check(uv_loop_init(&w->loop), "uv_loop_init");
        w->loop.data = w.get();
        int fd = listen_socket(opts, n > 1);
        if (i == 0) listen_fd0 = fd;
        check(uv_tcp_init(&w->loop, &w->listener), "uv_tcp_init");
        w->listener.data = nullptr;
        check(uv_tcp_open(&w->listener, fd), "uv_tcp_open");
        check(uv_listen(reinterpret_cast<uv_stream_t*>(&w->listener), SOMAXCONN, on_connection), "uv_listen");
        if (i == 0) {
            check(uv_poll_init(&w->loop, &w->signal, sigfd), "uv_poll_init");
            w->signal.data = nullptr;
            check(uv_poll_start(&w->signal, UV_READABLE, on_signal), "uv_poll_start");
        } else {
            check(uv_async_init(&w->loop, &w->stop, on_stop), "uv_async_init");
            w->stop.data = nullptr;
            workers[0]->others.push_back(w.get());
        }
        workers.push_back(std::move(w));
    }

    run_workers(n, listen_fd0, [&](int i) { run(*workers[i]); });
    return 0;
}
