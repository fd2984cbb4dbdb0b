// interference: other work on a cell's CPUs (per-CPU times and a process scan, platform_<system>.cpp) and a probe of their
// speed. See interference.hpp for what is measured and why.
#include "concbench/interference.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace concbench {
namespace {

double clock_s(clockid_t clk) {
    timespec ts{};
    clock_gettime(clk, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace

std::map<int, CpuTimes> parse_proc_stat(const std::string& text, double hz) {
    std::map<int, CpuTimes> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        int cpu;
        unsigned long long v[8] = {};
        if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || !std::isdigit(static_cast<unsigned char>(line[3])))
            continue;  // not a CPU's line ("cpu  " is the sum of them all)
        if (std::sscanf(line.c_str(), "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2],
                        &v[3], &v[4], &v[5], &v[6], &v[7]) != 9)
            continue;
        out[cpu] = {v[0] / hz, v[1] / hz, v[2] / hz, v[3] / hz, v[4] / hz, v[5] / hz, v[6] / hz, v[7] / hz};
    }
    return out;
}

std::vector<ProcUse> cpu_between(const ProcScan& start, const ProcScan& end) {
    // What the children that vanished between the scans had used by the first one, per parent.
    std::map<pid_t, double> reaped_before;
    for (const auto& [pid, p] : start) {
        auto it = end.find(pid);
        if (it == end.end() || it->second.start != p.start) reaped_before[p.ppid] += p.self_s + p.children_s;
    }
    std::vector<ProcUse> out;
    for (const auto& [pid, p] : end) {
        auto it = start.find(pid);
        const bool same = it != start.end() && it->second.start == p.start;
        double used = same ? (p.self_s - it->second.self_s) + (p.children_s - it->second.children_s)
                           : p.self_s + p.children_s;  // born in the window: all of it
        if (auto r = reaped_before.find(pid); r != reaped_before.end()) used -= r->second;
        if (used > 1e-9) out.push_back({pid, p.comm, used});
    }
    std::sort(out.begin(), out.end(), [](const ProcUse& a, const ProcUse& b) { return a.cpu_s > b.cpu_s; });
    return out;
}

std::vector<pid_t> descendants(const ProcScan& scan, pid_t root) {
    std::vector<pid_t> out;
    if (!scan.count(root)) return out;
    std::multimap<pid_t, pid_t> children;
    for (const auto& [pid, p] : scan) children.emplace(p.ppid, pid);
    out.push_back(root);
    for (size_t i = 0; i < out.size(); ++i) {
        auto [lo, hi] = children.equal_range(out[i]);
        for (auto it = lo; it != hi; ++it)
            if (it->second != root) out.push_back(it->second);
    }
    return out;
}

double process_cpu_s() { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

// ---- the speed probe ----------------------------------------------------------------------------

struct SpeedProbe::Lane {
    int cpu;
    std::thread thread;
    clockid_t clock{};
    std::atomic<bool> has_clock{false};
    std::mutex mu;
    std::vector<double> samples;       // work times in the last window
    bool in_window = false;
    double base = 0;
};

namespace {

// The probe's work: integer arithmetic on registers, about 100 µs on a 2020s core. Its time in
// the thread's CPU clock excludes time other tasks had, but includes a slower or stolen CPU.
double probe_work_s() {
    thread_local volatile uint64_t sink = 0;  // one per lane: lanes run at once
    const double t0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    uint64_t x = sink;
    for (uint64_t i = 0; i < 250000; ++i) x = x * 6364136223846793005ull + i;
    sink = x;
    return clock_s(CLOCK_THREAD_CPUTIME_ID) - t0;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))];
}

}  // namespace

SpeedProbe::SpeedProbe(std::vector<int> cpus, std::chrono::milliseconds interval)
    : cpus_(std::move(cpus)), interval_ns_(long(interval.count()) * 1000000L) {
    std::sort(cpus_.begin(), cpus_.end());
    cpus_.erase(std::unique(cpus_.begin(), cpus_.end()), cpus_.end());
    for (int cpu : cpus_) {
        lanes_.push_back(std::make_unique<Lane>());
        lanes_.back()->cpu = cpu;
    }
    for (auto& l : lanes_) l->thread = std::thread([this, lane = l.get()] { run(*lane); });
}

SpeedProbe::~SpeedProbe() {
    stop_ = true;
    cv_.notify_all();
    for (auto& l : lanes_) l->thread.join();
}

void SpeedProbe::run(Lane& lane) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(lane.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) return;  // no such CPU: the lane stays empty
    if (pthread_getcpuclockid(pthread_self(), &lane.clock) == 0) lane.has_clock = true;
    std::unique_lock lk(mu_);
    while (!stop_) {
        cv_.wait_for(lk, std::chrono::nanoseconds(interval_ns_.load()), [this] { return stop_.load(); });
        if (stop_) break;
        lk.unlock();
        const double t = probe_work_s();
        {
            std::lock_guard g(lane.mu);
            if (lane.in_window) lane.samples.push_back(t);
        }
        lk.lock();
    }
}

void SpeedProbe::calibrate(double seconds, std::chrono::milliseconds fast) {
    const long normal = interval_ns_.exchange(long(fast.count()) * 1000000L);
    cv_.notify_all();
    mark_start();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    mark_end();
    interval_ns_ = normal;
}

void SpeedProbe::mark_start() {
    for (auto& l : lanes_) {
        std::lock_guard g(l->mu);
        l->samples.clear();
        l->in_window = true;
    }
}

void SpeedProbe::mark_end() {
    for (auto& l : lanes_) {
        std::lock_guard g(l->mu);
        l->in_window = false;
        // The base is the fastest the CPU was seen to be (the 10th percentile of a window, so one
        // lucky sample does not set it): a window faster than the rest check lowers it.
        if (l->samples.size() >= 5) {
            const double p10 = percentile(l->samples, 10);
            if (l->base <= 0 || p10 < l->base) l->base = p10;
        }
    }
}

double SpeedProbe::loss(int cpu) const {
    for (const auto& l : lanes_) {
        if (l->cpu != cpu) continue;
        std::lock_guard g(l->mu);
        if (l->samples.empty() || l->base <= 0) return -1;
        double sum = 0;  // each sample's share of speed lost, in [0, 1): one huge outlier counts as 1
        for (double t : l->samples) sum += std::max(0.0, 1.0 - l->base / t);
        return sum / double(l->samples.size());
    }
    return -1;
}

double SpeedProbe::median_loss(int cpu) const {
    for (const auto& l : lanes_) {
        if (l->cpu != cpu) continue;
        std::lock_guard g(l->mu);
        if (l->samples.empty() || l->base <= 0) return -1;
        return std::max(0.0, 1.0 - l->base / percentile(l->samples, 50));
    }
    return -1;
}

double SpeedProbe::thread_cpu_s(int cpu) const {
    for (const auto& l : lanes_)
        if (l->cpu == cpu) return l->has_clock ? clock_s(l->clock) : 0;
    return 0;
}

double SpeedProbe::base_s(int cpu) const {
    for (const auto& l : lanes_)
        if (l->cpu == cpu) {
            std::lock_guard g(l->mu);
            return l->base;
        }
    return 0;
}

int SpeedProbe::samples(int cpu) const {
    for (const auto& l : lanes_)
        if (l->cpu == cpu) {
            std::lock_guard g(l->mu);
            return int(l->samples.size());
        }
    return 0;
}

void SpeedProbe::set_base_s(int cpu, double s) {
    for (auto& l : lanes_)
        if (l->cpu == cpu) {
            std::lock_guard g(l->mu);
            l->base = s;
        }
}

// ---- a window's reading -------------------------------------------------------------------------

Mark take_mark() {
    Mark m;
    m.procs = scan_processes();
    m.stat = read_proc_stat();
    m.t = std::chrono::steady_clock::now();
    return m;
}

double others_of_ours_s(const Mark& start, const Mark& end, pid_t server_root) {
    const pid_t self = getpid();
    std::set<pid_t> server;
    for (const Mark* m : {&start, &end})
        for (pid_t p : descendants(m->procs, server_root)) server.insert(p);
    ProcScan a, b;
    for (const Mark* m : {&start, &end})
        for (pid_t p : descendants(m->procs, self)) {
            if (p == self || server.count(p)) continue;
            if (auto it = start.procs.find(p); it != start.procs.end()) a[p] = it->second;
            if (auto it = end.procs.find(p); it != end.procs.end()) b[p] = it->second;
        }
    double s = 0;
    for (const ProcUse& u : cpu_between(a, b)) s += u.cpu_s;
    return s;
}

Interference measure_at_rest(const std::vector<int>& server_cpus, const std::vector<int>& client_cpus,
                             SpeedProbe& probe, double seconds) {
    auto probe_on_server = [&] {
        double s = 0;
        for (int c : server_cpus) s += probe.thread_cpu_s(c);
        return s;
    };
    const Mark m0 = take_mark();
    const double self0 = process_cpu_s(), ps0 = probe_on_server();
    probe.calibrate(seconds);
    const Mark m1 = take_mark();
    const double ps = probe_on_server() - ps0;
    OwnUse own{ps, std::max(0.0, process_cpu_s() - self0 - ps)};
    return measure_interference(m0, m1, server_cpus, client_cpus, own, &probe);
}

Interference measure_interference(const Mark& start, const Mark& end, const std::vector<int>& server_cpus,
                                  const std::vector<int>& client_cpus, const OwnUse& own,
                                  const SpeedProbe* probe) {
    Interference r;
    const double w = std::max(1e-6, std::chrono::duration<double>(end.t - start.t).count());
    r.window_s = w;
    // Who is ours: this process and everything below it (servers, backend, external clients).
    std::set<pid_t> ours;
    for (const Mark* m : {&start, &end})
        for (pid_t p : descendants(m->procs, getpid())) ours.insert(p);
    // The kernel's softirq threads run network work that overflowed interrupt context: on
    // loopback that is the cell's own packets, so they are counted apart, not as other work.
    auto softirqd = [&](const ProcUse& u) {
        auto it = end.procs.find(u.pid);
        return it != end.procs.end() && it->second.kernel && u.comm.rfind("ksoftirqd/", 0) == 0;
    };
    std::vector<ProcUse> others, kernel_net;
    for (ProcUse& u : cpu_between(start.procs, end.procs))
        if (!ours.count(u.pid)) (softirqd(u) ? kernel_net : others).push_back(u);
    std::map<pid_t, std::vector<int>> allowed;  // only of the processes that used CPU
    for (const ProcUse& u : others) allowed[u.pid] = cpus_allowed(u.pid);
    for (const ProcUse& u : kernel_net) allowed[u.pid] = cpus_allowed(u.pid);
    auto runs_on = [&](pid_t pid, const std::vector<int>& cpus) {
        const auto& a = allowed[pid];
        return a.empty() || std::any_of(a.begin(), a.end(), [&](int c) {
                   return std::find(cpus.begin(), cpus.end(), c) != cpus.end();
               });
    };

    std::vector<int> all = server_cpus;
    all.insert(all.end(), client_cpus.begin(), client_cpus.end());
    std::sort(all.begin(), all.end());
    const bool shared = std::adjacent_find(all.begin(), all.end()) != all.end();
    auto read_role = [&](const std::vector<int>& cpus, double own_s) {
        RoleReading role;
        role.cpus = cpus;
        const double n = double(std::max<size_t>(1, cpus.size()));
        double busy = 0, steal = 0, irq = 0, softirq = 0;
        for (int c : cpus) {
            auto a = start.stat.find(c), b = end.stat.find(c);
            if (a == start.stat.end() || b == end.stat.end()) continue;
            const CpuTimes &x = a->second, &y = b->second;
            const double idle = (y.idle - x.idle) + (y.iowait - x.iowait), st = y.steal - x.steal;
            busy += std::clamp(w - idle - st, 0.0, w);
            steal += std::max(0.0, st);
            irq += std::max(0.0, y.irq - x.irq);
            softirq += std::max(0.0, y.softirq - x.softirq);
        }
        double seen = 0;  // other processes allowed on these CPUs; the largest of them named
        for (const ProcUse& u : others)
            if (runs_on(u.pid, cpus)) {
                seen += u.cpu_s;
                if (u.cpu_s > role.top_share * w) {
                    role.top_comm = u.comm;
                    role.top_share = u.cpu_s / w;
                }
            }
        double net = 0;
        for (const ProcUse& u : kernel_net)
            if (runs_on(u.pid, cpus)) net += u.cpu_s;
        role.softirqd = net / (w * n);
        role.busy = busy / (w * n);
        role.own = own_s / (w * n);
        role.unaccounted = std::max(0.0, busy - own_s - net) / (w * n);
        role.foreign = std::min(role.unaccounted, seen / (w * n));
        role.steal = steal / (w * n);
        role.irq = irq / (w * n);
        role.softirq = softirq / (w * n);
        if (probe) {
            double loss = 0;
            int k = 0;
            for (int c : cpus)
                if (double l = probe->loss(c); l >= 0) loss += l, ++k;
            role.slowdown = k ? loss / k : -1;
            double med = 0;
            k = 0;
            for (int c : cpus)
                if (double l = probe->median_loss(c); l >= 0) med += l, ++k;
            role.slowdown_median = k ? med / k : -1;
        }
        return role;
    };
    if (shared) {  // one set of CPUs for both: one reading of it all
        std::sort(all.begin(), all.end());
        all.erase(std::unique(all.begin(), all.end()), all.end());
        r.server = r.client = read_role(all, own.server_s + own.client_s);
    } else {
        r.server = read_role(server_cpus, own.server_s);
        r.client = read_role(client_cpus, own.client_s);
    }
    for (size_t i = 0; i < others.size() && i < 3; ++i) r.top.push_back(others[i]);
    return r;
}

std::string Interference::disturbed_by(double threshold, double slowdown_threshold) const {
    std::vector<std::string> why;
    auto check = [&](const char* role, const RoleReading& x) {
        const std::string cpus = fmt::format("{} CPU{} {}", role, x.cpus.size() > 1 ? "s" : "", fmt::join(x.cpus, ","));
        if (x.foreign > threshold) {
            std::string who;
            if (!x.top_comm.empty()) who = fmt::format(" ({} {:.0f} %)", x.top_comm, 100 * x.top_share);
            why.push_back(fmt::format("{}: {:.0f} % of a core to other processes{}", cpus, 100 * x.foreign, who));
        }
        if (x.steal > threshold)
            why.push_back(fmt::format("{}: {:.0f} % stolen by the hypervisor", cpus, 100 * x.steal));
        if (x.slowdown > slowdown_threshold)
            why.push_back(fmt::format("{}: ran {:.0f} % slower than at rest (host contention)", cpus,
                                      100 * x.slowdown));
    };
    check("server", server);
    if (client.cpus != server.cpus) check("client", client);
    return fmt::format("{}", fmt::join(why, "; "));
}

nlohmann::json Interference::to_json(double threshold, double slowdown_threshold) const {
    auto role = [](const RoleReading& x) {
        return nlohmann::json{{"cpus", x.cpus},         {"busy", x.busy},       {"own", x.own},
                               {"unaccounted", x.unaccounted}, {"foreign", x.foreign}, {"steal", x.steal},
                               {"slowdown", x.slowdown >= 0 ? nlohmann::json(x.slowdown) : nlohmann::json(nullptr)},
                               {"slowdown_median", x.slowdown_median >= 0 ? nlohmann::json(x.slowdown_median) : nlohmann::json(nullptr)},
                               {"irq", x.irq},          {"softirq", x.softirq}, {"softirqd", x.softirqd}};
    };
    nlohmann::json t = nlohmann::json::array();
    for (const ProcUse& u : top)
        t.push_back({{"pid", u.pid}, {"comm", u.comm}, {"cpu", u.cpu_s / std::max(1e-9, window_s)}});
    return {{"threshold", threshold}, {"slowdown_threshold", slowdown_threshold}, {"window_s", window_s},
            {"server", role(server)}, {"client", role(client)}, {"top", t}};
}

}  // namespace concbench
