// What every server shares, so that a model's own code is only its concurrency mechanism: the
// command line of the contract, the listening socket, signals, the readiness line, accept.
#pragma once
#include <initializer_list>
#include <netinet/in.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <string>

#include "concbench/session.hpp"

namespace concbench {

struct ServerOptions {
    Proto proto = Proto::http;
    std::string host = "127.0.0.1";
    uint16_t port = 0;
    int workers = 1;
    std::string backend_host;  // --backend H:P: where fan-out calls go ("" = not given: 502)
    uint16_t backend_port = 0;
    std::string docroot;       // --docroot DIR: where /file/NAME is read from ("" = 404)
};

struct ModelTraits {
    const char* name;         // "epoll"
    bool has_workers = false; // accepts --workers N
    int default_workers = 1;
};

// Parses the contract's flags. --help prints usage and exits 0; anything bad prints one line on
// stderr and exits 2.
ServerOptions parse_options(int argc, char** argv, const ModelTraits& traits);

// "concbench-<model>", for the Server header.
ServerIdentity identity(const ModelTraits& traits);

// Ignores SIGPIPE and blocks SIGTERM/SIGINT (call before starting threads, which inherit the
// mask); returns a signalfd that becomes readable when either arrives. Off Linux (no signalfd)
// it is the read end of a self-pipe (signal_pipe below): poll it for readability; its bytes are
// not signalfd_siginfo records.
int stop_signal_fd();

#ifndef __linux__
// A non-blocking, close-on-exec pipe whose read end becomes readable when one of `sigs` arrives
// (a handler writes one byte): the BSD/macOS stand-in for signalfd. The signals stay unblocked.
int signal_pipe(std::initializer_list<int> sigs);
#endif

#ifndef MSG_NOSIGNAL
// macOS has no MSG_NOSIGNAL: SIGPIPE is ignored (stop_signal_fd) and accepted sockets get
// SO_NOSIGPIPE (accept_connection), so plain send() is safe there.
#define MSG_NOSIGNAL 0
#endif

// A listening TCP socket on the options' host and port (SO_REUSEADDR; SO_REUSEPORT if asked),
// non-blocking. With port 0 it sets opts.port to the port it got, so that the listeners of
// further workers (reuseport) bind the same one. Exits 2 with one line on failure.
int listen_socket(ServerOptions& opts, bool reuseport = false);

// Prints "listening <host>:<port>" on stdout and flushes: the server accepts from now on.
void announce_listening(int listen_fd);

// The N-worker layout (nginx's): starts run(1) .. run(n-1) on threads of their own, announces
// `listen_fd`, runs run(0) on the calling thread (with one worker, the only thread), and returns
// once every worker has returned. A thread that cannot be started is fatal (exit 2).
void run_workers(int n, int listen_fd, const std::function<void(int)>& run);

// accept4() that survives fd exhaustion: on EMFILE/ENFILE it frees a reserved fd, accepts and
// closes the pending connection (the client sees a clean close instead of a hang, and the
// listening socket stops being readable), and reports -1 with errno EMFILE. -1 with EAGAIN when
// nothing is pending. Accepted sockets get TCP_NODELAY and, if asked, O_NONBLOCK.
int accept_connection(int listen_fd, bool nonblocking);

// A process that will never accept (a forked per-connection child) drops the reserved fd.
void close_reserve_fd();

// The File effect's first step, shared so every model opens the same way: opens NAME under
// opts.docroot (O_RDONLY | O_CLOEXEC, a regular file only) and sets `size`. Returns the fd, or -1
// (no docroot, no such file, not a regular file) — complete_file(-1) then answers 404. The name
// is already checked by the route (no '/', no leading '.').
int open_docroot_file(const ServerOptions& opts, const std::string& name, long long& size);

// The fan-out backend's address from --backend; false when none was given (the model answers 502).
bool backend_address(const ServerOptions& opts, sockaddr_in& addr);

// Writes as much of `out` as the socket takes (writev). Returns false on a socket error; with a
// blocking socket it returns when all is written.
bool write_outbox(int fd, Outbox& out);

// One-line diagnostics on stderr, prefixed with the program name; fatal() exits 2.
[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace concbench
