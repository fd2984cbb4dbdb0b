// GET /work/US: CPU work inside a request. The server computes until the thread serving the
// request has spent US microseconds of CPU (its CPU clock, not the wall clock: time preempted,
// or waiting for Python's GIL, does not count), then answers with what it computed — the same
// computation in every language (C++, Python, JavaScript), so the answer can be checked.
//
// The computation: 32-bit FNV-1a over the bytes i & 0xff for i = 0 .. rounds-1,
//   x = 2166136261; for each i: x = ((x ^ (i & 0xff)) * 16777619) mod 2^32.
// A chain of dependent multiplies: no compiler can vectorise or fold it. It runs in chunks, the
// CPU clock read between them; each process calibrates at start-up how many rounds its language
// runs per µs of CPU, which sizes the chunks (at most kWorkChunkUs, the last one what is left).
// Why not a fixed round count from that calibration: on this shared VM the calibration of one
// process against the next varied by up to 2.8x (CPU per request 148-472 µs for /work/200 in
// Python), so a fixed count made "200 µs" whatever the start-up moment said.
// The answer's body (fixed length for a given US, so a client checks it as it arrives):
//   "work <US> us: <rounds, 10 decimal digits> rounds, fnv1a <digest, 8 hex digits>\n"
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace concbench {

inline constexpr int kMaxWorkUs = 1'000'000;  // /work/US above this: 400

inline constexpr double kWorkChunkUs = 20;   // the CPU clock is read at least this often
inline constexpr uint32_t kWorkBasis = 2166136261u;

// The digest of `rounds` rounds, and of rounds [from, from + n) continuing from `x`.
uint32_t work_digest(uint64_t rounds);
uint32_t work_digest_from(uint32_t x, uint64_t from, uint64_t n);

// Rounds per microsecond of this thread's CPU, measured once per process (the first call, or
// calibrate_work() at start-up so no request pays for it): best of three runs of at least 5 ms.
double work_rounds_per_us();
inline void calibrate_work() { (void)work_rounds_per_us(); }

// Computes until this thread has spent `us` µs of CPU (none for 0); the rounds run and digest.
struct WorkDone {
    uint64_t rounds = 0;
    uint32_t digest = kWorkBasis;
};
WorkDone run_work(int us);
// Does the work of GET /work/US and returns the answer's body.
std::string do_work(int us);

// The body for `us` with these rounds and digest.
std::string work_body(int us, uint64_t rounds, uint32_t digest);
// Where the variable parts sit in a body for `us`: rounds at [rounds_at, rounds_at + 10),
// the digest at [digest_at, digest_at + 8).
struct WorkBodyLayout {
    std::size_t size, rounds_at, digest_at;
};
WorkBodyLayout work_body_layout(int us);
// Parses a whole body for `us`; false if it is not of the form above.
bool parse_work_body(std::string_view body, int us, uint64_t& rounds, uint32_t& digest);

}  // namespace concbench
