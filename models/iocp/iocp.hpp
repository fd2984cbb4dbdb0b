// The IOCP model's shared declarations: one completion port, N threads in
// GetQueuedCompletionStatusEx, an OVERLAPPED-carrying Op per outstanding operation.
#pragma once
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <mswsock.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "concbench/session.hpp"

namespace iocp {

struct Options {
    concbench::Proto proto = concbench::Proto::http;
    std::string host = "127.0.0.1";
    unsigned port = 0;
    int workers = 1;
    std::string docroot;         // "" = /file/NAME answers 404
    sockaddr_in backend{};       // fan-out calls go here
    bool has_backend = false;
};

// An operation in flight: the OVERLAPPED the kernel completes, and what it was.
enum class OpKind { accept, recv, send, file, timer, connect, bsend, brecv };
struct Op {
    OVERLAPPED ov{};
    OpKind kind;
    void* owner = nullptr;
    void reset() { ov = OVERLAPPED{}; }
};

struct Conn;
struct Backend;

// Process-wide state shared by the worker threads.
struct Server {
    Options opts;
    concbench::ServerIdentity id;
    HANDLE port = nullptr;
    SOCKET listener = INVALID_SOCKET;
    LPFN_ACCEPTEX accept_ex = nullptr;
    LPFN_CONNECTEX connect_ex = nullptr;
    LPFN_TRANSMITFILE transmit_file = nullptr;
    std::atomic<bool> stopping{false};
    // Open connections (for the stop), guarded by conns_lock.
    SRWLOCK conns_lock = SRWLOCK_INIT;
    Conn* conns = nullptr;
    // Idle keep-alive backend connections for fan-out calls.
    SRWLOCK pool_lock = SRWLOCK_INIT;
    std::vector<Backend*> pool;
};
extern Server g;

// Completion key for "stop": a worker that dequeues it returns.
constexpr ULONG_PTR kStopKey = 1;

// acceptor (main.cpp)
void post_accepts();
void on_accept(Op* op, DWORD err);
void warn(const char* fmt, ...);
[[noreturn]] void fatal(const char* fmt, ...);

// connections (conn.cpp)
void open_conn(SOCKET s);
void on_conn_op(Op* op, DWORD err, DWORD bytes);
void close_all_conns();
// Called by a fan-out call when it is done (ok: a 200 answer, body set).
void fanout_call_done(Conn* c, int index, bool ok, std::string body);

// fan-out backend pool (backend.cpp)
void start_call(Conn* c, int index, int ms);
void on_backend_op(Op* op, DWORD err, DWORD bytes);
void close_pool();

// timers (conn.cpp): a thread-pool timer that posts its Op to the port when it fires.
struct Timer {
    HANDLE h = nullptr;
    std::atomic<bool> fired{false};
    Op op;
    bool arm(unsigned ms);      // false: could not be created
    bool cancel();              // true: it never fired (its Op will not complete)
};

}  // namespace iocp
