// GET /work/US: the computation, its calibration and its answer (work.hpp).
#include "concbench/work.hpp"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <mutex>

#ifdef _WIN32
#include <windows.h>
#endif

namespace concbench {
namespace {

// This thread's CPU time in microseconds: the calibration must not count time the thread spent
// preempted on a busy machine.
double thread_cpu_us() {
#ifdef _WIN32
    FILETIME create, exit, kernel, user;
    GetThreadTimes(GetCurrentThread(), &create, &exit, &kernel, &user);
    auto ticks = [](FILETIME f) { return (static_cast<uint64_t>(f.dwHighDateTime) << 32) | f.dwLowDateTime; };
    return static_cast<double>(ticks(kernel) + ticks(user)) / 10.0;  // 100 ns ticks
#else
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
#endif
}

constexpr std::string_view kPrefix = "work ";
constexpr std::string_view kMiddle = " us: ";
constexpr std::string_view kRounds = " rounds, fnv1a ";

}  // namespace

uint32_t work_digest_from(uint32_t x, uint64_t from, uint64_t n) {
    for (uint64_t i = from; i < from + n; ++i) x = (x ^ static_cast<uint32_t>(i & 0xff)) * 16777619u;
    return x;
}

uint32_t work_digest(uint64_t rounds) { return work_digest_from(kWorkBasis, 0, rounds); }

double work_rounds_per_us() {
    static double rate = 0;
    static std::once_flag once;
    std::call_once(once, [] {
        // Three runs of at least 5 ms of CPU, the rounds growing until a run takes that long;
        // the fastest run counts (a run slowed by a busy sibling core or a cold cache does not).
        volatile uint32_t sink = 0;  // the result is used, so the loop is not dropped
        uint64_t rounds = 1000;
        double best = 0;
        for (int k = 0; k < 3; ++k) {
            for (;;) {
                const double t0 = thread_cpu_us();
                sink = sink + work_digest(rounds);
                const double took = thread_cpu_us() - t0;
                if (took >= 5000 || rounds > (uint64_t{1} << 40)) {
                    best = std::max(best, static_cast<double>(rounds) / std::max(took, 1.0));
                    break;
                }
                rounds *= 2;
            }
        }
        rate = best;
    });
    return rate;
}

std::string work_body(int us, uint64_t rounds, uint32_t digest) {
    char buf[96];
    int n = std::snprintf(buf, sizeof buf, "work %d us: %010llu rounds, fnv1a %08x\n", us,
                          static_cast<unsigned long long>(rounds % 10'000'000'000ull), digest);
    return std::string(buf, static_cast<std::size_t>(n));
}

WorkDone run_work(int us) {
    WorkDone w;
    if (us <= 0) return w;
    const double rate = work_rounds_per_us();
    const double end = thread_cpu_us() + us;
    for (double left = us; left > 0;) {
        // A chunk of at most kWorkChunkUs, the last one sized to what is left (at least a round).
        const double chunk_us = std::min(left, kWorkChunkUs);
        const uint64_t n = std::max<uint64_t>(1, static_cast<uint64_t>(chunk_us * rate));
        w.digest = work_digest_from(w.digest, w.rounds, n);
        w.rounds += n;
        left = end - thread_cpu_us();
    }
    return w;
}

std::string do_work(int us) {
    const WorkDone w = run_work(us);
    return work_body(us, w.rounds, w.digest);
}

WorkBodyLayout work_body_layout(int us) {
    const std::size_t digits = std::to_string(us).size();
    WorkBodyLayout l;
    l.rounds_at = kPrefix.size() + digits + kMiddle.size();
    l.digest_at = l.rounds_at + 10 + kRounds.size();
    l.size = l.digest_at + 8 + 1;
    return l;
}

bool parse_work_body(std::string_view body, int us, uint64_t& rounds, uint32_t& digest) {
    const WorkBodyLayout l = work_body_layout(us);
    if (body.size() != l.size) return false;
    const std::string expect = work_body(us, 0, 0);
    for (std::size_t i = 0; i < body.size(); ++i) {
        const bool in_rounds = i >= l.rounds_at && i < l.rounds_at + 10;
        const bool in_digest = i >= l.digest_at && i < l.digest_at + 8;
        if (!in_rounds && !in_digest && body[i] != expect[i]) return false;
    }
    const char* r = body.data() + l.rounds_at;
    const char* d = body.data() + l.digest_at;
    auto [re, rec] = std::from_chars(r, r + 10, rounds);
    auto [de, dec] = std::from_chars(d, d + 8, digest, 16);
    return rec == std::errc() && re == r + 10 && dec == std::errc() && de == d + 8 &&
           std::all_of(d, d + 8, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace concbench
