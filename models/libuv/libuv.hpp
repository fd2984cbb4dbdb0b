// models/libuv: what its three files share. main.cpp: the loops, client connections, writes and
// the wait effect; fanout.cpp: the backend pool and the fan-out's calls; file.cpp: files read on
// libuv's threadpool. Everything runs on a loop's thread except the threadpool's work functions.
#pragma once
#include <netinet/in.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "server.hpp"

namespace concbench::uvm {

constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr std::size_t kFileChunk = 64 * 1024;  // fs.createReadStream's highWaterMark
constexpr int kMaxBufs = 16;                    // iovecs per write

struct Worker;
struct Fanout;
struct FileSend;

// A client connection, kept as small as libuv allows, since an idle keep-alive connection holds
// just this and its Session: the uv_tcp_t (248 bytes in libuv 1.44), the session, and two flags
// and a tag. Effect state is allocated only while an effect is pending; tcp.data points to it
// (fx says what it is), and the Conn is found from its handle by address (tcp comes first).
struct Conn {
    enum class Fx : uint8_t { none, timer, fanout, file };
    uv_tcp_t tcp;               // tcp.data: the effect's state (uv_timer_t, Fanout or FileSend)
    Session* session = nullptr; // owned (a raw pointer keeps Conn standard-layout)
    Fx fx = Fx::none;
    bool writing = false;       // a uv_write is queued
    bool reading = false;

    static Conn* of(void* handle) { return reinterpret_cast<Conn*>(handle); }  // &tcp == this
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
    uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&tcp); }
    bool closing() { return uv_is_closing(handle()) != 0; }
    // wait: a timer only while the connection waits; fanout: the calls in flight (the Fanout
    // outlives a closed Conn); file: being opened or sent.
    uv_timer_t* timer() { return fx == Fx::timer ? static_cast<uv_timer_t*>(tcp.data) : nullptr; }
    Fanout* fanout() { return fx == Fx::fanout ? static_cast<Fanout*>(tcp.data) : nullptr; }
    FileSend* file() { return fx == Fx::file ? static_cast<FileSend*>(tcp.data) : nullptr; }
    void set_fx(Fx kind, void* state) {
        fx = state ? kind : Fx::none;
        tcp.data = state;
    }
};
static_assert(std::is_standard_layout_v<Conn> && offsetof(Conn, tcp) == 0);

// One queued write to a client (allocated only when the socket was full).
struct WriteReq {
    uv_write_t req;       // req.data: the Conn
    std::size_t bytes;    // outbox bytes it covers (0 for a file chunk)
    bool file_chunk;
};

// One fan-out: K calls, a counter, the bodies. Freed by the last call's completion.
struct Fanout {
    Conn* conn;                       // nullptr once the client connection is closed
    int remaining;                    // calls not yet complete (+1 while they are being started)
    bool ok = true;
    std::vector<std::string> bodies;  // index i = call i
};

// A keep-alive connection to the backend. In the pool (idle) it keeps reading, so that a backend
// closing it is noticed and it is dropped; a call never goes to a connection with unread bytes.
struct Backend {
    uv_tcp_t tcp;             // tcp.data: this
    uv_connect_t connect;
    Worker* worker;
    BackendReader reader;
    std::string request;      // alive until its write completes (one call at a time)
    Fanout* fan = nullptr;    // the call in progress, or nullptr (idle or abandoned)
    int index = -1;
    bool connected = false;
    bool pooled = false;
    Backend* prev = nullptr;  // in the worker's list of all backends
    Backend* next = nullptr;
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
    uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&tcp); }
};

// The file effect of one connection. A threadpool request cannot be taken back, so while one is
// in flight (fs_busy) the FileSend outlives a closed connection and its callback frees it.
struct FileSend {
    Conn* conn;
    const ServerOptions* opts;
    std::string name;
    uv_work_t work;                 // the open, on the threadpool
    uv_fs_t fs;                     // the chunk reads, on the threadpool
    int fd = -1;
    long long size = 0;
    bool fs_busy = false;           // the open or a read is on the threadpool
    bool sending = false;           // complete_file said how many bytes to send
    // Read-ahead as in a Node stream: the next chunk is read while the one before is written,
    // so at most one read and one write are in flight, in two buffers.
    std::unique_ptr<char[]> bufs[2];
    std::size_t unread = 0;         // bytes still to read
    std::size_t left = 0;           // bytes still to write
    int64_t read_off = 0;
    int rbuf = 0;                   // buffer of the read in flight
    int ready_buf = 0;              // a chunk read and not yet written: its buffer and length
    std::size_t ready_len = 0;
    int wbuf = -1;                  // buffer of the queued write, or -1
    std::size_t chunk = 0;          // bytes of that write
};

struct Worker {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_poll_t signal;  // worker 0: the signalfd
    uv_async_t stop;   // workers 1..N-1: woken by worker 0
    ServerOptions opts;
    ServerIdentity id;
    bool has_backend = false;
    sockaddr_in backend{};
    std::vector<Backend*> pool;   // idle keep-alive backend connections
    Backend* backends = nullptr;  // all of them (idle, busy, connecting), to close at stop
    bool stopping = false;
    std::vector<Worker*> others;  // worker 0: the loops to stop when the signal comes
    char buf[kReadBuffer];
};

inline Worker& worker_of(uv_handle_t* h) { return *static_cast<Worker*>(h->loop->data); }
inline Worker& worker_of(Conn* c) { return worker_of(c->handle()); }

// main.cpp
void warn_once_a_second(const char* what, int err);
void close_conn(Conn* c);
// After anything happened on a connection: write, carry out the effect, read on, or close.
void advance(Conn* c);
void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf);  // the loop's one read buffer
// Writes now as far as the socket takes; queues the rest (c->writing). False: c was closed.
bool write_now_or_queue(Conn* c, uv_buf_t* bufs, int n, std::size_t total, bool file_chunk);

// fanout.cpp
void start_fanout(Conn* c);           // the K calls of c's fanout effect (a backend is given)
void close_backend(Backend* b);       // fails its call, if any

// file.cpp
void start_file(Conn* c);             // opens the file of c's file effect on the threadpool
bool pump_file(Conn* c, FileSend* f); // moves the sending on; true once every byte is written
void close_file(FileSend* f);

}  // namespace concbench::uvm
