// server-uring: a completion-based server on io_uring. One ring per worker thread; the kernel does
// the IO and posts completions, the loop reacts to them:
//   - multishot accept: one SQE keeps accepting; on -EMFILE the pending connections are shed
//     (accept_connection's reserve-fd trick) and accept is re-armed after a 10 ms timeout SQE;
//   - multishot recv into a provided-buffer ring (mmap + io_uring_buf_ring_init +
//     io_uring_register_buf_ring, as liburing 2.3 has no io_uring_setup_buf_ring): no read
//     buffer per connection, a buffer is returned to the ring as soon as its bytes are fed to the
//     session; a recv that ends without IORING_CQE_F_MORE (-ENOBUFS, CQ overflow) is re-armed
//     once the batch has returned its buffers, so no connection starves;
//   - one send (send, or sendmsg for several outbox segments) in flight per connection keeps the
//     byte order; the outbox is never touched while the kernel may still read it, so bytes that
//     arrive meanwhile wait in a small per-connection queue, and past 64 KiB the recv is
//     cancelled until the output drains (backpressure);
//   - effects (a request that needs IO before it can answer), started once the connection's output
//     has drained and carried out by the ring too, while the multishot recv stays armed so a reset
//     is seen at once:
//       wait:   one IORING_OP_TIMEOUT SQE (a relative hrtimer), removed if the client goes away;
//       fanout: K calls over non-blocking backend sockets from a per-worker pool of persistent
//               keep-alive connections (grown on demand with IORING_OP_CONNECT), each a send then
//               plain recvs into the same buffer ring, fed to a BackendReader; a counter per
//               fan-out completes it when the K-th call is back;
//       file:   after the head, one linked chain per up to 1 MiB: READ 64 KiB into the
//               connection's chunk buffer -> SEND it (MSG_WAITALL) -> READ the next 64 KiB into
//               the same buffer -> SEND ...; the kernel runs the chain in order without a trip
//               back to the loop per chunk, and still one read and one send at a time;
//   - one io_uring_submit_and_wait per loop iteration: every SQE of a batch in one syscall;
//   - IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN when the kernel takes them (completion work
//     runs only when the loop asks for it), plain flags otherwise;
//   - stop: a poll SQE on the signalfd (worker 0) or on an eventfd every other ring watches;
//     then cancel everything (IORING_ASYNC_CANCEL_ANY), close every socket and the listener,
//     reap the last completions and only then io_uring_queue_exit, so the port is free at once.
// Needs Linux >= 6.1 (multishot recv, buffer rings, DEFER_TASKRUN) and liburing >= 2.3.
// Run: server-uring --proto http --host 127.0.0.1 --port 0 [--workers N] [--backend H:P] [--docroot DIR]
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server.hpp"

using namespace concbench;

namespace {

constexpr ModelTraits kTraits{CONCBENCH_MODEL, true, 1};
constexpr unsigned kSqEntries = 1024, kCqEntries = 8192;
constexpr unsigned kBufCount = 2048, kBufSize = 2048;  // the worker's provided buffers: 4 MiB
constexpr int kBufGroup = 0;
constexpr std::size_t kMaxPendingIn = 64 * 1024;       // input held while a send or an effect is pending
constexpr int kMaxIov = 16;
constexpr std::size_t kChunk = 64 * 1024;              // a file is read and sent this much at a time
constexpr int kChainChunks = 16;                       // chunks per linked chain (1 MiB, 32 SQEs)
constexpr std::size_t kMaxSpareChunks = 64;            // chunk buffers a worker keeps for reuse

// What a completion is about: the low 4 bits of user_data; a Conn's or a Backend's pointer (both
// 16-byte aligned) above them.
enum Tag : uint64_t {
    kRecv, kSend, kAccept, kStop, kTimer, kCancel,  // client side, the listener, the stop signal
    kWait,                                          // a connection's wait effect (timeout SQE)
    kRead,                                          // a chunk read of a file effect's chain
    kBConnect, kBSend, kBRecv,                      // a backend connection of a fan-out
};
constexpr uint64_t kTagMask = 15;

struct Fanout;

// What a connection needs beyond an idle keep-alive one, made when it needs any of it (held
// input, a multi-segment send, an effect) and dropped once it is idle again: an idle connection
// carries only a Conn and its session.
struct Extra {
    std::string pending_in;     // bytes read while a send or an effect was pending
    msghdr msg{};               // a multi-segment send's header and iovecs
    iovec iov[kMaxIov];
    __kernel_timespec ts{};     // wait: the timeout SQE's relative time
    Fanout* fan = nullptr;      // fanout: the calls in progress (owned by the calls)
    int file_fd = -1;           // file: the open file while its bytes go out
    long long file_off = 0, file_left = 0;  // next offset to read, bytes not yet in a chain
    char* chunk = nullptr;      // kChunk bytes, the chain's buffer
    int chain = 0;              // completions of the current chain not yet seen
    unsigned last_len = 0;      // what the chain's last send must report
    bool chain_failed = false;
    int chain_err = 0;          // the first failure's result (a short read: its byte count)
};

struct alignas(16) Conn {
    int fd;
    bool recv_armed = false, send_inflight = false, recv_cancelled = false;
    bool eof = false, eof_fed = false, closed = false, rearm_queued = false;
    bool effect_started = false;   // the session's current effect is being carried out
    bool wait_armed = false, read_inflight = false;
    bool close_deferred = false;   // shut down with a chain in flight: close the fds once it ends
    std::unique_ptr<Session> session;
    std::unique_ptr<Extra> x;      // see Extra
    Conn *prev = nullptr, *next = nullptr;  // every connection of the worker, for the stop

    std::size_t pending() const { return x ? x->pending_in.size() : 0; }
    Extra& extra() {
        if (!x) x = std::make_unique<Extra>();
        return *x;
    }
};

static_assert(sizeof(Conn) <= 48, "an idle connection's record stays small (PSS per idle connection)");

// One fan-out: K calls, a counter, the bodies in call order. The owner is cleared when the client
// goes away; the calls then still run to the end of their answers (the connections stay clean for
// the pool) and the last one frees this.
struct Fanout {
    Conn* owner;
    int left;
    bool ok = true;
    std::vector<std::string> bodies;
};

// A keep-alive connection to the fan-out backend: idle in the worker's pool, or carrying one call.
// One operation (connect, send or recv) in flight at a time.
struct alignas(16) Backend {
    int fd = -1;
    bool connected = false, reused = false, got_bytes = false, closed = false;
    bool op_inflight = false, rearm_queued = false;
    Tag op = kBConnect;            // the tag of the operation in flight, for its cancel
    Fanout* fan = nullptr;
    int index = 0;                 // this call's id (and its body's slot)
    std::string req;
    std::size_t sent = 0;
    BackendReader reader;
    Backend *prev = nullptr, *next = nullptr;  // every backend connection of the worker
};

struct Worker {
    io_uring ring;
    ServerOptions opts;
    ServerIdentity id;
    int listen_fd = -1, stop_fd = -1, wake_fd = -1;  // wake_fd: the eventfd worker 0 writes
    bool is_signalfd = false, stopping = false;
    io_uring_buf_ring* br = nullptr;
    char* bufs = nullptr;
    int returned = 0;       // buffers given back in this batch, published by one advance
    long inflight = 0;      // SQEs whose final completion has not been seen
    __kernel_timespec pause{0, 10 * 1000 * 1000};
    Conn* conns = nullptr;
    std::vector<Conn*> rearm;  // recvs that ended (-ENOBUFS...) to re-arm after the batch
    bool has_backend = false;
    sockaddr_in backend_addr{};
    Backend* backends = nullptr;        // all backend connections
    std::vector<Backend*> idle;         // the pool: connected, no call, nothing unread
    std::vector<Backend*> brearm;       // backend recvs that hit -ENOBUFS
    std::vector<char*> spare_chunks;
    int backend_warnings = 0;

    void setup_ring() {
        has_backend = backend_address(opts, backend_addr);
        io_uring_params p{};
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        p.cq_entries = kCqEntries;
        int r = io_uring_queue_init_params(kSqEntries, &ring, &p);
        if (r == -EINVAL) {  // a kernel before 6.1: no DEFER_TASKRUN
            p = io_uring_params{};
            p.flags = IORING_SETUP_CQSIZE;
            p.cq_entries = kCqEntries;
            r = io_uring_queue_init_params(kSqEntries, &ring, &p);
        }
        if (r < 0) fatal("io_uring_queue_init: %s (io_uring unavailable here)", strerror(-r));
        io_uring_register_ring_fd(&ring);  // io_uring_enter skips the fd lookup (optional)
        std::size_t ring_bytes = kBufCount * sizeof(io_uring_buf);
        void* mem = mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) fatal("mmap: %s", strerror(errno));
        br = static_cast<io_uring_buf_ring*>(mem);
        io_uring_buf_ring_init(br);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<uintptr_t>(mem);
        reg.ring_entries = kBufCount;
        reg.bgid = kBufGroup;
        if ((r = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
            fatal("io_uring_register_buf_ring: %s (needs Linux >= 5.19)", strerror(-r));
        // Populated now: the ring rotates through every buffer within its first 2048 reads anyway,
        // so this fixed per-worker cost is resident from the start rather than growing into the
        // first connections' share.
        bufs = static_cast<char*>(mmap(nullptr, std::size_t{kBufCount} * kBufSize, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0));
        if (bufs == MAP_FAILED) fatal("mmap: %s", strerror(errno));
        for (unsigned i = 0; i < kBufCount; ++i) give_back(static_cast<uint16_t>(i));
        publish_buffers();
        arm_accept();
        io_uring_prep_poll_add(sqe(kStop), stop_fd, POLLIN);
    }

    io_uring_sqe* sqe(Tag tag, const void* obj = nullptr) {
        io_uring_sqe* s = io_uring_get_sqe(&ring);
        if (!s) {  // the SQ is full: hand it to the kernel and take a fresh slot
            io_uring_submit(&ring);
            s = io_uring_get_sqe(&ring);
        }
        io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(obj) | tag);
        ++inflight;
        return s;
    }
    void cancel(const void* obj, Tag tag) {
        io_uring_prep_cancel64(sqe(kCancel), reinterpret_cast<uint64_t>(obj) | tag, 0);
    }
    void give_back(uint16_t bid) {
        io_uring_buf_ring_add(br, bufs + std::size_t{bid} * kBufSize, kBufSize, bid,
                              io_uring_buf_ring_mask(kBufCount), returned++);
    }
    void publish_buffers() {
        if (returned) io_uring_buf_ring_advance(br, returned);
        returned = 0;
    }
    void arm_accept() {
        io_uring_prep_multishot_accept(sqe(kAccept), listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    }
    void arm_recv(Conn* c) {
        io_uring_sqe* s = sqe(kRecv, c);
        io_uring_prep_recv_multishot(s, c->fd, nullptr, 0, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = kBufGroup;
        c->recv_armed = true;
        c->recv_cancelled = false;
    }

    void open_conn(int fd) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        Conn* c = new Conn;
        c->fd = fd;
        c->session = make_session(opts.proto, id);
        c->next = conns;
        if (conns) conns->prev = c;
        conns = c;
        arm_recv(c);
    }
    // Closes the socket now; the Conn lives until the kernel is done with its buffers. An effect
    // in progress is abandoned: its timer removed, its file read cancelled, its fan-out's calls
    // left to finish on their own.
    void close_conn(Conn* c) {
        if (c->closed) return;
        c->closed = true;
        if (c->recv_armed) cancel(c, kRecv);
        if (c->wait_armed)
            io_uring_prep_timeout_remove(sqe(kCancel), reinterpret_cast<uint64_t>(c) | kWait, 0);
        if (Extra* fx = c->x.get()) {
            if (fx->fan) fx->fan->owner = nullptr;
            fx->fan = nullptr;
        }
        if (c->x && c->x->chain > 0) {
            // The chain's later SQEs take their fds when they are issued, so the numbers must not
            // be reused before it ends: shut the socket down (the send in progress fails, the rest
            // of the chain is cancelled by the kernel) and close both fds on its last completion.
            cancel(c, kSend);
            shutdown(c->fd, SHUT_RDWR);
            c->close_deferred = true;
        } else {
            if (c->send_inflight) cancel(c, kSend);
            close_fds(c);
        }
        maybe_free(c);
    }
    void close_fds(Conn* c) {
        close(c->fd);
        if (c->x && c->x->file_fd >= 0) close(c->x->file_fd);
        if (c->x) c->x->file_fd = -1;
    }
    void maybe_free(Conn* c) {
        if (!c->closed || c->recv_armed || c->send_inflight || c->rearm_queued || c->wait_armed ||
            c->read_inflight)
            return;
        if (c->prev) c->prev->next = c->next;
        else conns = c->next;
        if (c->next) c->next->prev = c->prev;
        if (c->x && c->x->chunk) put_chunk(c->x->chunk);
        delete c;
    }

    // The connection's next step once nothing of the kernel's touches its outbox.
    void kick(Conn* c) {
        if (c->closed || c->send_inflight || stopping) return;
        Session& s = *c->session;
        if (!s.busy() && c->pending()) {
            s.feed(c->x->pending_in.data(), c->x->pending_in.size());
            std::string().swap(c->x->pending_in);
        }
        if (c->eof && !c->eof_fed && !s.busy() && !c->pending()) {
            c->eof_fed = true;
            s.peer_closed();
        }
        Outbox& out = s.out();
        if (!out.empty()) return start_send(c, out);
        if (s.busy()) {
            // Keep the recv armed while an effect is pending (a reset must cancel it), unless the
            // held input is already at its bound.
            if (!c->recv_armed && !c->rearm_queued && !c->eof && c->pending() < kMaxPendingIn)
                arm_recv(c);
            if (!c->effect_started) return start_effect(c);
            if (c->x && c->x->file_fd >= 0 && c->x->chain == 0) return file_step(c);
            return;
        }
        if (s.close_after_write() || c->eof) return close_conn(c);
        // Idle again: nothing held, nothing in flight but the recv, no effect. What Extra holds
        // is dropped, so a connection that once waited or sent a file idles as small as any.
        if (c->x && !c->x->chunk) c->x.reset();
        if (!c->recv_armed) arm_recv(c);
    }
    void start_send(Conn* c, Outbox& out) {
        iovec one;
        if (out.fill(&one, 1) == 1 && one.iov_len == out.size()) {
            io_uring_prep_send(sqe(kSend, c), c->fd, one.iov_base, one.iov_len, MSG_NOSIGNAL);
        } else {
            Extra& x = c->extra();
            x.msg = msghdr{};
            x.msg.msg_iov = x.iov;
            x.msg.msg_iovlen = static_cast<std::size_t>(out.fill(x.iov, kMaxIov));
            io_uring_prep_sendmsg(sqe(kSend, c), c->fd, &x.msg, MSG_NOSIGNAL);
        }
        c->send_inflight = true;
    }

    // ---- effects -------------------------------------------------------------------------------
    // Started from kick() once the output before the effect has gone out, so a completion never
    // writes to an outbox the kernel is reading. A completion that comes at once (no backend, no
    // such file) calls kick() again, which sends its answer.
    void start_effect(Conn* c) {
        const Effect& e = c->session->effect();
        Extra& fx = c->extra();
        c->effect_started = true;
        switch (e.kind) {
        case Effect::Kind::wait:
            fx.ts.tv_sec = e.ms / 1000;
            fx.ts.tv_nsec = static_cast<long long>(e.ms % 1000) * 1000 * 1000;
            io_uring_prep_timeout(sqe(kWait, c), &fx.ts, 0, 0);
            c->wait_armed = true;
            return;
        case Effect::Kind::fanout:
            return start_fanout(c, e);
        case Effect::Kind::file: {
            long long size = -1;
            int fd = open_docroot_file(opts, e.file, size);
            std::size_t n = c->session->complete_file(fd < 0 ? -1 : size);
            if (n == 0) {  // 404, HEAD, an empty file: the head alone
                if (fd >= 0) close(fd);
                c->effect_started = false;
                return kick(c);
            }
            fx.file_fd = fd;
            fx.file_off = 0;
            fx.file_left = static_cast<long long>(n);
            return kick(c);  // the head goes out, then file_step() sends the bytes
        }
        case Effect::Kind::none:
            c->effect_started = false;
            return;
        }
    }
    void effect_done(Conn* c) {
        c->effect_started = false;
        kick(c);
    }

    void on_wait(Conn* c, int res) {
        c->wait_armed = false;
        if (c->closed || stopping) return maybe_free(c);
        if (res != -ETIME && res != 0) {  // cannot happen unless the kernel refuses the timeout
            warn("timeout: %s", strerror(-res));
            return close_conn(c);
        }
        c->session->complete_wait();
        effect_done(c);
    }

    // file: read a chunk (one read in flight), send it (the one send in flight), repeat.
    char* get_chunk() {
        if (spare_chunks.empty()) return new char[kChunk];
        char* p = spare_chunks.back();
        spare_chunks.pop_back();
        return p;
    }
    void put_chunk(char* p) {
        if (spare_chunks.size() < kMaxSpareChunks) spare_chunks.push_back(p);
        else delete[] p;
    }
    // The next step of a file effect, called when no send is in flight and the outbox (the head)
    // is empty: the next chain, or the end.
    void file_step(Conn* c) {
        Extra& fx = *c->x;
        if (fx.file_left == 0) {  // every byte sent
            close(fx.file_fd);
            fx.file_fd = -1;
            put_chunk(fx.chunk);
            fx.chunk = nullptr;
            c->session->file_sent();
            return effect_done(c);
        }
        if (!fx.chunk) fx.chunk = get_chunk();
        int chunks = static_cast<int>(std::min<long long>((fx.file_left + kChunk - 1) / kChunk, kChainChunks));
        // A chain must go to the kernel in one submission (one cut at the end of a submit would
        // start the rest as a chain of its own, out of order).
        if (io_uring_sq_space_left(&ring) < static_cast<unsigned>(2 * chunks)) io_uring_submit(&ring);
        for (int k = 0; k < chunks; ++k) {
            auto len = static_cast<unsigned>(std::min<long long>(fx.file_left, kChunk));
            io_uring_sqe* r = sqe(kRead, c);
            io_uring_prep_read(r, fx.file_fd, fx.chunk, len, static_cast<uint64_t>(fx.file_off));
            r->flags |= IOSQE_IO_LINK;
            io_uring_sqe* w = sqe(kSend, c);
            // MSG_WAITALL: the kernel retries a short send itself, so each send reports len or fails.
            io_uring_prep_send(w, c->fd, fx.chunk, len, MSG_NOSIGNAL | MSG_WAITALL);
            if (k + 1 < chunks) w->flags |= IOSQE_IO_LINK;
            fx.file_off += len;
            fx.file_left -= len;
            fx.last_len = len;
        }
        fx.chain = 2 * chunks;
        fx.chain_failed = false;
        c->send_inflight = c->read_inflight = true;
    }
    // One completion of a chain (they come in order; a failure cancels the rest with -ECANCELED).
    void on_chain(Conn* c, int res, bool is_read = false) {
        Extra& fx = *c->x;
        // A read must fill its chunk, the chain's last read exactly last_len: a short one (the
        // file shrank) has already broken the link, so what follows comes back -ECANCELED.
        bool short_read = is_read && res >= 0 && res != static_cast<int>(fx.chain == 2 ? fx.last_len : kChunk);
        if ((res < 0 || short_read) && !fx.chain_failed) {
            fx.chain_failed = true;
            fx.chain_err = res;
        }
        if (--fx.chain > 0) return;
        c->send_inflight = c->read_inflight = false;
        if (res != static_cast<int>(fx.last_len) && !fx.chain_failed) {  // the last send, whole
            fx.chain_failed = true;
            fx.chain_err = res;
        }
        if (c->close_deferred) {
            c->close_deferred = false;
            close_fds(c);
        }
        if (c->closed || stopping) return maybe_free(c);
        if (fx.chain_failed) {
            // A reset, or a file that shrank after its head promised its length: the answer
            // cannot be completed, so the connection is closed (the client sees a short body).
            int err = fx.chain_err;
            if (err != -ECANCELED && err != -EPIPE && err != -ECONNRESET)
                warn("file %s: %s", c->session->effect().file.c_str(), err < 0 ? strerror(-err) : "short read");
            return close_conn(c);
        }
        kick(c);
    }

    // fanout: K calls at once over pooled backend connections; a counter completes the effect.
    void start_fanout(Conn* c, const Effect& e) {
        if (!has_backend) {
            c->session->complete_fanout({}, false);
            return effect_done(c);
        }
        // One count more than the calls, dropped after the loop: a call that fails at once
        // (socket() refused) cannot complete the fan-out while it is still being started.
        auto* f = new Fanout{c, e.calls + 1, true, std::vector<std::string>(static_cast<std::size_t>(e.calls))};
        c->x->fan = f;
        for (int i = 0; i < e.calls; ++i) {
            Backend* b = take_backend();
            if (!b) {
                call_done(f, i, false);
                continue;
            }
            b->fan = f;
            b->index = i;
            b->req = backend_request(e.ms, i);
            start_call(b);
        }
        call_done(f, -1, true);
    }
    // An idle pooled connection, or a new one (not yet connected); nullptr if no socket can be made.
    Backend* take_backend() {
        if (!idle.empty()) {
            Backend* b = idle.back();
            idle.pop_back();
            b->reused = true;
            return b;
        }
        return new_backend();
    }
    Backend* new_backend() {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            warn("backend socket: %s", strerror(errno));
            return nullptr;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto* b = new Backend;
        b->fd = fd;
        b->next = backends;
        if (backends) backends->prev = b;
        backends = b;
        return b;
    }
    void start_call(Backend* b) {
        b->reader.reset();
        b->sent = 0;
        b->got_bytes = false;
        if (!b->connected) {
            io_uring_prep_connect(sqe(kBConnect, b), b->fd, reinterpret_cast<const sockaddr*>(&backend_addr),
                                  sizeof backend_addr);
            b->op = kBConnect;
            b->op_inflight = true;
            return;
        }
        backend_send(b);
    }
    void backend_send(Backend* b) {
        io_uring_prep_send(sqe(kBSend, b), b->fd, b->req.data() + b->sent, b->req.size() - b->sent, MSG_NOSIGNAL);
        b->op = kBSend;
        b->op_inflight = true;
    }
    void backend_recv(Backend* b) {
        io_uring_sqe* s = sqe(kBRecv, b);
        io_uring_prep_recv(s, b->fd, nullptr, 0, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = kBufGroup;
        b->op = kBRecv;
        b->op_inflight = true;
    }
    void on_bconnect(Backend* b, int res) {
        b->op_inflight = false;
        if (b->closed || stopping) return maybe_free(b);
        if (res < 0) return call_failed(b, "connect", res);
        b->connected = true;
        backend_send(b);
    }
    void on_bsend(Backend* b, int res) {
        b->op_inflight = false;
        if (b->closed || stopping) return maybe_free(b);
        if (res < 0) return call_failed(b, "send", res);
        b->sent += static_cast<std::size_t>(res);
        if (b->sent < b->req.size()) return backend_send(b);
        backend_recv(b);
    }
    void on_brecv(Backend* b, int res, unsigned flags) {
        b->op_inflight = false;
        BackendReader::State st = BackendReader::State::more;
        if (flags & IORING_CQE_F_BUFFER) {
            uint16_t bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
            if (res > 0 && !b->closed && !stopping) {
                b->got_bytes = true;
                st = b->reader.feed(bufs + std::size_t{bid} * kBufSize, static_cast<std::size_t>(res));
            }
            give_back(bid);
        }
        if (b->closed || stopping) return maybe_free(b);
        if (res == -ENOBUFS) {  // the ring ran dry: again once this batch has returned buffers
            b->rearm_queued = true;
            brearm.push_back(b);
            return;
        }
        if (res <= 0) return call_failed(b, "recv", res == 0 ? -ECONNRESET : res);
        if (st == BackendReader::State::more) return backend_recv(b);
        if (st == BackendReader::State::error) return call_failed(b, "answer", -EPROTO);
        Fanout* f = b->fan;
        int index = b->index;
        bool ok = b->reader.status() == 200;
        std::string body = ok ? b->reader.body() : std::string();
        b->fan = nullptr;
        if (ok && b->reader.keep_alive()) idle.push_back(b);  // the answer is read whole: reusable
        else close_backend(b);
        call_done(f, index, ok, std::move(body));
    }
    // A call that failed. On a pooled connection that gave no byte back, the backend most likely
    // closed it while idle: the GET is retried once on a fresh connection, as HTTP clients do.
    void call_failed(Backend* b, const char* what, int err) {
        Fanout* f = b->fan;
        int index = b->index;
        bool retry = b->reused && !b->got_bytes && f->owner;
        std::string req = std::move(b->req);
        b->fan = nullptr;
        close_backend(b);
        if (retry) {
            if (Backend* nb = new_backend()) {
                nb->fan = f;
                nb->index = index;
                nb->req = std::move(req);
                return start_call(nb);
            }
        }
        if (f->owner && ++backend_warnings <= 10)
            warn("backend %s: %s%s", what, strerror(-err), backend_warnings == 10 ? " (no more such warnings)" : "");
        call_done(f, index, false);
    }
    void call_done(Fanout* f, int index, bool ok, std::string body = {}) {
        if (index >= 0) {
            if (ok) f->bodies[static_cast<std::size_t>(index)] = std::move(body);
            else f->ok = false;
        }
        if (--f->left > 0) return;
        Conn* c = f->owner;
        if (c) {
            c->x->fan = nullptr;
            c->session->complete_fanout(f->bodies, f->ok);
        }
        delete f;
        if (c) effect_done(c);
    }
    void close_backend(Backend* b) {
        if (b->closed) return;
        b->closed = true;
        if (b->op_inflight) cancel(b, b->op);
        close(b->fd);
        maybe_free(b);
    }
    void maybe_free(Backend* b) {
        if (!b->closed || b->op_inflight || b->rearm_queued) return;
        if (b->prev) b->prev->next = b->next;
        else backends = b->next;
        if (b->next) b->next->prev = b->prev;
        delete b;
    }

    // ---- completions ---------------------------------------------------------------------------
    void on_recv(Conn* c, int res, unsigned flags) {
        if (!(flags & IORING_CQE_F_MORE)) c->recv_armed = false;
        if (flags & IORING_CQE_F_BUFFER) {
            uint16_t bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
            if (res > 0 && !c->closed && !stopping) {
                const char* data = bufs + std::size_t{bid} * kBufSize;
                if (c->send_inflight || c->pending() || c->session->busy()) {
                    c->extra().pending_in.append(data, static_cast<std::size_t>(res));
                } else {
                    c->session->feed(data, static_cast<std::size_t>(res));
                }
            }
            give_back(bid);
        }
        if (c->closed || stopping) return maybe_free(c);
        if (res == 0) c->eof = true;
        else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) return close_conn(c);  // reset
        // Part of a request came and the kernel says the socket is now empty: if the client's
        // reset came with those bytes, this kernel (6.18) sometimes never completes the multishot
        // recv with it (its wake-up was spent on the data), and the connection would wait for
        // the rest of its request for ever (verify's reset-500 leaked an fd in 1 of ~10,000
        // such connections under load). One getsockopt when a request is left incomplete, which
        // whole requests never are, closes it now.
        if (res > 0 && (flags & IORING_CQE_F_MORE) && !(flags & IORING_CQE_F_SOCK_NONEMPTY) &&
            !c->send_inflight && c->session->out().empty() && !c->session->busy() && !c->session->at_rest() &&
            reset_pending(c))
            return close_conn(c);
        // Backpressure: output or an effect pending and input piling up: stop reading until the
        // connection has caught up.
        if (c->recv_armed && !c->recv_cancelled && c->pending() >= kMaxPendingIn) {
            cancel(c, kRecv);
            c->recv_cancelled = true;
        }
        if (!c->recv_armed && !c->eof && !c->rearm_queued && c->pending() < kMaxPendingIn) {
            c->rearm_queued = true;  // ended: re-arm after this batch
            rearm.push_back(c);
        }
        kick(c);
    }
    // Whether a reset is pending on the client's socket (SO_ERROR). See on_recv.
    static bool reset_pending(const Conn* c) {
        int err = 0;
        socklen_t len = sizeof err;
        return getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0;
    }
    void on_send(Conn* c, int res) {
        if (c->x && c->x->chain > 0) return on_chain(c, res);
        c->send_inflight = false;
        if (c->closed || stopping) return maybe_free(c);
        if (res < 0) return close_conn(c);  // EPIPE, ECONNRESET
        c->session->out().consume(static_cast<std::size_t>(res));
        kick(c);
    }
    void on_accept(int res, unsigned flags) {
        if (res >= 0) {
            if (stopping) close(res);
            else open_conn(res);
        }
        if (flags & IORING_CQE_F_MORE || stopping) return;
        if (res == -EMFILE || res == -ENFILE) {
            // Out of fds: shed what is pending (the clients see a close, not a hang), then try
            // again after a pause, when closes may have freed fds.
            for (int i = 0; i < 64; ++i) {
                int fd = accept_connection(listen_fd, false);
                if (fd >= 0) open_conn(fd);
                else if (errno != EMFILE) break;
            }
        }
        if (res < 0) io_uring_prep_timeout(sqe(kTimer), &pause, 0, 0);
        else arm_accept();
    }
    void on_stop() {
        if (is_signalfd) {
            signalfd_siginfo si;
            while (read(stop_fd, &si, sizeof si) == sizeof si) {
            }
            uint64_t one = 1;
            if (wake_fd >= 0 && write(wake_fd, &one, sizeof one) != sizeof one)
                fatal("eventfd write: %s", strerror(errno));
        }
        // The eventfd is never read: it stays readable for every worker polling it.
        stopping = true;
        io_uring_prep_cancel64(sqe(kCancel), 0, IORING_ASYNC_CANCEL_ANY);
        close(listen_fd);
        for (Conn* c = conns; c;) {
            Conn* next = c->next;
            close_conn(c);
            c = next;
        }
        // The fan-outs still waiting for calls die with them (their owners are gone by now).
        idle.clear();
        std::vector<Fanout*> fans;
        for (Backend* b = backends; b;) {
            Backend* next = b->next;
            if (b->fan) fans.push_back(b->fan);
            b->fan = nullptr;
            close_backend(b);
            b = next;
        }
        std::sort(fans.begin(), fans.end());
        fans.erase(std::unique(fans.begin(), fans.end()), fans.end());
        for (Fanout* f : fans) delete f;
    }

    void handle(io_uring_cqe* cqe) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        if (!(cqe->flags & IORING_CQE_F_MORE)) --inflight;
        void* obj = reinterpret_cast<void*>(ud & ~kTagMask);
        auto* c = static_cast<Conn*>(obj);
        auto* b = static_cast<Backend*>(obj);
        switch (static_cast<Tag>(ud & kTagMask)) {
        case kRecv: return on_recv(c, cqe->res, cqe->flags);
        case kSend: return on_send(c, cqe->res);
        case kAccept: return on_accept(cqe->res, cqe->flags);
        case kStop: return stopping ? void() : on_stop();
        case kTimer: return stopping ? void() : arm_accept();
        case kCancel: return;
        case kWait: return on_wait(c, cqe->res);
        case kRead: return on_chain(c, cqe->res, true);
        case kBConnect: return on_bconnect(b, cqe->res);
        case kBSend: return on_bsend(b, cqe->res);
        case kBRecv: return on_brecv(b, cqe->res, cqe->flags);
        }
    }

    // Serves until stopped; returns once every socket is closed and the kernel holds none.
    void run() {
        int drain_waits = 0;  // after stop: a bound on waiting for the cancelled requests
        while (!stopping || (inflight > 0 && drain_waits < 30)) {
            int r;
            if (!stopping) {
                r = io_uring_submit_and_wait(&ring, 1);
            } else {
                io_uring_cqe* unused;
                __kernel_timespec ts{0, 100 * 1000 * 1000};
                ++drain_waits;
                r = io_uring_submit_and_wait_timeout(&ring, &unused, 1, &ts, nullptr);
                if (r == -ETIME) r = 0;
            }
            if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
                fatal("io_uring_submit_and_wait: %s", strerror(-r));
            unsigned head, n = 0;
            io_uring_cqe* cqe;
            io_uring_for_each_cqe(&ring, head, cqe) {
                handle(cqe);
                ++n;
            }
            io_uring_cq_advance(&ring, n);
            publish_buffers();
            std::vector<Conn*> again;
            again.swap(rearm);
            for (Conn* c : again) {
                c->rearm_queued = false;
                if (c->closed || stopping) maybe_free(c);
                else if (!c->recv_armed && !c->eof && c->pending() < kMaxPendingIn) arm_recv(c);
                else kick(c);
            }
            std::vector<Backend*> bagain;
            bagain.swap(brearm);
            for (Backend* b : bagain) {
                b->rearm_queued = false;
                if (b->closed || stopping) maybe_free(b);
                else backend_recv(b);
            }
        }
        while (Conn* c = conns) {  // all closed; nothing in flight
            conns = c->next;
            if (c->x && c->x->chunk) delete[] c->x->chunk;
            delete c;
        }
        while (Backend* b = backends) {
            backends = b->next;
            delete b;
        }
        for (char* p : spare_chunks) delete[] p;
        io_uring_queue_exit(&ring);
        munmap(bufs, std::size_t{kBufCount} * kBufSize);
        munmap(br, kBufCount * sizeof(io_uring_buf));
    }
};

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
        w->listen_fd = listen_socket(opts, n > 1);
        w->is_signalfd = i == 0;
        w->stop_fd = i == 0 ? sigfd : stopfd;
        w->wake_fd = i == 0 ? stopfd : -1;
        workers.push_back(std::move(w));
    }
    // A SINGLE_ISSUER ring belongs to the thread that creates it: each worker sets up its own.
    // Worker 0's ring is made here first, so a kernel without io_uring fails before any thread.
    workers[0]->setup_ring();
    run_workers(n, workers[0]->listen_fd, [&](int i) {
        if (i > 0) workers[i]->setup_ring();
        workers[i]->run();
    });
    return 0;
}
