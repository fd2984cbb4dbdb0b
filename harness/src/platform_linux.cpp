// platform_linux: process and machine readings from /proc (see platform.hpp).
//
// Everything on the sampler's path reads small /proc files with open/read into stack buffers (no
// iostreams) and reuses per-thread scratch vectors, so a tick allocates nothing once warmed up.
// Processes and threads that vanish between the directory scan and the read are normal (a fork
// server's children come and go): they are skipped silently.
#include "platform.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "concbench/host.hpp"
#include "concbench/interference.hpp"
#include "concbench/sampler.hpp"

namespace concbench {
namespace {

// Reads a whole (small) file relative to dirfd into buf, NUL-terminated. Returns the length or -1.
ssize_t read_at(int dirfd, const char* path, char* buf, size_t cap) {
    int fd = ::openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = ::read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            ::close(fd);
            return -1;
        }
        if (r == 0) break;
        n += static_cast<size_t>(r);
    }
    ::close(fd);
    buf[n] = '\0';
    return static_cast<ssize_t>(n);
}

// Calls fn(name) for every entry of an open directory except "." and "..", through getdents64
// into a stack buffer (opendir would malloc a 32 KiB buffer each time). Returns false on error.
template <class Fn>
bool for_each_entry(int dirfd, Fn&& fn) {
    alignas(8) char buf[8192];
    for (;;) {
        long n = ::syscall(SYS_getdents64, dirfd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (n == 0) return true;
        for (long off = 0; off < n;) {
            // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[]
            unsigned short reclen;
            std::memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char* name = buf + off + 19;
            if (!(name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))))
                fn(name);
            off += reclen;
        }
    }
}

// Parses a decimal pid from a directory name; 0 if the name is not all digits.
pid_t parse_pid(const char* s) {
    if (*s == '\0') return 0;
    long v = 0;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (*s - '0');
    }
    return static_cast<pid_t>(v);
}

// Reads the fields of /proc/PID/stat after the command name. comm may contain spaces and
// parentheses, so parsing starts after the LAST ')'. fields[0] is field 3 (state), so stat(5)
// field k is fields[k - 3]. Returns the number of fields parsed (numbers only; state is 0).
constexpr int kStatFields = 20;   // up to field 22 (starttime)
int parse_stat(const char* buf, size_t len, unsigned long long (&fields)[kStatFields]) {
    const char* p = static_cast<const char*>(::memrchr(buf, ')', len));
    if (!p) return 0;
    const char* end = buf + len;
    ++p;
    int i = 0;
    while (i < kStatFields && p < end) {
        while (p < end && *p == ' ') ++p;
        if (p >= end || *p == '\n') break;
        bool neg = false;
        if (*p == '-') { neg = true; ++p; }
        unsigned long long v = 0;
        while (p < end && *p >= '0' && *p <= '9') v = v * 10 + static_cast<unsigned>(*p++ - '0');
        while (p < end && *p != ' ' && *p != '\n') ++p;   // the state letter, or junk
        fields[i++] = neg ? 0 : v;
    }
    return i;
}

// Value of "Key:   N ..." in a /proc text file (key includes the colon); 0 if absent.
uint64_t find_value(const char* buf, const char* key) {
    size_t klen = std::strlen(key);
    for (const char* p = buf; p && *p;) {
        if (std::strncmp(p, key, klen) == 0) {
            p += klen;
            while (*p == ' ' || *p == '\t') ++p;
            uint64_t v = 0;
            while (*p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
            return v;
        }
        p = std::strchr(p, '\n');
        if (p) ++p;
    }
    return 0;
}

int open_pid_dir(pid_t pid) {
    char path[32];
    std::snprintf(path, sizeof path, "/proc/%d", static_cast<int>(pid));
    return ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

// Number of open fds of the process whose /proc dir is pid_dir. Since Linux 6.2 stat() of
// /proc/PID/fd reports the count as st_size, which is O(1) instead of O(fds); older kernels
// report 0 and we fall back to listing the directory.
uint64_t count_fds(int pid_dir) {
    struct stat st;
    if (::fstatat(pid_dir, "fd", &st, 0) == 0 && st.st_size > 0) return static_cast<uint64_t>(st.st_size);
    int fd = ::openat(pid_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t n = 0;
    for_each_entry(fd, [&](const char*) { ++n; });
    ::close(fd);
    return n;
}

double clock_ticks() {
    static const double hz = [] {
        long t = ::sysconf(_SC_CLK_TCK);
        return t > 0 ? static_cast<double>(t) : 100.0;
    }();
    return hz;
}

// Fills out with root and its descendants (root first), using scratch for the (ppid, pid) map.
void collect_tree(pid_t root, std::vector<pid_t>& out, std::vector<std::pair<pid_t, pid_t>>& scratch) {
    out.clear();
    scratch.clear();
    int proc = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (proc < 0) return;
    bool root_alive = false;
    for_each_entry(proc, [&](const char* name) {
        pid_t pid = parse_pid(name);
        if (pid <= 0) return;
        char path[32];
        std::snprintf(path, sizeof path, "%d/stat", static_cast<int>(pid));
        char buf[1024];
        ssize_t n = read_at(proc, path, buf, sizeof buf);
        if (n <= 0) return;   // vanished
        unsigned long long f[kStatFields];
        if (parse_stat(buf, static_cast<size_t>(n), f) < 2) return;
        if (pid == root) root_alive = true;
        scratch.emplace_back(static_cast<pid_t>(f[1]), pid);   // field 4: ppid
    });
    ::close(proc);
    if (!root_alive) return;
    // Sorted by ppid, each process's children are one equal range: the walk is O(n log n) even
    // for a fork server with ten thousand children.
    std::sort(scratch.begin(), scratch.end());
    out.push_back(root);
    for (size_t i = 0; i < out.size(); ++i) {
        auto lo = std::lower_bound(scratch.begin(), scratch.end(), std::make_pair(out[i], pid_t{0}));
        for (auto it = lo; it != scratch.end() && it->first == out[i]; ++it)
            if (it->second != root) out.push_back(it->second);   // guard against cycles
    }
}

double ticks_per_s() { return clock_ticks(); }

bool read_small(const std::string& path, std::string& out) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    out.clear();
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
    close(fd);
    return !out.empty();
}

thread_local std::vector<pid_t> tl_pids;
thread_local std::vector<std::pair<pid_t, pid_t>> tl_scratch;

}  // namespace

// ------------------------------------------------------------------ sampler.hpp: the tree


std::vector<pid_t> process_tree(pid_t root) {
    std::vector<pid_t> out;
    collect_tree(root, out, tl_scratch);
    return out;
}

uint64_t tcp_mem_kib() {
    // "TCP: inuse N orphan N tw N alloc N mem N", mem in pages. This is machine-wide (every
    // TCP socket, so on loopback both the client's and the server's buffers), not the tree's.
    char buf[1024];
    if (read_at(AT_FDCWD, "/proc/net/sockstat", buf, sizeof buf) <= 0) return 0;
    const char* line = std::strstr(buf, "TCP:");
    if (!line) return 0;
    const char* eol = std::strchr(line, '\n');
    const char* mem = std::strstr(line, " mem ");
    if (!mem || (eol && mem > eol)) return 0;
    uint64_t pages = std::strtoull(mem + 5, nullptr, 10);
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    return pages * page / 1024;
}

uint64_t run_queue() {
    // "0.52 0.58 0.59 3/467 12345": the 4th field is runnable/total scheduling entities; the
    // runnable count includes the reader itself.
    char buf[128];
    if (read_at(AT_FDCWD, "/proc/loadavg", buf, sizeof buf) <= 0) return 0;
    unsigned long long running = 0, total = 0;
    double a, b, c;
    if (std::sscanf(buf, "%lf %lf %lf %llu/%llu", &a, &b, &c, &running, &total) != 5) return 0;
    return running;
}

TreeSample sample_tree(pid_t root) {
    TreeSample s;
    collect_tree(root, tl_pids, tl_scratch);
    const double hz = clock_ticks();
    uint64_t ticks_user = 0, ticks_sys = 0;
    for (pid_t pid : tl_pids) {
        // One directory fd per process: every read below is of the same process instance even if
        // the pid were reused meanwhile, and fails cleanly once it is gone.
        int dir = open_pid_dir(pid);
        if (dir < 0) continue;
        char buf[4096];
        ssize_t n = read_at(dir, "stat", buf, sizeof buf);
        unsigned long long f[kStatFields];
        if (n <= 0 || parse_stat(buf, static_cast<size_t>(n), f) < kStatFields) {
            ::close(dir);
            continue;
        }
        // utime/stime (fields 14/15) plus cutime/cstime (16/17): the CPU of children this
        // process waited for. The root's cutime covers the children it reaped, so the fork
        // model's short-lived children are counted even though no tick ever saw them alive;
        // summing cutime over every live process of the tree extends that to grandchildren reaped
        // by a live child, without double counting (a reaped process is no longer listed).
        // Children that are never waited for (SIGCHLD ignored / SA_NOCLDWAIT) leave no trace.
        ticks_user += f[11] + f[13];
        ticks_sys += f[12] + f[14];
        // The process's CPU clock counts every thread, live or gone, to the nanosecond; ticks
        // (10 ms) would round a short or lightly loaded window to nothing.
        clockid_t clk;
        timespec ts;
        if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0)
            s.cpu_s += static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
        else
            s.cpu_s += static_cast<double>(f[11] + f[12]) / hz;
        s.cpu_s += static_cast<double>(f[13] + f[14]) / hz;
        s.threads += f[17];   // field 20: num_threads (same value as status "Threads:", one read less)
        s.processes += 1;
        // Pss/Rss of the whole address space, kernel-summed (Linux >= 4.14). A zombie or a
        // process exiting meanwhile reads empty: it then counts no memory.
        if (read_at(dir, "smaps_rollup", buf, sizeof buf) > 0) {
            s.rss_kib += find_value(buf, "Rss:");
            s.pss_kib += find_value(buf, "Pss:");
            s.pss_anon_kib += find_value(buf, "Pss_Anon:");
        }
        s.fds += count_fds(dir);
        ::close(dir);
    }
    s.cpu_user_s = static_cast<double>(ticks_user) / hz;
    s.cpu_sys_s = static_cast<double>(ticks_sys) / hz;
    s.tcp_mem_kib = tcp_mem_kib();
    s.run_queue = run_queue();
    return s;
}

CtxSwitches ctx_switches_tree(pid_t root) {
    // /proc/PID/status shows only the leader thread's counts, so every /proc/PID/task/TID/status
    // is read. Threads that exited (and reaped children) take their counts with them: the kernel
    // keeps those only for getrusage of the process itself. Costlier than a tick: read at marks.
    CtxSwitches c;
    std::vector<pid_t> pids;
    std::vector<std::pair<pid_t, pid_t>> scratch;
    collect_tree(root, pids, scratch);
    for (pid_t pid : pids) {
        int dir = open_pid_dir(pid);
        if (dir < 0) continue;
        int task = ::openat(dir, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ::close(dir);
        if (task < 0) continue;
        for_each_entry(task, [&](const char* tid) {
            if (parse_pid(tid) <= 0) return;
            char path[48];
            std::snprintf(path, sizeof path, "%s/status", tid);
            char buf[8192];
            if (read_at(task, path, buf, sizeof buf) <= 0) return;   // thread gone
            c.voluntary += find_value(buf, "voluntary_ctxt_switches:");
            c.involuntary += find_value(buf, "nonvoluntary_ctxt_switches:");
        });
        ::close(task);
    }
    return c;
}

// --------------------------------------------------------- host.hpp: process-group scan

int live_processes_in_group(pid_t pgid) {
    int n = 0;
    DIR* d = opendir("/proc");
    if (!d) return 0;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], buf[512];
        std::snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0) continue;
        buf[len] = '\0';
        const char* p = std::strrchr(buf, ')');  // comm may hold spaces and parentheses
        char state;
        int ppid, pgrp;
        if (p && std::sscanf(p + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid &&
            state != 'Z' && state != 'X')
            ++n;
    }
    closedir(d);
    return n;
}

// ------------------------------------------------- interference.hpp: CPUs and processes

std::map<int, CpuTimes> read_proc_stat() {
    std::string text;
    read_small("/proc/stat", text);
    return parse_proc_stat(text, ticks_per_s());
}

ProcScan scan_processes() {
    ProcScan out;
    DIR* d = opendir("/proc");
    if (!d) return out;
    const double hz = ticks_per_s();
    std::string buf;
    while (dirent* e = readdir(d)) {
        char* end;
        const long pid = std::strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        if (!read_small(fmt::format("/proc/{}/stat", pid), buf)) continue;  // gone meanwhile
        const auto open_paren = buf.find('('), close_paren = buf.rfind(')');
        if (open_paren == std::string::npos || close_paren == std::string::npos) continue;
        ProcCpu p;
        p.comm = buf.substr(open_paren + 1, close_paren - open_paren - 1);
        // Fields after the comm: state(3) ppid(4) ... flags(9) ... utime(14) stime(15) cutime(16)
        // cstime(17) ... starttime(22).
        std::istringstream f(buf.substr(close_paren + 2));
        std::vector<std::string> v;
        for (std::string x; f >> x && v.size() < 20;) v.push_back(x);
        if (v.size() < 20) continue;
        p.ppid = pid_t(std::stol(v[1]));
        p.kernel = std::stoul(v[6]) & 0x00200000;  // PF_KTHREAD
        p.self_s = (std::stod(v[11]) + std::stod(v[12])) / hz;
        p.children_s = (std::stod(v[13]) + std::stod(v[14])) / hz;
        p.start = std::stoull(v[19]);
        out[pid_t(pid)] = std::move(p);
    }
    closedir(d);
    return out;
}

std::vector<int> cpus_allowed(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    std::string line;
    std::vector<int> out;
    while (std::getline(in, line)) {
        if (line.rfind("Cpus_allowed_list:", 0) != 0) continue;
        std::istringstream ranges(line.substr(18));
        for (std::string r; std::getline(ranges, r, ',');) {
            int a, b;
            const int n = std::sscanf(r.c_str(), " %d-%d", &a, &b);
            if (n == 1) out.push_back(a);
            else if (n == 2)
                for (int c = a; c <= b; ++c) out.push_back(c);
        }
    }
    return out;
}


// ------------------------------------------------------------------------ platform.hpp
namespace platform {

const char* name() { return "linux"; }

const Measures& measures() {
    static const Measures m{true, true, true, true};
    return m;
}

bool alive(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string stat;
    if (!std::getline(in, stat)) return false;
    auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return false;
    char state = stat[close_paren + 2];
    return state != 'Z' && state != 'X';
}

std::string comm(pid_t pid) {
    std::string c;
    std::ifstream(fmt::format("/proc/{}/comm", pid)) >> c;
    return c;
}

std::vector<int> open_fds(pid_t pid) {
    std::vector<int> fds;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), ec))
        fds.push_back(std::atoi(e.path().filename().c_str()));
    std::sort(fds.begin(), fds.end());
    return fds;
}

namespace {
std::string first_match(const char* path, const char* key) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) {
            auto colon = line.find(':');
            auto v = line.substr(colon + 1);
            v.erase(0, v.find_first_not_of(" \t"));
            return v;
        }
    return "";
}
}  // namespace

std::string cpu_model() { return first_match("/proc/cpuinfo", "model name"); }

long long memory_kib() {
    std::string mem = first_match("/proc/meminfo", "MemTotal");
    return std::atoll(mem.c_str());
}

std::string os_name() {
    std::string os = first_match("/etc/os-release", "PRETTY_NAME");
    if (os.empty()) {
        std::ifstream in("/etc/os-release");
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("PRETTY_NAME=", 0) == 0) os = line.substr(12);
    }
    if (os.size() >= 2 && os.front() == '"') os = os.substr(1, os.size() - 2);
    return os;
}

std::string self_exe() {
    std::error_code ec;
    std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string() : exe.string();
}

}  // namespace platform
}  // namespace concbench
