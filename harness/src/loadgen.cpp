// loadgen: the client every cell is measured with.
//
// Technique (wrk's and wrk2's shape, made cheaper per request):
// - T threads, each pinned to its CPU, each owning one epoll instance and its share of the C
//   connections; threads share nothing on the hot path but an atomic phase they read once per
//   loop iteration. Each has its own Histograms and counters, merged after join.
// - Sockets are non-blocking with TCP_NODELAY and registered edge-triggered for EPOLLIN once, for
//   their whole life. EPOLLOUT is added only while requests could not be written in full, so a
//   request costs a share of one send(), one recv() and one epoll_wait() -- no epoll_ctl().
//   Answers that arrive together are read by one recv() into a 64 KiB per-thread buffer and
//   their follow-up requests leave in one send().
// - A connection holds its parse state (an llhttp_t for HTTP), byte counters and a ring of the
//   send times of its requests in flight (pipelining depth P), so 10,000+ connections are cheap.
// - Answers are checked as they stream in: HTTP by llhttp (status, body chunks against the
//   workload, body length), echo byte for byte. A broken connection is counted by kind, closed
//   and replaced so the load continues. Time-outs are found by a scan every 100 ms, not timers.
// - Closed loop: each connection sends P requests together (pipelining depth P; 1 = no
//   pipelining) and the next P once all are answered. Open loop: request k of connection
//   i is due at intended_send_ns(); a min-heap of the next due time per connection drives
//   epoll_pwait2's timeout; a request that cannot leave on time (its connection still waits for
//   an answer) leaves as soon as it can, and its latency is counted from the intended time.
// - Latency is CLOCK_MONOTONIC from the request's send() (or connect(), if the workload opens a
//   connection per request) to the recv() that completed the answer.
// - Phases: connect all (idle connections make their first request), warm up (not recorded),
//   measure (counters reset on entry, thread CPU time read on entry and exit), check (idle
//   connections make their last request), done. The calling thread drives the phases.
#include "concbench/loadgen.hpp"

#include <fcntl.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <queue>
#include <string_view>
#include <thread>

namespace concbench {
namespace {

// ---- error kinds, phases, constants ----------------------------------------------------------

enum Err { kConnect, kReset, kTimeout, kBadStatus, kBadBody, kBadResponse, kShortRead, kClosed,
           kErrKinds };
constexpr const char* kErrNames[kErrKinds] = {"connect",  "reset",        "timeout",    "bad_status",
                                              "bad_body", "bad_response", "short_read", "closed"};

// kCheck: the window is over; idle connections make their last request.
enum Phase : int { kSetup, kWarmup, kMeasure, kCheck, kDone };

constexpr std::size_t kReadBufBytes = 64 * 1024;
constexpr int kMaxEvents = 512;
constexpr int kPollMs = 10;                       // how late a thread may notice a phase change
constexpr uint64_t kScanNs = 100'000'000;         // time-out scan period
constexpr int kMaxConnecting = 256;               // connects in progress per thread during set-up
constexpr auto kMainTick = std::chrono::milliseconds(5);
// Edge-triggered: epoll does not poll every reported socket again at the next epoll_wait (a
// level-triggered set costs a tcp_poll per socket per wait). Correct because a read that does
// not fill the buffer has emptied the socket of data, and any later data raises a new edge. The
// end of the stream does not show in a short read: EPOLLRDHUP says it is there to be read.
constexpr uint32_t kIn = EPOLLIN | EPOLLRDHUP | EPOLLET;

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
    pending,     // not opened yet (set-up opens at most kMaxConnecting at a time)
    unused,      // never established during setup: left out of the run
    down,        // lost, and the replacement's connect failed: retried at the next scan
    parked,      // open loop, connection per request: closed, waiting for its next due time
    connecting,  // non-blocking connect() in progress
    ready,       // established, nothing in flight
    busy,        // requests in flight (possibly not fully written yet)
    finished,    // an idle connection whose story is told (answered at the end, or lost)
};

enum Flag : uint8_t { kStatusBad = 1, kBodyBad = 2, kDoneFlag = 4 };

struct Conn {
    int fd = -1;
    St st = St::pending;
    bool out_armed = false;  // EPOLLOUT in the interest set
    bool idler = false;      // an idle connection (held through the load)
    bool in_heap = false;    // open loop: waiting in the schedule heap
    uint8_t flags = 0;       // Flag bits of the answer in progress
    uint16_t inflight = 0;   // requests sent (or queued) and not yet answered
    uint16_t head = 0;       // ring index of the oldest request in flight
    uint32_t out_pending = 0;  // request bytes still to write
    uint32_t out_off = 0;      // offset of the next byte to write within one request
    uint32_t gid = 0;          // connection number over all threads (the open-loop schedule)
    uint32_t done = 0;         // answers completed inside the measured window (this slot)
    uint64_t t_conn = 0;       // connect start
    uint64_t t_due = 0;        // intended time of the request a per-request connection carries
    uint64_t next_k = 0;       // open loop: number of this connection's next due request
    uint64_t body = 0;         // body (HTTP) or echoed bytes checked so far, current answer
    uint64_t rx = 0;           // bytes of the current answer read
    llhttp_t http;             // HTTP workloads only
};

// llhttp callbacks reach the workload through the thread (settings are static and shared).
thread_local const Workload* tl_workload = nullptr;
thread_local bool tl_check_body = true;

int on_headers_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    if (p->status_code != tl_workload->expected_status) c->flags |= kStatusBad;
    return 0;
}

int on_body(llhttp_t* p, const char* at, std::size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (tl_check_body && !(c->flags & kBodyBad) && !tl_workload->body_ok(c->body, std::string_view(at, n)))
        c->flags |= kBodyBad;
    c->body += n;
    return 0;
}

int on_message_complete(llhttp_t* p) {
    static_cast<Conn*>(p->data)->flags |= kDoneFlag;
    return HPE_PAUSED;  // stop at the answer's end: the next bytes belong to the next answer
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
    std::string request;               // one request's bytes
    std::atomic<int> phase{kSetup};
    std::atomic<int> ready{0};         // threads done with setup
    std::atomic<int> checked{0};       // threads done with the idle check
    std::atomic<uint64_t> load_start_ns{0};  // warm-up start: the open-loop schedule's origin
    std::atomic<uint64_t> open_ns{0};        // the measured window's start
};

class Worker {
public:
    Worker(Shared& sh, int index, int first_gid, int nconns, int nidle)
        : sh_(sh), wl_(*sh.spec.workload), index_(index), conns_(std::size_t(nconns + nidle)),
          pipeline_(std::max(1, sh.spec.pipeline)), open_(sh.spec.rate > 0),
          keep_alive_(wl_.keep_alive), req_len_(uint32_t(sh.request.size())),
          connect_timeout_ns_(seconds_to_ns(sh.spec.connect_timeout_s)),
          request_timeout_ns_(seconds_to_ns(sh.spec.request_timeout_s)),
          ring_sent_(conns_.size() * std::size_t(pipeline_)),
          ring_due_(open_ ? ring_sent_.size() : 0) {
        for (int i = 0; i < nconns + nidle; ++i) {
            conns_[i].gid = uint32_t(first_gid + i);
            conns_[i].idler = i >= nconns;
        }
        // P + 1 copies: any P requests' worth of bytes starting anywhere within the first one.
        for (int i = 0; i <= pipeline_; ++i) sendbuf_ += sh.request;
    }

    void run();

    // Results, read by the calling thread after join().
    Histogram hist, hist_uncorrected;
    uint64_t errors[kErrKinds] = {};
    uint64_t setup_failures = 0;  // connections never established (reported as `connect`)
    uint64_t requests = 0, sent = 0;
    int established = 0;
    double cpu_s = 0;
    std::vector<uint32_t> per_conn;   // answers per connection slot in the window
    uint64_t oldest_pending_ns = 0;   // age of the oldest unanswered request at the window's end
    // Per second of the window: answers, errors, sends, and the answers' latency slots.
    std::vector<uint64_t> sec_requests, sec_errors, sec_sent;
    std::vector<Histogram::Slots> sec_slots;
    uint64_t closed_ns = 0;           // when this thread closed the window (it notices late)
    IdleResult idle;
    std::string fatal;             // this thread could not run (pinning, epoll)
    std::string connect_error;     // the last connect failure's reason

private:
    void setup_thread();
    void on_phase(int phase, uint64_t now);
    void open_pending(uint64_t now);
    void finish_setup();
    void replace(Conn& c, uint64_t now);
    void dispatch(Conn& c, uint32_t events);
    void scan(uint64_t now);
    void run_heap(uint64_t now);
    void close_all();

    void open_conn(Conn& c, uint64_t now, uint64_t due = 0);
    void finish_connect(Conn& c, uint64_t now);
    void connect_failed(Conn& c, int err);
    void established_conn(Conn& c, uint64_t now);
    void queue_requests(Conn& c, int n, uint64_t due, uint64_t now);
    bool flush_out(Conn& c);
    void schedule(Conn& c, uint64_t now);
    void read_answers(Conn& c, uint32_t events);
    bool read_some(Conn& c, ssize_t n);
    bool feed_http(Conn& c, const char* data, std::size_t n, uint64_t now, int& completed);
    bool feed_echo(Conn& c, const char* data, std::size_t n, uint64_t now, int& completed);
    bool complete_one(Conn& c, uint64_t now);
    void after_answers(Conn& c, int completed, uint64_t now);
    void fail(Conn& c, Err kind, uint64_t now);
    void close_conn(Conn& c);
    void set_events(Conn& c, uint32_t events, int op);
    std::size_t sec_of(uint64_t now);
    void flush_second();

    uint64_t& ring_sent(Conn& c, int k) { return ring_sent_[idx(c) * pipeline_ + (c.head + k) % pipeline_]; }
    uint64_t& ring_due(Conn& c, int k) { return ring_due_[idx(c) * pipeline_ + (c.head + k) % pipeline_]; }
    std::size_t idx(const Conn& c) const { return std::size_t(&c - conns_.data()); }
    bool sending() const { return loading_ && !checking_; }

    Shared& sh_;
    const Workload& wl_;
    const int index_;
    std::vector<Conn> conns_;
    const int pipeline_;
    const bool open_, keep_alive_;
    const uint32_t req_len_;
    const uint64_t connect_timeout_ns_, request_timeout_ns_;
    std::vector<uint64_t> ring_sent_, ring_due_;
    std::string sendbuf_;
    int ep_ = -1;
    int phase_ = kSetup;      // this thread's view of the phase
    std::size_t open_cursor_ = 0;  // set-up: next connection to open
    int connecting_ = 0;      // set-up: connects in progress
    bool setup_done_ = false;
    bool loading_ = false;    // requests are being sent (warm-up or measurement)
    bool recording_ = false;  // inside the measured window
    bool checking_ = false;   // the idle check is on
    bool check_acked_ = false;
    double cpu_at_open_ = 0;
    uint64_t start_ns_ = 0;   // open loop: the schedule's origin
    uint64_t open_ns_ = 0;    // the window's start
    std::size_t cur_sec_ = 0;
    Histogram sec_hist_;
    using Due = std::pair<uint64_t, uint32_t>;  // (due time, connection index)
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> heap_;
    std::unique_ptr<char[]> buf_{new char[kReadBufBytes]};
};

void Worker::run() {
    tl_workload = &wl_;
    tl_check_body = sh_.spec.check_body;
    setup_thread();
    if (!fatal.empty()) {
        sh_.ready.fetch_add(1);
        sh_.checked.fetch_add(1);
        return;
    }
    if (open_) prctl(PR_SET_TIMERSLACK, 1UL);  // wake at the due time, not 50 µs after it
    uint64_t now = now_ns(), last_scan = now;
    open_pending(now);
    epoll_event events[kMaxEvents];
    for (;;) {
        const int phase = sh_.phase.load(std::memory_order_acquire);
        if (phase != phase_) on_phase(phase, now_ns());
        if (phase_ == kDone) break;
        int n;
        if (open_ && sending() && !heap_.empty()) {
            const uint64_t t = now_ns(), due = heap_.top().first;
            const uint64_t wait = due > t ? std::min<uint64_t>(due - t, kPollMs * 1'000'000ull) : 0;
            timespec ts{time_t(wait / 1'000'000'000), long(wait % 1'000'000'000)};
            n = epoll_pwait2(ep_, events, kMaxEvents, &ts, nullptr);
        } else {
            n = epoll_wait(ep_, events, kMaxEvents, kPollMs);
        }
        for (int i = 0; i < n; ++i) dispatch(conns_[events[i].data.u32], events[i].events);
        now = now_ns();
        if (open_ && sending()) run_heap(now);
        if (now - last_scan >= kScanNs) {
            scan(now);
            last_scan = now;
        }
        if (!setup_done_) {
            open_pending(now);
            finish_setup();
        }
        if (checking_ && !check_acked_) {
            bool busy = false;
            for (const Conn& c : conns_) busy |= c.idler && c.st == St::busy;
            if (!busy) {
                check_acked_ = true;
                sh_.checked.fetch_add(1, std::memory_order_release);
            }
        }
    }
    if (!setup_done_)  // stopped during setup: report what was established by then
        for (const Conn& c : conns_) established += (!c.idler && c.st == St::ready);
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

// Set-up opens connections at most kMaxConnecting at a time, so 10,000 connects do not overrun
// the server's listen backlog (a dropped SYN costs a one-second retransmission).
void Worker::open_pending(uint64_t now) {
    while (open_cursor_ < conns_.size() && connecting_ < kMaxConnecting) {
        Conn& c = conns_[open_cursor_++];
        open_conn(c, now);
        if (c.st == St::connecting) ++connecting_;
    }
}

// Setup ends once every connection has been opened and none is still connecting (each ends
// established or failed), and every idle connection has had its first answer.
void Worker::finish_setup() {
    if (open_cursor_ < conns_.size()) return;
    for (const Conn& c : conns_)
        if (c.st == St::connecting || (c.idler && c.st == St::busy)) return;
    for (const Conn& c : conns_) established += (!c.idler && c.st == St::ready);
    setup_done_ = true;
    sh_.ready.fetch_add(1, std::memory_order_release);
}

void Worker::on_phase(int phase, uint64_t now) {
    if (phase >= kWarmup && phase < kCheck && !loading_) {  // start the load
        loading_ = true;
        start_ns_ = sh_.load_start_ns.load(std::memory_order_acquire);
        for (Conn& c : conns_) {
            if (c.idler || c.st != St::ready) continue;
            if (open_) schedule(c, now);
            else queue_requests(c, keep_alive_ ? pipeline_ : 1, now, now);
        }
    }
    if (phase == kMeasure && !recording_) {  // the window opens: count from zero
        std::fill(std::begin(errors), std::end(errors), 0);
        hist.reset();
        hist_uncorrected.reset();
        requests = sent = 0;
        for (Conn& c : conns_) c.done = 0;
        open_ns_ = sh_.open_ns.load(std::memory_order_acquire);
        cur_sec_ = 0;
        sec_hist_.reset();
        recording_ = true;
        cpu_at_open_ = thread_cpu_s();
    }
    if (phase >= kCheck && recording_) {  // the window closes
        cpu_s = thread_cpu_s() - cpu_at_open_;
        closed_ns = now;
        flush_second();
        for (Conn& c : conns_) {
            if (c.idler || c.st == St::unused || c.st == St::pending) continue;
            per_conn.push_back(c.done);
            if (c.inflight > 0 && now > ring_sent(c, 0))
                oldest_pending_ns = std::max(oldest_pending_ns, now - ring_sent(c, 0));
        }
        recording_ = false;
    }
    if (phase == kCheck && !checking_) {  // active load stops; idle connections ask once more
        checking_ = true;
        for (Conn& c : conns_)
            if (c.idler && c.st == St::ready) queue_requests(c, 1, now, now);
    }
    phase_ = phase;
}

void Worker::dispatch(Conn& c, uint32_t events) {
    switch (c.st) {
    case St::connecting:
        finish_connect(c, now_ns());
        break;
    case St::ready:  // nothing is expected on a connection with nothing in flight
        read_answers(c, events);
        break;
    case St::busy:
        if ((events & EPOLLOUT) && c.out_pending > 0 && !flush_out(c)) break;
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) read_answers(c, events);
        break;
    default:
        break;
    }
}

void Worker::scan(uint64_t now) {
    // (A time may be a little after `now`: a connection replaced during this iteration.)
    for (Conn& c : conns_) {
        if (c.st == St::connecting && now > c.t_conn + connect_timeout_ns_)
            connect_failed(c, ETIMEDOUT);
        else if (c.st == St::busy && c.inflight > 0 && now > ring_sent(c, 0) + request_timeout_ns_)
            fail(c, kTimeout, now);
        else if (c.st == St::down && sending()) {
            if (open_ && !keep_alive_) {
                c.st = St::parked;
                schedule(c, now);
            } else {
                open_conn(c, now);
            }
        }
    }
}

// Open loop: every connection whose due time has come sends (or opens its connection).
void Worker::run_heap(uint64_t now) {
    while (!heap_.empty() && heap_.top().first <= now) {
        Conn& c = conns_[heap_.top().second];
        heap_.pop();
        c.in_heap = false;
        schedule(c, now);
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
    ev.data.u32 = uint32_t(idx(c));
    epoll_ctl(ep_, op, c.fd, &ev);
}

// `due`: the intended time of the request a per-request connection carries (0: now).
void Worker::open_conn(Conn& c, uint64_t now, uint64_t due) {
    const Target& t = sh_.target;
    c.t_conn = now;
    c.t_due = due ? due : now;
    c.inflight = c.head = 0;
    c.out_pending = c.out_off = 0;
    c.fd = socket(t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return connect_failed(c, errno);
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (wl_.proto == Proto::http) {
        llhttp_init(&c.http, HTTP_RESPONSE, http_settings());
        c.http.data = &c;
    }
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&t.addr), t.len) == 0) {
        set_events(c, kIn, EPOLL_CTL_ADD);
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
    if (!setup_done_) --connecting_;
    c.out_armed = false;
    set_events(c, kIn, EPOLL_CTL_MOD);
    established_conn(c, now);
}

void Worker::connect_failed(Conn& c, int err) {
    if (c.st == St::connecting && !setup_done_) --connecting_;
    close_conn(c);
    connect_error = std::strerror(err);
    if (!setup_done_) {  // a connection of the initial set: left out
        if (!c.idler) ++setup_failures;
        c.st = St::unused;
    } else if (c.idler) {
        c.st = St::finished;
    } else {
        ++errors[kConnect];
        if (recording_) ++sec_errors[sec_of(now_ns())];
        c.st = St::down;
    }
}

void Worker::established_conn(Conn& c, uint64_t now) {
    c.st = St::ready;
    if (c.idler) {  // its one request before the load
        if (!setup_done_) queue_requests(c, 1, now, now);
        return;
    }
    if (!sending()) return;
    if (!keep_alive_) return queue_requests(c, 1, c.t_due, c.t_conn);  // timed from connect()
    if (open_) return schedule(c, now);
    queue_requests(c, pipeline_, now, now);
}

void Worker::close_conn(Conn& c) {
    if (c.fd >= 0) close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    c.out_armed = false;
}

// ---- requests and answers ------------------------------------------------------------------------

// Puts n requests in flight (intended time `due`, sent at `now`) and writes them.
void Worker::queue_requests(Conn& c, int n, uint64_t due, uint64_t now) {
    n = std::min(n, pipeline_ - int(c.inflight));
    if (n <= 0) return;
    for (int k = 0; k < n; ++k) {
        ring_sent(c, c.inflight) = now;
        if (open_) ring_due(c, c.inflight) = due;
        ++c.inflight;
    }
    c.st = St::busy;
    c.out_pending += uint32_t(n) * req_len_;
    if (recording_) {
        sent += uint64_t(n);
        sec_sent[sec_of(now)] += uint64_t(n);
    }
    flush_out(c);
}

// Writes what is pending; arms EPOLLOUT while the socket is full. False: the connection failed.
bool Worker::flush_out(Conn& c) {
    while (c.out_pending > 0) {
        const ssize_t n = send(c.fd, sendbuf_.data() + c.out_off, c.out_pending, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_pending -= uint32_t(n);
            c.out_off = uint32_t((c.out_off + uint64_t(n)) % req_len_);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!c.out_armed) set_events(c, kIn | EPOLLOUT, EPOLL_CTL_MOD);
            c.out_armed = true;
            return true;
        } else if (errno != EINTR) {
            fail(c, errno == EPIPE ? kClosed : kReset, now_ns());
            return false;
        }
    }
    if (c.out_armed) set_events(c, kIn, EPOLL_CTL_MOD);
    c.out_armed = false;
    return true;
}

// Open loop: sends every request of `c` that is due (as far as the pipeline allows), and puts
// the connection in the heap for its next due time.
void Worker::schedule(Conn& c, uint64_t now) {
    const int n = sh_.spec.connections;
    while (!c.in_heap && sending()) {
        const bool can_send = keep_alive_ ? (c.st == St::ready || c.st == St::busy) && c.inflight < pipeline_
                                          : c.st == St::parked || c.st == St::ready;
        if (!can_send) return;
        const uint64_t due = intended_send_ns(start_ns_, sh_.spec.rate, n, int(c.gid), c.next_k);
        if (due > now) {
            heap_.emplace(due, uint32_t(idx(c)));
            c.in_heap = true;
            return;
        }
        ++c.next_k;
        if (c.st == St::parked)
            open_conn(c, now, due);  // its request leaves once connected
        else
            queue_requests(c, 1, due, now);
    }
}

void Worker::read_answers(Conn& c, uint32_t events) {
    // Edge-triggered: read until a read leaves the socket empty; when the peer has closed or
    // failed, on until recv() says so (0 or an error).
    const bool to_the_end = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    for (;;) {
        const ssize_t n = recv(c.fd, buf_.get(), kReadBufBytes, 0);
        if (!read_some(c, n) || (std::size_t(n) < kReadBufBytes && !to_the_end)) return;
    }
}

// Handles one recv() result. False: stop reading this connection now (empty, failed, closed).
bool Worker::read_some(Conn& c, ssize_t n) {
    const uint64_t now = now_ns();
    if (n < 0) {
        if (errno == EINTR) return true;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
        fail(c, kReset, now);
        return false;
    }
    if (c.inflight == 0) {  // data or EOF on a connection nobody has asked anything
        fail(c, n == 0 ? kClosed : kBadResponse, now);
        return false;
    }
    if (n == 0) {
        // An HTTP answer delimited by the end of the connection ends here; anything else is cut.
        if (wl_.proto == Proto::http && c.rx > 0 && c.inflight == 1) {
            llhttp_finish(&c.http);
            if (c.flags & kDoneFlag) {
                complete_one(c, now);  // closes (or fails) the connection either way
                return false;
            }
        }
        fail(c, c.rx == 0 ? kClosed : kShortRead, now);
        return false;
    }
    int completed = 0;
    const bool ok = wl_.proto == Proto::http ? feed_http(c, buf_.get(), std::size_t(n), now, completed)
                                             : feed_echo(c, buf_.get(), std::size_t(n), now, completed);
    if (ok) after_answers(c, completed, now);
    return ok && c.fd >= 0;
}

// False: the connection failed (and was replaced).
bool Worker::feed_http(Conn& c, const char* data, std::size_t n, uint64_t now, int& completed) {
    while (n > 0) {
        if (c.inflight == 0) {  // bytes beyond the answers asked for
            fail(c, kBadResponse, now);
            return false;
        }
        c.rx += 1;  // (only "something was read" matters for the answer in progress)
        const llhttp_errno_t err = llhttp_execute(&c.http, data, n);
        if (err == HPE_OK) return true;  // the answer continues in a later read
        if (err != HPE_PAUSED) {
            fail(c, kBadResponse, now);
            return false;
        }
        const char* pos = llhttp_get_error_pos(&c.http);
        n -= std::size_t(pos - data);
        data = pos;
        if (!complete_one(c, now)) return false;  // failed, or closed (later bytes unasked)
        ++completed;
        llhttp_resume(&c.http);
    }
    return true;
}

bool Worker::feed_echo(Conn& c, const char* data, std::size_t n, uint64_t now, int& completed) {
    const std::size_t msg = wl_.expected_body;
    while (n > 0) {
        if (c.inflight == 0) {
            fail(c, kBadBody, now);
            return false;
        }
        const std::size_t take = std::min<std::size_t>(n, msg - c.body);
        if (!wl_.body_ok(c.body, std::string_view(data, take))) {
            fail(c, kBadBody, now);
            return false;
        }
        c.body += take;
        c.rx += take;
        data += take;
        n -= take;
        if (c.body == msg) {
            if (!complete_one(c, now)) return false;
            ++completed;
        }
    }
    return true;
}

// The oldest request's answer arrived whole: judge it and record it. False: the connection does
// not go on (the answer was wrong and the connection replaced, or the connection was closed).
bool Worker::complete_one(Conn& c, uint64_t now) {
    if (c.flags & kStatusBad) return fail(c, kBadStatus, now), false;
    if (wl_.proto == Proto::http && tl_check_body && ((c.flags & kBodyBad) || c.body != wl_.expected_body))
        return fail(c, kBadBody, now), false;
    const uint64_t t_sent = ring_sent(c, 0);
    const uint64_t t_due = open_ ? ring_due(c, 0) : t_sent;
    c.head = uint16_t((c.head + 1) % pipeline_);
    --c.inflight;
    c.flags = 0;
    c.body = c.rx = 0;
    if (c.idler) {
        if (checking_) {
            ++idle.answered_at_end;
            close_conn(c);
            c.st = St::finished;
            return false;
        }
        ++idle.established;  // answered its first request: held from now on
        c.st = St::ready;
        return true;
    }
    if (recording_) {
        const uint64_t lat = now > t_due ? now - t_due : 0;
        if (open_) hist_uncorrected.record(now > t_sent ? now - t_sent : 0);
        const std::size_t s = sec_of(now);
        if (s != cur_sec_) flush_second(), cur_sec_ = s;
        sec_hist_.record(lat);  // into `hist` when the second is flushed: one record per answer
        ++sec_requests[s];
        ++requests;
        ++c.done;
    }
    const bool reuse = keep_alive_ && (wl_.proto != Proto::http || llhttp_should_keep_alive(&c.http));
    if (!reuse) {  // the workload (or the server, per HTTP) wants a new connection
        if (c.inflight > 0) {  // pipelined requests the server will not answer
            fail(c, kClosed, now);
            return false;
        }
        close_conn(c);
        replace(c, now);
        return false;
    }
    if (c.inflight == 0) c.st = St::ready;
    return true;
}

// `completed` answers were taken off a keep-alive connection: closed loop sends the next batch
// once the connection has nothing in flight, open loop sends what is due.
void Worker::after_answers(Conn& c, int completed, uint64_t now) {
    if (completed == 0 || c.idler || !sending()) return;
    if (open_) return schedule(c, now);
    // Pipelined in batches, as wrk and TechEmpower do: the next P leave together once the last
    // batch is answered (one send per batch, and the server reads them with one recv).
    if (c.inflight == 0) queue_requests(c, pipeline_, now, now);
}

// A broken connection: count it, close it, open its replacement.
void Worker::fail(Conn& c, Err kind, uint64_t now) {
    if (c.idler) {
        const bool held = c.st == St::ready;  // it had answered before: the server dropped it
        if (!held && !checking_) c.st = St::unused;  // never held: a set-up failure
        else {
            if (held) ++idle.lost_while_idle;
            c.st = St::finished;
        }
        close_conn(c);
        c.inflight = 0;
        c.out_pending = 0;
        return;
    }
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
    if (recording_) ++sec_errors[sec_of(now)];
    close_conn(c);
    c.inflight = 0;
    c.out_pending = 0;
    replace(c, now);
}

// After a closed connection: its slot opens a new one (connection per request, or a broken one
// replaced), waits for its next intended time (open loop), or stays down once sending ended.
void Worker::replace(Conn& c, uint64_t now) {
    if (!sending()) {
        c.st = St::down;
    } else if (open_ && !keep_alive_) {
        c.st = St::parked;
        schedule(c, now);
    } else {
        open_conn(c, now);
    }
}

// Index of the window's second `now` falls in; the per-second arrays grow to hold it.
std::size_t Worker::sec_of(uint64_t now) {
    const std::size_t s = now > open_ns_ ? std::size_t((now - open_ns_) / 1'000'000'000) : 0;
    if (s >= sec_requests.size()) {
        sec_requests.resize(s + 1, 0);
        sec_errors.resize(s + 1, 0);
        sec_sent.resize(s + 1, 0);
        sec_slots.resize(s + 1);
    }
    return s;
}

// The current second's histogram goes into the window's (exact min, max and mean carried) and,
// as its slots, into the series.
void Worker::flush_second() {
    if (sec_hist_.count() == 0) return;
    sec_of(open_ns_ + cur_sec_ * 1'000'000'000);  // make room
    hist.merge(sec_hist_);
    Histogram::Slots s = sec_hist_.slots();
    Histogram::Slots& into = sec_slots[cur_sec_];
    into.insert(into.end(), s.begin(), s.end());
    sec_hist_.reset();
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

// Waits until `counter` reaches `n`, the deadline passes, or a stop. False on deadline.
bool wait_count(const LoadSpec& spec, const std::atomic<int>& counter, int n, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (counter.load(std::memory_order_acquire) < n && !stop_requested(spec)) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(kMainTick);
    }
    return true;
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

// Raises the soft descriptor limit to the hard one when the connections need more; says so when
// even the hard limit is too low.
std::string raise_fd_limit(int sockets) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return {};
    const rlim_t need = rlim_t(sockets) + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        return "need " + std::to_string(need) + " file descriptors for " + std::to_string(sockets) +
               " connections, the limit is " + std::to_string(rl.rlim_cur) + " (ulimit -n)";
    return {};
}

void collect(const std::vector<std::unique_ptr<Worker>>& workers, uint64_t open_ns, LoadResult& r) {
    uint64_t errors[kErrKinds] = {};
    std::size_t seconds = 0;
    double recorded_s = r.measured_s;  // until the last thread noticed the window's end
    for (const auto& w : workers) {
        r.connections_established += w->established;
        r.requests += w->requests;
        r.sent += w->sent;
        r.client_cpu_s += w->cpu_s;
        r.latency.merge(w->hist);
        r.latency_uncorrected.merge(w->hist_uncorrected);
        r.per_connection.insert(r.per_connection.end(), w->per_conn.begin(), w->per_conn.end());
        r.oldest_pending_s = std::max(r.oldest_pending_s, w->oldest_pending_ns / 1e9);
        for (int k = 0; k < kErrKinds; ++k) errors[k] += w->errors[k];
        errors[kConnect] += w->setup_failures;
        r.idle.established += w->idle.established;
        r.idle.lost_while_idle += w->idle.lost_while_idle;
        r.idle.answered_at_end += w->idle.answered_at_end;
        seconds = std::max(seconds, w->sec_requests.size());
        if (w->closed_ns > open_ns && open_ns > 0)
            recorded_s = std::max(recorded_s, double(w->closed_ns - open_ns) / 1e9);
    }
    r.idle.dropped = r.idle.established - r.idle.answered_at_end;
    for (int k = 0; k < kErrKinds; ++k)
        if (errors[k] > 0) r.errors[kErrNames[k]] = errors[k];
    // Per second: counts summed, latency slots merged before the percentile is taken.
    seconds = std::min<std::size_t>(seconds, std::size_t(std::ceil(recorded_s)));
    Histogram h;
    for (std::size_t s = 0; s < seconds; ++s) {
        SecondStats st;
        st.length_s = std::min(1.0, recorded_s - double(s));
        st.t_s = double(s) + st.length_s;
        h.reset();
        for (const auto& w : workers) {
            if (s >= w->sec_requests.size()) continue;
            st.requests += w->sec_requests[s];
            st.errors += w->sec_errors[s];
            st.sent += w->sec_sent[s];
            h.add_slots(w->sec_slots[s]);
        }
        st.p99_us = h.percentile_ns(99) / 1000.0;
        r.series.push_back(st);
    }
}

}  // namespace

uint64_t intended_send_ns(uint64_t start_ns, double rate, int connections, int i, uint64_t k) {
    // In long double: at 10^6 req/s over an hour, k * n reaches 3.6e9 and the product must stay
    // exact to the nanosecond.
    const long double slot = (static_cast<long double>(k) * connections + i) * 1e9L / rate;
    return start_ns + static_cast<uint64_t>(slot);
}

LittleCheck little_law(double throughput_rps, double mean_latency_s, int connections, int pipeline) {
    LittleCheck l;
    l.in_flight = throughput_rps * mean_latency_s;
    l.expected = double(connections) * std::max(1, pipeline);
    l.ratio = l.expected > 0 ? l.in_flight / l.expected : 0;
    if (pipeline <= 1) {
        l.ok = l.expected > 0 && std::abs(l.ratio - 1) <= 0.2;
    } else {
        // A batch's answers leave the flight one by one, so between C and C x P are in flight on
        // average; fewer than C means connections sat without any request.
        l.ok = l.expected > 0 && l.in_flight >= 0.8 * connections && l.ratio <= 1.2;
    }
    return l;
}

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
    r.pipeline = spec.pipeline;
    r.offered_rps = spec.rate > 0 ? spec.rate : 0;
    r.idle.requested = spec.idle_connections;
    const Workload* w = spec.workload;
    if (!w) r.fatal = "no workload given";
    else if (spec.connections < 1 || spec.threads < 1) r.fatal = "connections and threads must be >= 1";
    else if (spec.pipeline < 1 || spec.pipeline > 1024) r.fatal = "pipeline depth must be 1 to 1024";
    else if (spec.pipeline > 1 && !w->keep_alive)
        r.fatal = "pipelining needs a keep-alive workload ('" + w->name + "' opens a connection per request)";
    else if (spec.rate < 0 || !std::isfinite(spec.rate)) r.fatal = "rate must be a number of requests/s >= 0";
    else if (spec.idle_connections < 0) r.fatal = "idle connections must be >= 0";
    else if (spec.idle_connections > 0 && !w->keep_alive)
        r.fatal = "idle connections need a keep-alive workload ('" + w->name + "' closes after each answer)";
    Shared sh{spec, {}, {}};
    sh.request = spec.request.empty() ? (w ? w->request : std::string()) : spec.request;
    if (r.fatal.empty() && sh.request.empty()) r.fatal = "empty request";
    if (r.fatal.empty()) r.fatal = resolve(spec, sh.target);
    if (r.fatal.empty()) r.fatal = raise_fd_limit(spec.connections + spec.idle_connections);
    if (!r.fatal.empty()) return r;

    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::thread> threads;
    for (int i = 0, gid = 0; i < spec.threads; ++i) {
        const int share = spec.connections / spec.threads + (i < spec.connections % spec.threads);
        const int idle = spec.idle_connections / spec.threads + (i < spec.idle_connections % spec.threads);
        workers.push_back(std::make_unique<Worker>(sh, i, gid, share, idle));
        gid += share;  // active connections are numbered 0..C-1 over all threads
    }
    for (auto& wk : workers) threads.emplace_back([&wk] { wk->run(); });

    // Setup: every thread connects its share, idle connections make their first request (bounded
    // by the time-outs; the extra margin only guards against a bug turning into a hang).
    const double setup_limit = spec.connect_timeout_s + 5.0 +
                               (spec.idle_connections > 0 ? spec.request_timeout_s : 0.0) +
                               (spec.connections + spec.idle_connections) / 2000.0;
    const bool setup_ok = wait_count(spec, sh.ready, spec.threads, setup_limit);
    r.interrupted = stop_requested(spec);
    if (!setup_ok) r.fatal = "connection set-up did not finish within " + std::to_string(int(setup_limit)) + " s";
    int established = 0;
    std::string reason;
    for (const auto& wk : workers) {
        established += wk->established;
        if (!wk->connect_error.empty()) reason = wk->connect_error;
        if (!wk->fatal.empty() && r.fatal.empty()) r.fatal = wk->fatal;
    }
    if (!r.interrupted && r.fatal.empty() && established == 0)
        r.fatal = "no connection could be established to " + spec.host + ":" +
                  std::to_string(spec.port) + ": " + (reason.empty() ? "unknown" : reason);

    if (!r.interrupted && r.fatal.empty()) {
        sh.load_start_ns.store(now_ns(), std::memory_order_release);
        sh.phase.store(kWarmup, std::memory_order_release);
        if (!sleep_for(spec, spec.warmup_s)) {
            r.interrupted = true;
        } else {
            if (on_measure_start) on_measure_start();
            const auto open = std::chrono::steady_clock::now();
            sh.open_ns.store(now_ns(), std::memory_order_release);
            sh.phase.store(kMeasure, std::memory_order_release);
            r.interrupted = !sleep_for(spec, spec.duration_s);
            sh.phase.store(kCheck, std::memory_order_release);
            r.measured_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - open).count();
            if (on_measure_end) on_measure_end();
            // Idle connections make their last request (bounded by the request time-out).
            if (!r.interrupted) wait_count(spec, sh.checked, spec.threads, spec.request_timeout_s + 1.0);
        }
    }
    sh.phase.store(kDone, std::memory_order_release);
    for (auto& t : threads) t.join();
    collect(workers, sh.open_ns.load(), r);
    return r;
}

}  // namespace concbench
