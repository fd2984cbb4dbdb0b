// Workloads: what a client sends and what a correct server answers. The harness drives these,
// the models serve them; neither side defines them again.
//
// A workload is named by its family and, for the parametric families, its parameters:
//   hello, hello-close, echo, idle          fixed
//   bytes-<N>      GET /bytes/N             N bytes, k/m suffixes allowed: bytes-16k, bytes-4m
//   delay-<MS>     GET /delay/MS            the server holds each answer MS ms (Wait effect)
//   fanout-<K>x<MS> GET /fanout/K/MS        K concurrent backend calls of /delay/MS (Fanout)
//   file-<N>       GET /file/<N>            a file of N bytes from the docroot (k/m suffixes)
//   work-<US>      GET /work/US             US µs of CPU in the request (work.hpp), with GET /
//                                           probes beside the load: what the work does to others
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "concbench/session.hpp"

namespace concbench {

struct Workload {
    std::string name;           // "delay-10"
    std::string family;         // "delay": what a model.toml lists as served
    std::string description;
    Proto proto;
    std::string request;        // exact bytes a client sends for one request (echo: one message)
    int expected_status;        // HTTP status a correct server answers (0 for echo)
    std::size_t expected_body;  // body length (HTTP) or echoed bytes (echo)
    bool keep_alive;            // the connection is reused for the next request

    enum class Body { hello, pattern, echo, exact, work } body_kind;
    std::string expected;       // Body::exact: the whole body; Body::work: the body with rounds
                                //   and digest zero (those must be decimal and hex digits)

    int delay_ms = 0;           // delay, fanout: no correct answer comes sooner than this
    bool needs_backend = false; // fanout: the runner starts a backend and passes --backend
    std::string file_name;      // file: the docroot must hold this file, file_size bytes of the
    std::size_t file_size = 0;  //   /bytes pattern (write_docroot_file makes it)
    // idle: the cell's connection count is the number of idle keep-alive connections held open
    // while a small active `hello` load is measured (C10K).
    bool idle = false;
    // work: US µs of CPU per request. Beside the cell's connections, kProbeConnections more send
    // GET / at kProbeRate per second (open loop) and its latency is reported apart: how long a
    // cheap request waits while the server computes (an event loop's single thread is held).
    int work_us = -1;
    std::size_t work_rounds_at = 0, work_digest_at = 0;  // Body::work: where rounds and digest sit
    bool probe = false;

    // True when `chunk`, found at byte `offset` of the body (or echo reply), is what a correct
    // server sends. Called per received chunk, so checking costs no copy.
    bool body_ok(std::size_t offset, std::string_view chunk) const;
};

// One workload of each family with its default parameters (what `concbench list` shows).
const std::vector<Workload>& all_workloads();
// Any valid name, parameters included; nullptr if the name is not a workload. The pointer stays
// valid for the life of the program.
const Workload* find_workload(std::string_view name);
// The families a model.toml may list.
const std::vector<std::string>& workload_families();

inline constexpr std::string_view kHelloBody = "Hello, World!";
// The probe beside a work-US load: GET / at kProbeRate per second in all, open loop, taking turns
// over kProbeConnections connections, so each sends every 100 ms and a probe request waits behind
// the work, not behind the probe's own previous request (with one connection at 200/s, a server
// that held each probe 7 ms made the probe queue on itself and its latency grow without bound).
inline constexpr double kProbeRate = 100;
inline constexpr int kProbeConnections = 10;

}  // namespace concbench
