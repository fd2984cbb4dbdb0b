// platform_freebsd: process and machine readings on FreeBSD from sysctl (kern.proc.proc
// kinfo_proc, kern.cp_times, kern.clockrate, vm.vmtotal, hw.model, hw.physmem) and libutil's
// kinfo_getfile. NEVER COMPILED in the project's own checks (written from FreeBSD's documented
// headers: sys/user.h, libutil.h, sys/resource.h, sys/vmmeter.h, sys/cpuset.h).
//
// Not measured on FreeBSD (platform::measures()): PSS (RSS is read), machine TCP memory.
#include "platform.hpp"

#include <sys/param.h>
#include <sys/cpuset.h>
#include <sys/resource.h>
#include <sys/sysctl.h>
#include <sys/time.h>
#include <sys/user.h>
#include <sys/vmmeter.h>
#include <libutil.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <utility>

#include "concbench/host.hpp"
#include "concbench/interference.hpp"
#include "concbench/sampler.hpp"

namespace concbench {
namespace {

// kern.proc.proc: one kinfo_proc per process (threads summed), or one pid's with KERN_PROC_PID.
std::vector<kinfo_proc> procs(int op, int arg) {
    int mib[4] = {CTL_KERN, KERN_PROC, op, arg};
    const u_int n = op == KERN_PROC_PROC ? 3 : 4;  // KERN_PROC_PROC takes no argument
    for (int attempt = 0; attempt < 4; ++attempt) {
        size_t len = 0;
        if (sysctl(mib, n, nullptr, &len, nullptr, 0) != 0) return {};
        std::vector<kinfo_proc> v(len / sizeof(kinfo_proc) + 16);
        len = v.size() * sizeof(kinfo_proc);
        if (sysctl(mib, n, v.data(), &len, nullptr, 0) == 0) {
            v.resize(len / sizeof(kinfo_proc));
            return v;
        }
        if (errno != ENOMEM) return {};
    }
    return {};
}

double tv_s(const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; }

uint64_t page_kib() {
    static const uint64_t k = static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) / 1024;
    return k;
}

}  // namespace

// ------------------------------------------------------------------ sampler.hpp: the tree

std::vector<pid_t> process_tree(pid_t root) {
    std::vector<pid_t> out;
    std::vector<std::pair<pid_t, pid_t>> edges;  // (ppid, pid)
    bool root_alive = false;
    for (const kinfo_proc& k : procs(KERN_PROC_PROC, 0)) {
        if (k.ki_pid == root && k.ki_stat != SZOMB) root_alive = true;
        edges.emplace_back(k.ki_ppid, k.ki_pid);
    }
    if (!root_alive) return out;
    std::sort(edges.begin(), edges.end());
    out.push_back(root);
    for (size_t i = 0; i < out.size(); ++i) {
        auto lo = std::lower_bound(edges.begin(), edges.end(), std::make_pair(out[i], pid_t{0}));
        for (auto it = lo; it != edges.end() && it->first == out[i]; ++it)
            if (it->second != root) out.push_back(it->second);
    }
    return out;
}

uint64_t tcp_mem_kib() { return 0; }  // not measured (measures().tcp_mem is false)

uint64_t run_queue() {
    vmtotal t{};
    size_t len = sizeof t;
    return sysctlbyname("vm.vmtotal", &t, &len, nullptr, 0) == 0 ? static_cast<uint64_t>(t.t_rq) : 0;
}

TreeSample sample_tree(pid_t root) {
    TreeSample s;
    for (pid_t pid : process_tree(root)) {
        std::vector<kinfo_proc> k = procs(KERN_PROC_PID, pid);
        if (k.empty() || k[0].ki_stat == SZOMB) continue;  // gone
        const kinfo_proc& p = k[0];
        // Own CPU plus the children it reaped (Linux's utime + cutime).
        const double user = tv_s(p.ki_rusage.ru_utime) + tv_s(p.ki_rusage_ch.ru_utime);
        const double sys = tv_s(p.ki_rusage.ru_stime) + tv_s(p.ki_rusage_ch.ru_stime);
        s.cpu_user_s += user;
        s.cpu_sys_s += sys;
        // ki_runtime: the process's scheduled time in microseconds, finer than the tick split.
        s.cpu_s += double(p.ki_runtime) * 1e-6 + tv_s(p.ki_rusage_ch.ru_utime) + tv_s(p.ki_rusage_ch.ru_stime);
        s.rss_kib += static_cast<uint64_t>(p.ki_rssize) * page_kib();
        s.threads += static_cast<uint64_t>(p.ki_numthreads);
        s.processes += 1;
        s.fds += platform::open_fds(pid).size();
    }
    s.run_queue = run_queue();
    return s;
}

CtxSwitches ctx_switches_tree(pid_t root) {
    CtxSwitches c;
    for (pid_t pid : process_tree(root)) {
        std::vector<kinfo_proc> k = procs(KERN_PROC_PID, pid);
        if (k.empty()) continue;
        c.voluntary += static_cast<uint64_t>(k[0].ki_rusage.ru_nvcsw);
        c.involuntary += static_cast<uint64_t>(k[0].ki_rusage.ru_nivcsw);
    }
    return c;
}

// --------------------------------------------------------- host.hpp: process-group scan

int live_processes_in_group(pid_t pgid) {
    std::vector<kinfo_proc> v = procs(KERN_PROC_PGRP, pgid);
    return static_cast<int>(std::count_if(v.begin(), v.end(), [](const kinfo_proc& k) { return k.ki_stat != SZOMB; }));
}

// ------------------------------------------------- interference.hpp: CPUs and processes

std::map<int, CpuTimes> read_proc_stat() {
    std::map<int, CpuTimes> out;
    size_t len = 0;
    if (sysctlbyname("kern.cp_times", nullptr, &len, nullptr, 0) != 0) return out;
    std::vector<long> v(len / sizeof(long));
    if (sysctlbyname("kern.cp_times", v.data(), &len, nullptr, 0) != 0) return out;
    clockinfo ci{};
    size_t cl = sizeof ci;
    const double hz = sysctlbyname("kern.clockrate", &ci, &cl, nullptr, 0) == 0 && ci.stathz > 0
                          ? double(ci.stathz) : double(ci.hz > 0 ? ci.hz : 128);
    for (size_t cpu = 0; (cpu + 1) * CPUSTATES <= v.size(); ++cpu) {
        const long* t = &v[cpu * CPUSTATES];
        CpuTimes c;
        c.user = t[CP_USER] / hz;
        c.nice = t[CP_NICE] / hz;
        c.system = t[CP_SYS] / hz;
        c.irq = t[CP_INTR] / hz;
        c.idle = t[CP_IDLE] / hz;
        out[int(cpu)] = c;
    }
    return out;
}

ProcScan scan_processes() {
    ProcScan out;
    for (const kinfo_proc& k : procs(KERN_PROC_PROC, 0)) {
        ProcCpu p;
        p.ppid = k.ki_ppid;
        p.comm = k.ki_comm;
        p.kernel = (k.ki_flag & P_SYSTEM) != 0;
        p.start = static_cast<unsigned long long>(k.ki_start.tv_sec) * 1000000ULL +
                  static_cast<unsigned long long>(k.ki_start.tv_usec);
        p.self_s = tv_s(k.ki_rusage.ru_utime) + tv_s(k.ki_rusage.ru_stime);
        p.children_s = tv_s(k.ki_rusage_ch.ru_utime) + tv_s(k.ki_rusage_ch.ru_stime);
        out[k.ki_pid] = std::move(p);
    }
    return out;
}

std::vector<int> cpus_allowed(pid_t pid) {
    std::vector<int> out;
    cpuset_t mask;
    CPU_ZERO(&mask);
    if (cpuset_getaffinity(CPU_LEVEL_WHICH, CPU_WHICH_PID, pid, sizeof mask, &mask) != 0) return out;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &mask)) out.push_back(c);
    return out;
}

// ------------------------------------------------------------------------ platform.hpp
namespace platform {

const char* name() { return "freebsd"; }

const Measures& measures() {
    static const Measures m{false, false, true, true};
    return m;
}

bool alive(pid_t pid) {
    std::vector<kinfo_proc> k = procs(KERN_PROC_PID, pid);
    return !k.empty() && k[0].ki_stat != SZOMB;
}

std::string comm(pid_t pid) {
    std::vector<kinfo_proc> k = procs(KERN_PROC_PID, pid);
    return k.empty() ? std::string() : std::string(k[0].ki_comm);
}

std::vector<int> open_fds(pid_t pid) {
    std::vector<int> fds;
    int n = 0;
    kinfo_file* f = kinfo_getfile(pid, &n);
    if (!f) return fds;
    for (int i = 0; i < n; ++i)
        if (f[i].kf_fd >= 0) fds.push_back(f[i].kf_fd);  // negative: cwd, root, text, ...
    std::free(f);
    std::sort(fds.begin(), fds.end());
    return fds;
}

namespace {
std::string sysctl_string(const char* name) {
    char buf[256] = {};
    size_t len = sizeof buf - 1;
    return sysctlbyname(name, buf, &len, nullptr, 0) == 0 ? std::string(buf) : std::string();
}
}  // namespace

std::string cpu_model() { return sysctl_string("hw.model"); }

long long memory_kib() {
    unsigned long bytes = 0;
    size_t len = sizeof bytes;
    return sysctlbyname("hw.physmem", &bytes, &len, nullptr, 0) == 0 ? static_cast<long long>(bytes / 1024) : 0;
}

std::string os_name() { return sysctl_string("kern.ostype") + " " + sysctl_string("kern.osrelease"); }

std::string self_exe() {
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PATHNAME, -1};
    char buf[PATH_MAX] = {};
    size_t len = sizeof buf;
    return sysctl(mib, 4, buf, &len, nullptr, 0) == 0 ? std::string(buf) : std::string();
}

}  // namespace platform
}  // namespace concbench
