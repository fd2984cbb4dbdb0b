// Shared by the micro suite's groups (one file per group: creation, switching, waiting, memory,
// latency): pinning, the process's PSS and fds, and the one-line skip of a row that cannot run.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

namespace concbench::micro {

// Pins the calling thread to one CPU; false (errno set) if the CPU is not ours to use.
bool pin_to_cpu(int cpu);

// The number of CPUs this process may run on (its affinity mask), and the n-th of them.
int allowed_cpus();
int nth_allowed_cpu(int n);

// Proportional set size and anonymous PSS of a process (0 = this one), KiB, from smaps_rollup.
uint64_t pss_kib(pid_t pid = 0);
uint64_t pss_anon_kib(pid_t pid = 0);

// Open fds of a process (0 = this one).
uint64_t open_fds(pid_t pid = 0);

// "what: strerror(errno)", for SkipWithError and the one-line notes on stderr.
std::string errno_text(const char* what);

}  // namespace concbench::micro

namespace concbench::micro {
// Adds to Google Benchmark's context block what the latency table is read against (cache sizes
// from CPUID where /sys has none). Defined in latency.cpp; main() calls it before the run.
void add_latency_context();
}  // namespace concbench::micro
