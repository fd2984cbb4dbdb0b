// platform_darwin: process and machine readings on macOS from libproc (proc_pidinfo,
// proc_pid_rusage, proc_name, proc_pidpath), sysctl (kern.proc.all, machdep.cpu.brand_string,
// hw.memsize) and host_processor_info. NEVER COMPILED in the project's own checks (written from
// Apple's documented headers: libproc.h, sys/proc_info.h, sys/resource.h, mach/host_info.h).
//
// Not measured on macOS (platform::measures()): PSS (no proportional accounting exposed; RSS
// is read), machine TCP memory, the run queue, voluntary/involuntary context switches (the
// kernel counts only a total per task). Other users' processes deny proc_pid_rusage (EPERM):
// they count no CPU in the interference scan.
#include "platform.hpp"

#include <libproc.h>
#include <mach/mach.h>
#include <mach/mach_time.h>
#include <sys/proc_info.h>
#include <sys/resource.h>
#include <sys/sysctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "concbench/host.hpp"
#include "concbench/interference.hpp"
#include "concbench/sampler.hpp"

namespace concbench {
namespace {

// Every process (kern.proc.all); the list can grow between the size query and the read.
std::vector<kinfo_proc> all_procs() {
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_ALL, 0};
    for (int attempt = 0; attempt < 4; ++attempt) {
        size_t len = 0;
        if (sysctl(mib, 4, nullptr, &len, nullptr, 0) != 0) return {};
        std::vector<kinfo_proc> v(len / sizeof(kinfo_proc) + 16);
        len = v.size() * sizeof(kinfo_proc);
        if (sysctl(mib, 4, v.data(), &len, nullptr, 0) == 0) {
            v.resize(len / sizeof(kinfo_proc));
            return v;
        }
        if (errno != ENOMEM) return {};
    }
    return {};
}

// rusage_info times are mach absolute time units (nanoseconds on Intel, 125/3 ns on Apple
// silicon), despite the header's "nanoseconds".
double mach_to_s(uint64_t t) {
    static const double scale = [] {
        mach_timebase_info_data_t tb{};
        mach_timebase_info(&tb);
        return tb.denom ? double(tb.numer) / double(tb.denom) * 1e-9 : 1e-9;
    }();
    return double(t) * scale;
}

bool rusage_of(pid_t pid, rusage_info_v2& ri) {
    return proc_pid_rusage(pid, RUSAGE_INFO_V2, reinterpret_cast<rusage_info_t*>(&ri)) == 0;
}

}  // namespace

// ------------------------------------------------------------------ sampler.hpp: the tree

std::vector<pid_t> process_tree(pid_t root) {
    std::vector<pid_t> out;
    std::vector<std::pair<pid_t, pid_t>> edges;  // (ppid, pid)
    bool root_alive = false;
    for (const kinfo_proc& k : all_procs()) {
        if (k.kp_proc.p_pid == root && k.kp_proc.p_stat != SZOMB) root_alive = true;
        edges.emplace_back(k.kp_eproc.e_ppid, k.kp_proc.p_pid);
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
uint64_t run_queue() { return 0; }    // not measured (measures().run_queue is false)

TreeSample sample_tree(pid_t root) {
    TreeSample s;
    for (pid_t pid : process_tree(root)) {
        proc_taskinfo ti{};
        if (proc_pidinfo(pid, PROC_PIDTASKINFO, 0, &ti, sizeof ti) != int(sizeof ti)) continue;  // gone
        rusage_info_v2 ri{};
        const bool ru = rusage_of(pid, ri);
        // Like Linux's utime + cutime: the process's own CPU plus that of the children it reaped.
        const double user = mach_to_s(ti.pti_total_user) + (ru ? mach_to_s(ri.ri_child_user_time) : 0);
        const double sys = mach_to_s(ti.pti_total_system) + (ru ? mach_to_s(ri.ri_child_system_time) : 0);
        s.cpu_user_s += user;
        s.cpu_sys_s += sys;
        s.cpu_s += user + sys;
        s.rss_kib += ti.pti_resident_size / 1024;
        s.threads += static_cast<uint64_t>(ti.pti_threadnum);
        s.processes += 1;
        s.fds += platform::open_fds(pid).size();
    }
    return s;
}

CtxSwitches ctx_switches_tree(pid_t) { return {}; }  // not measured (only a total per task)

// --------------------------------------------------------- host.hpp: process-group scan

int live_processes_in_group(pid_t pgid) {
    int n = 0;
    for (const kinfo_proc& k : all_procs())
        if (k.kp_eproc.e_pgid == pgid && k.kp_proc.p_stat != SZOMB) ++n;
    return n;
}

// ------------------------------------------------- interference.hpp: CPUs and processes

std::map<int, CpuTimes> read_proc_stat() {
    std::map<int, CpuTimes> out;
    natural_t cpus = 0;
    processor_info_array_t info = nullptr;
    mach_msg_type_number_t count = 0;
    if (host_processor_info(mach_host_self(), PROCESSOR_CPU_LOAD_INFO, &cpus, &info, &count) != KERN_SUCCESS)
        return out;
    const double hz = [] { long t = sysconf(_SC_CLK_TCK); return t > 0 ? double(t) : 100.0; }();
    auto* load = reinterpret_cast<processor_cpu_load_info_t>(info);
    for (natural_t i = 0; i < cpus; ++i) {
        CpuTimes t;
        t.user = load[i].cpu_ticks[CPU_STATE_USER] / hz;
        t.nice = load[i].cpu_ticks[CPU_STATE_NICE] / hz;
        t.system = load[i].cpu_ticks[CPU_STATE_SYSTEM] / hz;
        t.idle = load[i].cpu_ticks[CPU_STATE_IDLE] / hz;
        out[int(i)] = t;
    }
    vm_deallocate(mach_task_self(), reinterpret_cast<vm_address_t>(info), count * sizeof(integer_t));
    return out;
}

ProcScan scan_processes() {
    ProcScan out;
    for (const kinfo_proc& k : all_procs()) {
        const pid_t pid = k.kp_proc.p_pid;
        ProcCpu p;
        p.ppid = k.kp_eproc.e_ppid;
        p.comm = k.kp_proc.p_comm;
        p.kernel = pid == 0;  // kernel_task
        p.start = static_cast<unsigned long long>(k.kp_proc.p_starttime.tv_sec) * 1000000ULL +
                  static_cast<unsigned long long>(k.kp_proc.p_starttime.tv_usec);
        rusage_info_v2 ri{};
        if (rusage_of(pid, ri)) {
            p.self_s = mach_to_s(ri.ri_user_time + ri.ri_system_time);
            p.children_s = mach_to_s(ri.ri_child_user_time + ri.ri_child_system_time);
        }
        out[pid] = std::move(p);
    }
    return out;
}

// macOS has no CPU affinity: every CPU is allowed.
std::vector<int> cpus_allowed(pid_t) {
    std::vector<int> out;
    int n = 0;
    size_t len = sizeof n;
    if (sysctlbyname("hw.logicalcpu", &n, &len, nullptr, 0) != 0) return out;
    for (int i = 0; i < n; ++i) out.push_back(i);
    return out;
}

// ------------------------------------------------------------------------ platform.hpp
namespace platform {

const char* name() { return "darwin"; }

const Measures& measures() {
    static const Measures m{false, false, false, false};
    return m;
}

bool alive(pid_t pid) {
    for (const kinfo_proc& k : all_procs())
        if (k.kp_proc.p_pid == pid) return k.kp_proc.p_stat != SZOMB;
    return false;
}

std::string comm(pid_t pid) {
    char buf[2 * MAXCOMLEN + 1] = {};
    return proc_name(pid, buf, sizeof buf) > 0 ? std::string(buf) : std::string();
}

std::vector<int> open_fds(pid_t pid) {
    std::vector<int> fds;
    int bytes = proc_pidinfo(pid, PROC_PIDLISTFDS, 0, nullptr, 0);
    if (bytes <= 0) return fds;
    std::vector<proc_fdinfo> v(static_cast<size_t>(bytes) / sizeof(proc_fdinfo) + 16);
    bytes = proc_pidinfo(pid, PROC_PIDLISTFDS, 0, v.data(), int(v.size() * sizeof(proc_fdinfo)));
    if (bytes <= 0) return fds;
    for (size_t i = 0; i < static_cast<size_t>(bytes) / sizeof(proc_fdinfo); ++i) fds.push_back(v[i].proc_fd);
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

std::string cpu_model() { return sysctl_string("machdep.cpu.brand_string"); }

long long memory_kib() {
    uint64_t bytes = 0;
    size_t len = sizeof bytes;
    return sysctlbyname("hw.memsize", &bytes, &len, nullptr, 0) == 0 ? static_cast<long long>(bytes / 1024) : 0;
}

std::string os_name() {
    std::string v = sysctl_string("kern.osproductversion");
    return v.empty() ? "macOS" : "macOS " + v;
}

std::string self_exe() {
    char buf[PROC_PIDPATHINFO_MAXSIZE] = {};
    return proc_pidpath(getpid(), buf, sizeof buf) > 0 ? std::string(buf) : std::string();
}

}  // namespace platform
}  // namespace concbench
