// external: the same cell driven by a real, independent client — Debian's wrk (keep-alive,
// pipelining through a Lua script) or ab (ApacheBench, connection per request) — with its own
// figures recorded in the results schema, so any cell can be cross-checked against loadgen.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "concbench/loadgen.hpp"

namespace concbench {

// "wrk" or "ab". Runs the tool for spec.duration_s (no separate warm-up: the tools have none),
// pinned to spec.cpus, and returns the client's side of a results line (as load_json() does):
// requests, throughput_rps, latency_us (the tool's percentiles), errors by the tool's kinds,
// client {tool, cpu_s, cpu_us_per_req, cpu_util: the tool's whole process from wait4}. On failure
// returns an object with only "fatal" (why, in one line).
nlohmann::json run_external_client(const std::string& tool, const LoadSpec& spec, const std::string& path);

}  // namespace concbench
