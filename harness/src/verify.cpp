// verify: the conformance and hostile-input table, run against real server processes.
// Each case starts its own server(s), drives them over loopback with a small poll-based client
// (llhttp parses every answer), and ends with the same postcondition: the server did not die,
// still answers a fresh client, stops on SIGTERM cleanly within 5 s, and its stderr holds no
// sanitizer report.
#include "concbench/verify.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "concbench/docroot.hpp"
#include "concbench/host.hpp"
#include "concbench/launch.hpp"
#include "concbench/outbox.hpp"
#include "concbench/sampler.hpp"
#include "concbench/session.hpp"
#include "concbench/workloads.hpp"

namespace fs = std::filesystem;
using namespace std::chrono;
using Clock = steady_clock;

namespace concbench {
namespace {

// A case fails by throwing this; the message is the one line the report shows.
struct CaseFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
};
template <typename... A>
void need(bool ok, fmt::format_string<A...> f, A&&... a) {
    if (!ok) throw CaseFailure(fmt::format(f, std::forward<A>(a)...));
}

constexpr milliseconds kIoTimeout{5000};  // one answer; a broken server fails, never hangs

// ------------------------------------------------------------------------------------- client

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
    explicit Conn(uint16_t port, milliseconds timeout = kIoTimeout) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            error_ = fmt::format("socket: {}", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
            error_ = fmt::format("connect: {}", strerror(errno));
            close_now();
            return;
        }
        pollfd p{fd_, POLLOUT, 0};
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) error_ = "connect: timed out";
        else if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
            error_ = fmt::format("connect: {}", strerror(soerr));
        if (!error_.empty()) close_now();
        llhttp_settings_init(&settings_);
        settings_.on_header_field = on_header_field;
        settings_.on_header_value = on_header_value;
        settings_.on_body = on_body;
        settings_.on_message_complete = on_message_complete;
        llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
        parser_.data = this;
    }
    ~Conn() { close_now(); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    bool ok() const { return fd_ >= 0; }
    int fd() const { return fd_; }
    const std::string& error() const { return error_; }

    void close_now() {
        if (fd_ >= 0) close(fd_);
        fd_ = -1;
    }
    // Close with SO_LINGER 0: the peer gets a reset, not a FIN.
    void reset() {
        if (fd_ < 0) return;
        linger l{1, 0};
        setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close_now();
    }
    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

    // Writes all of `s` (or fails the case).
    void send(std::string_view s, milliseconds timeout = kIoTimeout) {
        need(fd_ >= 0, "send on a connection that failed: {}", error_);
        auto deadline = Clock::now() + timeout;
        while (!s.empty()) {
            ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
            if (n > 0) {
                s.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            need(n < 0 && errno == EAGAIN, "send: {}", n == 0 ? "wrote nothing" : strerror(errno));
            need(wait(POLLOUT, deadline), "send: the server read nothing for {} ms",
                 duration_cast<milliseconds>(timeout).count());
        }
    }
    // Sends `s` without failing: false if the peer is gone (for hostile clients).
    bool try_send(std::string_view s) {
        while (!s.empty()) {
            ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            s.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    // Reads some bytes into in_: > 0 bytes read, 0 EOF, -1 timeout, -2 error (errno in err_).
    int read_some(Clock::time_point deadline) {
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0) {
                in_.append(buf, static_cast<std::size_t>(n));
                return 1;
            }
            if (n == 0) return 0;
            if (errno != EAGAIN && errno != EINTR) {
                err_ = errno;
                return -2;
            }
            if (!wait(POLLIN, deadline)) return -1;
        }
    }

    // The next complete response; fails the case if none arrives within `timeout`.
    Response response(milliseconds timeout = kIoTimeout) {
        Response r;
        std::string why;
        need(next(r, Clock::now() + timeout, why), "{}", why);
        return r;
    }
    // The same, reporting failure instead of throwing.
    bool next(Response& r, Clock::time_point deadline, std::string& why) {
        if (fd_ < 0) {
            why = "connection failed: " + error_;
            return false;
        }
        for (;;) {
            if (!in_.empty()) {
                done_ = false;
                llhttp_errno_t e = llhttp_execute(&parser_, in_.data(), in_.size());
                if (e == HPE_PAUSED) {
                    in_.erase(0, static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - in_.data()));
                    llhttp_resume(&parser_);
                } else if (e == HPE_OK) {
                    in_.clear();
                } else {
                    why = fmt::format("malformed response: {} ({})", llhttp_errno_name(e),
                                      parser_.reason ? parser_.reason : "");
                    return false;
                }
                if (done_) {
                    r = std::move(done_msg_);
                    return true;
                }
            }
            int rc = read_some(deadline);
            if (rc > 0) continue;
            if (rc == 0) why = "the server closed the connection before a complete answer";
            else if (rc == -1) why = "no complete answer within the timeout";
            else why = fmt::format("connection error before a complete answer: {}", strerror(err_));
            return false;
        }
    }
    // True if the server closes (EOF or reset) with no further bytes, within `timeout`.
    std::string expect_closed(milliseconds timeout = kIoTimeout) {
        auto deadline = Clock::now() + timeout;
        for (;;) {
            if (!in_.empty()) return fmt::format("{} unexpected bytes instead of a close", in_.size());
            int rc = read_some(deadline);
            if (rc == 0 || rc == -2) return "";
            if (rc == -1) return "the server did not close the connection";
        }
    }
    std::string& in() { return in_; }

private:
    bool wait(short events, Clock::time_point deadline) {
        auto left = duration_cast<milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd_, events, 0};
        int rc = poll(&p, 1, static_cast<int>(left));
        return rc == 1;
    }
    static Conn& self(llhttp_t* p) { return *static_cast<Conn*>(p->data); }
    static int on_header_field(llhttp_t* p, const char* at, std::size_t n) {
        Conn& c = self(p);
        if (c.cur_.headers.empty() || c.in_value_) c.cur_.headers.emplace_back();
        c.in_value_ = false;
        for (std::size_t i = 0; i < n; ++i)
            c.cur_.headers.back().first += static_cast<char>(std::tolower(static_cast<unsigned char>(at[i])));
        return 0;
    }
    static int on_header_value(llhttp_t* p, const char* at, std::size_t n) {
        Conn& c = self(p);
        c.in_value_ = true;
        c.cur_.headers.back().second.append(at, n);
        return 0;
    }
    static int on_body(llhttp_t* p, const char* at, std::size_t n) {
        self(p).cur_.body.append(at, n);
        return 0;
    }
    static int on_message_complete(llhttp_t* p) {
        Conn& c = self(p);
        c.cur_.status = p->status_code;
        c.cur_.keep_alive = llhttp_should_keep_alive(p);
        c.done_msg_ = std::move(c.cur_);
        c.cur_ = Response{};
        c.in_value_ = false;
        c.done_ = true;
        return HPE_PAUSED;
    }

    int fd_ = -1;
    std::string error_;
    int err_ = 0;
    std::string in_;
    llhttp_settings_t settings_{};
    llhttp_t parser_{};
    Response cur_, done_msg_;
    bool in_value_ = false, done_ = false;
};

std::string get(std::string_view path) {
    return fmt::format("GET {} HTTP/1.1\r\nHost: verify\r\n\r\n", path);
}

void expect_hello(const Response& r, std::string_view what) {
    need(r.status == 200, "{}: status {} (expected 200)", what, r.status);
    need(r.body == kHelloBody, "{}: body '{}' (expected 'Hello, World!')", what, r.body.substr(0, 40));
}

void expect_bytes(const Response& r, std::size_t n, std::string_view what) {
    need(r.status == 200, "{}: status {} (expected 200)", what, r.status);
    need(r.body.size() == n, "{}: {} body bytes (expected {})", what, r.body.size(), n);
    for (std::size_t i = 0; i < n; ++i)
        need(r.body[i] == pattern_byte(i), "{}: body byte {} is wrong", what, i);
}

// A payload whose bytes depend on their position, for echo checks.
std::string payload(std::size_t n, unsigned seed = 1) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7) >> 3);
    return s;
}

// Sends `msg` and reads back as many bytes at the same time (echo): both directions flow, so a
// payload larger than the socket buffers does not deadlock. Returns what came back.
std::string echo_roundtrip(Conn& c, const std::string& msg, milliseconds timeout = seconds(10)) {
    auto deadline = Clock::now() + timeout;
    std::size_t sent = 0;
    while (c.in().size() < msg.size()) {
        if (sent < msg.size()) {
            ssize_t n = ::send(c.fd(), msg.data() + sent, msg.size() - sent, MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<std::size_t>(n);
            else need(errno == EAGAIN, "echo: send failed after {} bytes: {}", sent, strerror(errno));
        }
        pollfd p{c.fd(), static_cast<short>(POLLIN | (sent < msg.size() ? POLLOUT : 0)), 0};
        auto left = duration_cast<milliseconds>(deadline - Clock::now()).count();
        need(left > 0, "echo: {} of {} bytes back within the timeout ({} sent)", c.in().size(),
             msg.size(), sent);
        poll(&p, 1, static_cast<int>(std::min<long>(left, 100)));
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int rc = c.read_some(Clock::now());
            need(rc != 0 && rc != -2, "echo: the server closed after {} of {} bytes", c.in().size(),
                 msg.size());
        }
    }
    std::string back = c.in().substr(0, msg.size());
    c.in().erase(0, msg.size());
    return back;
}

// ---------------------------------------------------------------------------------- case run

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
    ServerProcess& start(Proto proto, uint16_t port = 0, unsigned long nofile = 0) {
        LaunchOptions lo;
        lo.proto = proto_name(proto);
        lo.port = port;
        lo.workers = opts.workers > 0 ? opts.workers : model.workers;
        lo.nofile = nofile;
        lo.docroot = docroot_;
        lo.docroot_flag = model.serves("file");
        lo.backend = backend_;
        lo.cpus = opts.server_cpus;
        return launch(model, lo, proto, "");
    }
    // The fan-out backend (VerifyOptions::backend, the runner's), started the runner's way; the
    // servers started after it call it.
    ServerProcess& start_backend() {
        need(opts.backend != nullptr, "no backend model to call");
        LaunchOptions lo;  // not pinned with the server: the runner gives it the client's CPUs
        ServerProcess& b = launch(*opts.backend, lo, Proto::http, ".backend");
        backend_ = fmt::format("{}:{}", b.host(), b.port());
        return b;
    }

    // A path answering `n` bytes of the /bytes pattern: /bytes/N, or — for a model without that
    // route (a static reference server) — /file/N from the docroot, which holds the same bytes.
    std::string body_path(std::size_t n) {
        if (model.serves("bytes") || !model.serves("file")) return fmt::format("/bytes/{}", n);
        const Workload& w = docroot_file(fmt::format("file-{}", n));
        bodies_from_files_ = true;
        return "/file/" + w.file_name;
    }
    bool bodies_from_files() const { return bodies_from_files_; }
    // A docroot file of the `file-N` workload, written once.
    const Workload& docroot_file(const std::string& workload) {
        const Workload* w = find_workload(workload);
        std::string err;
        need(w && write_docroot_file(docroot_, *w, err), "docroot: {}", err);
        return *w;
    }

    // The postcondition of every case, for each server still running: alive, answering, clean
    // SIGTERM stop. Returns "" or why not.
    std::string finish() {
        std::string why;
        for (auto& s : servers_) {
            if (!s.proc) continue;
            std::string w = finish_one(s);
            if (why.empty()) why = w;
        }
        for (auto& s : servers_) {
            std::string w = sanitizer_report(s.log);
            if (why.empty() && !w.empty()) why = w;
        }
        keep_error_logs();
        return why;
    }
    // Stops a server now (the shutdown case), keeping its log for the sanitizer scan.
    StopReport stop(ServerProcess& p, milliseconds grace) {
        for (auto& s : servers_)
            if (s.proc.get() == &p) {
                StopReport r = s.proc->stop(grace);
                s.proc.reset();
                return r;
            }
        return {};
    }
    std::vector<std::string> logs() const {
        std::vector<std::string> l;
        for (auto& s : servers_) {
            l.push_back(s.log);
            if (!s.error_log.empty()) l.push_back(s.error_log);
        }
        return l;
    }

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
    ServerProcess& launch(const ModelInfo& m, LaunchOptions& lo, Proto proto, const std::string& suffix) {
        int n = 0;
        for (const auto& s : servers_) n += s.suffix == suffix;
        lo.log_path = log_path_ + suffix + (n > 0 ? fmt::format(".{}", n) : "");
        lo.work_dir = (work_dir_ / fmt::format("server{}", servers_.size())).string();
        std::string err;
        auto s = launch_server(m, lo, seconds(10), err, opts.interrupted);
        need(s != nullptr, "{} did not start: {}", &m == &model ? "the server" : m.name, err);
        servers_.push_back({std::move(s), proto, lo.log_path, suffix, m.reference ? lo.work_dir : "", ""});
        return *servers_.back().proc;
    }
    // A reference server writes its own error.log in its directory: copy it beside the case's
    // log (kept when the case does not pass); the directory itself goes.
    void keep_error_logs() {
        std::error_code ec;
        for (auto& s : servers_) {
            if (s.work_dir.empty()) continue;
            fs::path e = fs::path(s.work_dir) / "error.log";
            if (fs::exists(e, ec) && fs::file_size(e, ec) > 0) {
                s.error_log = s.log + ".error.log";
                fs::copy_file(e, s.error_log, fs::copy_options::overwrite_existing, ec);
            }
            fs::remove_all(s.work_dir, ec);
        }
    }

    std::string finish_one(Running& s) {
        std::string died = s.proc->died();
        if (!died.empty()) {
            s.proc.reset();
            std::string last = last_line_of(s.log);
            return fmt::format("the server died: {}{}{}", died, last.empty() ? "" : ": ", last);
        }
        // It still serves a newcomer (fds freed by the case may take a moment to close).
        std::string fail;
        for (int attempt = 0; attempt < 20; ++attempt) {
            fail.clear();
            try {
                Conn c(s.proc->port(), seconds(2));
                need(c.ok(), "connect: {}", c.error());
                if (s.proto == Proto::http) {
                    c.send(get("/"));
                    expect_hello(c.response(seconds(2)), "GET /");
                } else {
                    std::string msg = "ping\n";
                    need(echo_roundtrip(c, msg, seconds(2)) == msg, "echo answered wrongly");
                }
            } catch (const CaseFailure& e) {
                fail = e.what();
            }
            if (fail.empty()) break;
            std::this_thread::sleep_for(milliseconds(100));
        }
        if (!fail.empty()) fail = "afterwards the server no longer serves a new client: " + fail;
        StopReport r = s.proc->stop(seconds(5));
        s.proc.reset();
        if (fail.empty() && !r.clean())
            fail = "afterwards SIGTERM did not stop it cleanly: " + r.describe();
        return fail;
    }
    static std::string sanitizer_report(const std::string& log) {
        std::ifstream in(log);
        std::string line;
        while (std::getline(in, line))
            for (const char* mark : {"runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                     "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer"})
                if (line.find(mark) != std::string::npos)
                    return fmt::format("sanitizer report in {}: {}", log, line.substr(0, 200));
        return "";
    }

    std::string log_path_;
    fs::path work_dir_;
    std::string docroot_;
    std::string backend_;
    bool bodies_from_files_ = false;
    std::vector<Running> servers_;
};

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
bool alive(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string stat;
    if (!std::getline(in, stat)) return false;
    auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return false;
    char state = stat[close_paren + 2];
    return state != 'Z' && state != 'X';
}

void pause_ms(int ms) { std::this_thread::sleep_for(milliseconds(ms)); }

// "pid 12 (server-fork) 7 fds: 0 1 2 3 4 5 6; ..." for each process of the tree: which process
// holds an fd a check did not expect, and which fd it is.
std::string describe_fds(pid_t root) {
    std::string out;
    for (pid_t pid : process_tree(root)) {
        std::string comm;
        std::ifstream(fmt::format("/proc/{}/comm", pid)) >> comm;
        std::vector<int> fds;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(fmt::format("/proc/{}/fd", pid), ec))
            fds.push_back(std::atoi(e.path().filename().c_str()));
        std::sort(fds.begin(), fds.end());
        if (!out.empty()) out += "; ";
        out += fmt::format("pid {} ({}) {} fds: {}", pid, comm, fds.size(), fmt::join(fds, " "));
    }
    return out;
}

// -------------------------------------------------------------------------------------- cases

std::string case_split(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    const std::string req =
        fmt::format("GET {} HTTP/1.1\r\nHost: verify\r\nUser-Agent: concbench-verify\r\n\r\n", x.body_path(7));
    for (std::size_t k = 1; k < req.size(); ++k) {
        c.send(std::string_view(req).substr(0, k));
        pause_ms(2);  // TCP_NODELAY and a pause: the server reads the two parts separately
        c.send(std::string_view(req).substr(k));
        expect_bytes(c.response(), 7, fmt::format("request split after byte {}", k));
    }
    for (char ch : req) {  // one byte per write
        c.send(std::string_view(&ch, 1));
        pause_ms(1);
    }
    expect_bytes(c.response(), 7, "request sent one byte per write");
    return fmt::format("{} split points and one byte per write", req.size() - 1);
}

std::string pipelined(Ctx& x, int n) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    std::string many;
    for (int i = 0; i < n; ++i) many += i % 5 == 0 ? get("/") : get(x.body_path(static_cast<std::size_t>(i * 3)));
    c.send(many);
    for (int i = 0; i < n; ++i) {
        Response r = c.response();
        if (i % 5 == 0) expect_hello(r, fmt::format("pipelined answer #{}", i));
        else expect_bytes(r, static_cast<std::size_t>(i * 3), fmt::format("pipelined answer #{}", i));
    }
    c.send(get("/"));  // the connection is still in step
    expect_hello(c.response(), "request after the pipeline");
    return "";
}

std::string case_http10(Ctx& x) {
    auto& s = x.start(Proto::http);
    {
        Conn c(s.port());
        c.send("GET / HTTP/1.0\r\n\r\n");
        Response r = c.response();
        expect_hello(r, "HTTP/1.0");
        need(r.header("content-length"), "HTTP/1.0 answer without Content-Length");
        std::string why = c.expect_closed();
        need(why.empty(), "HTTP/1.0 without keep-alive: {}", why);
    }
    Conn k(s.port());  // HTTP/1.0 asking for keep-alive: kept
    k.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    Response r = k.response();
    expect_hello(r, "HTTP/1.0 keep-alive");
    need(r.keep_alive, "HTTP/1.0 with Connection: keep-alive: the answer does not keep the connection");
    k.send(fmt::format("GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", x.body_path(5)));
    expect_bytes(k.response(), 5, "second HTTP/1.0 keep-alive request");
    return "";
}

std::string case_connection_close(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    // A request after the closing one, in the same write: it must be ignored.
    c.send("GET / HTTP/1.1\r\nHost: verify\r\nConnection: close\r\n\r\n" + get(x.body_path(3)));
    Response r = c.response();
    expect_hello(r, "Connection: close");
    need(!r.keep_alive, "the answer to Connection: close does not say close");
    std::string why = c.expect_closed();
    need(why.empty(), "after Connection: close: {}", why);
    return "";
}

std::string case_keepalive(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    const std::string req = get("/");
    for (int i = 0; i < 10000; ++i) {
        c.send(req);
        Response r = c.response();
        if (r.status != 200 || r.body != kHelloBody) expect_hello(r, fmt::format("request #{}", i + 1));
        need(r.keep_alive, "request #{}: the server asked to close", i + 1);
        if (x.interrupted()) break;
    }
    return "10,000 requests on one connection";
}

std::string case_bodies(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{13},
                          std::size_t{1023}, std::size_t{16384}, std::size_t{65537},
                          std::size_t{1} << 20, std::size_t{4} << 20}) {
        std::string path = x.body_path(n);
        c.send(get(path));
        expect_bytes(c.response(seconds(10)), n, path);
    }
    return "/bytes/0 .. /bytes/4194304, every byte checked";
}

std::string case_echo_sizes(Ctx& x) {
    auto& s = x.start(Proto::echo);
    Conn c(s.port());
    need(c.ok(), "connect: {}", c.error());
    unsigned seed = 1;
    for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{1000}, std::size_t{65537},
                          std::size_t{1} << 20, std::size_t{4} << 20}) {
        std::string msg = payload(n, seed++);
        std::string back = echo_roundtrip(c, msg);
        need(back == msg, "echo of {} bytes: the bytes came back different", n);
    }
    return "1 B .. 4 MiB echoed in order";
}

std::string case_headers(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    const std::string server = "concbench-" + x.model.name;
    for (const std::string& path : {std::string("/"), x.body_path(100), x.body_path(0), std::string("/no-such-path"),
                                    std::string("/bytes/x")}) {
        c.send(get(path));
        Response r = c.response();
        for (const char* h : {"server", "date", "content-type", "content-length"})
            need(r.count(h) == 1, "{} (status {}): {} '{}' header(s), expected exactly one", path,
                 r.status, r.count(h), h);
        // A server that names itself (nginx, Apache: their model.toml says so) is not judged by name.
        need(!x.model.skips("server-header").empty() || *r.header("server") == server,
             "{}: Server '{}' (expected '{}')", path, *r.header("server"), server);
        need(!r.header("content-type")->empty(), "{}: empty Content-Type", path);
        need(*r.header("content-length") == std::to_string(r.body.size()),
             "{}: Content-Length {} but {} body bytes", path, *r.header("content-length"), r.body.size());
        // The Date is an IMF-fixdate of now (RFC 9110 5.6.7), within a few seconds.
        std::tm tm{};
        const char* end = strptime(r.header("date")->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        need(end && *end == '\0', "{}: Date '{}' is not an IMF-fixdate", path, *r.header("date"));
        long skew = static_cast<long>(timegm(&tm) - time(nullptr));
        need(std::labs(skew) <= 5, "{}: Date '{}' is {} s off the clock", path, *r.header("date"), skew);
    }
    if (std::string why = x.model.skips("server-header"); !why.empty())
        return "the Server value is not checked: " + why;
    return "";
}

std::string case_date_changes(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    c.send(get("/"));
    Response a = c.response();
    need(a.header("date"), "no Date header");
    pause_ms(1500);
    c.send(get("/"));
    Response b = c.response();
    need(b.header("date"), "no Date header on the second answer");
    need(*a.header("date") != *b.header("date"), "Date '{}' did not change over 1.5 s", *a.header("date"));
    return fmt::format("'{}' then '{}'", *a.header("date"), *b.header("date"));
}

// `req` on a fresh connection must get `status` and then a close.
void expect_status_and_close(uint16_t port, const std::string& req, int status, std::string_view what) {
    Conn c(port);
    c.send(req);
    Response r;
    std::string why;
    need(c.next(r, Clock::now() + kIoTimeout, why), "{}: {}", what, why);
    need(r.status == status, "{}: status {} (expected {})", what, r.status, status);
    why = c.expect_closed();
    need(why.empty(), "{}: after the {}: {}", what, status, why);
}

std::string case_bad_request(Ctx& x) {
    auto& s = x.start(Proto::http);
    expect_status_and_close(s.port(), "BLAH\r\n\r\n", 400, "request line 'BLAH'");
    expect_status_and_close(s.port(), "GET / HTTP/1.1 extra\r\n\r\n", 400, "request line with a 4th field");
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost verify\r\n\r\n", 400, "header without a colon");
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost: verify\r\nBad Name: x\r\n\r\n", 400, "header name with a space");
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost: verify\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
                            "two different Content-Lengths");
    return "";
}

std::string case_431(Ctx& x) {
    auto& s = x.start(Proto::http);
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nX-Big: " + std::string(10000, 'x') + "\r\n\r\n", 431,
                            "one 10,000-byte header");
    std::string many = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 200; ++i) many += fmt::format("X-H{}: {}\r\n", i, std::string(40, 'v'));
    expect_status_and_close(s.port(), many + "\r\n", 431, "200 headers of 50 bytes");
    expect_status_and_close(s.port(), "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n", 431,
                            "a 9,000-byte request target");
    return "";
}

std::string case_404(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    for (const char* path : {"/missing", "/bytes", "/hello/world", "/%00"}) {
        c.send(get(path));
        Response r = c.response();
        need(r.status == 404, "{}: status {} (expected 404)", path, r.status);
    }
    c.send(get("/"));  // a 404 keeps the connection
    expect_hello(c.response(), "request after the 404s");
    return "";
}

std::string case_bytes_bad(Ctx& x) {
    auto& s = x.start(Proto::http);
    uint64_t pss0 = sample_tree(s.pid()).pss_kib;
    for (const char* arg : {"abc", "-1", "1e9", "", "99999999999999999999999999", "67108865",
                            "0x10", "+5", "5.0", "18446744073709551617", "4294967296"}) {
        Conn c(s.port());
        c.send(get(std::string("/bytes/") + arg));
        Response r = c.response();
        need(r.status == 400, "/bytes/{}: status {} (expected 400)", arg, r.status);
    }
    uint64_t pss1 = sample_tree(s.pid()).pss_kib;
    need(pss1 < pss0 + 64 * 1024, "PSS grew from {} to {} KiB answering bad /bytes/ numbers", pss0, pss1);
    return "";
}

std::string case_garbage(Ctx& x) {
    auto& s = x.start(Proto::http);
    std::mt19937 rng(42);
    for (int round = 0; round < 5; ++round) {
        std::string g(512, '\0');
        for (auto& ch : g) ch = static_cast<char>(rng());
        g[0] = static_cast<char>(0x80 | round);  // never a token character: no method can start
        expect_status_and_close(s.port(), g, 400, fmt::format("512 bytes of binary garbage #{}", round + 1));
    }
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost: verify\r\nX: a" + std::string(1, '\0') + "b\r\n\r\n", 400,
                            "a NUL in a header value");
    return "";
}

// A request with a body the route does not take, pipelined with a second request: the body is
// consumed (or the connection closed), never parsed as the next request.
std::string case_body_not_accepted(Ctx& x) {
    auto& s = x.start(Proto::http);
    struct Case {
        const char* what;
        std::string req;
    };
    // Bodies that look like requests: a server that does not consume them answers them.
    auto with_body = [](std::string head, const std::string& body) {
        return head + fmt::format("Content-Length: {}\r\n\r\n", body.size()) + body;
    };
    const Case cases[] = {
        {"POST / with Content-Length",
         with_body("POST / HTTP/1.1\r\nHost: verify\r\n", "GET " + x.body_path(9) + " HTTP/1.1\r\nHost: verify\r\n\r\n")},
        {"GET with a body", with_body("GET / HTTP/1.1\r\nHost: verify\r\n", "GET /missing HTTP/1.1\r\nHost: verify\r\n\r\n")},
        {"POST chunked", "POST " + x.body_path(1) + " HTTP/1.1\r\nHost: verify\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5\r\nGET /\r\n0\r\n\r\n"},
        {"PUT, large body", "PUT / HTTP/1.1\r\nHost: verify\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'G')},
    };
    std::string seen;
    for (const auto& k : cases) {
        Conn c(s.port());
        c.send(k.req + get(x.body_path(3)));
        Response first = c.response();
        need(first.status >= 200, "{}: status {}", k.what, first.status);
        seen += fmt::format("{}{} -> {}", seen.empty() ? "" : ", ", k.what, first.status);
        if (!first.keep_alive) {  // closing is allowed by HTTP/1.1; then nothing more may come
            std::string why = c.expect_closed();
            need(why.empty(), "{}: answered with Connection: close, then: {}", k.what, why);
            continue;
        }
        expect_bytes(c.response(), 3, fmt::format("{}: the pipelined request after it", k.what));
    }
    return seen;
}

// ------------------------------------------------------------------------------------ effects

double ms_since(Clock::time_point t0) { return duration<double, std::milli>(Clock::now() - t0).count(); }

// The Wait effect: honoured, never early, and it holds up nothing but its own connection.
std::string case_delay(Ctx& x) {
    auto& s = x.start(Proto::http);
    auto t0 = Clock::now();
    Conn slow(s.port());
    slow.send(get("/delay/400?id=5") + get("/"));
    pause_ms(50);
    Conn quick(s.port());
    quick.send(get("/"));
    expect_hello(quick.response(), "another connection while one request waits");
    const double other_ms = ms_since(t0);
    need(other_ms < 350, "while one request waited 400 ms, another connection was answered only after {:.0f} ms",
         other_ms);
    Response r = slow.response();
    const double waited_ms = ms_since(t0);
    need(r.status == 200, "/delay/400: status {}", r.status);
    need(r.body == delay_body(400, 5), "/delay/400?id=5: body '{}' (expected '{}')", r.body.substr(0, 60),
         delay_body(400, 5));
    need(waited_ms >= 400, "/delay/400 answered after {:.1f} ms: early", waited_ms);
    need(waited_ms < 1500, "/delay/400 answered after {:.0f} ms", waited_ms);
    expect_hello(slow.response(), "the request pipelined behind the wait");
    // Never early, not even by a fraction of a millisecond (a timer rounded down would be).
    for (int i = 0; i < 15; ++i) {
        auto t = Clock::now();
        quick.send(get("/delay/7"));
        Response d = quick.response();
        need(d.status == 200 && d.body == delay_body(7, -1), "/delay/7 #{}: status {}, body '{}'", i + 1,
             d.status, d.body.substr(0, 60));
        const double ms = ms_since(t);
        need(ms >= 7, "/delay/7 #{} answered after {:.2f} ms: early", i + 1, ms);
    }
    // 40 connections wait 300 ms each at once: about 300 ms in all, not 40 x 300 = 12 s.
    std::vector<std::unique_ptr<Conn>> many;
    auto t40 = Clock::now();
    for (int i = 0; i < 40; ++i) {
        many.push_back(std::make_unique<Conn>(s.port()));
        many.back()->send(get("/delay/300"));
    }
    for (int i = 0; i < 40; ++i) {
        Response d = many[i]->response();
        need(d.body == delay_body(300, -1), "/delay/300 on connection {} of 40: status {}, body '{}'", i + 1,
             d.status, d.body.substr(0, 60));
    }
    const double all_ms = ms_since(t40);
    need(all_ms < 1500, "40 waits of 300 ms at once took {:.0f} ms: they did not overlap", all_ms);
    many.clear();
    // Clients that leave while their answer waits (a FIN or a reset) cost nothing lasting.
    for (int i = 0; i < 100; ++i) {
        Conn c(s.port());
        c.send(get("/delay/100"));
        if (i % 2) c.reset();
    }
    // SIGTERM while requests wait 5 s: the server still stops promptly and cleanly.
    for (int i = 0; i < 10; ++i) {
        many.push_back(std::make_unique<Conn>(s.port()));
        many.back()->send(get("/delay/5000"));
    }
    pause_ms(200);
    need(s.died().empty(), "the server died: {}", s.died());
    StopReport stop = x.stop(s, seconds(5));
    need(stop.clean() && stop.stop_s <= 5.0, "SIGTERM with 10 requests waiting 5 s: {}", stop.describe());
    return fmt::format("400 ms wait answered after {:.0f} ms, another connection meanwhile after {:.0f} ms; "
                       "40 waits of 300 ms in {:.0f} ms; stopped in {:.2f} s with 10 waits pending",
                       waited_ms, other_ms, all_ms, stop.stop_s);
}

// The Fanout effect against the backend the runner uses: bodies in id order, calls overlapping,
// and a backend gone is a 502, not a crash.
std::string case_fanout(Ctx& x) {
    auto& backend = x.start_backend();
    auto& s = x.start(Proto::http);
    const Workload& w = *find_workload("fanout-10x300");
    Conn c(s.port());
    double slowest = 0;
    for (int round = 0; round < 3; ++round) {  // later rounds may reuse pooled backend connections
        auto t0 = Clock::now();
        c.send(w.request);
        Response r = c.response();
        const double ms = ms_since(t0);
        need(r.status == 200, "/fanout/10/300 round {}: status {} ({})", round + 1, r.status, r.body.substr(0, 80));
        need(r.body == w.expected, "/fanout/10/300 round {}: the body is not the 10 backend bodies in id order: '{}'",
             round + 1, r.body.substr(0, 80));
        need(ms >= 300, "/fanout/10/300 answered after {:.1f} ms, before its 300 ms calls could end", ms);
        need(ms < 1500, "/fanout/10/300 took {:.0f} ms: the 10 calls did not overlap (in turn: 3 s)", ms);
        slowest = std::max(slowest, ms);
    }
    // Several fan-outs at once, pipelined behind each other and on other connections.
    std::vector<std::unique_ptr<Conn>> many;
    for (int i = 0; i < 8; ++i) {
        many.push_back(std::make_unique<Conn>(s.port()));
        many.back()->send(get("/fanout/4/50") + get("/fanout/2/10"));
    }
    for (int i = 0; i < 8; ++i)
        for (const char* name : {"fanout-4x50", "fanout-2x10"}) {
            Response r = many[i]->response();
            need(r.status == 200 && r.body == find_workload(name)->expected,
                 "connection {} of 8, {} pipelined: status {}, body '{}'", i + 1, name, r.status, r.body.substr(0, 80));
        }
    many.clear();
    // Clients that leave mid-fan-out; then the backend goes away: 502, and the server lives on.
    for (int i = 0; i < 20; ++i) {
        Conn gone(s.port());
        gone.send(get("/fanout/5/100"));
    }
    pause_ms(300);
    StopReport b = x.stop(backend, seconds(5));
    need(b.clean(), "the backend did not stop cleanly: {}", b.describe());
    Conn after(s.port());
    after.send(get("/fanout/3/10"));
    Response r = after.response();
    need(r.status == 502, "/fanout/3/10 with the backend gone: status {} (expected 502)", r.status);
    return fmt::format("/fanout/10/300 in at most {:.0f} ms (in turn: 3,000 ms); backend gone: 502", slowest);
}

// The File effect: docroot files byte-exact, in order among pipelined answers; missing: 404.
std::string case_file(Ctx& x) {
    const Workload& k1 = x.docroot_file("file-1k");
    const Workload& m1 = x.docroot_file("file-1m");
    const Workload& empty = x.docroot_file("file-0");
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    c.send(get("/file/" + m1.file_name) + get("/file/" + k1.file_name) + get("/"));
    expect_bytes(c.response(seconds(10)), m1.file_size, "/file/" + m1.file_name);
    expect_bytes(c.response(), k1.file_size, "/file/" + k1.file_name);
    expect_hello(c.response(), "GET / pipelined after two files");
    c.send(get("/file/" + empty.file_name) + get("/file/missing") + get("/file/" + k1.file_name));
    expect_bytes(c.response(), 0, "/file/" + empty.file_name);
    Response r = c.response();
    need(r.status == 404, "/file/missing: status {} (expected 404)", r.status);
    expect_bytes(c.response(), k1.file_size, "/file/" + k1.file_name + " after a 404 on the same connection");
    return "0 B, 1 KiB, 1 MiB byte-exact; missing: 404, connection kept";
}

std::string case_reset(Ctx& x) {
    auto& s = x.start(Proto::http);
    const std::string big = x.body_path(1048576);
    {
        Conn w(s.port());
        w.send(get("/"));
        expect_hello(w.response(), "warm-up");
    }
    pause_ms(200);
    TreeSample base = sample_tree(s.pid());
    for (int i = 0; i < 500 && !x.interrupted(); ++i) {
        Conn c(s.port());
        need(c.ok(), "connection {}: {}", i + 1, c.error());
        switch (i % 4) {
            case 0: c.try_send("GET / HTTP/1.1\r\nHost: "); break;                // mid-head
            case 1: c.try_send("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nab"); break;  // mid-body
            case 2: c.try_send(get(big)); break;                                  // mid-answer
            case 3: break;                                                        // before a byte
        }
        if (i % 4 == 0) pause_ms(1);  // let the server read the partial request first
        c.reset();
    }
    // A process-per-connection server ends one child per reset: on a loaded machine (or under a
    // sanitizer) the last of them may take seconds to be scheduled, exit and be reaped.
    TreeSample after = settle(s.pid(), [&](const TreeSample& t) { return t.fds <= base.fds; }, seconds(10));
    need(after.fds <= base.fds, "fds {} before, {} after 500 resets (processes: {} before, {} after; {})", base.fds,
         after.fds, base.processes, after.processes, describe_fds(s.pid()));
    return fmt::format("fds {} -> {}", base.fds, after.fds);
}

std::string case_half_closed(Ctx& x) {
    auto& s = x.start(Proto::http);
    {
        Conn c(s.port());
        c.send(get("/"));
        c.shutdown_write();
        expect_hello(c.response(), "GET / then shutdown(SHUT_WR)");
        std::string why = c.expect_closed();
        need(why.empty(), "after the answer to a half-closed connection: {}", why);
    }
    {
        Conn c(s.port());
        c.send(get(x.body_path(10)) + get("/") + get(x.body_path(1048576)));
        c.shutdown_write();
        expect_bytes(c.response(), 10, "first of three pipelined, half-closed");
        expect_hello(c.response(), "second of three pipelined, half-closed");
        expect_bytes(c.response(seconds(10)), 1048576, "third (1 MiB) of three pipelined, half-closed");
    }
    return "";
}

std::string case_half_closed_echo(Ctx& x) {
    auto& s = x.start(Proto::echo);
    Conn c(s.port());
    std::string msg = payload(100000, 3);
    c.send(msg);
    c.shutdown_write();
    auto deadline = Clock::now() + seconds(10);
    int rc;
    while ((rc = c.read_some(deadline)) > 0) {}
    need(rc == 0, "half-closed echo: {} of {} bytes back, then {}", c.in().size(), msg.size(),
         rc == -1 ? "no close" : "an error");
    need(c.in() == msg, "half-closed echo: {} bytes back, expected the {} sent", c.in().size(), msg.size());
    return "";
}

// A normal client for 3 s: a fresh connection and GET / every 10 ms, each answer within 1 s.
struct Probe {
    std::vector<double> lat_ms;  // sorted
    int failed = 0;
    std::string first_error;
    double pct(double p) const {
        return lat_ms.empty() ? 0.0 : lat_ms[std::min(lat_ms.size() - 1, static_cast<std::size_t>(p / 100 * lat_ms.size()))];
    }
    double p99() const { return pct(99); }
    std::string figures() const {
        return fmt::format("{} answered, {} failed; p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms", lat_ms.size(),
                           failed, pct(50), p99(), lat_ms.empty() ? 0.0 : lat_ms.back());
    }
};

Probe probe_latency(Ctx& x, uint16_t port) {
    Probe p;
    auto end = Clock::now() + seconds(3);
    while (Clock::now() < end && p.failed < 5 && !x.interrupted()) {
        auto t0 = Clock::now();
        Conn c(port, seconds(1));
        Response r;
        std::string why;
        bool ok = c.ok();
        if (ok) ok = c.try_send(get("/")) && c.next(r, t0 + seconds(1), why) && r.status == 200;
        else why = c.error();
        if (!ok) {
            ++p.failed;
            if (p.first_error.empty()) p.first_error = why.empty() ? fmt::format("status {}", r.status) : why;
        } else {
            p.lat_ms.push_back(duration<double, std::milli>(Clock::now() - t0).count());
        }
        pause_ms(10);
    }
    std::sort(p.lat_ms.begin(), p.lat_ms.end());
    return p;
}

// 200 connections dribbling a header byte a second while a normal client makes requests on
// fresh connections: its latency is what other clients pay for the slow ones.
std::string case_slowloris(Ctx& x) {
    auto& s = x.start(Proto::http);
    std::vector<std::unique_ptr<Conn>> slow;
    for (int i = 0; i < 200; ++i) {
        slow.push_back(std::make_unique<Conn>(s.port()));
        if (slow.back()->ok()) slow.back()->try_send("GET / HTTP/1.1\r\nX-Slow: ");
    }
    std::atomic<bool> stop{false};
    std::thread dribble([&] {
        while (!stop) {
            for (auto& c : slow)
                if (c->ok()) c->try_send("a");
            for (int i = 0; i < 10 && !stop; ++i) pause_ms(100);
        }
    });
    Probe with = probe_latency(x, s.port());
    stop = true;
    dribble.join();
    slow.clear();
    need(with.failed == 0, "with 200 slowloris connections: {} (first: {})", with.figures(), with.first_error);
    // The 100 ms bound is for event loops (readiness, completion); a thread or process per
    // connection pays a spawn per client, so there the figures are reported, not judged.
    if (x.model.mechanism == "blocking")
        return with.figures() + " (blocking model: latency reported, not judged)";
    if (with.p99() < 100) return with.figures();
    // Over 100 ms: the slow clients' doing, or a busy machine's? The same probe without them
    // decides; p99 must stay within twice the quiet figure plus 10 ms.
    pause_ms(300);
    Probe quiet = probe_latency(x, s.port());
    std::string both = fmt::format("with 200 slowloris connections {}; without them {}", with.figures(), quiet.figures());
    need(quiet.failed == 0 && quiet.p99() >= 50 && with.p99() <= 2 * quiet.p99() + 10,
         "p99 over 100 ms: {}", both);
    return both + " (the machine is busy: p99 compared with the quiet figure)";
}

std::string case_never_reading(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn hog(s.port());
    std::string many;
    const std::string big = get(x.body_path(4194304));
    for (int i = 0; i < 16; ++i) many += big;
    hog.send(many);  // 64 MiB asked for, never read
    pause_ms(200);
    double worst = 0;
    for (int i = 0; i < 50; ++i) {  // others are served meanwhile, on old and new connections
        auto t0 = Clock::now();
        Conn c(s.port(), seconds(2));
        need(c.ok(), "while a client does not read its 4 MiB answers: connect: {}", c.error());
        c.send(get("/"));
        Response r;
        std::string why;
        need(c.next(r, t0 + seconds(2), why), "while a client does not read its 4 MiB answers, "
             "request #{} of another client: {}", i + 1, why);
        expect_hello(r, "another client");
        worst = std::max(worst, duration<double, std::milli>(Clock::now() - t0).count());
    }
    TreeSample t = sample_tree(s.pid());
    return fmt::format("other clients' worst {:.1f} ms; server PSS {} KiB with 64 MiB unread", worst, t.pss_kib);
}

// The server gets RLIMIT_NOFILE 64; 200 clients arrive. It must neither die nor spin, and must
// serve again once they leave.
std::string case_fd_limit(Ctx& x) {
    auto& s = x.start(Proto::http, 0, 64);
    std::vector<std::unique_ptr<Conn>> flood;
    for (int i = 0; i < 200; ++i) {
        flood.push_back(std::make_unique<Conn>(s.port(), milliseconds(500)));
        if (flood.back()->ok()) flood.back()->try_send(get("/"));
    }
    // Let the server catch up with the flood (a fork per connection under ASan takes a while):
    // wait, up to 5 s, for a 200 ms step with almost no CPU; a spinning server never gets one.
    pause_ms(300);
    for (auto until = Clock::now() + seconds(5); Clock::now() < until;) {
        TreeSample t0 = sample_tree(s.pid());
        pause_ms(200);
        if (sample_tree(s.pid()).cpu_s - t0.cpu_s < 0.02) break;
    }
    TreeSample a = sample_tree(s.pid());
    pause_ms(1000);
    TreeSample b = sample_tree(s.pid());
    need(s.died().empty(), "the server died when it ran out of fds: {}", s.died());
    double cpu = b.cpu_s - a.cpu_s;
    int answered = 0, closed = 0, waiting = 0;
    for (auto& c : flood) {
        if (!c->ok()) {
            ++closed;
            continue;
        }
        Response r;
        std::string why;
        if (c->next(r, Clock::now() + milliseconds(1), why)) ++answered;
        else if (why.find("no complete answer") != std::string::npos) ++waiting;
        else ++closed;
    }
    // Nothing arrives in that second: an idle server uses next to no CPU (measured: <= 0.02 s);
    // one that re-arms a failing accept at once spins.
    need(cpu < 0.1, "the server used {:.2f} s of CPU in 1 s of idleness while out of fds (spinning on accept?)", cpu);
    flood.clear();
    return fmt::format("with 200 clients at RLIMIT_NOFILE 64: {} answered, {} closed, {} waiting; "
                       "{:.2f} s CPU in the 1 s out of fds", answered, closed, waiting, cpu);
}

std::string case_many_connections(Ctx& x) {
    auto& s = x.start(Proto::http);
    const int n = 1100;  // past select's FD_SETSIZE (1024)
    std::vector<std::unique_ptr<Conn>> conns;
    for (int i = 0; i < n; ++i) {
        conns.push_back(std::make_unique<Conn>(s.port()));
        need(conns.back()->ok(), "connection {}: {}", i + 1, conns.back()->error());
        conns.back()->send(get("/"));
        if (x.interrupted()) return "";
    }
    for (int i = 0; i < n; ++i) {  // answered in any order; each closed after its answer
        Response r;
        std::string why;
        need(conns[i]->next(r, Clock::now() + kIoTimeout, why), "connection {} of {} open at once: {}",
             i + 1, n, why);
        expect_hello(r, fmt::format("connection {} of {}", i + 1, n));
        conns[i].reset();
    }
    return "1,100 connections open at once, each answered";
}

std::string case_leaks(Ctx& x) {
    auto& s = x.start(Proto::http);
    const int cycles = x.full() ? 20000 : 2000;
    auto cycle = [&](int i) {
        Conn c(s.port());
        need(c.ok(), "cycle {}: connect: {}", i + 1, c.error());
        bool server_closes = i % 4 == 3;
        c.send(server_closes ? "GET / HTTP/1.1\r\nHost: verify\r\nConnection: close\r\n\r\n" : get("/"));
        expect_hello(c.response(), fmt::format("cycle {}", i + 1));
    };
    // Warm-up to the steady state: allocator arenas, caches, and buffers a server touches lazily
    // (uring's 2,048-buffer ring is touched one recv at a time: 3,000 requests rotate it).
    for (int i = 0; i < 200; ++i) cycle(i);
    for (int round = 0; round < 3; ++round) {  // and with 64 at once: per-connection threads'
        std::vector<std::unique_ptr<Conn>> burst;  // stacks and arenas, cached for reuse
        for (int i = 0; i < 64; ++i) {
            burst.push_back(std::make_unique<Conn>(s.port()));
            burst.back()->send(get("/"));
        }
        for (auto& c : burst) expect_hello(c->response(), "warm-up burst");
    }
    {
        Conn c(s.port());
        for (int i = 0; i < 3000; ++i) {
            c.send(get("/"));
            expect_hello(c.response(), fmt::format("warm-up request {}", i + 1));
        }
    }
    pause_ms(300);
    TreeSample base = sample_tree(s.pid());
    for (int i = 0; i < cycles && !x.interrupted(); ++i) cycle(i);
    auto back = [&](const TreeSample& t) {
        return t.fds <= base.fds && t.threads <= base.threads && t.processes <= base.processes;
    };
    TreeSample after = settle(s.pid(), back, seconds(5));
    std::string figures = fmt::format(
        "after {} connect/request/close cycles: fds {} -> {}, threads {} -> {}, processes {} -> {}, "
        "PSS {} -> {} KiB (anonymous {} -> {} KiB)", cycles, base.fds, after.fds, base.threads,
        after.threads, base.processes, after.processes, base.pss_kib, after.pss_kib, base.pss_anon_kib,
        after.pss_anon_kib);
    need(back(after), "{}", figures);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    figures += " (PSS not checked: sanitizer runtimes hold freed memory in quarantine)";
#else
    // The anonymous part: the shares of library pages move with whatever else maps them (other
    // servers of a parallel test run), which is not this server's doing.
    need(after.pss_anon_kib <= base.pss_anon_kib * 1.10, "PSS grew more than 10 %: {}", figures);
#endif
    return figures;
}

// SIGTERM with idle, mid-request and busy connections: exit 0 within 5 s, nothing left, and the
// port free for a new server at once.
std::string case_shutdown(Ctx& x) {
    auto& s = x.start(Proto::http);
    const uint16_t port = s.port();
    std::vector<std::unique_ptr<Conn>> idle;
    for (int i = 0; i < 50; ++i) {
        idle.push_back(std::make_unique<Conn>(port));
        idle.back()->send(get("/"));
        expect_hello(idle.back()->response(), fmt::format("idle connection {}", i + 1));
    }
    Conn half(port);
    half.send("GET / HTTP/1.1\r\nHost: ");
    Conn hog(port);
    hog.send(get(x.body_path(4194304)));  // an answer in flight, not read
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0};
    std::thread load([&] {
        while (!stop) {
            Conn c(port, seconds(1));
            Response r;
            std::string why;
            if (!c.ok() || !c.try_send(get("/")) || !c.next(r, Clock::now() + seconds(1), why)) break;
            ++answered;
        }
    });
    pause_ms(300);
    std::vector<pid_t> tree = process_tree(s.pid());
    StopReport r = x.stop(s, seconds(5));
    stop = true;
    load.join();
    need(r.clean() && r.stop_s <= 5.0, "SIGTERM under load: {}", r.describe());
    for (pid_t p : tree)
        need(!alive(p), "process {} of the server's tree is still alive after it exited", p);
    auto& again = x.start(Proto::http, port);  // the port is free at once
    need(again.port() == port, "restarted on port {}, not {}", again.port(), port);
    return fmt::format("exited 0 in {:.2f} s with {} requests answered under load; restarted on the same port",
                       r.stop_s, answered.load());
}

struct CaseDef {
    VerifyCaseInfo info;
    std::string (*run)(Ctx&);
};

const std::vector<CaseDef>& table() {
    static const std::vector<CaseDef> t = {
        {{"split-at-every-byte", "framing", "http",
          "a request split at every byte boundary, and sent a byte per write, is answered"}, case_split},
        {{"pipelined-16", "framing", "http", "16 requests in one write: 16 answers, in order"},
         [](Ctx& x) { return pipelined(x, 16); }},
        {{"pipelined-128", "framing", "http", "128 requests in one write: 128 answers, in order"},
         [](Ctx& x) { return pipelined(x, 128); }},
        {{"http-1.0", "framing", "http",
          "HTTP/1.0: answered then closed; with Connection: keep-alive, kept"}, case_http10},
        {{"connection-close", "framing", "http",
          "Connection: close: one answer saying close, then the server closes"}, case_connection_close},
        {{"keep-alive-10000", "framing", "http", "10,000 requests on one keep-alive connection"},
         case_keepalive},
        {{"bodies", "framing", "http", "/bytes/N from 0 B to 4 MiB, every byte right"}, case_bodies},
        {{"echo-sizes", "framing", "echo", "echo payloads of 1 B to 4 MiB come back intact"},
         case_echo_sizes},
        {{"headers", "headers", "http",
          "one Server: concbench-<model>, Date (IMF-fixdate, now), Content-Type, right Content-Length"},
         case_headers},
        {{"date-changes", "headers", "http", "two answers 1.5 s apart carry different Dates", true},
         case_date_changes},
        {{"bad-request", "bad-input", "http", "malformed request line or header: 400, then close"},
         case_bad_request},
        {{"header-431", "bad-input", "http", "a request head over 8 KiB: 431, then close"}, case_431},
        {{"unknown-404", "bad-input", "http", "unknown path: 404, connection kept"}, case_404},
        {{"bytes-bad-number", "bad-input", "http",
          "/bytes/ with a bad or huge number: 400, no crash, no large allocation", false, "bytes"},
         case_bytes_bad},
        {{"binary-garbage", "bad-input", "http", "binary garbage: 400, then close"}, case_garbage},
        {{"body-not-accepted", "bad-input", "http",
          "a body the route does not take: answered, and the next pipelined request stays in step"},
         case_body_not_accepted},
        {{"delay", "effects", "http",
          "/delay/MS: answered after MS ms, never early; other connections answered meanwhile; 40 waits "
          "overlap; SIGTERM with waits pending stops cleanly", false, "delay"}, case_delay},
        {{"fanout", "effects", "http",
          "/fanout/K/MS: the K backend bodies in order; /fanout/10/300 well under 10 x 300 ms (the calls "
          "overlap); backend gone: 502, the server lives on", false, "fanout"}, case_fanout},
        {{"file", "effects", "http",
          "/file/NAME: 0 B, 1 KiB and 1 MiB byte-exact, pipelined in order; missing: 404, connection kept",
          false, "file"}, case_file},
        {{"reset-500", "hostile", "http",
          "500 connections reset mid-request: the server goes on, its fds return to where they were"},
         case_reset},
        {{"half-closed", "hostile", "http", "shutdown(SHUT_WR) after the requests: the answers still arrive"},
         case_half_closed},
        {{"half-closed-echo", "hostile", "echo", "echo: shutdown(SHUT_WR) after sending: every byte comes back"},
         case_half_closed_echo},
        {{"slowloris", "hostile", "http",
          "200 connections dribbling a header byte a second: another client is answered, p99 under "
          "100 ms on event loops (blocking models: reported)",
          true}, case_slowloris},
        {{"never-reading", "hostile", "http",
          "a client that never reads 16 x 4 MiB answers: other clients are answered within 2 s"},
         case_never_reading},
        {{"fd-limit", "exhaustion", "http",
          "at RLIMIT_NOFILE 64 with 200 clients: no death, no spinning, serves again afterwards"},
         case_fd_limit},
        {{"connections-1100", "exhaustion", "http", "1,100 connections open at once, each answered", true},
         case_many_connections},
        {{"leaks", "leaks", "http",
          "after 20,000 (quick: 2,000) connect/request/close cycles: fds, threads, processes back to "
          "the baseline, PSS within 10 %"}, case_leaks},
        {{"shutdown", "shutdown", "http",
          "SIGTERM under load: exit 0 within 5 s, no process left, port free for an immediate restart"},
         case_shutdown},
    };
    return t;
}

bool serves_proto(const ModelInfo& m, const std::string& proto) {
    for (const auto& w : m.workloads)
        if (const Workload* wl = find_workload(w); wl && proto_name(wl->proto) == proto) return true;
    return false;
}

}  // namespace

const std::vector<VerifyCaseInfo>& verify_cases() {
    static const std::vector<VerifyCaseInfo> v = [] {
        std::vector<VerifyCaseInfo> out;
        for (const auto& c : table()) out.push_back(c.info);
        return out;
    }();
    return v;
}

const VerifyCaseInfo* find_verify_case(const std::string& name) {
    for (const auto& c : verify_cases())
        if (c.name == name) return &c;
    return nullptr;
}

const char* status_name(CaseStatus s) {
    switch (s) {
        case CaseStatus::pass: return "PASS";
        case CaseStatus::fail: return "FAIL";
        case CaseStatus::deviates: return "DEVIATES";
        case CaseStatus::declared_pass: return "PASS*";
        case CaseStatus::not_applicable: return "N/A";
        case CaseStatus::interrupted: return "STOPPED";
    }
    return "?";
}

bool ModelVerdict::ok() const { return first_failure() == nullptr; }

const CaseResult* ModelVerdict::first_failure() const {
    for (const auto& c : cases)
        if (c.status == CaseStatus::fail || c.status == CaseStatus::interrupted) return &c;
    return nullptr;
}

std::string format_case_line(const CaseResult& r) {
    const VerifyCaseInfo* info = find_verify_case(r.name);
    std::string line = fmt::format("  {:<8} {:<10} {:<20} {:>6.2f} s", status_name(r.status),
                                   info ? info->group : "", r.name, r.seconds);
    if (!r.detail.empty()) line += "  " + r.detail;
    if (r.status == CaseStatus::deviates) line += fmt::format("  [declared: {}]", r.declared);
    if (r.status == CaseStatus::declared_pass)
        line += fmt::format("  [declared to deviate ({}), but passed]", r.declared);
    if (!r.log_path.empty()) line += fmt::format("  (server log: {})", r.log_path);
    return line;
}

void raise_fd_limit() {
    rlimit l{};
    if (getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < l.rlim_max) {
        l.rlim_cur = l.rlim_max;
        setrlimit(RLIMIT_NOFILE, &l);
    }
}

ModelVerdict verify_model(const ModelInfo& model, const VerifyOptions& opts,
                          const std::function<void(const CaseResult&)>& on_case) {
    ModelVerdict v;
    v.model = model.name;
    signal(SIGPIPE, SIG_IGN);
    std::string log_dir = opts.log_dir;
    if (log_dir.empty()) log_dir = (fs::temp_directory_path() / fmt::format("concbench-verify-{}", getpid())).string();
    std::error_code ec;
    fs::create_directories(log_dir, ec);
    // Reference servers' directories and the docroot: under a temp dir their workers (www-data
    // when we are root) can enter.
    const fs::path work_root = fs::temp_directory_path() / fmt::format("concbench-verify-{}-{}", getpid(), model.name);
    const std::string docroot = (work_root / "docroot").string();
    fs::create_directories(docroot, ec);
    for (const fs::path& d : {work_root, fs::path(docroot)})
        fs::permissions(d, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec, ec);
    for (const auto& def : table()) {
        const VerifyCaseInfo& info = def.info;
        if (!opts.only.empty()) {
            if (std::find(opts.only.begin(), opts.only.end(), info.name) == opts.only.end()) continue;
        } else if (info.full_only && opts.set != VerifySet::full) {
            continue;
        }
        CaseResult r;
        r.name = info.name;
        if (auto it = model.verify_expect.find(info.name); it != model.verify_expect.end()) r.declared = it->second;
        if (!model.skips(info.name).empty()) {
            r.status = CaseStatus::not_applicable;
            r.detail = model.skips(info.name);
        } else if (!serves_proto(model, info.proto)) {
            r.status = CaseStatus::not_applicable;
            r.detail = fmt::format("serves no {} workload", info.proto);
        } else if (!info.family.empty() && !model.serves(info.family)) {
            r.status = CaseStatus::not_applicable;
            r.detail = fmt::format("serves no {} workload (model.toml workloads)", info.family);
        } else if (info.family == "fanout" && (!opts.backend || !opts.backend->built)) {
            r.status = CaseStatus::not_applicable;
            r.detail = "no built backend model to call";
        } else if (opts.interrupted && *opts.interrupted) {
            r.status = CaseStatus::interrupted;
        } else {
            std::string log = (fs::path(log_dir) / fmt::format("verify-{}-{}.log", model.name, info.name)).string();
            auto t0 = Clock::now();
            Ctx ctx(model, opts, log, work_root / info.name, docroot);
            std::string fail;
            try {
                r.detail = def.run(ctx);
            } catch (const CaseFailure& e) {
                fail = e.what();
            } catch (const std::exception& e) {
                fail = std::string("harness error: ") + e.what();
            }
            std::string post = ctx.finish();
            if (fail.empty()) fail = post;
            r.seconds = duration<double>(Clock::now() - t0).count();
            if (fail.empty() && ctx.bodies_from_files())
                r.detail += std::string(r.detail.empty() ? "" : "; ") + "bodies from /file/N (no /bytes route)";
            if (opts.interrupted && *opts.interrupted) r.status = CaseStatus::interrupted;
            else if (fail.empty()) r.status = r.declared.empty() ? CaseStatus::pass : CaseStatus::declared_pass;
            else {
                r.status = r.declared.empty() ? CaseStatus::fail : CaseStatus::deviates;
                r.detail = fail;
            }
            if (r.status == CaseStatus::pass && !opts.keep_passing_logs) {
                for (const auto& l : ctx.logs()) fs::remove(l, ec);
            } else {
                r.log_path = log;
            }
        }
        v.cases.push_back(r);
        if (on_case) on_case(v.cases.back());
        if (opts.stop_at_first_failure && r.status == CaseStatus::fail) break;
    }
    fs::remove_all(work_root, ec);
    if (opts.log_dir.empty()) fs::remove(log_dir, ec);  // only if empty: failing logs stay
    return v;
}

}  // namespace concbench
