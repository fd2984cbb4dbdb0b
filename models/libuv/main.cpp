// server-libuv: libuv's event loop (the loop under Node.js). On Linux libuv runs sockets on epoll,
// so this is a readiness model; what it measures is libuv's bookkeeping on top of epoll.
//   - uv_tcp_open adopts the listening socket from models/common (port 0, SO_REUSEPORT) and
//     uv_listen's connection callback uv_accepts; libuv accepts inside its loop, so libuv's own
//     EMFILE trick (a reserved fd per loop, freed to accept-and-close) is the one that applies;
//   - uv_read_start with an alloc callback that hands out the loop's one 64 KiB buffer: an idle
//     connection holds no read buffer;
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

#include <algorithm>
#include <cstddef>
#include <atomic>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "server.hpp"

using namespace concbench;

namespace {

constexpr ModelTraits kTraits{"libuv", true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr std::size_t kFileChunk = 64 * 1024;  // fs.createReadStream's highWaterMark
constexpr int kMaxBufs = 16;                    // iovecs per write

struct Worker;
struct Fanout;
struct FileSend;

// A client connection, kept as small as libuv allows, since an idle keep-alive connection holds
// just this and its Session: the uv_tcp_t (248 bytes in libuv 1.44), the session, and two flags
// and a tag. Effect state is allocated only while an effect is pending; tcp.data points to it
// (fx says what it is), and the Conn is found from its handle by address (tcp comes first).
struct Conn {
    enum class Fx : uint8_t { none, timer, fanout, file };
    uv_tcp_t tcp;               // tcp.data: the effect's state (uv_timer_t, Fanout or FileSend)
    Session* session = nullptr; // owned (a raw pointer keeps Conn standard-layout)
    Fx fx = Fx::none;
    bool writing = false;       // a uv_write is queued
    bool reading = false;

    static Conn* of(void* handle) { return reinterpret_cast<Conn*>(handle); }  // &tcp == this
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
    uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&tcp); }
    bool closing() { return uv_is_closing(handle()) != 0; }
    // wait: a timer only while the connection waits; fanout: the calls in flight (the Fanout
    // outlives a closed Conn); file: being opened or sent.
    uv_timer_t* timer() { return fx == Fx::timer ? static_cast<uv_timer_t*>(tcp.data) : nullptr; }
    Fanout* fanout() { return fx == Fx::fanout ? static_cast<Fanout*>(tcp.data) : nullptr; }
    FileSend* file() { return fx == Fx::file ? static_cast<FileSend*>(tcp.data) : nullptr; }
    void set_fx(Fx kind, void* state) {
        fx = state ? kind : Fx::none;
        tcp.data = state;
    }
};
static_assert(std::is_standard_layout_v<Conn> && offsetof(Conn, tcp) == 0);

// One queued write to a client (allocated only when the socket was full).
struct WriteReq {
    uv_write_t req;       // req.data: the Conn
    std::size_t bytes;    // outbox bytes it covers (0 for a file chunk)
    bool file_chunk;
};

// One fan-out: K calls, a counter, the bodies. Freed by the last call's completion.
struct Fanout {
    Conn* conn;                       // nullptr once the client connection is closed
    int remaining;                    // calls not yet complete (+1 while they are being started)
    bool ok = true;
    std::vector<std::string> bodies;  // index i = call i
};

// A keep-alive connection to the backend. In the pool (idle) it keeps reading, so that a backend
// closing it is noticed and it is dropped; a call never goes to a connection with unread bytes.
struct Backend {
    uv_tcp_t tcp;             // tcp.data: this
    uv_connect_t connect;
    Worker* worker;
    BackendReader reader;
    std::string request;      // alive until its write completes (one call at a time)
    Fanout* fan = nullptr;    // the call in progress, or nullptr (idle or abandoned)
    int index = -1;
    bool connected = false;
    bool pooled = false;
    Backend* prev = nullptr;  // in the worker's list of all backends
    Backend* next = nullptr;
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
    uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&tcp); }
};

// The file effect of one connection. A threadpool request cannot be taken back, so while one is
// in flight (fs_busy) the FileSend outlives a closed connection and its callback frees it.
struct FileSend {
    Conn* conn;
    const ServerOptions* opts;
    std::string name;
    uv_work_t work;                 // the open, on the threadpool
    uv_fs_t fs;                     // the chunk reads, on the threadpool
    int fd = -1;
    long long size = 0;
    bool fs_busy = false;           // the open or a read is on the threadpool
    bool sending = false;           // complete_file said how many bytes to send
    // Read-ahead as in a Node stream: the next chunk is read while the one before is written,
    // so at most one read and one write are in flight, in two buffers.
    std::unique_ptr<char[]> bufs[2];
    std::size_t unread = 0;         // bytes still to read
    std::size_t left = 0;           // bytes still to write
    int64_t read_off = 0;
    int rbuf = 0;                   // buffer of the read in flight
    int ready_buf = 0;              // a chunk read and not yet written: its buffer and length
    std::size_t ready_len = 0;
    int wbuf = -1;                  // buffer of the queued write, or -1
    std::size_t chunk = 0;          // bytes of that write
};

struct Worker {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_poll_t signal;  // worker 0: the signalfd
    uv_async_t stop;   // workers 1..N-1: woken by worker 0
    ServerOptions opts;
    ServerIdentity id;
    bool has_backend = false;
    sockaddr_in backend{};
    std::vector<Backend*> pool;   // idle keep-alive backend connections
    Backend* backends = nullptr;  // all of them (idle, busy, connecting), to close at stop
    bool stopping = false;
    std::vector<Worker*> others;  // worker 0: the loops to stop when the signal comes
    char buf[kReadBuffer];
};

Worker& worker_of(uv_handle_t* h) { return *static_cast<Worker*>(h->loop->data); }
Worker& worker_of(Conn* c) { return worker_of(c->handle()); }

void warn_once_a_second(const char* what, int err) {
    static std::atomic<long> last_warn{0};  // all workers together
    long now = static_cast<long>(time(nullptr));
    if (last_warn.exchange(now) != now) warn("%s: %s", what, uv_strerror(err));
}

void close_file(FileSend* f) {
    if (f->fd >= 0) close(f->fd);
    delete f;
}

void on_timer_closed(uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); }

void drop_timer(Conn* c) {
    uv_timer_t* t = c->timer();
    if (!t) return;
    uv_close(reinterpret_cast<uv_handle_t*>(t), on_timer_closed);  // stops it first
    c->set_fx(Conn::Fx::none, nullptr);
}

// The connection's handle is closed: every write callback has run (with UV_ECANCELED if it was
// still queued). What a callback may still reach is detached, the rest freed.
void on_closed(uv_handle_t* h) {
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

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
void on_write(uv_write_t* req, int status);
void advance(Conn* c);

void stop_reading(Conn* c) {
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

void on_timer(uv_timer_t* t) {
    Conn* c = static_cast<Conn*>(t->data);
    c->session->complete_wait();
    // Keep the timer for a pipelined wait right behind; otherwise it goes.
    if (!(c->session->busy() && c->session->effect().kind == Effect::Kind::wait)) drop_timer(c);
    advance(c);
}

bool start_wait(Conn* c) {
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

// ---- fanout ----

void on_backend_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

void on_backend_closed(uv_handle_t* h) {
    auto* b = static_cast<Backend*>(h->data);
    Worker& w = *b->worker;
    if (b->prev) b->prev->next = b->next;
    else w.backends = b->next;
    if (b->next) b->next->prev = b->prev;
    delete b;
}

void release(Fanout* f);

// The call on b is over (its answer, or a failure): record it and count it down.
void finish_call(Backend* b, bool ok, std::string body) {
    Fanout* f = b->fan;
    if (!f) return;
    b->fan = nullptr;
    if (ok) f->bodies[static_cast<std::size_t>(b->index)] = std::move(body);
    else f->ok = false;
    release(f);
}

void close_backend(Backend* b) {
    finish_call(b, false, {});
    if (b->pooled) {
        auto& pool = b->worker->pool;
        pool.erase(std::find(pool.begin(), pool.end(), b));
        b->pooled = false;
    }
    if (!uv_is_closing(b->handle())) uv_close(b->handle(), on_backend_closed);
}

void on_backend_write(uv_write_t* req, int status) {
    auto* b = static_cast<Backend*>(req->data);
    delete req;
    if (status < 0) close_backend(b);  // fails the call, if it is still this one's
}

void send_call(Backend* b) {
    auto* req = new uv_write_t;
    req->data = b;
    uv_buf_t buf = uv_buf_init(b->request.data(), b->request.size());
    if (uv_write(req, b->stream(), &buf, 1, on_backend_write) != 0) {
        delete req;
        close_backend(b);
    }
}

void on_backend_connect(uv_connect_t* req, int status) {
    auto* b = static_cast<Backend*>(req->data);
    if (status < 0) return close_backend(b);  // refused, or UV_ECANCELED when closed meanwhile
    if (uv_is_closing(b->handle())) return;
    b->connected = true;
    uv_tcp_nodelay(&b->tcp, 1);
    if (uv_read_start(b->stream(), on_alloc, on_backend_read) != 0) return close_backend(b);
    send_call(b);
}

void on_backend_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* b = static_cast<Backend*>(s->data);
    if (n == 0) return;
    if (n < 0 || !b->fan) return close_backend(b);  // EOF, reset, or bytes nobody asked for
    switch (b->reader.feed(buf->base, static_cast<std::size_t>(n))) {
        case BackendReader::State::more:
            return;
        case BackendReader::State::error:
            return close_backend(b);
        case BackendReader::State::done:
            break;
    }
    bool ok = b->reader.status() == 200;
    bool reuse = ok && b->reader.keep_alive() && !b->worker->stopping;
    finish_call(b, ok, b->reader.body());  // may complete the fan-out and start others
    if (!reuse) return close_backend(b);
    if (uv_is_closing(b->handle())) return;
    b->reader.reset();
    b->pooled = true;
    b->worker->pool.push_back(b);  // keeps reading: a close by the backend drops it
}

// One backend call: a pooled connection, or a new one (the pool grows on demand).
void start_call(Worker& w, Fanout* f, int i, int ms) {
    Backend* b;
    if (!w.pool.empty()) {
        b = w.pool.back();
        w.pool.pop_back();
        b->pooled = false;
    } else {
        b = new Backend;
        b->worker = &w;
        b->tcp.data = b;
        b->next = w.backends;
        if (w.backends) w.backends->prev = b;
        w.backends = b;
        b->connect.data = b;
        uv_tcp_init(&w.loop, &b->tcp);
    }
    b->fan = f;
    b->index = i;
    b->request = backend_request(ms, i);
    if (b->connected) return send_call(b);
    int err = uv_tcp_connect(&b->connect, &b->tcp, reinterpret_cast<const sockaddr*>(&w.backend), on_backend_connect);
    if (err != 0) {
        warn_once_a_second("backend connect", err);
        close_backend(b);
    }
}

void release(Fanout* f) {
    if (--f->remaining > 0) return;
    Conn* c = f->conn;
    bool ok = f->ok;
    std::vector<std::string> bodies = std::move(f->bodies);
    delete f;
    if (!c) return;  // the client went away
    c->set_fx(Conn::Fx::none, nullptr);
    if (c->closing()) return;
    c->session->complete_fanout(bodies, ok);
    advance(c);
}

void start_fanout(Conn* c) {
    Worker& w = worker_of(c);
    const Effect& e = c->session->effect();
    auto* f = new Fanout{c, e.calls + 1, true, std::vector<std::string>(static_cast<std::size_t>(e.calls))};
    c->set_fx(Conn::Fx::fanout, f);
    int ms = e.ms, calls = e.calls;  // e may change once the fan-out completes
    for (int i = 0; i < calls; ++i) start_call(w, f, i, ms);
    release(f);  // the +1: completes here only if every call already failed
}

// ---- file ----

void on_fs_read(uv_fs_t* req);

// A threadpool callback found the connection gone or going: drop the file.
bool abandoned(FileSend* f) {
    if (f->conn && !f->conn->closing()) return false;
    if (f->conn) f->conn->set_fx(Conn::Fx::none, nullptr);
    close_file(f);
    return true;
}

void on_opened(uv_work_t* req, int) {
    auto* f = static_cast<FileSend*>(req->data);
    f->fs_busy = false;
    if (abandoned(f)) return;
    Conn* c = f->conn;
    std::size_t n = c->session->complete_file(f->fd < 0 ? -1 : f->size);
    if (n == 0) {  // 404, HEAD or an empty file: the head (in out()) is all
        c->set_fx(Conn::Fx::none, nullptr);
        close_file(f);
    } else {
        f->sending = true;
        f->left = f->unread = n;
        f->bufs[0].reset(new char[std::min(n, kFileChunk)]);
    }
    advance(c);  // writes the head, then the chunks
}

// Reads the next chunk on the threadpool into buffer `b`.
bool read_chunk(FileSend* f, int b) {
    f->fs_busy = true;
    f->rbuf = b;
    f->fs.data = f;
    uv_buf_t buf = uv_buf_init(f->bufs[b].get(), static_cast<unsigned>(std::min(f->unread, kFileChunk)));
    int err = uv_fs_read(f->conn->tcp.loop, &f->fs, f->fd, &buf, 1, f->read_off, on_fs_read);
    if (err == 0) return true;
    uv_fs_req_cleanup(&f->fs);
    f->fs_busy = false;
    close_conn(f->conn);  // the head promised bytes that cannot come: cut the answer short
    return false;
}

// Moves the file on: writes a chunk that is read if no write is queued, starts the next read if
// a buffer is free. True once every byte is written.
bool pump_file(Conn* c, FileSend* f) {
    if (!c->writing && f->ready_len > 0) {
        std::size_t n = f->ready_len;
        f->ready_len = 0;
        uv_buf_t buf = uv_buf_init(f->bufs[f->ready_buf].get(), static_cast<unsigned>(n));
        f->wbuf = f->ready_buf;
        f->chunk = n;
        if (!write_now_or_queue(c, &buf, 1, n, true)) return false;
        if (!c->writing) {  // all taken at once
            f->left -= n;
            f->wbuf = -1;
        }
    }
    if (!f->fs_busy && f->unread > 0 && f->ready_len == 0) {
        if (f->wbuf == 0 && !f->bufs[1]) f->bufs[1].reset(new char[kFileChunk]);
        if (!read_chunk(f, f->wbuf == 0 ? 1 : 0)) return false;
    }
    return f->left == 0 && !c->writing && !f->fs_busy;
}

void on_fs_read(uv_fs_t* req) {
    auto* f = static_cast<FileSend*>(req->data);
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    f->fs_busy = false;
    if (abandoned(f)) return;
    Conn* c = f->conn;
    // An error, or the file shrank under us: the head promised more, so cut the answer short.
    if (r <= 0 || static_cast<std::size_t>(r) > f->unread) return close_conn(c);
    f->read_off += r;
    f->unread -= static_cast<std::size_t>(r);
    f->ready_buf = f->rbuf;
    f->ready_len = static_cast<std::size_t>(r);
    if (!c->writing) advance(c);  // otherwise on_write goes on
}

void start_file(Conn* c) {
    auto* f = new FileSend{};
    f->conn = c;
    f->opts = &worker_of(c).opts;
    f->name = c->session->effect().file;
    f->work.data = f;
    f->fs_busy = true;
    c->set_fx(Conn::Fx::file, f);
    uv_queue_work(c->tcp.loop, &f->work, [](uv_work_t* req) {
        auto* f = static_cast<FileSend*>(req->data);  // on a threadpool thread
        f->fd = open_docroot_file(*f->opts, f->name, f->size);
    }, on_opened);
}

// ---- the connection's driver ----

// After anything happened on a connection (bytes read, a write done, an effect completed):
// write out() as far as the socket takes it; then carry out the session's effect, if any, or read
// on, or close if the session says so. Returns when the connection waits on something.
void advance(Conn* c) {
    if (worker_of(c).stopping) return close_conn(c);  // a completion while the loop stops
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
    if (!c->reading && uv_read_start(c->stream(), on_alloc, on_read) != 0) return close_conn(c);
    c->reading = true;
}

void on_write(uv_write_t* req, int status) {
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

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Conn* c = Conn::of(s);
    if (n > 0) {
        c->session->feed(buf->base, static_cast<std::size_t>(n));
    } else if (n == UV_EOF) {
        c->reading = false;  // libuv stops reading at EOF
        c->session->peer_closed();
    } else if (n < 0) {
        return close_conn(c);  // reset by peer
    } else {
        return;  // EAGAIN
    }
    advance(c);
}

void on_connection(uv_stream_t* server, int status) {
    if (status < 0) return warn_once_a_second("accept", status);  // after libuv's EMFILE trick
    Conn* c = new Conn;
    uv_tcp_init(server->loop, &c->tcp);  // no socket yet: uv_accept brings it
    if (int err = uv_accept(server, c->stream()); err != 0) {
        warn_once_a_second("uv_accept", err);
        return close_conn(c);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    Worker& w = worker_of(reinterpret_cast<uv_handle_t*>(server));
    c->session = make_session(w.opts.proto, w.id).release();
    advance(c);  // nothing to write yet: starts reading
}

// Stop: close every handle of this loop (listener, connections, backends, the stop handle
// itself; a connection's timer goes with it). The loop's uv_run returns once nothing is left
// active: threadpool requests in flight finish first and free what they hold.
void close_all(uv_loop_t* loop) {
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

void on_signal(uv_poll_t* p, int, int) {
    uv_os_fd_t fd;
    signalfd_siginfo si;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(p), &fd) == 0)
        while (read(fd, &si, sizeof si) == sizeof si) {
        }
    Worker& w = worker_of(reinterpret_cast<uv_handle_t*>(p));
    for (Worker* o : w.others) uv_async_send(&o->stop);
    close_all(p->loop);
}

void on_stop(uv_async_t* a) { close_all(a->loop); }

void run(Worker& w) {
    uv_run(&w.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w.loop) != 0) warn("uv_loop_close: handles left open");
}

void check(int err, const char* what) {
    if (err != 0) fatal("%s: %s", what, uv_strerror(err));
}

}  // namespace

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
