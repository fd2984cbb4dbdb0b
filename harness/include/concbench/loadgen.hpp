// loadgen: the client. C connections spread over T threads, each thread one epoll loop with
// non-blocking sockets. Closed loop: each connection sends its next request when the previous
// answer is complete. Every answer is checked against the workload; errors are counted by kind.
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
    int connections = 1;
    int threads = 1;
    std::vector<int> cpus;          // client threads pinned round-robin to these; empty: no pinning
    double warmup_s = 1.0;          // run but not recorded
    double duration_s = 5.0;        // measured
    double connect_timeout_s = 5.0;
    double request_timeout_s = 10.0;  // an answer not complete by then is a `timeout` error
    const std::atomic<bool>* stop = nullptr;  // set from outside (Ctrl-C): end as soon as possible
};

struct LoadResult {
    int connections_requested = 0;
    int connections_established = 0;
    uint64_t requests = 0;           // complete, correct answers inside the measured window
    double measured_s = 0;           // actual length of the measured window
    Histogram latency;               // send of a request -> last byte of its answer
    // connect, reset, timeout, bad_status, bad_body, short_read (peer closed mid-answer),
    // closed (peer closed an idle keep-alive connection); only kinds that occurred appear.
    std::map<std::string, uint64_t> errors;
    double client_cpu_s = 0;         // CPU time of the load threads during the measured window
    int client_threads = 0;
    // Fairness: answers completed in the window per connection slot (a slot keeps its count
    // across reconnects). A server that serves only some connections shows here even when no
    // request fails: the others simply wait.
    std::vector<uint32_t> per_connection;
    double oldest_pending_s = 0;     // the longest-waiting unanswered request at the window's end
    bool interrupted = false;        // spec.stop was set
    std::string fatal;               // non-empty: the load could not run at all (why)
};

struct Fairness {
    uint64_t min = 0, median = 0, max = 0;
    int starved = 0;       // connections with no answer in the whole window
    double jain = 0;       // Jain's index: 1 = perfectly even, 1/n = one connection got all
};
Fairness fairness(const std::vector<uint32_t>& per_connection);

// Runs warm-up then measurement. `on_measure_start` / `on_measure_end` are called on the calling
// thread at the window's edges (the runner marks its sampler there).
LoadResult run_load(const LoadSpec& spec, const std::function<void()>& on_measure_start = {},
                    const std::function<void()>& on_measure_end = {});

}  // namespace concbench
