// The IOCP model's fan-out calls: a process-wide pool of keep-alive backend connections, grown
// with ConnectEx (which sends the first call's request with the connect). One call is one
// request and one answer on one connection, then the connection goes back to the pool.
#include "iocp.hpp"

namespace iocp {

struct Backend {
    SOCKET s = INVALID_SOCKET;
    Op op;
    concbench::BackendReader reader;
    std::string request;
    std::size_t sent = 0;
    Conn* client = nullptr;
    int index = 0, ms = 0;
    bool pooled = false;     // this call runs on a connection taken from the pool
    bool got_bytes = false;  // any byte of the answer came
    char buf[4096];
};

namespace {

// An immediate failure is reported through the port, never from inside the caller (which holds
// the client connection's lock).
void fail_later(Backend* b) {
    b->op.reset();
    b->op.kind = OpKind::brecv;
    b->op.ov.Internal = static_cast<ULONG_PTR>(-1);
    PostQueuedCompletionStatus(g.port, 0, 0, &b->op.ov);
}

void connect_new(Backend* b) {
    b->pooled = false;
    b->got_bytes = false;
    b->sent = 0;
    b->s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    if (b->s == INVALID_SOCKET) return fail_later(b);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    BOOL one = TRUE;
    setsockopt(b->s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<char*>(&one), sizeof one);
    if (bind(b->s, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 ||
        !CreateIoCompletionPort(reinterpret_cast<HANDLE>(b->s), g.port, 0, 0)) {
        closesocket(b->s);
        b->s = INVALID_SOCKET;
        return fail_later(b);
    }
    b->op.reset();
    b->op.kind = OpKind::connect;
    if (!g.connect_ex(b->s, reinterpret_cast<const sockaddr*>(&g.opts.backend), sizeof g.opts.backend,
                      b->request.data(), static_cast<DWORD>(b->request.size()), nullptr, &b->op.ov) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
        closesocket(b->s);
        b->s = INVALID_SOCKET;
        fail_later(b);
    }
}

void post_send(Backend* b) {
    b->op.reset();
    b->op.kind = OpKind::bsend;
    WSABUF w{static_cast<ULONG>(b->request.size() - b->sent), b->request.data() + b->sent};
    if (WSASend(b->s, &w, 1, nullptr, 0, &b->op.ov, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING)
        fail_later(b);
}

void post_recv(Backend* b) {
    b->op.reset();
    b->op.kind = OpKind::brecv;
    WSABUF w{sizeof b->buf, b->buf};
    DWORD flags = 0;
    if (WSARecv(b->s, &w, 1, nullptr, &flags, &b->op.ov, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING)
        fail_later(b);
}

void finish(Backend* b, bool ok, bool reusable) {
    Conn* c = b->client;
    int index = b->index;
    std::string body = ok ? b->reader.body() : std::string();
    b->client = nullptr;
    if (reusable && !g.stopping) {
        AcquireSRWLockExclusive(&g.pool_lock);
        g.pool.push_back(b);
        ReleaseSRWLockExclusive(&g.pool_lock);
    } else {
        if (b->s != INVALID_SOCKET) closesocket(b->s);
        delete b;
    }
    fanout_call_done(c, index, ok, std::move(body));
}

}  // namespace

void start_call(Conn* c, int index, int ms) {
    Backend* b = nullptr;
    AcquireSRWLockExclusive(&g.pool_lock);
    if (!g.pool.empty()) {
        b = g.pool.back();
        g.pool.pop_back();
    }
    ReleaseSRWLockExclusive(&g.pool_lock);
    if (!b) b = new Backend;
    b->client = c;
    b->index = index;
    b->ms = ms;
    b->request = concbench::backend_request(ms, index);
    b->reader.reset();
    if (!g.opts.has_backend) return fail_later(b);
    if (b->s == INVALID_SOCKET) return connect_new(b);
    b->pooled = true;
    b->got_bytes = false;
    b->sent = 0;
    post_send(b);
}

void on_backend_op(Op* op, DWORD err, DWORD bytes) {
    Backend* b = CONTAINING_RECORD(op, Backend, op);
    if (err != 0 || (op->kind == OpKind::brecv && bytes == 0)) {
        if (b->s != INVALID_SOCKET) closesocket(b->s);
        b->s = INVALID_SOCKET;
        // The backend closed a pooled connection while it was idle: retry once on a fresh one,
        // as HTTP clients do. A failure on a fresh connection is the call's failure.
        if (b->pooled && !b->got_bytes && !g.stopping && g.opts.has_backend) {
            b->reader.reset();
            return connect_new(b);
        }
        return finish(b, false, false);
    }
    switch (op->kind) {
        case OpKind::connect:
            setsockopt(b->s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0);
            [[fallthrough]];
        case OpKind::bsend:
            b->sent += bytes;
            if (b->sent < b->request.size()) return post_send(b);
            return post_recv(b);
        case OpKind::brecv:
            b->got_bytes = true;
            switch (b->reader.feed(b->buf, bytes)) {
                case concbench::BackendReader::State::more: return post_recv(b);
                case concbench::BackendReader::State::done:
                    return finish(b, b->reader.status() == 200, b->reader.keep_alive());
                case concbench::BackendReader::State::error: return finish(b, false, false);
            }
            return;
        default:
            return;
    }
}

void close_pool() {
    AcquireSRWLockExclusive(&g.pool_lock);
    for (Backend* b : g.pool) {
        closesocket(b->s);
        delete b;
    }
    g.pool.clear();
    ReleaseSRWLockExclusive(&g.pool_lock);
}

}  // namespace iocp
