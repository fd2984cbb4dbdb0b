// sampler: resource accounting of a server's whole process tree (root and every descendant),
// read from /proc every interval on its own thread.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace concbench {

// One reading of the tree at one instant.
struct TreeSample {
    double t_s = 0;               // seconds since the sampler started
    uint64_t rss_kib = 0;         // summed over processes (counts shared pages many times)
    uint64_t pss_kib = 0;         // summed over processes: the honest memory of the tree
    // Its anonymous part (heap, stacks, buffers): unlike file-backed pages, whose share moves
    // when other processes map the same libraries, it changes only with the tree's own memory.
    uint64_t pss_anon_kib = 0;
    uint64_t threads = 0;         // summed over processes
    uint64_t processes = 0;
    uint64_t fds = 0;             // open fds summed over processes
    double cpu_user_s = 0;        // cumulative, live processes + children the tree reaped
    double cpu_sys_s = 0;
    double cpu_s = 0;             // cumulative, nanosecond-precise: live processes' CPU clocks
                                  // (clock_getcpuclockid) + reaped children's ticks
    uint64_t tcp_mem_kib = 0;     // /proc/net/sockstat TCP mem (whole machine: client + server)
    uint64_t run_queue = 0;       // runnable tasks on the whole machine (/proc/loadavg)
};

// Context switches summed over every thread of every process of the tree.
struct CtxSwitches {
    uint64_t voluntary = 0;
    uint64_t involuntary = 0;
};

// Reads the tree once (no thread). Exposed for tests and one-off readings.
TreeSample sample_tree(pid_t root);
CtxSwitches ctx_switches_tree(pid_t root);
std::vector<pid_t> process_tree(pid_t root);   // root first, then descendants
uint64_t tcp_mem_kib();                         // from /proc/net/sockstat
uint64_t run_queue();                           // runnable tasks now, machine-wide (/proc/loadavg)

struct SamplerSummary {
    uint64_t samples = 0;
    uint64_t pss_kib_peak = 0, rss_kib_peak = 0, threads_peak = 0, processes_peak = 0, fds_peak = 0;
    double pss_kib_mean = 0, rss_kib_mean = 0, threads_mean = 0, processes_mean = 0, fds_mean = 0;
    uint64_t tcp_mem_kib_peak = 0;
    uint64_t run_queue_peak = 0;
    double run_queue_mean = 0;
    double cpu_user_s = 0, cpu_sys_s = 0;   // used inside the window [mark_start, mark_end] (ticks)
    double cpu_s = 0;                       // the same total, precise (use this per request)
    uint64_t ctx_voluntary = 0, ctx_involuntary = 0;  // inside the window
};

class Sampler {
public:
    explicit Sampler(pid_t root, std::chrono::milliseconds interval = std::chrono::milliseconds(100));
    ~Sampler();                    // stops the thread
    void start();
    // The measured window: peaks/means cover samples inside it; CPU and context switches are
    // differences between readings taken exactly at these calls.
    void mark_start();
    void mark_end();
    void stop();
    SamplerSummary summary() const;
    std::vector<TreeSample> samples() const;  // the time series, whole run

private:
    void loop();
    pid_t root_;
    std::chrono::milliseconds interval_;
    std::thread thread_;
    std::atomic<bool> running_{false};
    mutable std::mutex mu_;
    std::condition_variable cv_;  // wakes the sampler thread early on stop()
    bool ended_ = false;          // mark_end() was called
    std::vector<TreeSample> samples_;
    bool in_window_ = false;
    TreeSample at_start_{}, at_end_{};
    CtxSwitches ctx_start_{}, ctx_end_{};
    SamplerSummary sum_{};
    double pss_acc_ = 0, rss_acc_ = 0, thr_acc_ = 0, proc_acc_ = 0, fds_acc_ = 0, rq_acc_ = 0;
    std::chrono::steady_clock::time_point t0_;
};

}  // namespace concbench
