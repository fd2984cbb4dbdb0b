// loadgen: the client. C connections spread over T threads, each thread one epoll loop with
// non-blocking sockets. Load shapes:
// - closed loop: every connection sends `pipeline` requests together and the next batch when all
//   are answered (1: the next request when the previous answer is complete); latency per
//   request, from its send to its answer;
// - open loop (`rate` > 0): requests are due at fixed intended times, `rate` per second spread
//   evenly over the connections; latency is measured from the intended send time (no
//   coordinated omission), the uncorrected service time (actual send to answer) beside it;
// - connection per request: a workload that does not keep the connection alive (Connection:
//   close) connects, sends, reads the answer and closes; latency includes the connect;
// - idle holding: `idle_connections` extra keep-alive connections each make one request before
//   the load, stay idle through it, and make one more at the end; those the server dropped are
//   counted.
// Every answer is checked against the workload; errors are counted by kind.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "concbench/histogram.hpp"
#include "concbench/workloads.hpp"

namespace concbench {

struct LoadSpec {
    std::string host = "127.0.0.1";
    uint16_t port = 0;
    const Workload* workload = nullptr;
    std::string request;            // non-empty: sent instead of workload->request (same framing)
    bool check_body = true;         // false: any body of the expected status is accepted
    int connections = 1;
    int threads = 1;
    std::vector<int> cpus;          // client threads pinned round-robin to these; empty: no pinning
    int pipeline = 1;               // requests sent together per connection (keep-alive HTTP or echo)
    double rate = 0;                // > 0: open loop, requests per second over all connections
    int idle_connections = 0;       // held idle through the load, checked again at its end
    double warmup_s = 1.0;          // run but not recorded
    double duration_s = 5.0;        // measured
    double connect_timeout_s = 5.0;
    // The primer (keep-alive workloads): during set-up every connection makes one request and
    // waits for its answer, so the load starts on connections the server has taken up. It ends
    // when all are answered, when no new first answer came for `primer_stall_s` (a pool holding
    // as many connections as it has workers), or after `primer_timeout_s`; connections not opened
    // by then are left out (a full pool and backlog would only time them out). A primer request
    // still unanswered when the load starts is not measured when answered (its connection joins
    // the load then; until it does, it is starved), and its time-out runs from the load's start.
    bool primer = true;
    double primer_stall_s = 2.0;
    double primer_timeout_s = 30.0;
    double request_timeout_s = 10.0;  // an answer not complete by then is a `timeout` error
    const std::atomic<bool>* stop = nullptr;  // set from outside (Ctrl-C): end as soon as possible
};

// One second of the measured window (the last may be shorter: `length_s`).
struct SecondStats {
    double t_s = 0;          // end of this second, from the window's start
    double length_s = 0;
    uint64_t requests = 0;   // answers completed in it
    uint64_t errors = 0;
    uint64_t sent = 0;       // requests sent in it
    double p99_us = 0;       // of the answers completed in it (open loop: corrected latency)
};

// What became of the idle connections.
struct IdleResult {
    int requested = 0;
    int established = 0;     // connected and answered their first request
    int lost_while_idle = 0; // closed or reset by the server while idle
    int answered_at_end = 0; // answered the request made at the end
    int dropped = 0;         // established but not answered at the end (lost, reset, timed out)
};

// How the primer ended: every connection answered once, or not.
struct PrimerResult {
    int connections = 0;     // active keep-alive connections established
    int answered = 0;        // of them, answered once before the load started
    double seconds = 0;      // from the start of set-up to the last first answer (all: the ramp)
    std::string ended;       // "all", "stalled", "timeout" ("" without a primer)
    int not_opened = 0;      // connections (active and idle) never opened: the primer had ended
};

struct LoadResult {
    int connections_requested = 0;
    int connections_established = 0;
    int pipeline = 1;
    double offered_rps = 0;          // open loop: the rate asked for; 0 for closed loop
    uint64_t requests = 0;           // complete, correct answers inside the measured window
    uint64_t sent = 0;               // requests sent inside the measured window
    double measured_s = 0;           // actual length of the measured window
    // Closed loop: send of a request -> last byte of its answer. Open loop: intended send time ->
    // last byte (corrected for coordinated omission).
    Histogram latency;
    Histogram latency_uncorrected;   // open loop: actual send -> last byte; empty for closed loop
    // connect, reset, timeout, bad_status, bad_body, short_read (peer closed mid-answer),
    // closed (the peer closed a keep-alive connection with nothing in flight, or closed one in
    // set-up before its first answer: select past FD_SETSIZE); only kinds that occurred appear.
    std::map<std::string, uint64_t> errors;
    double client_cpu_s = 0;         // CPU time of the load threads during the measured window
    int client_threads = 0;
    // Fairness: answers completed in the window per connection slot (a slot keeps its count
    // across reconnects). A server that serves only some connections shows here even when no
    // request fails: the others simply wait.
    std::vector<uint32_t> per_connection;
    double oldest_pending_s = 0;     // the longest-waiting unanswered request at the window's end
    std::vector<SecondStats> series; // per second of the measured window
    IdleResult idle;
    PrimerResult primer;
    double setup_s = 0;              // connecting (and priming) before the load started
    bool interrupted = false;        // spec.stop was set
    std::string fatal;               // non-empty: the load could not run at all (why)
};

struct Fairness {
    uint64_t min = 0, median = 0, max = 0;
    int starved = 0;       // connections with no answer in the whole window
    double jain = 0;       // Jain's index: 1 = perfectly even, 1/n = one connection got all
};
Fairness fairness(const std::vector<uint32_t>& per_connection);

// The open-loop schedule: the intended send time of request `k` (0, 1, ...) of connection `i`
// of `connections`, at `rate` requests/s in total from `start_ns`. Connections take turns, so
// the stream of all intended times is evenly spaced 1/rate apart and each connection sends at
// rate/connections. The time does not depend on when anything was actually sent.
uint64_t intended_send_ns(uint64_t start_ns, double rate, int connections, int i, uint64_t k);

// Little's law for a closed loop: requests in flight = throughput x mean latency, which should
// be every established connection (within 20 %). Pipelined (P > 1, in batches): between C and
// C x P (within 20 %). ratio = in flight / (C x P).
struct LittleCheck {
    double in_flight = 0;
    double expected = 0;
    double ratio = 0;
    bool ok = false;       // within 20 %
};
LittleCheck little_law(double throughput_rps, double mean_latency_s, int connections, int pipeline);

// Runs warm-up then measurement. `on_measure_start` / `on_measure_end` are called on the calling
// thread at the window's edges (the runner marks its sampler there).
LoadResult run_load(const LoadSpec& spec, const std::function<void()>& on_measure_start = {},
                    const std::function<void()>& on_measure_end = {});

}  // namespace concbench
