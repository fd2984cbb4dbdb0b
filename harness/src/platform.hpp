// platform: what the harness reads from the OS about processes and the machine. One file per
// system defines these names and also the OS-reading functions declared elsewhere
// (sampler.hpp: sample_tree, ctx_switches_tree, process_tree, tcp_mem_kib, run_queue;
// host.hpp: live_processes_in_group; interference.hpp: read_proc_stat, scan_processes,
// cpus_allowed):
//   platform_linux.cpp   /proc (the reference: every metric)
//   platform_darwin.cpp  libproc (proc_pidinfo, proc_pid_rusage) + sysctl   (never compiled here)
//   platform_freebsd.cpp sysctl kern.proc (kinfo_proc) + libutil kinfo_getfile (never compiled here)
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace concbench::platform {

const char* name();  // "linux", "darwin", "freebsd"

// Which readings mean something here. A metric a platform cannot give is written as null
// ("not measured on this platform") in results, never as 0.
struct Measures {
    bool pss;           // TreeSample::pss_kib / pss_anon_kib (proportional set size)
    bool tcp_mem;       // TreeSample::tcp_mem_kib (machine-wide TCP buffer memory)
    bool ctx_switches;  // ctx_switches_tree
    bool run_queue;     // TreeSample::run_queue
};
const Measures& measures();

bool alive(pid_t pid);                // exists and is not a zombie
std::string comm(pid_t pid);          // short command name; "" if gone
std::vector<int> open_fds(pid_t pid); // sorted fd numbers; empty if gone
std::string cpu_model();
long long memory_kib();               // physical memory of the machine
std::string os_name();                // "Debian GNU/Linux 12 (bookworm)", "macOS 14.4", ...
std::string self_exe();               // absolute path of the running executable; "" if unknown

}  // namespace concbench::platform
