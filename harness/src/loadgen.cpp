// loadgen: the closed-loop client every cell is measured with.
//
// Technique (wrk's shape, made cheaper per request):
// - T threads, each pinned to its CPU, each owning one epoll instance and its share of the C
//   connections; threads share nothing on the hot path but an atomic phase they read once per
//   loop iteration. Each has its own Histogram and error counters, merged after join.
// - Sockets are non-blocking with TCP_NODELAY and registered level-triggered for EPOLLIN once, for
//   their whole life. EPOLLOUT is added only while a request could not be written in full, so a
//   request costs one send(), one recv() and a share of one epoll_wait() -- no epoll_ctl().
// - One 64 KiB read buffer per thread; a connection holds only its parse state (an llhttp_t for
//   HTTP), byte counters and a start time (~140 bytes), so 10,000+ connections are cheap.
// - Answers are checked as they stream in: HTTP by llhttp (status, body chunks against the
//   workload, body length), echo byte for byte. A broken connection is counted by kind, closed
//   and replaced so the load continues. Time-outs are found by a scan every 100 ms, not timers.
// - Latency is CLOCK_MONOTONIC from the request's first send() (or connect(), if the workload
//   opens a connection per request) to the read() that completed the answer.
// - Phases: connect all, warm up (not recorded), measure (counters reset on entry, thread CPU
//   time read on entry and exit), done. The calling thread drives the phase and the window clock.
#include "concbench/loadgen.hpp"

#include <fcntl.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>

namespace concbench {
namespace {

// ---- error kinds, phases, constants ----------------------------------------------------------

enum Err { kConnect, kReset, kTimeout, kBadStatus, kBadBody, kBadResponse, kShortRead, kClosed,
           kErrKinds };
constexpr const char* kErrNames[kErrKinds] = {"connect",  "reset",        "timeout",    "bad_status",
                                              "bad_body", "bad_response", "short_read", "closed"};

enum Phase : int { kSetup, kWarmup, kMeasure, kDone };

constexpr std::size_t kReadBufBytes = 64 * 1024;
constexpr int kMaxEvents = 512;
constexpr int kPollMs = 10;                       // how late a thread may notice a phase change
constexpr uint64_t kScanNs = 100'000'000;         // time-out scan period
constexpr auto kMainTick = std::chrono::milliseconds(5);

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

double thread_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

uint64_t seconds_to_ns(double s) { return s <= 0 ? 0 : uint64_t(s * 1e9); }

// ---- connection state and the HTTP answer checker ------------------------------------------------

enum class St : uint8_t {
    unused,      // never established during setup: left out of the run
    down,        // lost, and the replacement's connect failed: retried at the next scan
    connecting,  // non-blocking connect() in progress
    idle,        // established, waiting for the load to start
    busy,        // a request is in flight (possibly not fully written yet)
};

enum Flag : uint8_t { kStatusBad = 1, kBodyBad = 2, kDoneFlag = 4 };

struct Conn {
    int fd = -1;
    St st = St::unused;
    bool out_armed = false;  // EPOLLOUT in the interest set
    uint8_t flags = 0;       // Flag bits of the answer in progress
    uint32_t sent = 0;       // request bytes written
    uint64_t t0 = 0;         // connect start (connecting) or request start (busy), ns
    uint64_t rx = 0;         // answer bytes read
    uint64_t body = 0;       // body (HTTP) or echoed bytes checked so far
    uint32_t done = 0;       // answers completed inside the measured window (this slot)
    llhttp_t http;           // HTTP workloads only
};

// llhttp callbacks reach the workload through the thread (settings are static and shared).
thread_local const Workload* tl_workload = nullptr;

int on_headers_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    if (p->status_code != tl_workload->expected_status) c->flags |= kStatusBad;
    return 0;
}

int on_body(llhttp_t* p, const char* at, std::size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (!(c->flags & kBodyBad) && !tl_workload->body_ok(c->body, std::string_view(at, n)))
        c->flags |= kBodyBad;
    c->body += n;
    return 0;
}

int on_message_complete(llhttp_t* p) {
    static_cast<Conn*>(p->data)->flags |= kDoneFlag;
    return HPE_PAUSED;  // stop at the answer's end: any byte after it was never asked for
}

const llhttp_settings_t* http_settings() {
    static const llhttp_settings_t settings = [] {
        llhttp_settings_t s;
        llhttp_settings_init(&s);
        s.on_headers_complete = on_headers_complete;
        s.on_body = on_body;
        s.on_message_complete = on_message_complete;
        return s;
    }();
    return &settings;
}

// ---- one load thread ---------------------------------------------------------------------------

struct Target {
    sockaddr_storage addr{};
    socklen_t len = 0;
};

struct Shared {
    const LoadSpec& spec;
    Target target;
    std::atomic<int> phase{kSetup};
    std::atomic<int> ready{0};  // threads done with setup
};

class Worker {
public:
    Worker(Shared& sh, int index, int nconns)
        : sh_(sh), wl_(*sh.spec.workload), index_(index), conns_(nconns),
          connect_timeout_ns_(seconds_to_ns(sh.spec.connect_timeout_s)),
          request_timeout_ns_(seconds_to_ns(sh.spec.request_timeout_s)) {}

    void run();

    // Results, read by the calling thread after join().
    Histogram hist;
    uint64_t errors[kErrKinds] = {};
    uint64_t setup_failures = 0;  // connections never established (reported as `connect`)
    uint64_t requests = 0;
    int established = 0;
    double cpu_s = 0;
    std::vector<uint32_t> per_conn;   // answers per connection slot in the window
    uint64_t oldest_pending_ns = 0;   // age of the oldest unanswered request at the window's end
    std::string fatal;             // this thread could not run (pinning, epoll)
    std::string connect_error;     // the last connect failure's reason

private:
    void setup_thread();
    void on_phase(int phase, uint64_t now);
    void finish_setup();
    void dispatch(Conn& c, uint32_t events, uint64_t now);
    void scan(uint64_t now);
    void close_all();

    void open_conn(Conn& c, uint64_t now);
    void finish_connect(Conn& c, uint64_t now);
    void connect_failed(Conn& c, int err);
    void established_conn(Conn& c, uint64_t now);
    void start_request(Conn& c, uint64_t t0);
    bool send_more(Conn& c);
    void read_answer(Conn& c, uint64_t now);
    void feed_http(Conn& c, const char* data, std::size_t n, uint64_t now);
    void feed_echo(Conn& c, const char* data, std::size_t n, uint64_t now);
    void complete(Conn& c, uint64_t now);
    void fail(Conn& c, Err kind, uint64_t now);
    void close_conn(Conn& c);
    void set_events(Conn& c, uint32_t events, int op);

    Shared& sh_;
    const Workload& wl_;
    const int index_;
    std::vector<Conn> conns_;
    const uint64_t connect_timeout_ns_, request_timeout_ns_;
    int ep_ = -1;
    int phase_ = kSetup;      // this thread's view of the phase
    bool setup_done_ = false;
    bool loading_ = false;    // requests are being sent (warm-up or measurement)
    bool recording_ = false;  // inside the measured window
    double cpu_at_open_ = 0;
    std::unique_ptr<char[]> buf_{new char[kReadBufBytes]};
};

void Worker::run() {
    tl_workload = &wl_;
    setup_thread();
    if (!fatal.empty()) {
        sh_.ready.fetch_add(1);
        return;
    }
    uint64_t now = now_ns(), last_scan = now;
    for (Conn& c : conns_) open_conn(c, now);
    epoll_event events[kMaxEvents];
    for (;;) {
        const int phase = sh_.phase.load(std::memory_order_acquire);
        if (phase != phase_) on_phase(phase, now_ns());
        if (phase_ == kDone) break;
        const int n = epoll_wait(ep_, events, kMaxEvents, kPollMs);
        now = now_ns();
        for (int i = 0; i < n; ++i) dispatch(conns_[events[i].data.u32], events[i].events, now);
        if (now - last_scan >= kScanNs) {
            scan(now);
            last_scan = now;
        }
        if (!setup_done_) finish_setup();
    }
    if (!setup_done_)  // stopped during setup: report what was established by then
        for (const Conn& c : conns_) established += (c.st == St::idle);
    close_all();
}

void Worker::setup_thread() {
    const auto& cpus = sh_.spec.cpus;
    if (!cpus.empty()) {
        const int cpu = cpus[std::size_t(index_) % cpus.size()];
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (cpu < 0 || cpu >= CPU_SETSIZE || sched_setaffinity(0, sizeof set, &set) != 0)
            fatal = "cannot pin client thread " + std::to_string(index_) + " to CPU " +
                    std::to_string(cpu) + ": " + std::strerror(cpu < 0 ? EINVAL : errno);
    }
    if (fatal.empty() && (ep_ = epoll_create1(EPOLL_CLOEXEC)) < 0)
        fatal = std::string("epoll_create1: ") + std::strerror(errno);
}

// Setup ends once no connection is still connecting (each ends established or timed out).
void Worker::finish_setup() {
    for (const Conn& c : conns_)
        if (c.st == St::connecting) return;
    for (const Conn& c : conns_) established += (c.st == St::idle);
    setup_done_ = true;
    sh_.ready.fetch_add(1, std::memory_order_release);
}

void Worker::on_phase(int phase, uint64_t now) {
    if (phase >= kWarmup && phase != kDone && !loading_) {  // start the closed loop
        loading_ = true;
        for (Conn& c : conns_)
            if (c.st == St::idle) start_request(c, now);
    }
    if (phase == kMeasure && !recording_) {  // the window opens: count from zero
        std::fill(std::begin(errors), std::end(errors), 0);
        hist.reset();
        requests = 0;
        for (Conn& c : conns_) c.done = 0;
        recording_ = true;
        cpu_at_open_ = thread_cpu_s();
    }
    if (phase == kDone && recording_) {
        cpu_s = thread_cpu_s() - cpu_at_open_;
        for (const Conn& c : conns_) {
            if (c.st == St::unused) continue;
            per_conn.push_back(c.done);
            if (c.st == St::busy && now > c.t0) oldest_pending_ns = std::max(oldest_pending_ns, now - c.t0);
        }
        recording_ = false;
    }
    phase_ = phase;
}

void Worker::dispatch(Conn& c, uint32_t events, uint64_t now) {
    switch (c.st) {
    case St::connecting:
        finish_connect(c, now);
        break;
    case St::idle:  // nothing is expected on a connection waiting for the load to start
        read_answer(c, now);
        break;
    case St::busy:
        if ((events & EPOLLOUT) && c.sent < wl_.request.size() && !send_more(c)) break;
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_answer(c, now);
        break;
    default:
        break;
    }
}

void Worker::scan(uint64_t now) {
    // (c.t0 may be a little after `now`: a connection replaced during this iteration.)
    for (Conn& c : conns_) {
        if (c.st == St::connecting && now > c.t0 + connect_timeout_ns_)
            connect_failed(c, ETIMEDOUT);
        else if (c.st == St::busy && now > c.t0 + request_timeout_ns_)
            fail(c, kTimeout, now);
        else if (c.st == St::down && loading_)
            open_conn(c, now);
    }
}

void Worker::close_all() {
    for (Conn& c : conns_) close_conn(c);
    if (ep_ >= 0) close(ep_);
    ep_ = -1;
}

// ---- connections (net.c) -------------------------------------------------------------------------

void Worker::set_events(Conn& c, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = uint32_t(&c - conns_.data());
    epoll_ctl(ep_, op, c.fd, &ev);
}

void Worker::open_conn(Conn& c, uint64_t now) {
    const Target& t = sh_.target;
    c.t0 = now;
    c.fd = socket(t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return connect_failed(c, errno);
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (wl_.proto == Proto::http) {
        llhttp_init(&c.http, HTTP_RESPONSE, http_settings());
        c.http.data = &c;
    }
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&t.addr), t.len) == 0) {
        set_events(c, EPOLLIN, EPOLL_CTL_ADD);
        return established_conn(c, now);
    }
    if (errno != EINPROGRESS) return connect_failed(c, errno);
    c.st = St::connecting;
    c.out_armed = true;
    set_events(c, EPOLLOUT, EPOLL_CTL_ADD);
}

void Worker::finish_connect(Conn& c, uint64_t now) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return connect_failed(c, err);
    c.out_armed = false;
    set_events(c, EPOLLIN, EPOLL_CTL_MOD);
    established_conn(c, now);
}

void Worker::connect_failed(Conn& c, int err) {
    close_conn(c);
    connect_error = std::strerror(err);
    if (!setup_done_) {  // a connection of the initial set: left out
        ++setup_failures;
        c.st = St::unused;
    } else {
        ++errors[kConnect];
        c.st = St::down;
    }
}

void Worker::established_conn(Conn& c, uint64_t now) {
    c.st = St::idle;
    if (loading_) start_request(c, wl_.keep_alive ? now : c.t0);  // per-request connect: timed
}

void Worker::close_conn(Conn& c) {
    if (c.fd >= 0) close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    c.out_armed = false;
}

// ---- requests and answers ------------------------------------------------------------------------

void Worker::start_request(Conn& c, uint64_t t0) {
    c.st = St::busy;
    c.t0 = t0;
    c.sent = 0;
    c.rx = c.body = 0;
    c.flags = 0;
    if (wl_.proto == Proto::http) llhttp_resume(&c.http);  // paused at the previous answer's end
    send_more(c);
}

// Writes what is left of the request; arms EPOLLOUT while the socket is full. False: failed.
bool Worker::send_more(Conn& c) {
    const std::string& req = wl_.request;
    while (c.sent < req.size()) {
        const ssize_t n = send(c.fd, req.data() + c.sent, req.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += uint32_t(n);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!c.out_armed) set_events(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            c.out_armed = true;
            return true;
        } else if (errno != EINTR) {
            fail(c, errno == EPIPE ? kClosed : kReset, now_ns());
            return false;
        }
    }
    if (c.out_armed) set_events(c, EPOLLIN, EPOLL_CTL_MOD);
    c.out_armed = false;
    return true;
}

void Worker::read_answer(Conn& c, uint64_t now) {
    const ssize_t n = recv(c.fd, buf_.get(), kReadBufBytes, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        return fail(c, kReset, now);
    }
    if (c.st == St::idle)  // data or EOF on a connection nobody has asked anything yet
        return fail(c, n == 0 ? kClosed : kBadResponse, now);
    if (n == 0) {
        // An HTTP answer delimited by the end of the connection ends here; anything else is cut.
        if (wl_.proto == Proto::http && c.rx > 0) {
            llhttp_finish(&c.http);
            if (c.flags & kDoneFlag) return complete(c, now);
        }
        return fail(c, c.rx == 0 ? kClosed : kShortRead, now);
    }
    c.rx += uint64_t(n);
    if (wl_.proto == Proto::http)
        feed_http(c, buf_.get(), std::size_t(n), now);
    else
        feed_echo(c, buf_.get(), std::size_t(n), now);
}

void Worker::feed_http(Conn& c, const char* data, std::size_t n, uint64_t now) {
    const llhttp_errno_t err = llhttp_execute(&c.http, data, n);
    if (err == HPE_OK) return;  // the answer continues in a later read
    if (err != HPE_PAUSED || llhttp_get_error_pos(&c.http) != data + n)
        return fail(c, kBadResponse, now);  // unparsable, or bytes beyond the one answer asked for
    complete(c, now);
}

void Worker::feed_echo(Conn& c, const char* data, std::size_t n, uint64_t now) {
    if (c.body + n > wl_.expected_body || !wl_.body_ok(c.body, std::string_view(data, n)))
        return fail(c, kBadBody, now);
    c.body += n;
    if (c.body == wl_.expected_body) complete(c, now);
}

// A whole answer arrived: judge it, record it, and send the next request.
void Worker::complete(Conn& c, uint64_t now) {
    if (c.flags & kStatusBad) return fail(c, kBadStatus, now);
    if (wl_.proto == Proto::http && ((c.flags & kBodyBad) || c.body != wl_.expected_body))
        return fail(c, kBadBody, now);
    if (recording_) {
        hist.record(now - c.t0);
        ++requests;
        ++c.done;
    }
    const bool reuse = wl_.keep_alive &&
                       (wl_.proto != Proto::http || llhttp_should_keep_alive(&c.http));
    if (reuse) return start_request(c, now);
    close_conn(c);  // the workload (or the server, per HTTP) wants a new connection
    open_conn(c, now);
}

// A broken connection: count it, close it, open its replacement.
void Worker::fail(Conn& c, Err kind, uint64_t now) {
    if (!setup_done_) {
        // Lost before the load began (a server that accepts and closes what it cannot serve,
        // like select past FD_SETSIZE): left out like a failed connect, never retried in a loop.
        close_conn(c);
        ++setup_failures;
        c.st = St::unused;
        connect_error = "closed by the server before the load started";
        return;
    }
    ++errors[kind];
    close_conn(c);
    open_conn(c, now);
}

// ---- the calling thread --------------------------------------------------------------------------

bool stop_requested(const LoadSpec& spec) {
    return spec.stop && spec.stop->load(std::memory_order_relaxed);
}

// Sleeps `seconds`, waking every few ms for spec.stop. False if stopped.
bool sleep_for(const LoadSpec& spec, double seconds) {
    using Clock = std::chrono::steady_clock;
    const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(std::max(seconds, 0.0)));
    for (auto now = Clock::now(); now < end; now = Clock::now()) {
        if (stop_requested(spec)) return false;
        std::this_thread::sleep_for(std::min<Clock::duration>(kMainTick, end - now));
    }
    return !stop_requested(spec);
}

std::string resolve(const LoadSpec& spec, Target& t) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    const std::string port = std::to_string(spec.port);
    if (int rc = getaddrinfo(spec.host.c_str(), port.c_str(), &hints, &res); rc != 0)
        return "cannot resolve " + spec.host + ": " + gai_strerror(rc);
    std::memcpy(&t.addr, res->ai_addr, res->ai_addrlen);
    t.len = res->ai_addrlen;
    freeaddrinfo(res);
    return {};
}

// Raises the soft descriptor limit to the hard one when the connections need more.
void raise_fd_limit(int connections) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rlim_t(connections) + 64 &&
        rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void collect(const std::vector<std::unique_ptr<Worker>>& workers, LoadResult& r) {
    uint64_t errors[kErrKinds] = {};
    for (const auto& w : workers) {
        r.connections_established += w->established;
        r.requests += w->requests;
        r.client_cpu_s += w->cpu_s;
        r.latency.merge(w->hist);
        r.per_connection.insert(r.per_connection.end(), w->per_conn.begin(), w->per_conn.end());
        r.oldest_pending_s = std::max(r.oldest_pending_s, w->oldest_pending_ns / 1e9);
        for (int k = 0; k < kErrKinds; ++k) errors[k] += w->errors[k];
        errors[kConnect] += w->setup_failures;
    }
    for (int k = 0; k < kErrKinds; ++k)
        if (errors[k] > 0) r.errors[kErrNames[k]] = errors[k];
}

}  // namespace

Fairness fairness(const std::vector<uint32_t>& per_connection) {
    Fairness f;
    if (per_connection.empty()) return f;
    std::vector<uint32_t> v = per_connection;
    std::sort(v.begin(), v.end());
    f.min = v.front();
    f.max = v.back();
    f.median = v[v.size() / 2];
    double sum = 0, sq = 0;
    for (uint32_t x : v) {
        sum += x;
        sq += double(x) * x;
        f.starved += x == 0;
    }
    f.jain = sq > 0 ? sum * sum / (double(v.size()) * sq) : 0;
    return f;
}

LoadResult run_load(const LoadSpec& spec, const std::function<void()>& on_measure_start,
                    const std::function<void()>& on_measure_end) {
    LoadResult r;
    r.connections_requested = spec.connections;
    r.client_threads = spec.threads;
    if (!spec.workload) r.fatal = "no workload given";
    else if (spec.connections < 1 || spec.threads < 1) r.fatal = "connections and threads must be >= 1";
    Shared sh{spec, {}};
    if (r.fatal.empty()) r.fatal = resolve(spec, sh.target);
    if (!r.fatal.empty()) return r;
    raise_fd_limit(spec.connections);

    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::thread> threads;
    for (int i = 0; i < spec.threads; ++i) {
        const int share = spec.connections / spec.threads + (i < spec.connections % spec.threads);
        workers.push_back(std::make_unique<Worker>(sh, i, share));
    }
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });

    // Setup: every thread connects its share (bounded by connect_timeout_s; the extra margin
    // only guards against a bug turning into a hang).
    const auto setup_deadline = std::chrono::steady_clock::now() +
                                std::chrono::duration<double>(spec.connect_timeout_s + 5.0);
    bool setup_hung = false;
    while (sh.ready.load(std::memory_order_acquire) < spec.threads && !stop_requested(spec)) {
        if (std::chrono::steady_clock::now() > setup_deadline) {
            setup_hung = true;
            break;
        }
        std::this_thread::sleep_for(kMainTick);
    }
    r.interrupted = stop_requested(spec);
    if (setup_hung) r.fatal = "connection set-up did not finish within connect_timeout_s + 5 s";
    int established = 0;
    std::string reason;
    for (const auto& w : workers) {
        established += w->established;
        if (!w->connect_error.empty()) reason = w->connect_error;
        if (!w->fatal.empty() && r.fatal.empty()) r.fatal = w->fatal;
    }
    if (!r.interrupted && r.fatal.empty() && established == 0)
        r.fatal = "no connection could be established to " + spec.host + ":" +
                  std::to_string(spec.port) + ": " + (reason.empty() ? "unknown" : reason);

    if (!r.interrupted && r.fatal.empty()) {
        sh.phase.store(kWarmup, std::memory_order_release);
        if (!sleep_for(spec, spec.warmup_s)) {
            r.interrupted = true;
        } else {
            if (on_measure_start) on_measure_start();
            const auto open = std::chrono::steady_clock::now();
            sh.phase.store(kMeasure, std::memory_order_release);
            r.interrupted = !sleep_for(spec, spec.duration_s);
            sh.phase.store(kDone, std::memory_order_release);
            r.measured_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - open).count();
            if (on_measure_end) on_measure_end();
        }
    }
    sh.phase.store(kDone, std::memory_order_release);
    for (auto& t : threads) t.join();
    collect(workers, r);
    return r;
}

}  // namespace concbench
