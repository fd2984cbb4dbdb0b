// The IOCP model's connections: overlapped WSARecv/WSASend, effects (a timer-queue wait,
// fan-out, TransmitFile), and the reference count that frees a connection once closed and its
// last operation has completed.
#include <algorithm>
#include <cstring>

#include "iocp.hpp"

namespace iocp {

namespace {

constexpr std::size_t kRecvBuffer = 16 * 1024;
constexpr std::size_t kMaxHeldInput = 64 * 1024;  // input held while an effect is under way

VOID CALLBACK timer_fired(PVOID param, BOOLEAN) {
    Timer* t = static_cast<Timer*>(param);
    if (!t->fired.exchange(true)) PostQueuedCompletionStatus(g.port, 0, 0, &t->op.ov);
}

}  // namespace

bool Timer::arm(unsigned ms) {
    fired = false;
    op.ov = OVERLAPPED{};
    op.kind = op.kind;  // set by the owner
    return CreateTimerQueueTimer(&h, nullptr, timer_fired, this, ms, 0, WT_EXECUTEONLYONCE) != 0;
}

bool Timer::cancel() {
    if (!h) return false;
    DeleteTimerQueueTimer(nullptr, h, INVALID_HANDLE_VALUE);  // waits for a running callback
    h = nullptr;
    return !fired.exchange(true);
}

struct FxState {
    bool active = false;              // a wait or fan-out is under way
    std::size_t held_input = 0;
    std::vector<std::string> bodies;  // fan-out answers so far
    int pending = 0;
    bool ok = true;
    HANDLE file = INVALID_HANDLE_VALUE;
    std::size_t file_left = 0;
    Timer timer;
};

struct Conn {
    SOCKET s = INVALID_SOCKET;
    SRWLOCK lock = SRWLOCK_INIT;
    int refs = 0;                     // operations in flight (and fan-out calls out)
    bool closed = false, eof = false, recv_posted = false, send_posted = false, file_posted = false;
    std::unique_ptr<concbench::Session> session;
    std::unique_ptr<FxState> fx;
    Op rop, sop;
    WSABUF wbufs[16];
    char buf[kRecvBuffer];
    Conn *prev = nullptr, *next = nullptr;
};

namespace {

// Closes the socket (outstanding operations complete with an error, each dropping its ref).
void close_locked(Conn* c) {
    if (c->closed) return;
    c->closed = true;
    closesocket(c->s);
    if (FxState* fx = c->fx.get()) {
        if (fx->timer.cancel()) --c->refs;
        if (fx->file != INVALID_HANDLE_VALUE && !c->file_posted) {
            CloseHandle(fx->file);
            fx->file = INVALID_HANDLE_VALUE;
        }
    }
    AcquireSRWLockExclusive(&g.conns_lock);
    if (c->prev) c->prev->next = c->next;
    else if (g.conns == c) g.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
    ReleaseSRWLockExclusive(&g.conns_lock);
}

// Releases the lock and frees the connection if it is closed and nothing refers to it.
void unlock(Conn* c) {
    bool gone = c->closed && c->refs == 0;
    ReleaseSRWLockExclusive(&c->lock);
    if (gone) {
        if (c->fx && c->fx->file != INVALID_HANDLE_VALUE) CloseHandle(c->fx->file);
        delete c;
    }
}

void post_recv(Conn* c) {
    if (c->recv_posted || c->closed) return;
    c->rop.reset();
    WSABUF b{static_cast<ULONG>(sizeof c->buf), c->buf};
    DWORD flags = 0;
    if (WSARecv(c->s, &b, 1, nullptr, &flags, &c->rop.ov, nullptr) != 0 && WSAGetLastError() != WSA_IO_PENDING)
        return close_locked(c);
    c->recv_posted = true;
    ++c->refs;
}

bool post_send(Conn* c) {
    iovec iov[16];
    int n = c->session->out().fill(iov, 16);
    for (int i = 0; i < n; ++i) {
        c->wbufs[i].buf = static_cast<char*>(iov[i].iov_base);
        c->wbufs[i].len = static_cast<ULONG>(iov[i].iov_len);
    }
    c->sop.reset();
    c->sop.kind = OpKind::send;
    if (WSASend(c->s, c->wbufs, static_cast<DWORD>(n), nullptr, 0, &c->sop.ov, nullptr) != 0 &&
        WSAGetLastError() != WSA_IO_PENDING)
        return false;
    c->send_posted = true;
    ++c->refs;
    return true;
}

bool post_file(Conn* c) {
    FxState& fx = *c->fx;
    c->sop.reset();
    c->sop.kind = OpKind::file;
    // One TransmitFile per up to 1 GiB (it takes at most 2^31 - 1 bytes a call).
    DWORD n = static_cast<DWORD>(std::min<std::size_t>(fx.file_left, 1u << 30));
    if (!g.transmit_file(c->s, fx.file, n, 0, &c->sop.ov, nullptr, 0) && WSAGetLastError() != WSA_IO_PENDING)
        return false;
    c->file_posted = true;
    ++c->refs;
    return true;
}

void start_effect(Conn* c);

// Moves a connection on after anything happened to it (called with its lock held).
void progress(Conn* c) {
    while (!c->closed) {
        concbench::Session& s = *c->session;
        if (c->send_posted || c->file_posted) return;
        if (!s.out().empty()) {
            if (!post_send(c)) close_locked(c);
            return;
        }
        FxState* fx = c->fx.get();
        if (fx && fx->file != INVALID_HANDLE_VALUE) {
            if (fx->file_left == 0) {
                CloseHandle(fx->file);
                fx->file = INVALID_HANDLE_VALUE;
                s.file_sent();
                continue;
            }
            if (!post_file(c)) close_locked(c);
            return;
        }
        if (s.busy()) {
            if (fx && fx->active) {
                // Under way: keep a recv posted (a reset is seen at once) until 64 KiB came.
                if (fx->held_input < kMaxHeldInput && !c->eof) post_recv(c);
                return;
            }
            start_effect(c);
            continue;
        }
        if (s.close_after_write() || c->eof) return close_locked(c);
        post_recv(c);
        return;
    }
}

void start_effect(Conn* c) {
    if (!c->fx) {
        c->fx = std::make_unique<FxState>();
        c->fx->timer.op.kind = OpKind::timer;
        c->fx->timer.op.owner = c;
    }
    FxState& fx = *c->fx;
    concbench::Session& s = *c->session;
    const concbench::Effect& e = s.effect();
    fx.held_input = 0;
    switch (e.kind) {
        case concbench::Effect::Kind::wait:
            fx.active = true;
            if (!fx.timer.arm(static_cast<unsigned>(e.ms))) return close_locked(c);
            ++c->refs;
            return;
        case concbench::Effect::Kind::fanout: {
            fx.active = true;
            fx.ok = true;
            fx.pending = e.calls;
            fx.bodies.assign(static_cast<std::size_t>(e.calls), std::string());
            c->refs += e.calls;  // each call holds the connection until it reports
            for (int i = 0; i < e.calls; ++i) start_call(c, i, e.ms);
            return;
        }
        case concbench::Effect::Kind::file: {
            HANDLE f = INVALID_HANDLE_VALUE;
            LARGE_INTEGER size{};
            if (!g.opts.docroot.empty()) {
                std::string path = g.opts.docroot + "\\" + e.file;
                f = CreateFileA(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                                FILE_FLAG_SEQUENTIAL_SCAN, nullptr);
                if (f != INVALID_HANDLE_VALUE && (GetFileType(f) != FILE_TYPE_DISK || !GetFileSizeEx(f, &size))) {
                    CloseHandle(f);
                    f = INVALID_HANDLE_VALUE;
                }
            }
            std::size_t n = s.complete_file(f == INVALID_HANDLE_VALUE ? -1 : size.QuadPart);
            if (n == 0) {
                if (f != INVALID_HANDLE_VALUE) CloseHandle(f);
                return;
            }
            fx.file = f;
            fx.file_left = n;
            return;
        }
        case concbench::Effect::Kind::none:
            return;
    }
}

}  // namespace

void open_conn(SOCKET s) {
    BOOL one = TRUE;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<char*>(&one), sizeof one);
    Conn* c = new Conn;
    c->s = s;
    c->rop.kind = OpKind::recv;
    c->rop.owner = c->sop.owner = c;
    c->session = concbench::make_session(g.opts.proto, g.id);
    if (!CreateIoCompletionPort(reinterpret_cast<HANDLE>(s), g.port, 0, 0)) {
        closesocket(s);
        delete c;
        return;
    }
    // Completions of operations that succeed at once still come through the port (the default).
    AcquireSRWLockExclusive(&g.conns_lock);
    c->next = g.conns;
    if (g.conns) g.conns->prev = c;
    g.conns = c;
    ReleaseSRWLockExclusive(&g.conns_lock);
    AcquireSRWLockExclusive(&c->lock);
    post_recv(c);
    unlock(c);
}

void on_conn_op(Op* op, DWORD err, DWORD bytes) {
    Conn* c = static_cast<Conn*>(op->owner);
    AcquireSRWLockExclusive(&c->lock);
    --c->refs;
    switch (op->kind) {
        case OpKind::recv:
            c->recv_posted = false;
            if (c->closed) break;
            if (err != 0) {
                close_locked(c);  // reset by the peer
            } else if (bytes == 0) {
                c->eof = true;
                c->session->peer_closed();
                progress(c);
            } else {
                if (c->fx && c->fx->active) c->fx->held_input += bytes;
                c->session->feed(c->buf, bytes);
                progress(c);
            }
            break;
        case OpKind::send:
            c->send_posted = false;
            if (c->closed) break;
            if (err != 0) {
                close_locked(c);
                break;
            }
            c->session->out().consume(bytes);
            progress(c);
            break;
        case OpKind::file:
            c->file_posted = false;
            if (c->closed) break;
            if (err != 0) {
                close_locked(c);
                break;
            }
            c->fx->file_left -= std::min<std::size_t>(c->fx->file_left, std::min<std::size_t>(c->fx->file_left, 1u << 30));
            progress(c);
            break;
        case OpKind::timer:
            c->fx->timer.cancel();  // frees the timer (it has fired)
            if (c->closed) break;
            c->fx->active = false;
            c->session->complete_wait();
            progress(c);
            break;
        default:
            break;
    }
    unlock(c);
}

void fanout_call_done(Conn* c, int index, bool ok, std::string body) {
    AcquireSRWLockExclusive(&c->lock);
    --c->refs;
    FxState& fx = *c->fx;
    fx.ok = fx.ok && ok;
    if (ok) fx.bodies[static_cast<std::size_t>(index)] = std::move(body);
    if (--fx.pending == 0 && !c->closed) {
        fx.active = false;
        std::vector<std::string> bodies;
        bodies.swap(fx.bodies);
        c->session->complete_fanout(bodies, fx.ok);
        progress(c);
    }
    unlock(c);
}

void close_all_conns() {
    for (;;) {
        AcquireSRWLockExclusive(&g.conns_lock);
        Conn* c = g.conns;
        ReleaseSRWLockExclusive(&g.conns_lock);
        if (!c) return;
        AcquireSRWLockExclusive(&c->lock);
        close_locked(c);
        ReleaseSRWLockExclusive(&c->lock);  // not freed: completions may still be queued; exit follows
    }
}

}  // namespace iocp
