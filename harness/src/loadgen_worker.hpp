// loadgen internals: a connection's state, what the load threads share, and one load thread
// (Worker). Included by loadgen.cpp (the calling thread) and loadgen_worker.cpp only.
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
// - Phases: connect all (the primer: every keep-alive connection, active or idle, makes one
//   request and waits for its answer, so the load starts on connections the server has taken
//   up — a thread per connection spawned, a process forked), warm up (not recorded),
//   measure (counters reset on entry, thread CPU time read on entry and exit), check (idle
//   connections make their last request), done. The calling thread drives the phases.
#pragma once
#include <llhttp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <queue>
#include <string>
#include <vector>

#include "concbench/loadgen.hpp"

namespace concbench::loadgen_detail {

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

inline uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

inline double thread_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

inline uint64_t seconds_to_ns(double s) { return s <= 0 ? 0 : uint64_t(s * 1e9); }

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
    bool priming = false;    // its primer request is in flight (set-up)
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
    // The primer: keep-alive connections make one request each during set-up and wait for its
    // answer. The calling thread ends it (primer_over) when every one is answered, when answers
    // stall, or at its time limit; a connection still waiting keeps its request in flight.
    std::atomic<int> primed{0};              // first answers so far, over all threads
    std::atomic<uint64_t> last_primed_ns{0}; // when the latest one came
    std::atomic<bool> primer_over{false};
};

class Worker {
public:
    Worker(Shared& sh, int index, int first_gid, int nconns, int nidle)
        : sh_(sh), wl_(*sh.spec.workload), index_(index), conns_(std::size_t(nconns + nidle)),
          pipeline_(std::max(1, sh.spec.pipeline)), open_(sh.spec.rate > 0),
          keep_alive_(wl_.keep_alive), primer_(sh.spec.primer && wl_.keep_alive), req_len_(uint32_t(sh.request.size())),
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
    uint64_t setup_closed = 0;    // connected, then closed by the server in set-up (as `closed`)
    int not_opened = 0, idle_not_opened = 0;  // left out when the primer ended before they were opened
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
    // An active connection of the run: up, whether its primer request was answered or not, or
    // answered and then closed by the server during set-up (reopened when the load starts).
    static bool counts_established(const Conn& c) {
        return !c.idler && (c.st == St::ready || c.st == St::busy || c.st == St::down);
    }

    Shared& sh_;
    const Workload& wl_;
    const int index_;
    std::vector<Conn> conns_;
    const int pipeline_;
    const bool open_, keep_alive_;
    const bool primer_;       // active keep-alive connections are primed during set-up
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

}  // namespace concbench::loadgen_detail
