// Results: the JSON a run writes. results.jsonl has one object per cell (schema below, readers
// ignore keys they do not know); meta.json says where every number came from.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "concbench/loadgen.hpp"
#include "concbench/profile.hpp"

namespace concbench {

inline constexpr int kResultsSchema = 2;

// Machine, kernel, CPU, compiler, commit: the context every number of a run carries.
nlohmann::json machine_context();
nlohmann::json make_meta(const std::string& run_id, const Profile& profile);

// Appends one line and flushes it to disk, so a run that dies keeps every finished cell.
void append_jsonl(const std::string& path, const nlohmann::json& line);
void write_json_file(const std::string& path, const nlohmann::json& value);

// {"p50","p90","p99","p999","max","mean","min"} in µs.
nlohmann::json latency_json(const Histogram& h);

// The client's side of a results.jsonl line, shared by the runner and `concbench load`:
// load shape, requests, throughput, latency (and latency_uncorrected_us for open loop), errors,
// connections established, fairness, client CPU and client_bound, the Little's-law check
// (closed loop), idle connections.
nlohmann::json load_json(const LoadSpec& spec, const LoadResult& r);

// The client's per-second series: {"columns": [...], "rows": [[...], ...]}.
nlohmann::json load_series_json(const LoadResult& r);

}  // namespace concbench
