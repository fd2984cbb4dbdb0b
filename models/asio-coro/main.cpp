// server-asio-coro: Boost.Asio with C++20 coroutines (awaitable, co_spawn, use_awaitable), the
// shape of Asio's own cpp20 coroutine echo server: one listener coroutine per worker co_awaits
// async_accept and co_spawns one coroutine per connection, which loops read -> feed -> write.
// It is the same server as models/asio (callbacks), so the two differ only in how the code waits:
//   - read: co_await socket.async_wait(wait_read), then a non-blocking read_some into the
//     io_context's one read buffer (safe to share: nothing suspends between read_some and
//     feed). An idle connection is a suspended coroutine frame and no read buffer; a
//     co_await async_read_some(buffer(data)) would keep `data` alive in every frame;
//   - the session is freed whenever it is at rest (Session::at_rest(), before the next
//     wait_read) and made again when bytes come, as Boost.Beast makes a parser per request;
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
// Effects (the session's busy(): the coroutine does not read meanwhile), in carry_out():
//   - wait: co_await timer.async_wait(), a Timer in carry_out's frame;
//   - fanout: the gather: K co_spawned backend_call coroutines in a ranged parallel group
//     (wait_for_all), each on a connection from the worker's keep-alive pool (async_connect,
//     async_write, async_read_some into a BackendReader);
//   - file: sendfile(2) on the native handle, co_await async_wait(wait_write) when the socket is
//     full;
//   - watch_client(): a wait_error armed on the client socket at a connection's first effect; a
//     reset (or the socket's close at shutdown) completes it and it emits a cancellation signal
//     bound to the effect's operation: the timer wait, or the parallel group, which cancels every
//     backend call (their connections are closed, never pooled again).
// Asio runs sockets on its epoll_reactor on Linux (edge-triggered, registered once per socket).
// Needs Boost >= 1.81 (Asio, header-only), g++ >= 11 with -std=c++20, Linux.
// Run: server-asio-coro --proto http --host 127.0.0.1 --port 0 [--workers N]
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
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

constexpr ModelTraits kTraits{"asio-coro", true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;

template <class T>
using awaitable = asio::awaitable<T, Executor>;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable_t<Executor>{});  // co_await gives [ec, ...]

struct Worker;

// One keep-alive connection to the fan-out backend: in its worker's pool between calls, owned by
// the call's coroutine frame while a call is in flight.
struct Backend {
    explicit Backend(Worker& w);
    ~Backend();
    Worker& w;
    Socket sock;
    BackendReader reader;
    std::array<char, 2048> buf;  // one answer is ~150 bytes; the reader takes it in pieces
    Backend *prev = nullptr, *next = nullptr;  // the worker's registry of backend connections
};

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
    // Fan-out: the backend's address, the pool of idle keep-alive connections to it (grows on
    // demand, LIFO so the warmest is reused), and every backend connection for shutdown.
    bool has_backend = false;
    tcp::endpoint backend;
    std::vector<std::unique_ptr<Backend>> pool;
    Backend* backends = nullptr;
    bool stopping = false;

    void shutdown() {
        stopping = true;
        error_code ec;
        acceptor.close(ec);
        // Each coroutine resumes with operation_aborted; a pending effect is cancelled by the
        // connection's watch_client(), whose wait the close completes.
        emfile_pause.cancel();
        for (Registered* r = conns; r; r = r->next) r->sock.close(ec);
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

Registered::Registered(Worker& w, Socket& sock) : w(w), sock(sock), next(w.conns) {
    if (next) next->prev = this;
    w.conns = this;
}

Registered::~Registered() {
    if (prev) prev->next = next;
    else w.conns = next;
    if (next) next->prev = prev;
}

// Backend call `id` of a fan-out: a pooled connection (or a new one), write the request, read
// until one whole answer is in. Its body, or nullopt on any failure. A connection goes back to
// the pool only after a complete answer; a failed or cancelled one is closed (dropped).
awaitable<std::optional<std::string>> backend_call(Worker& w, int ms, int id) {
    const std::string req = backend_request(ms, id);
    for (int attempt = 0;; ++attempt) {
        std::unique_ptr<Backend> b;
        bool reused = attempt == 0 && !w.pool.empty();
        if (reused) {
            b = std::move(w.pool.back());
            w.pool.pop_back();
        } else {
            b = std::make_unique<Backend>(w);
            auto [ec] = co_await b->sock.async_connect(w.backend, use_nothrow);
            if (ec) co_return std::nullopt;
            b->sock.set_option(tcp::no_delay(true), ec);
        }
        b->reader.reset();
        bool got_bytes = false;
        auto [wec, written] = co_await asio::async_write(b->sock, asio::buffer(req), use_nothrow);
        BackendReader::State st = BackendReader::State::error;
        while (!wec) {
            auto [ec, n] = co_await b->sock.async_read_some(asio::buffer(b->buf), use_nothrow);
            if (ec) break;
            got_bytes = true;
            st = b->reader.feed(b->buf.data(), n);
            if (st != BackendReader::State::more) break;
        }
        if (st == BackendReader::State::done) {
            if (b->reader.status() != 200) co_return std::nullopt;
            std::string body = b->reader.body();
            if (b->reader.keep_alive() && !w.stopping) w.pool.push_back(std::move(b));
            co_return body;
        }
        // A pooled connection the backend had closed: retry once on a fresh one (as HTTP client
        // pools do for idempotent requests) — unless the call was cancelled.
        auto cs = co_await asio::this_coro::cancellation_state;
        if (!reused || got_bytes || w.stopping || cs.cancelled() != asio::cancellation_type::none)
            co_return std::nullopt;
    }
}

// Watches the client while its connection has effects: a reset (EPOLLERR/EPOLLHUP; a FIN alone
// does not count, so a half-closed client still gets its answer) or the socket's close (shutdown)
// completes a wait_error armed on the connection's first effect, and `gone` then cancels, through
// Asio's per-operation cancellation, the effect operation bound to it (the timer wait or the
// parallel group). One epoll_ctl per connection, not one per request as racing each effect with
// its own wait through awaitable_operators' `||` would cost (that measured ~10 us of CPU per
// /delay request, as much again as the whole request). The completion handler is a plain
// function object, not a coroutine: it is armed at once while the socket surely exists, and it
// touches only the shared watch, never the socket, which may be gone when it runs.
struct ClientWatch {
    asio::cancellation_signal gone;
    bool fired = false;
};

void watch_client(Socket& sock, const std::shared_ptr<ClientWatch>& watch) {
    sock.async_wait(tcp::socket::wait_error, [watch](error_code) {
        watch->fired = true;
        watch->gone.emit(asio::cancellation_type::terminal);
    });
}

// The file's bytes with sendfile(2) on the socket's native handle: send until the socket is
// full, then co_await async_wait(wait_write). False if the client cannot take it.
awaitable<bool> send_file(Socket& sock, int fd, std::size_t left) {
    error_code ec;
    sock.native_non_blocking(true, ec);
    off_t off = 0;
    std::size_t turn = 0;
    while (left > 0) {
        ssize_t n = 0;
        if (turn < 2 * 1024 * 1024) n = ::sendfile(sock.native_handle(), fd, &off, left);
        if (n > 0) {
            left -= static_cast<std::size_t>(n);
            turn += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n == 0 || (n < 0 && errno == EAGAIN)) {
            // Full (or 2 MiB sent this turn, nginx's sendfile_max_chunk: let others run).
            if (n == 0 && turn < 2 * 1024 * 1024) co_return false;  // the file shrank under us
            turn = 0;
            auto [wec] = co_await sock.async_wait(tcp::socket::wait_write, use_nothrow);
            if (wec) co_return false;
        } else {
            co_return false;
        }
    }
    co_return true;
}

struct FdCloser {
    int fd;
    ~FdCloser() {
        if (fd >= 0) ::close(fd);
    }
};

// Carries out the session's pending effect and hands its outcome back. False if the client went
// away (or the server is stopping): the connection is then dropped.
awaitable<bool> carry_out(Worker& w, Socket& sock, Session& s, std::shared_ptr<ClientWatch>& watch) {
    if (!watch) {
        watch = std::make_shared<ClientWatch>();
        watch_client(sock, watch);
    }
    if (watch->fired) co_return false;
    const Effect& e = s.effect();
    switch (e.kind) {
    case Effect::Kind::wait: {
        Timer timer(w.ctx, std::chrono::milliseconds(e.ms));
        auto [ec] = co_await timer.async_wait(asio::bind_cancellation_slot(watch->gone.slot(), use_nothrow));
        watch->gone.slot().clear();  // the op's cancellation handler points into `timer`
        if (ec || watch->fired) co_return false;
        s.complete_wait();
        co_return true;
    }
    case Effect::Kind::fanout: {
        if (!w.has_backend) {
            s.complete_fanout({}, false);
            co_return true;
        }
        // The gather: K backend calls co_spawned at once and awaited together (asyncio.gather),
        // a ranged parallel group over deferred co_spawns. Cancelling it cancels every call.
        using Call = decltype(co_spawn(w.ctx, backend_call(w, 0, 0), asio::deferred));
        std::vector<Call> ops;
        ops.reserve(e.calls);
        for (int i = 0; i < e.calls; ++i) ops.push_back(co_spawn(w.ctx, backend_call(w, e.ms, i), asio::deferred));
        auto [order, errors, results] =
            co_await asio::experimental::make_parallel_group(std::move(ops))
                .async_wait(asio::experimental::wait_for_all(),
                            asio::bind_cancellation_slot(watch->gone.slot(), asio::use_awaitable_t<Executor>{}));
        watch->gone.slot().clear();  // releases the group's state, which its handler holds
        if (watch->fired) co_return false;
        std::vector<std::string> bodies;
        bodies.reserve(results.size());
        bool ok = true;
        for (std::size_t i = 0; i < results.size() && ok; ++i) {
            ok = !errors[i] && results[i];
            if (ok) bodies.push_back(std::move(*results[i]));
        }
        s.complete_fanout(ok ? bodies : std::vector<std::string>{}, ok);
        co_return true;
    }
    case Effect::Kind::file: {
        long long size = 0;
        FdCloser file{open_docroot_file(w.opts, e.file, size)};
        std::size_t n = s.complete_file(file.fd < 0 ? -1 : size);
        if (n == 0) co_return true;  // a 404 or HEAD: only the head, in out()
        Outbox& out = s.out();
        while (!out.empty()) {
            auto [ec, written] = co_await write_out(sock, out, use_nothrow);
            if (ec) co_return false;
            out.consume(written);
        }
        if (!co_await send_file(sock, file.fd, n)) co_return false;
        s.file_sent();
        co_return true;
    }
    case Effect::Kind::none:
        break;
    }
    co_return true;
}

awaitable<void> serve(Worker& w, Socket sock) {
    Registered reg(w, sock);
    std::unique_ptr<Session> session;  // made when bytes come, freed again at rest
    std::shared_ptr<ClientWatch> watch;  // made on the first effect
    error_code ec;
    sock.non_blocking(true, ec);  // read_some must report would_block, never block the loop
    for (;;) {
        auto [wait_ec] = co_await sock.async_wait(tcp::socket::wait_read, use_nothrow);
        if (wait_ec) co_return;
        std::size_t n = sock.read_some(asio::buffer(w.buf), ec);
        if (ec == asio::error::would_block || ec == asio::error::interrupted) continue;
        if (ec == asio::error::eof) {
            if (!session) co_return;  // at rest: nothing left to answer
            session->peer_closed();
        } else if (ec) {
            co_return;  // reset by peer
        } else {
            if (!session) session = make_session(w.opts.proto, w.id);
            session->feed(w.buf, n);
        }

        // Write the answers, carry out the effect the session waits on (it is not read
        // meanwhile), and again: a completion may release pipelined requests and a next effect.
        for (;;) {
            Outbox& out = session->out();
            while (!out.empty()) {
                auto [write_ec, written] = co_await write_out(sock, out, use_nothrow);
                if (write_ec) co_return;
                out.consume(written);
            }
            if (!session->busy()) break;
            if (!co_await carry_out(w, sock, *session, watch)) co_return;
        }
        if (session->close_after_write()) co_return;  // the socket closes with the frame
        // Between requests the session holds nothing a fresh one would not: free it, so an
        // idle keep-alive connection is its suspended frame and socket alone.
        if (session->at_rest()) session.reset();
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
        w->has_backend = backend_endpoint(opts, w->backend);
        adopt_listener(w->acceptor, fd);
        co_spawn(w->ctx, accept_loop(*w), asio::detached);
        workers.push_back(std::move(w));
    }
    co_spawn(workers[0]->ctx, wait_for_stop(sigfd, workers), asio::detached);

    run_workers(n, workers[0]->acceptor.native_handle(), [&](int i) { workers[i]->ctx.run(); });
    return 0;
}
