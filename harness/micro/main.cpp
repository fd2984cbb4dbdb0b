// concbench-micro: the micro suite's Google Benchmark binary. Google Benchmark's own flags
// (--benchmark_filter, --benchmark_repetitions, --benchmark_out, ...) drive it; `concbench
// micro` runs it and keeps its JSON. This main adds to the JSON's context block what the
// groups' figures are read against: the clock measured here (cycles = ns x GHz), the kernel,
// and whether io_uring can be set up.
#include <liburing.h>
#include <sys/utsname.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include <benchmark/benchmark.h>

#include "micro.hpp"

namespace {

// The core clock, from a chain of dependent adds (one cycle each on every x86-64 core since
// the P6): what the CPU does, not what /proc/cpuinfo's nominal "cpu MHz" says a VM runs at.
double measured_mhz() {
#if defined(__x86_64__)
    using Clock = std::chrono::steady_clock;
    double best = 0;
    for (int round = 0; round < 5; ++round) {
        constexpr int kIters = 2'000'000;   // x 100 adds
        uint64_t x = 0;
        auto t0 = Clock::now();
        for (int i = 0; i < kIters; ++i) {
#define ADD10 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t" \
              "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            asm volatile(ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 : "+r"(x));
#undef ADD10
        }
        double s = std::chrono::duration<double>(Clock::now() - t0).count();
        benchmark::DoNotOptimize(x);
        best = std::max(best, kIters * 100.0 / s / 1e6);   // the fastest round: least disturbed
    }
    return best;
#else
    return 0;
#endif
}

std::string uring_status() {
    io_uring ring;
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) return std::string("unavailable: io_uring_queue_init: ") + std::strerror(-rc);
    io_uring_queue_exit(&ring);
    return "available";
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    char mhz[32];
    std::snprintf(mhz, sizeof mhz, "%.0f", measured_mhz());
    benchmark::AddCustomContext("measured_mhz", mhz);
    utsname u{};
    if (uname(&u) == 0) benchmark::AddCustomContext("kernel", std::string(u.sysname) + " " + u.release);
    benchmark::AddCustomContext("io_uring", uring_status());
    concbench::micro::add_latency_context();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
