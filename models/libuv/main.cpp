// server-libuv: libuv's event loop (the loop under Node.js). On Linux libuv runs sockets on epoll,
// so this is a readiness model; what it measures is libuv's bookkeeping on top of epoll.
//   - uv_tcp_open adopts the listening socket from models/common (port 0, SO_REUSEPORT) and
//     uv_listen's connection callback uv_accepts; libuv accepts inside its loop, so libuv's own
//     EMFILE trick (a reserved fd per loop, freed to accept-and-close) is the one that applies;
//   - uv_read_start with an alloc callback that hands out the loop's one 64 KiB buffer: an idle
//     connection holds no read buffer;
//   - write at once with uv_try_write; only when the socket is full, queue the rest with uv_write
//     (one write in flight per connection) and uv_read_stop until its callback: backpressure;
//   - uv_close with a close callback that frees the connection;
//   - --workers N: N loops, one thread each, each with its own listening socket on the same port
//     (SO_REUSEPORT). The signalfd of models/common is watched with a uv_poll_t on the main loop,
//     which uv_async_sends every other loop; each loop then uv_walks and closes all its handles.
// libuv >= 1.44 (Debian libuv1-dev), Linux. Run: server-libuv --proto http --host 127.0.0.1
//   --port 0 [--workers N]
#include <netinet/in.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <memory>
#include <thread>
#include <vector>

#include "server.hpp"

using namespace concbench;

namespace {

constexpr ModelTraits kTraits{"libuv", true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr int kMaxBufs = 16;  // iovecs per write

struct Worker;

struct Conn {
    uv_tcp_t tcp;             // tcp.data points back here (other handles have data == nullptr)
    uv_write_t wr;            // the one write in flight, if `writing`
    std::size_t inflight = 0; // bytes that write covers, consumed from the outbox in its callback
    bool writing = false;
    bool reading = false;
    std::unique_ptr<Session> session;
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
};

struct Worker {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_poll_t signal;  // worker 0: the signalfd
    uv_async_t stop;   // workers 1..N-1: woken by worker 0
    ServerOptions opts;
    ServerIdentity id;
    std::vector<Worker*> others;  // worker 0: the loops to stop when the signal comes
    char buf[kReadBuffer];
};

Worker& worker_of(uv_handle_t* h) { return *static_cast<Worker*>(h->loop->data); }

void warn_once_a_second(const char* what, int err) {
    static std::atomic<long> last_warn{0};  // all workers together
    long now = static_cast<long>(time(nullptr));
    if (last_warn.exchange(now) != now) warn("%s: %s", what, uv_strerror(err));
}

void on_closed(uv_handle_t* h) { delete static_cast<Conn*>(h->data); }

void close_conn(Conn* c) {
    auto* h = reinterpret_cast<uv_handle_t*>(&c->tcp);
    if (!uv_is_closing(h)) uv_close(h, on_closed);
}

// libuv calls alloc_cb and then read_cb at once, on the loop's thread, and read_cb feeds every
// byte to the session before it returns; so one buffer per loop serves all its connections.
void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    Worker& w = worker_of(h);
    *buf = uv_buf_init(w.buf, sizeof w.buf);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
void on_write(uv_write_t* req, int status);

// After the session produced output: write what the socket takes now; if it is full, queue the
// rest and stop reading until it is written. Otherwise read on, or close if the session says so.
void flush(Conn* c) {
    Outbox& out = c->session->out();
    if (!out.empty()) {
        iovec iov[kMaxBufs];
        uv_buf_t bufs[kMaxBufs];
        int n = out.fill(iov, kMaxBufs);
        for (int i = 0; i < n; ++i) bufs[i] = uv_buf_init(static_cast<char*>(iov[i].iov_base), iov[i].iov_len);
        int r = uv_try_write(c->stream(), bufs, n);
        if (r < 0 && r != UV_EAGAIN) return close_conn(c);
        if (r > 0) out.consume(static_cast<std::size_t>(r));
        if (!out.empty()) {
            // The socket is full. uv_write copies the uv_buf_t array but not the bytes: they are
            // the Outbox's, which nothing appends to (we stop reading) or consumes until on_write.
            n = out.fill(iov, kMaxBufs);
            c->inflight = 0;
            for (int i = 0; i < n; ++i) {
                bufs[i] = uv_buf_init(static_cast<char*>(iov[i].iov_base), iov[i].iov_len);
                c->inflight += iov[i].iov_len;
            }
            if (uv_write(&c->wr, c->stream(), bufs, n, on_write) != 0) return close_conn(c);
            c->writing = true;
            if (c->reading) uv_read_stop(c->stream());
            c->reading = false;
            return;
        }
    }
    if (c->session->close_after_write()) return close_conn(c);
    if (!c->reading && uv_read_start(c->stream(), on_alloc, on_read) != 0) return close_conn(c);
    c->reading = true;
}

void on_write(uv_write_t* req, int status) {
    Conn* c = static_cast<Conn*>(req->data);
    c->writing = false;
    if (status < 0) return close_conn(c);  // UV_ECANCELED when the handle is closing, or a reset
    c->session->out().consume(c->inflight);
    flush(c);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Conn* c = static_cast<Conn*>(s->data);
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
    flush(c);
}

void on_connection(uv_stream_t* server, int status) {
    if (status < 0) return warn_once_a_second("accept", status);  // after libuv's EMFILE trick
    Conn* c = new Conn;
    c->tcp.data = c;
    c->wr.data = c;
    uv_tcp_init(server->loop, &c->tcp);  // no socket yet: uv_accept brings it
    if (int err = uv_accept(server, c->stream()); err != 0) {
        warn_once_a_second("uv_accept", err);
        return close_conn(c);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    Worker& w = worker_of(reinterpret_cast<uv_handle_t*>(server));
    c->session = make_session(w.opts.proto, w.id);
    flush(c);  // nothing to write yet: starts reading
}

// Stop: close every handle of this loop (listener, connections, the stop handle itself); the
// loop's uv_run then returns, as nothing is left active.
void close_all(uv_loop_t* loop) {
    uv_walk(loop, [](uv_handle_t* h, void*) {
        if (uv_is_closing(h)) return;
        if (h->data) close_conn(static_cast<Conn*>(h->data));
        else uv_close(h, nullptr);
    }, nullptr);
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
