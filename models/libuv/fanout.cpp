// The fan-out effect, the Node.js way: K calls started at once on keep-alive backend uv_tcp_t
// connections from a per-loop pool that grows on demand (http.Agent's free sockets), a counter
// per fan-out, the answer written when the last call is back.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "libuv.hpp"

namespace concbench::uvm {

static void on_backend_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

static void on_backend_closed(uv_handle_t* h) {
    auto* b = static_cast<Backend*>(h->data);
    Worker& w = *b->worker;
    if (b->prev) b->prev->next = b->next;
    else w.backends = b->next;
    if (b->next) b->next->prev = b->prev;
    delete b;
}

static void release(Fanout* f);

// The call on b is over (its answer, or a failure): record it and count it down.
static void finish_call(Backend* b, bool ok, std::string body) {
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

static void on_backend_write(uv_write_t* req, int status) {
    auto* b = static_cast<Backend*>(req->data);
    delete req;
    if (status < 0) close_backend(b);  // fails the call, if it is still this one's
}

static void send_call(Backend* b) {
    auto* req = new uv_write_t;
    req->data = b;
    uv_buf_t buf = uv_buf_init(b->request.data(), b->request.size());
    if (uv_write(req, b->stream(), &buf, 1, on_backend_write) != 0) {
        delete req;
        close_backend(b);
    }
}

static void on_backend_connect(uv_connect_t* req, int status) {
    auto* b = static_cast<Backend*>(req->data);
    if (status < 0) return close_backend(b);  // refused, or UV_ECANCELED when closed meanwhile
    if (uv_is_closing(b->handle())) return;
    b->connected = true;
    uv_tcp_nodelay(&b->tcp, 1);
    if (uv_read_start(b->stream(), on_alloc, on_backend_read) != 0) return close_backend(b);
    send_call(b);
}

static void on_backend_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
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
static void start_call(Worker& w, Fanout* f, int i, int ms) {
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

static void release(Fanout* f) {
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

}  // namespace concbench::uvm
