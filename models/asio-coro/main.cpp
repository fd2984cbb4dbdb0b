// server-asio-coro: Boost.Asio with C++20 coroutines (awaitable, co_spawn, use_awaitable), the
// shape of Asio's own cpp20 coroutine echo server: one listener coroutine per worker co_awaits
// async_accept and co_spawns one coroutine per connection, which loops read -> feed -> write.
// It is the same server as models/asio (callbacks), so the two differ only in how the code waits:
//   - read: co_await socket.async_wait(wait_read), then a non-blocking read_some into the
//     io_context's one read buffer (safe to share: nothing suspends between read_some and
//     feed). An idle connection is a suspended coroutine frame and no read buffer; a
//     co_await async_read_some(buffer(data)) would keep `data` alive in every frame;
//   - write: co_await async_write of the Outbox's segments, consume(), until the outbox is
//     empty; the coroutine does not read meanwhile (backpressure);
//   - errors come back as values: asio::as_tuple(asio::use_awaitable), no exceptions;
//   - --workers N: N io_contexts, one thread each, each with its own acceptor on an SO_REUSEPORT
//     socket on the same port (the nginx layout);
//   - stop: the project's signalfd in a posix::stream_descriptor; worker 0's stop coroutine posts
//     a shutdown to every io_context: close the acceptor and every socket in its registry, each
//     coroutine resumes with operation_aborted and returns, run() returns;
//   - EMFILE: async_accept fails with no_descriptors; accept_connection() drops the pending
//     connection with the reserved fd (libuv's trick, as the epoll model does) and we loop
//     after a 10 ms pause (accept4 keeps failing at once while out of fds: no spinning).
// Asio runs sockets on its epoll_reactor on Linux (edge-triggered, registered once per socket).
// Needs Boost >= 1.81 (Asio, header-only), g++ >= 11 with -std=c++20, Linux.
// Run: server-asio-coro --proto http --host 127.0.0.1 --port 0 [--workers N]
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <boost/asio.hpp>
#include <cerrno>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "server.hpp"

using namespace concbench;
namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr ModelTraits kTraits{"asio-coro", true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr int kMaxSegments = 16;

// The io_context's own executor type instead of the type-erased any_io_executor default: each
// operation then dispatches without the erased executor's indirections.
using Executor = asio::io_context::executor_type;
using Socket = tcp::socket::rebind_executor<Executor>::other;
using Acceptor = tcp::acceptor::rebind_executor<Executor>::other;
template <class T>
using awaitable = asio::awaitable<T, Executor>;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable_t<Executor>{});  // co_await gives [ec, ...]

// Several of the Outbox's segments as an Asio buffer sequence; async_write keeps its own copy.
struct Segments {
    std::array<asio::const_buffer, kMaxSegments> b;
    std::size_t n;
    Segments(const iovec* iov, int count) : n(static_cast<std::size_t>(count)) {
        for (std::size_t i = 0; i < n; ++i) b[i] = asio::const_buffer(iov[i].iov_base, iov[i].iov_len);
    }
    const asio::const_buffer* begin() const { return b.data(); }
    const asio::const_buffer* end() const { return b.data() + n; }
};

// Starts writing the Outbox's pending bytes (one async_write, all of them or the first
// kMaxSegments segments). One segment, the common case, takes Asio's single-buffer path.
template <class Token>
auto write_out(Socket& sock, const Outbox& out, Token&& token) {
    iovec iov[kMaxSegments];
    int n = out.fill(iov, kMaxSegments);
    if (n == 1)
        return asio::async_write(sock, asio::const_buffer(iov[0].iov_base, iov[0].iov_len), std::forward<Token>(token));
    return asio::async_write(sock, Segments(iov, n), std::forward<Token>(token));
}

struct Worker;

// A connection's entry in its worker's registry, living in the connection's coroutine frame.
struct Registered {
    Worker& w;
    Socket& sock;
    Registered *prev = nullptr, *next = nullptr;
    Registered(Worker& w, Socket& sock);
    ~Registered();
};

struct Worker {
    // One thread runs it and only it touches its sockets: no locking in the reactor's per-socket
    // state (the scheduler keeps its lock, so other threads may still post to it).
    asio::io_context ctx{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    Acceptor acceptor{ctx};
    ServerOptions opts;
    ServerIdentity id = identity(kTraits);
    Registered* conns = nullptr;
    asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, Executor>
        emfile_pause{ctx};
    char buf[kReadBuffer];

    void shutdown() {
        error_code ec;
        acceptor.close(ec);
        emfile_pause.cancel();
        for (Registered* r = conns; r; r = r->next) r->sock.close(ec);  // resumes with aborted
    }
};

Registered::Registered(Worker& w, Socket& sock) : w(w), sock(sock), next(w.conns) {
    if (next) next->prev = this;
    w.conns = this;
}

Registered::~Registered() {
    if (prev) prev->next = next;
    else w.conns = next;
    if (next) next->prev = prev;
}

awaitable<void> serve(Worker& w, Socket sock) {
    Registered reg(w, sock);
    std::unique_ptr<Session> session = make_session(w.opts.proto, w.id);
    error_code ec;
    sock.non_blocking(true, ec);  // read_some must report would_block, never block the loop
    for (;;) {
        auto [wait_ec] = co_await sock.async_wait(tcp::socket::wait_read, use_nothrow);
        if (wait_ec) co_return;
        std::size_t n = sock.read_some(asio::buffer(w.buf), ec);
        if (ec == asio::error::would_block || ec == asio::error::interrupted) continue;
        if (ec == asio::error::eof) session->peer_closed();
        else if (ec) co_return;  // reset by peer
        else session->feed(w.buf, n);

        Outbox& out = session->out();
        while (!out.empty()) {
            auto [write_ec, written] = co_await write_out(sock, out, use_nothrow);
            if (write_ec) co_return;
            out.consume(written);
        }
        if (session->close_after_write()) co_return;  // the socket closes with the frame
    }
}

awaitable<void> accept_loop(Worker& w) {
    for (;;) {
        auto [ec, sock] = co_await w.acceptor.async_accept(use_nothrow);
        if (!w.acceptor.is_open()) co_return;  // shut down
        if (!ec) {
            sock.set_option(tcp::no_delay(true), ec);
            co_spawn(w.ctx, serve(w, std::move(sock)), asio::detached);
        } else if (ec.value() == EMFILE || ec.value() == ENFILE) {
            int fd = accept_connection(w.acceptor.native_handle(), true);  // drops one pending
            if (fd < 0) {
                // Out of fds accept4 fails at once even with nothing pending: looping now would
                // spin. Pause 10 ms (as the uring model does), then try again.
                w.emfile_pause.expires_after(std::chrono::milliseconds(10));
                co_await w.emfile_pause.async_wait(use_nothrow);
                continue;
            }
            Socket adopted(w.ctx);  // fds freed up meanwhile
            adopted.assign(w.acceptor.local_endpoint().protocol(), fd, ec);
            if (ec) ::close(fd);
            else co_spawn(w.ctx, serve(w, std::move(adopted)), asio::detached);
        }
    }
}

// Worker 0 watches the signalfd and tells every worker (itself included) to shut down.
awaitable<void> wait_for_stop(int sigfd, std::vector<std::unique_ptr<Worker>>& workers) {
    asio::posix::basic_stream_descriptor<Executor> sig(co_await asio::this_coro::executor, sigfd);
    co_await sig.async_wait(asio::posix::stream_descriptor::wait_read, use_nothrow);
    signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == sizeof si) {
    }
    for (auto& w : workers) asio::post(w->ctx, [w = w.get()] { w->shutdown(); });
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
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        w->acceptor.assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd);
        co_spawn(w->ctx, accept_loop(*w), asio::detached);
        workers.push_back(std::move(w));
    }
    co_spawn(workers[0]->ctx, wait_for_stop(sigfd, workers), asio::detached);

    run_workers(n, workers[0]->acceptor.native_handle(), [&](int i) { workers[i]->ctx.run(); });
    return 0;
}
