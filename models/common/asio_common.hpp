// What the two Boost.Asio models (asio: callbacks, asio-coro: coroutines) share, so that the
// difference between their main.cpp files is callbacks versus coroutines and nothing else: the
// executor types, writing an Outbox, and adopting the contract's listening socket and backend.
// Header-only; included only by models/asio and models/asio-coro (which link Boost::headers).
#pragma once
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <boost/asio.hpp>
#include <chrono>
#include <cstddef>
#include <new>
#include <utility>

#include "server.hpp"

namespace concbench::asio_models {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr int kMaxSegments = 16;

// The io_context's own executor type instead of the type-erased any_io_executor default: each
// operation then dispatches without the erased executor's indirections.
using Executor = asio::io_context::executor_type;
using Socket = tcp::socket::rebind_executor<Executor>::other;
using Acceptor = tcp::acceptor::rebind_executor<Executor>::other;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, Executor>;

// Memory for one kind of pending operation of one connection, inside the connection object: the
// idiom of Asio's own "allocation" example (handler_memory + a custom associated allocator). Asio
// otherwise takes an operation's memory from its per-thread recycling cache, whose blocks keep the
// size of the largest operation that used them (an async_write's composed operation): an idle
// connection's pending wait then pins a ~190-byte block besides the connection. With this, the
// wait lives in the connection's own allocation. Asio frees an operation's memory before it calls
// the handler, so the handler may start the next operation in the same storage; if it is still
// in use (never, for a connection's one pending wait) the allocation falls back to the heap.
template <std::size_t N>
class HandlerMemory {
public:
    HandlerMemory() = default;
    HandlerMemory(const HandlerMemory&) = delete;
    HandlerMemory& operator=(const HandlerMemory&) = delete;
    void* allocate(std::size_t size) {
        if (!in_use_ && size <= N) {
            in_use_ = true;
            return &storage_;
        }
        return ::operator new(size);
    }
    void deallocate(void* p) {
        if (p == &storage_) in_use_ = false;
        else ::operator delete(p);
    }

private:
    alignas(std::max_align_t) unsigned char storage_[N];
    bool in_use_ = false;
};

// The allocator Asio finds on a handler bound with asio::bind_allocator(HandlerAllocator<...>).
template <typename T, std::size_t N>
struct HandlerAllocator {
    using value_type = T;
    explicit HandlerAllocator(HandlerMemory<N>& m) : mem(&m) {}
    template <typename U>
    HandlerAllocator(const HandlerAllocator<U, N>& o) : mem(o.mem) {}
    template <typename U>
    struct rebind {
        using other = HandlerAllocator<U, N>;
    };
    T* allocate(std::size_t n) const { return static_cast<T*>(mem->allocate(sizeof(T) * n)); }
    void deallocate(T* p, std::size_t) const { mem->deallocate(p); }
    template <typename U>
    bool operator==(const HandlerAllocator<U, N>& o) const { return mem == o.mem; }
    HandlerMemory<N>* mem;
};

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

// Hands the contract's listening socket (listen_socket()) to an acceptor.
inline void adopt_listener(Acceptor& acceptor, int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    acceptor.assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd);
}

// --backend as an endpoint; false when none was given (fan-outs then answer 502).
inline bool backend_endpoint(const ServerOptions& opts, tcp::endpoint& out) {
    sockaddr_in a;
    if (!backend_address(opts, a)) return false;
    out = tcp::endpoint(asio::ip::address_v4(ntohl(a.sin_addr.s_addr)), ntohs(a.sin_port));
    return true;
}

}  // namespace concbench::asio_models
