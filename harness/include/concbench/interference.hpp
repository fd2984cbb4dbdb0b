// interference: how much of a cell's CPUs went to anything but the cell, and how fast those CPUs
// ran compared with the machine at rest. Two things disturb a measurement on a shared machine:
// - other work on the same CPUs: per-CPU time from /proc/stat (busy = wall − idle − iowait −
//   steal, precise on a tickless kernel) less what the cell's own processes used; bounded by the
//   CPU that other processes were seen to use (a process scan at the window's edges), so that
//   kernel work done on the cell's behalf (idle exits, interrupts) is not mistaken for them;
// - a slowed CPU: a hypervisor giving the vCPU to someone else, or a busy SMT sibling, shows in
//   /proc/stat only as `steal` when the hypervisor reports it (many do not). A probe thread per
//   CPU times a fixed piece of work in its own CPU time every 100 ms (about 100 µs of work, 0.1 %
//   of the CPU); the mean share of its speed lost against the machine at rest is the `slowdown`.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace concbench {

// One CPU's times from /proc/stat, in seconds.
struct CpuTimes {
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
};
// The per-CPU lines of /proc/stat's text (`ticks_per_s`: USER_HZ). Lines it cannot read are skipped.
std::map<int, CpuTimes> parse_proc_stat(const std::string& text, double ticks_per_s);
std::map<int, CpuTimes> read_proc_stat();

// One process at one instant: CPU of its own threads (utime + stime) and of the children it has
// reaped (cutime + cstime), from /proc/PID/stat.
struct ProcCpu {
    pid_t ppid = 0;
    unsigned long long start = 0;  // starttime: tells a reused pid from the process seen before
    std::string comm;
    double self_s = 0, children_s = 0;
    bool kernel = false;           // a kernel thread
};
using ProcScan = std::map<pid_t, ProcCpu>;
ProcScan scan_processes();

struct ProcUse {
    pid_t pid = 0;
    std::string comm;
    double cpu_s = 0;
};
// The CPU each process of `end` used since `start`. A child reaped meanwhile adds its whole life
// to its parent's cutime; the part it had already used at `start` is taken off, so a long-lived
// child ending during the window is not charged to it. Largest first; zero uses left out.
std::vector<ProcUse> cpu_between(const ProcScan& start, const ProcScan& end);
// `root` and every descendant of it in the scan.
std::vector<pid_t> descendants(const ProcScan& scan, pid_t root);
// The CPUs a process may run on (Cpus_allowed_list); empty if unreadable.
std::vector<int> cpus_allowed(pid_t pid);

// A thread per CPU timing fixed work (in its own CPU time, so other tasks on the CPU do not
// count, but a slowed CPU does). `base_s` per CPU is the machine at rest (the 10th percentile of
// the rest check's samples, lowered by any faster window later).
class SpeedProbe {
public:
    explicit SpeedProbe(std::vector<int> cpus, std::chrono::milliseconds interval = std::chrono::milliseconds(100));
    ~SpeedProbe();
    const std::vector<int>& cpus() const { return cpus_; }
    // Samples every `fast` for `seconds`: sets each CPU's base on the first call, lowers it on
    // later ones when they ran faster (the rest check).
    void calibrate(double seconds, std::chrono::milliseconds fast = std::chrono::milliseconds(10));
    void mark_start();
    void mark_end();  // a window faster than the base lowers it (the base is the fastest seen)
    // Over the last window: the mean share of the CPU's at-rest speed lost (0 = as at rest);
    // -1 when the CPU had no sample in it.
    double loss(int cpu) const;
    double median_loss(int cpu) const;   // the same from the window's median sample
    double thread_cpu_s(int cpu) const;  // the probe thread's CPU so far (to count it as ours)
    double base_s(int cpu) const;
    int samples(int cpu) const;
    void set_base_s(int cpu, double s);  // tests

private:
    struct Lane;
    void run(Lane& lane);
    std::vector<int> cpus_;
    std::vector<std::unique_ptr<Lane>> lanes_;
    std::atomic<bool> stop_{false};
    std::atomic<long> interval_ns_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
};

// What the cell's CPUs did in its window, per role (server CPUs, client CPUs), as fractions of
// one core (averaged over the role's CPUs).
struct RoleReading {
    std::vector<int> cpus;
    double busy = 0;         // not idle, not waiting for IO, not stolen
    double own = 0;          // the cell's own processes (server tree; runner, client, backend)
    double unaccounted = 0;  // busy − own − softirqd
    double foreign = 0;      // other processes: min(unaccounted, what they were seen to use here)
    double steal = 0;        // taken by the hypervisor, as it reports it
    double slowdown = -1;    // speed lost against the machine at rest (-1: no probe sample)
    double slowdown_median = -1;  // the same from the median sample: interrupts that land on a few
                                  // samples move it less
    double irq = 0, softirq = 0;  // tick-sampled shares, for the record
    double softirqd = 0;     // the kernel's softirq threads (ksoftirqd): the cell's network work
    std::string top_comm;    // the other process that used most of these CPUs, and its share
    double top_share = 0;
};

struct Interference {
    double window_s = 0;
    RoleReading server, client;
    std::vector<ProcUse> top;   // other processes by CPU in the window (up to 3), cpu_s in seconds
    // "" when neither role passes a threshold; else which CPU, how much, and the top process.
    std::string disturbed_by(double threshold, double slowdown_threshold) const;
    nlohmann::json to_json(double threshold, double slowdown_threshold) const;
};

// One reading at one edge of a window.
struct Mark {
    std::chrono::steady_clock::time_point t;
    std::map<int, CpuTimes> stat;
    ProcScan procs;
};
Mark take_mark();

// Own CPU of the window, in seconds: the server tree's, and everything else of the runner's
// (its process and its other children: the backend) — found from the scans.
struct OwnUse {
    double server_s = 0;
    double client_s = 0;
};
Interference measure_interference(const Mark& start, const Mark& end, const std::vector<int>& server_cpus,
                                  const std::vector<int>& client_cpus, const OwnUse& own,
                                  const SpeedProbe* probe);
// CPU used between the marks by this process's descendants other than `server_root`'s tree
// (the fan-out backend, an external client), in seconds, from the scans.
double others_of_ours_s(const Mark& start, const Mark& end, pid_t server_root);

// The machine with no cell running, for `seconds`: what other processes use on the cell's CPUs,
// and the probe sampled fast (its base is set on the first call).
Interference measure_at_rest(const std::vector<int>& server_cpus, const std::vector<int>& client_cpus,
                             SpeedProbe& probe, double seconds);

double process_cpu_s();  // this process, all threads, nanosecond-precise

}  // namespace concbench
