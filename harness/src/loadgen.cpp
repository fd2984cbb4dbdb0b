// loadgen: the client every cell is measured with — the calling thread: it checks the spec,
// starts the load threads (loadgen_worker.cpp), drives the phases and merges their results.
#include "concbench/loadgen.hpp"

#include <netdb.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>

#include "loadgen_worker.hpp"

namespace concbench {
namespace {

using namespace loadgen_detail;

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

// Waits for every thread to finish set-up, and ends the primer (and the idle connections' first
// requests) when first answers stall — none for primer_stall_s: a pool serving as many
// connections as it has workers — or at its time limit, noting why in `primer.ended`. False on
// the set-up deadline.
bool wait_setup(const LoadSpec& spec, Shared& sh, bool primer, double seconds, PrimerResult& out) {
    const uint64_t start = now_ns();
    const uint64_t deadline = start + seconds_to_ns(seconds);
    const uint64_t stall = seconds_to_ns(spec.primer_stall_s), limit = start + seconds_to_ns(spec.primer_timeout_s);
    while (sh.ready.load(std::memory_order_acquire) < spec.threads && !stop_requested(spec)) {
        const uint64_t now = now_ns();
        if (now > deadline) return false;
        if (primer && !sh.primer_over.load(std::memory_order_relaxed)) {
            const uint64_t last = std::max(start, sh.last_primed_ns.load(std::memory_order_relaxed));
            if (now >= limit || now >= last + stall) {
                out.ended = now >= limit ? "timeout" : "stalled";
                sh.primer_over.store(true, std::memory_order_release);
            }
        }
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
        errors[kClosed] += w->setup_closed;
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

    // Setup: every thread connects its share, idle connections make their first request, active
    // ones are primed (bounded by the time-outs; the extra margin only guards against a bug
    // turning into a hang).
    const bool primer = spec.primer && w->keep_alive;
    const double setup_limit = spec.connect_timeout_s + 5.0 +
                               (primer || spec.idle_connections > 0 ? spec.primer_timeout_s : 0.0) +
                               (spec.connections + spec.idle_connections) / 2000.0;
    const uint64_t setup_start = now_ns();
    const bool setup_ok = wait_setup(spec, sh, primer || spec.idle_connections > 0, setup_limit, r.primer);
    r.setup_s = double(now_ns() - setup_start) / 1e9;
    r.interrupted = stop_requested(spec);
    if (!setup_ok) r.fatal = "connection set-up did not finish within " + std::to_string(int(setup_limit)) + " s";
    int established = 0;
    std::string reason;
    for (const auto& wk : workers) {
        established += wk->established;
        if (!wk->connect_error.empty()) reason = wk->connect_error;
        if (!wk->fatal.empty() && r.fatal.empty()) r.fatal = wk->fatal;
    }
    if (primer) {
        r.primer.connections = established;
        r.primer.answered = std::min(established, sh.primed.load());
        const uint64_t last = sh.last_primed_ns.load();
        r.primer.seconds = last > setup_start ? double(last - setup_start) / 1e9 : 0.0;
        if (r.primer.ended.empty() || r.primer.answered >= established) r.primer.ended = "all";
    }
    for (const auto& wk : workers) r.primer.not_opened += wk->not_opened + wk->idle_not_opened;
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
