// sampler: the Sampler thread over a server's process tree. The readings themselves
// (sample_tree, ctx_switches_tree, process_tree, ...) are per platform: platform_<system>.cpp.
#include "concbench/sampler.hpp"

#include <algorithm>
#include <utility>

namespace concbench {

namespace {

void update_peaks(SamplerSummary& sum, const TreeSample& s) {
    sum.pss_kib_peak = std::max(sum.pss_kib_peak, s.pss_kib);
    sum.rss_kib_peak = std::max(sum.rss_kib_peak, s.rss_kib);
    sum.threads_peak = std::max(sum.threads_peak, s.threads);
    sum.processes_peak = std::max(sum.processes_peak, s.processes);
    sum.fds_peak = std::max(sum.fds_peak, s.fds);
    sum.tcp_mem_kib_peak = std::max(sum.tcp_mem_kib_peak, s.tcp_mem_kib);
    sum.run_queue_peak = std::max(sum.run_queue_peak, s.run_queue);
}

// end - start, never negative: a tree's cumulative counters can shrink when a process or thread
// leaves it with its counts (see above); a negative "use" would be nonsense.
double pos_diff(double end, double start) { return end > start ? end - start : 0.0; }
uint64_t pos_diff(uint64_t end, uint64_t start) { return end > start ? end - start : 0; }

}  // namespace

Sampler::Sampler(pid_t root, std::chrono::milliseconds interval)
    : root_(root), interval_(interval.count() > 0 ? interval : std::chrono::milliseconds(1)) {
    samples_.reserve(1024);
    t0_ = std::chrono::steady_clock::now();
}

Sampler::~Sampler() { stop(); }

void Sampler::start() {
    std::lock_guard lk(mu_);
    if (running_ || thread_.joinable()) return;
    t0_ = std::chrono::steady_clock::now();
    running_ = true;
    thread_ = std::thread([this] { loop(); });
}

void Sampler::stop() {
    {
        std::lock_guard lk(mu_);
        running_ = false;
    }
    cv_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void Sampler::loop() {
    using clock = std::chrono::steady_clock;
    auto next = clock::now();
    std::unique_lock lk(mu_);
    while (running_) {
        lk.unlock();
        auto now = clock::now();
        TreeSample s = sample_tree(root_);   // read without the lock: marks are not blocked
        s.t_s = std::chrono::duration<double>(now - t0_).count();
        lk.lock();
        samples_.push_back(s);
        if (in_window_ && s.t_s >= at_start_.t_s) {   // a read begun before mark_start is outside
            ++sum_.samples;
            update_peaks(sum_, s);
            pss_acc_ += static_cast<double>(s.pss_kib);
            rss_acc_ += static_cast<double>(s.rss_kib);
            thr_acc_ += static_cast<double>(s.threads);
            proc_acc_ += static_cast<double>(s.processes);
            fds_acc_ += static_cast<double>(s.fds);
            rq_acc_ += static_cast<double>(s.run_queue);
        }
        // Deadlines advance by whole intervals from the first one, so slow reads do not make the
        // series drift; if a read overran whole intervals, those ticks are skipped, not bunched.
        next += interval_;
        now = clock::now();
        if (next <= now) next += ((now - next) / interval_ + 1) * interval_;
        cv_.wait_until(lk, next, [this] { return !running_; });
    }
}

void Sampler::mark_start() {
    auto now = std::chrono::steady_clock::now();
    TreeSample s = sample_tree(root_);
    CtxSwitches c = ctx_switches_tree(root_);
    std::lock_guard lk(mu_);
    s.t_s = std::chrono::duration<double>(now - t0_).count();
    at_start_ = s;
    ctx_start_ = c;
    sum_ = SamplerSummary{};
    pss_acc_ = rss_acc_ = thr_acc_ = proc_acc_ = fds_acc_ = rq_acc_ = 0;
    update_peaks(sum_, s);
    in_window_ = true;
    ended_ = false;
}

void Sampler::mark_end() {
    auto now = std::chrono::steady_clock::now();
    TreeSample s = sample_tree(root_);
    CtxSwitches c = ctx_switches_tree(root_);
    std::lock_guard lk(mu_);
    s.t_s = std::chrono::duration<double>(now - t0_).count();
    at_end_ = s;
    ctx_end_ = c;
    if (in_window_) update_peaks(sum_, s);
    in_window_ = false;
    ended_ = true;
}

SamplerSummary Sampler::summary() const {
    std::lock_guard lk(mu_);
    SamplerSummary r = sum_;
    if (!in_window_ && !ended_) return r;   // mark_start never called: no window, nothing measured
    if (r.samples > 0) {
        const double n = static_cast<double>(r.samples);
        r.pss_kib_mean = pss_acc_ / n;
        r.rss_kib_mean = rss_acc_ / n;
        r.threads_mean = thr_acc_ / n;
        r.processes_mean = proc_acc_ / n;
        r.fds_mean = fds_acc_ / n;
        r.run_queue_mean = rq_acc_ / n;
    } else {
        // Window shorter than one interval: the mean of the two mark readings.
        const TreeSample& e = ended_ ? at_end_ : at_start_;
        r.pss_kib_mean = (static_cast<double>(at_start_.pss_kib) + static_cast<double>(e.pss_kib)) / 2;
        r.rss_kib_mean = (static_cast<double>(at_start_.rss_kib) + static_cast<double>(e.rss_kib)) / 2;
        r.threads_mean = (static_cast<double>(at_start_.threads) + static_cast<double>(e.threads)) / 2;
        r.processes_mean = (static_cast<double>(at_start_.processes) + static_cast<double>(e.processes)) / 2;
        r.fds_mean = (static_cast<double>(at_start_.fds) + static_cast<double>(e.fds)) / 2;
        r.run_queue_mean = (static_cast<double>(at_start_.run_queue) + static_cast<double>(e.run_queue)) / 2;
    }
    // CPU is end - start. Without mark_end, the last tick after mark_start stands in for it;
    // context switches are only read at the marks, so they stay 0 then.
    const TreeSample* end = &at_start_;
    if (ended_) {
        end = &at_end_;
    } else if (!samples_.empty() && samples_.back().t_s >= at_start_.t_s) {
        end = &samples_.back();
    }
    r.cpu_user_s = pos_diff(end->cpu_user_s, at_start_.cpu_user_s);
    r.cpu_sys_s = pos_diff(end->cpu_sys_s, at_start_.cpu_sys_s);
    r.cpu_s = pos_diff(end->cpu_s, at_start_.cpu_s);
    if (ended_) {
        r.ctx_voluntary = pos_diff(ctx_end_.voluntary, ctx_start_.voluntary);
        r.ctx_involuntary = pos_diff(ctx_end_.involuntary, ctx_start_.involuntary);
    }
    return r;
}

std::vector<TreeSample> Sampler::samples() const {
    std::lock_guard lk(mu_);
    return samples_;
}

}  // namespace concbench
