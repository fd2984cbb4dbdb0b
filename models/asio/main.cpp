// server-asio: Boost.Asio in its classic callback style. A tcp::acceptor with async_accept, one
// Conn per connection held by std::shared_ptr (enable_shared_from_this): every pending operation's
// handler owns a reference, and the Conn (with its socket) goes away when the last handler drops it.
//   - read: socket.async_wait(wait_read), then a non-blocking read_some into the io_context's one
//     read buffer, fed to the sans-IO session. No read is in flight while idle, so an idle
//     connection holds no buffer (async_read_some would pin a buffer per connection until data
//     comes: the buffer must stay valid while the read is pending);
//   - write: async_write of the Outbox's segments (Outbox::fill -> asio::const_buffer), one write
//     in flight, consume() in its handler; no read while it is pending (backpressure: a client
//     that never reads cannot make us buffer without bound);
//   - --workers N: N io_contexts, one thread each, each with its own acceptor on an SO_REUSEPORT
//     socket on the same port (the nginx layout);
//   - stop: the project's signalfd (stop_signal_fd) wrapped in a posix::stream_descriptor; worker 0
//     waits on it and posts a shutdown to every io_context: close the acceptor and every socket
//     in the worker's registry, so run() returns;
//   - EMFILE: async_accept fails with no_descriptors; accept_connection() then drops the pending
//     connection with the reserved fd (libuv's trick, as the epoll model does) and we re-arm
//     after a 10 ms pause (accept4 keeps failing at once while out of fds: no spinning).
// Asio runs sockets on its epoll_reactor on Linux (edge-triggered, registered once per socket).
// Needs Boost >= 1.81 (Asio, header-only), C++20, Linux.
// Run: server-asio --proto http --host 127.0.0.1 --port 0 [--workers N]
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

constexpr ModelTraits kTraits{"asio", true, 1};
constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr int kMaxSegments = 16;

// The io_context's own executor type instead of the type-erased any_io_executor default: each
// operation then dispatches without the erased executor's indirections.
using Executor = asio::io_context::executor_type;
using Socket = tcp::socket::rebind_executor<Executor>::other;
using Acceptor = tcp::acceptor::rebind_executor<Executor>::other;

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

class Conn : public std::enable_shared_from_this<Conn> {
public:
    Conn(Worker& w, Socket sock);
    ~Conn();
    void start() {
        error_code ec;
        sock_.non_blocking(true, ec);  // read_some must report would_block, never block the loop
        wait_readable();
    }
    void close() {
        error_code ec;
        sock_.close(ec);  // pending operations complete with operation_aborted and drop us
    }
    Conn *prev = nullptr, *next = nullptr;  // the worker's registry of open connections

private:
    void wait_readable() {
        sock_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
            if (!ec) self->on_readable();
        });
    }
    void on_readable();
    void flush() {
        Outbox& out = session_->out();
        if (out.empty()) {
            if (!session_->close_after_write()) wait_readable();
            return;  // else the last reference drops here and the socket closes
        }
        write_out(sock_, out, [self = shared_from_this()](error_code ec, std::size_t n) {
            if (ec) return;
            self->session_->out().consume(n);
            self->flush();
        });
    }

    Worker& w_;
    Socket sock_;
    std::unique_ptr<Session> session_;
};

struct Worker {
    // One thread runs it and only it touches its sockets: no locking in the reactor's per-socket
    // state (the scheduler keeps its lock, so other threads may still post to it).
    asio::io_context ctx{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    Acceptor acceptor{ctx};
    ServerOptions opts;
    ServerIdentity id = identity(kTraits);
    Conn* conns = nullptr;
    asio::steady_timer emfile_pause{ctx};
    char buf[kReadBuffer];

    void accept() {
        acceptor.async_accept([this](error_code ec, Socket sock) {
            if (!acceptor.is_open()) return;  // shut down
            if (!ec) {
                sock.set_option(tcp::no_delay(true), ec);
                std::make_shared<Conn>(*this, std::move(sock))->start();
            } else if (ec.value() == EMFILE || ec.value() == ENFILE) {
                int fd = accept_connection(acceptor.native_handle(), true);  // drops one pending
                if (fd >= 0) {
                    adopt(fd);  // fds freed up meanwhile
                } else {
                    // Out of fds accept4 fails at once even with nothing pending: re-arming now
                    // would spin. Pause 10 ms (as the uring model does), then try again.
                    emfile_pause.expires_after(std::chrono::milliseconds(10));
                    emfile_pause.async_wait([this](error_code) {
                        if (acceptor.is_open()) accept();
                    });
                    return;
                }
            }
            accept();
        });
    }
    void adopt(int fd) {
        Socket sock(ctx);
        error_code ec;
        sock.assign(acceptor.local_endpoint().protocol(), fd, ec);
        if (ec) {
            ::close(fd);
            return;
        }
        std::make_shared<Conn>(*this, std::move(sock))->start();
    }
    void shutdown() {
        error_code ec;
        acceptor.close(ec);
        emfile_pause.cancel();
        for (Conn* c = conns; c; c = c->next) c->close();
    }
};

Conn::Conn(Worker& w, Socket sock)
    : w_(w), sock_(std::move(sock)), session_(make_session(w.opts.proto, w.id)) {
    next = w_.conns;
    if (next) next->prev = this;
    w_.conns = this;
}

Conn::~Conn() {
    if (prev) prev->next = next;
    else w_.conns = next;
    if (next) next->prev = prev;
}

void Conn::on_readable() {
    error_code ec;
    std::size_t n = sock_.read_some(asio::buffer(w_.buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::interrupted) return wait_readable();
    if (ec == asio::error::eof) session_->peer_closed();
    else if (ec) return;  // reset by peer: drop the connection
    else session_->feed(w_.buf, n);
    flush();
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
        w->accept();
        workers.push_back(std::move(w));
    }

    // Worker 0 watches the signalfd and tells every worker (itself included) to shut down.
    asio::posix::basic_stream_descriptor<Executor> sig(workers[0]->ctx.get_executor(), sigfd);
    sig.async_wait(asio::posix::stream_descriptor::wait_read, [&](error_code) {
        signalfd_siginfo si;
        while (read(sigfd, &si, sizeof si) == sizeof si) {
        }
        for (auto& w : workers) asio::post(w->ctx, [w = w.get()] { w->shutdown(); });
    });

    run_workers(n, workers[0]->acceptor.native_handle(), [&](int i) { workers[i]->ctx.run(); });
    return 0;
}
