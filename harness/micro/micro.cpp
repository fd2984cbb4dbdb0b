// The micro suite's shared helpers (micro.hpp).
#include "micro.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace concbench::micro {

bool pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;
}

int allowed_cpus() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return CPU_COUNT(&set);
}

int nth_allowed_cpu(int n) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &set) && seen++ == n) return cpu;
    return -1;
}

namespace {
uint64_t smaps_value(pid_t pid, const char* key) {
    std::string path = pid ? "/proc/" + std::to_string(pid) + "/smaps_rollup" : "/proc/self/smaps_rollup";
    std::ifstream in(path);
    std::string k;
    uint64_t v = 0;
    while (in >> k) {
        if (k == key) {
            in >> v;
            return v;
        }
        in.ignore(1 << 12, '\n');
    }
    return 0;
}
}  // namespace

uint64_t pss_kib(pid_t pid) { return smaps_value(pid, "Pss:"); }
uint64_t pss_anon_kib(pid_t pid) { return smaps_value(pid, "Pss_Anon:"); }

uint64_t open_fds(pid_t pid) {
    // Linux >= 6.2 reports the count of open fds as st_size of /proc/PID/fd.
    std::string path = pid ? "/proc/" + std::to_string(pid) + "/fd" : "/proc/self/fd";
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && st.st_size > 0) return static_cast<uint64_t>(st.st_size);
    uint64_t n = 0;   // older kernels: list the directory
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(path, ec); !ec && it != std::filesystem::directory_iterator();
         it.increment(ec))
        ++n;
    return n;
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace concbench::micro
