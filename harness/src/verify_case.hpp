// verify internals: what the case files share — the failure, the poll-based client (Conn, with
// llhttp parsing every answer), the Ctx a case runs in, readings of the server's tree, and one
// declaration per case. Included by verify*.cpp only; the table is in verify.cpp.
#pragma once
#include <llhttp.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "concbench/host.hpp"
#include "concbench/sampler.hpp"
#include "concbench/session.hpp"
#include "concbench/verify.hpp"

namespace concbench {

struct LaunchOptions;
struct Workload;

namespace verify_detail {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A case fails by throwing this; the message is the one line the report shows.
struct CaseFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
};
template <typename... A>
void need(bool ok, fmt::format_string<A...> f, A&&... a) {
    if (!ok) throw CaseFailure(fmt::format(f, std::forward<A>(a)...));
}

inline constexpr milliseconds kIoTimeout{5000};  // one answer; a broken server fails, never hangs

// Built with ASan or TSan, this build's servers run 5-15x slower and TSan serialises thread
// creation: deadlines that bound one answer on a plain build are scaled by this.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr int kSlowdown = 5;
#else
inline constexpr int kSlowdown = 1;
#endif

// ------------------------------------------------------------------- client (verify_client.cpp)

struct Response {
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::string body;
    bool keep_alive = true;
    const std::string* header(std::string_view name) const {
        for (const auto& [k, v] : headers)
            if (k == name) return &v;
        return nullptr;
    }
    int count(std::string_view name) const {
        int n = 0;
        for (const auto& [k, v] : headers) n += k == name;
        return n;
    }
};

// A non-blocking loopback client; every wait is bounded by a deadline.
class Conn {
public:
    explicit Conn(uint16_t port, milliseconds timeout = kIoTimeout);
    ~Conn() { close_now(); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    bool ok() const { return fd_ >= 0; }
    int fd() const { return fd_; }
    const std::string& error() const { return error_; }

    void close_now();
    // Close with SO_LINGER 0: the peer gets a reset, not a FIN.
    void reset();
    void shutdown_write();

    // Writes all of `s` (or fails the case).
    void send(std::string_view s, milliseconds timeout = kIoTimeout);
    // Sends `s` without failing: false if the peer is gone (for hostile clients).
    bool try_send(std::string_view s);

    // Reads some bytes into in_: > 0 bytes read, 0 EOF, -1 timeout, -2 error (errno in err_).
    int read_some(Clock::time_point deadline);

    // The next complete response; fails the case if none arrives within `timeout`.
    Response response(milliseconds timeout = kIoTimeout) {
        Response r;
        std::string why;
        need(next(r, Clock::now() + timeout, why), "{}", why);
        return r;
    }
    // The same, reporting failure instead of throwing.
    bool next(Response& r, Clock::time_point deadline, std::string& why);
    // True if the server closes (EOF or reset) with no further bytes, within `timeout`.
    std::string expect_closed(milliseconds timeout = kIoTimeout);
    std::string& in() { return in_; }

private:
    bool wait(short events, Clock::time_point deadline);
    static Conn& self(llhttp_t* p) { return *static_cast<Conn*>(p->data); }
    static int on_header_field(llhttp_t* p, const char* at, std::size_t n);
    static int on_header_value(llhttp_t* p, const char* at, std::size_t n);
    static int on_body(llhttp_t* p, const char* at, std::size_t n);
    static int on_message_complete(llhttp_t* p);

    int fd_ = -1;
    std::string error_;
    int err_ = 0;
    std::string in_;
    llhttp_settings_t settings_{};
    llhttp_t parser_{};
    Response cur_, done_msg_;
    bool in_value_ = false, done_ = false;
};

std::string get(std::string_view path);
void expect_hello(const Response& r, std::string_view what);
void expect_bytes(const Response& r, std::size_t n, std::string_view what);
// A payload whose bytes depend on their position, for echo checks.
std::string payload(std::size_t n, unsigned seed = 1);
// Sends `msg` and reads back as many bytes at the same time (echo): both directions flow, so a
// payload larger than the socket buffers does not deadlock. Returns what came back.
std::string echo_roundtrip(Conn& c, const std::string& msg, milliseconds timeout = seconds(10));
// `req` on a fresh connection must get `status` and then a close.
void expect_status_and_close(uint16_t port, const std::string& req, int status, std::string_view what);

inline void pause_ms(int ms) { std::this_thread::sleep_for(milliseconds(ms)); }

// ------------------------------------------------------------------------ case run (verify_ctx.cpp)

class Ctx {
public:
    // `work_dir`: this case's own directory (reference servers' configuration, pid and logs);
    // `docroot`: the verify run's docroot, shared by its cases.
    Ctx(const ModelInfo& m, const VerifyOptions& o, std::string log_path, fs::path work_dir, std::string docroot)
        : model(m), opts(o), log_path_(std::move(log_path)), work_dir_(std::move(work_dir)),
          docroot_(std::move(docroot)) {}

    const ModelInfo& model;
    const VerifyOptions& opts;
    bool full() const { return opts.set == VerifySet::full; }
    bool interrupted() const { return opts.interrupted && *opts.interrupted; }

    // Starts a server of the model through launch.hpp (a reference server in a directory of its
    // own); the Ctx checks and stops it after the case. A backend started before is its --backend.
    ServerProcess& start(Proto proto, uint16_t port = 0, unsigned long nofile = 0);
    // The fan-out backend (VerifyOptions::backend, the runner's), started the runner's way; the
    // servers started after it call it.
    ServerProcess& start_backend();

    // A path answering `n` bytes of the /bytes pattern: /bytes/N, or — for a model without that
    // route (a static reference server) — /file/N from the docroot, which holds the same bytes.
    std::string body_path(std::size_t n);
    bool bodies_from_files() const { return bodies_from_files_; }
    // A docroot file of the `file-N` workload, written once.
    const Workload& docroot_file(const std::string& workload);

    // The postcondition of every case, for each server still running: alive, answering, clean
    // SIGTERM stop. Returns "" or why not.
    std::string finish();
    // Stops a server now (the shutdown case), keeping its log for the sanitizer scan.
    StopReport stop(ServerProcess& p, milliseconds grace);
    std::vector<std::string> logs() const;

private:
    struct Running {
        std::unique_ptr<ServerProcess> proc;
        Proto proto;
        std::string log;
        std::string suffix;     // of its log name: "" the model's, ".backend"
        std::string work_dir;   // a reference server's own directory
        std::string error_log;  // its error.log, copied beside `log`
    };

    // `suffix` names the log of a helper server (the backend); the model's first server has the
    // case's log, a second one (a restart) .1, and so on.
    ServerProcess& launch(const ModelInfo& m, LaunchOptions& lo, Proto proto, const std::string& suffix);
    // A reference server writes its own error.log in its directory: copy it beside the case's
    // log (kept when the case does not pass); the directory itself goes.
    void keep_error_logs();
    std::string finish_one(Running& s);
    static std::string sanitizer_report(const std::string& log);

    std::string log_path_;
    fs::path work_dir_;
    std::string docroot_;
    std::string backend_;
    bool bodies_from_files_ = false;
    std::vector<Running> servers_;
};

// ------------------------------------------------- readings of the server's tree (verify_ctx.cpp)

// Readings of the server tree settle after clients leave: wait until `ok` or the timeout.
template <typename F>
TreeSample settle(pid_t pid, F ok, milliseconds timeout = seconds(3)) {
    auto deadline = Clock::now() + timeout;
    TreeSample t = sample_tree(pid);
    while (!ok(t) && Clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(50));
        t = sample_tree(pid);
    }
    return t;
}

// A process that exists and is not a zombie (an orphaned zombie waits for init, which in a
// container may never reap it).
bool alive(pid_t pid);

// "pid 12 (server-fork) 7 fds: 0 1 2 3 4 5 6; ..." for each process of the tree: which process
// holds an fd a check did not expect, and which fd it is.
std::string describe_fds(pid_t root);

// ---------------------------------------------------------------------------------------- cases
// Each returns the detail a passing case reports ("" for none) and fails by CaseFailure.

// verify_framing.cpp: framing, headers, bad input.
std::string case_split(Ctx& x);
std::string pipelined(Ctx& x, int n);
std::string case_http10(Ctx& x);
std::string case_connection_close(Ctx& x);
std::string case_keepalive(Ctx& x);
std::string case_bodies(Ctx& x);
std::string case_echo_sizes(Ctx& x);
std::string case_headers(Ctx& x);
std::string case_date_changes(Ctx& x);
std::string case_bad_request(Ctx& x);
std::string case_431(Ctx& x);
std::string case_404(Ctx& x);
std::string case_bytes_bad(Ctx& x);
std::string case_garbage(Ctx& x);
std::string case_body_not_accepted(Ctx& x);

// verify_effects.cpp: the Wait, Fanout and File effects.
std::string case_delay(Ctx& x);
std::string case_fanout(Ctx& x);
std::string case_file(Ctx& x);
std::string case_work(Ctx& x);

// verify_hostile.cpp: clients that reset, half-close, dribble or never read.
std::string case_reset(Ctx& x);
std::string case_half_closed(Ctx& x);
std::string case_half_closed_echo(Ctx& x);
std::string case_slowloris(Ctx& x);
std::string case_never_reading(Ctx& x);

// verify_resources.cpp: exhaustion, leaks, shutdown.
std::string case_fd_limit(Ctx& x);
std::string case_many_connections(Ctx& x);
std::string case_leaks(Ctx& x);
std::string case_shutdown(Ctx& x);

}  // namespace verify_detail
}  // namespace concbench
