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
//   - one io_uring_submit_and_wait per loop iteration: every SQE of a batch in one syscall;
//   - IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN when the kernel takes them (completion work
//     runs only when the loop asks for it), plain flags otherwise;
//   - stop: a poll SQE on the signalfd (worker 0) or on an eventfd every other ring watches;
//     then cancel everything (IORING_ASYNC_CANCEL_ANY), close every socket and the listener,
//     reap the last completions and only then io_uring_queue_exit, so the port is free at once.
// Needs Linux >= 6.1 (multishot recv, buffer rings, DEFER_TASKRUN) and liburing >= 2.3.
// Run: server-uring --proto http --host 127.0.0.1 --port 0 [--workers N]
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
constexpr std::size_t kMaxPendingIn = 64 * 1024;       // input held while a send is in flight
constexpr int kMaxIov = 16;

// What a completion is about: the low 3 bits of user_data; a connection's pointer above them.
enum Tag : uint64_t { kRecv, kSend, kAccept, kStop, kTimer, kCancel };

struct Conn {
    int fd;
    std::unique_ptr<Session> session;
    std::string pending_in;        // bytes read while a send was in flight, fed when it completes
    std::unique_ptr<msghdr> msg;   // sendmsg header and iovecs, made on the first multi-segment send
    std::unique_ptr<iovec[]> iov;
    bool recv_armed = false, send_inflight = false, recv_cancelled = false;
    bool eof = false, eof_fed = false, closed = false, rearm_queued = false;
    Conn *prev = nullptr, *next = nullptr;
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

    void setup_ring() {
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
        bufs = static_cast<char*>(mmap(nullptr, std::size_t{kBufCount} * kBufSize, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (bufs == MAP_FAILED) fatal("mmap: %s", strerror(errno));
        for (unsigned i = 0; i < kBufCount; ++i) give_back(static_cast<uint16_t>(i));
        publish_buffers();
        arm_accept();
        io_uring_prep_poll_add(sqe(kStop), stop_fd, POLLIN);
    }

    io_uring_sqe* sqe(Tag tag, Conn* c = nullptr) {
        io_uring_sqe* s = io_uring_get_sqe(&ring);
        if (!s) {  // the SQ is full: hand it to the kernel and take a fresh slot
            io_uring_submit(&ring);
            s = io_uring_get_sqe(&ring);
        }
        io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(c) | tag);
        ++inflight;
        return s;
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
    // Closes the socket now; the Conn lives until the kernel is done with its buffers.
    void close_conn(Conn* c) {
        if (c->closed) return;
        c->closed = true;
        if (c->recv_armed) io_uring_prep_cancel64(sqe(kCancel), reinterpret_cast<uint64_t>(c) | kRecv, 0);
        if (c->send_inflight) io_uring_prep_cancel64(sqe(kCancel), reinterpret_cast<uint64_t>(c) | kSend, 0);
        close(c->fd);
        maybe_free(c);
    }
    void maybe_free(Conn* c) {
        if (!c->closed || c->recv_armed || c->send_inflight || c->rearm_queued) return;
        if (c->prev) c->prev->next = c->next;
        else conns = c->next;
        if (c->next) c->next->prev = c->prev;
        delete c;
    }

    // The connection's next step once nothing of the kernel's touches its outbox.
    void kick(Conn* c) {
        if (c->closed || c->send_inflight || stopping) return;
        if (!c->pending_in.empty()) {
            c->session->feed(c->pending_in.data(), c->pending_in.size());
            std::string().swap(c->pending_in);
        }
        if (c->eof && !c->eof_fed) {
            c->eof_fed = true;
            c->session->peer_closed();
        }
        Outbox& out = c->session->out();
        if (!out.empty()) return start_send(c, out);
        if (c->session->close_after_write() || c->eof) return close_conn(c);
        if (!c->recv_armed) arm_recv(c);
    }
    void start_send(Conn* c, Outbox& out) {
        iovec one;
        if (out.fill(&one, 1) == 1 && one.iov_len == out.size()) {
            io_uring_prep_send(sqe(kSend, c), c->fd, one.iov_base, one.iov_len, MSG_NOSIGNAL);
        } else {
            if (!c->msg) {
                c->msg = std::make_unique<msghdr>();
                c->iov = std::make_unique<iovec[]>(kMaxIov);
            }
            *c->msg = msghdr{};
            c->msg->msg_iov = c->iov.get();
            c->msg->msg_iovlen = static_cast<std::size_t>(out.fill(c->iov.get(), kMaxIov));
            io_uring_prep_sendmsg(sqe(kSend, c), c->fd, c->msg.get(), MSG_NOSIGNAL);
        }
        c->send_inflight = true;
    }

    void on_recv(Conn* c, int res, unsigned flags) {
        if (!(flags & IORING_CQE_F_MORE)) c->recv_armed = false;
        if (flags & IORING_CQE_F_BUFFER) {
            uint16_t bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
            if (res > 0 && !c->closed && !stopping) {
                const char* data = bufs + std::size_t{bid} * kBufSize;
                if (c->send_inflight || !c->pending_in.empty()) {
                    c->pending_in.append(data, static_cast<std::size_t>(res));
                } else {
                    c->session->feed(data, static_cast<std::size_t>(res));
                }
            }
            give_back(bid);
        }
        if (c->closed || stopping) return maybe_free(c);
        if (res == 0) c->eof = true;
        else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) return close_conn(c);  // reset
        // Backpressure: output still in flight and input piling up: stop reading until it drains.
        if (c->recv_armed && !c->recv_cancelled && c->pending_in.size() >= kMaxPendingIn) {
            io_uring_prep_cancel64(sqe(kCancel), reinterpret_cast<uint64_t>(c) | kRecv, 0);
            c->recv_cancelled = true;
        }
        if (!c->recv_armed && !c->eof && !c->rearm_queued) {  // ended: re-arm after this batch
            c->rearm_queued = true;
            rearm.push_back(c);
        }
        kick(c);
    }
    void on_send(Conn* c, int res) {
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
    }

    void handle(io_uring_cqe* cqe) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        if (!(cqe->flags & IORING_CQE_F_MORE)) --inflight;
        Conn* c = reinterpret_cast<Conn*>(ud & ~uint64_t{7});
        switch (static_cast<Tag>(ud & 7)) {
        case kRecv: return on_recv(c, cqe->res, cqe->flags);
        case kSend: return on_send(c, cqe->res);
        case kAccept: return on_accept(cqe->res, cqe->flags);
        case kStop: return stopping ? void() : on_stop();
        case kTimer: return stopping ? void() : arm_accept();
        case kCancel: return;
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
                else kick(c);
            }
        }
        while (Conn* c = conns) {  // all closed; nothing in flight
            conns = c->next;
            delete c;
        }
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
