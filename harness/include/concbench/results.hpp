// Results: the JSON a run writes. results.jsonl has one object per cell (schema below, readers
// ignore keys they do not know); meta.json says where every number came from.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "concbench/profile.hpp"

namespace concbench {

inline constexpr int kResultsSchema = 1;

// Machine, kernel, CPU, compiler, commit: the context every number of a run carries.
nlohmann::json machine_context();
nlohmann::json make_meta(const std::string& run_id, const Profile& profile);

// Appends one line and flushes it to disk, so a run that dies keeps every finished cell.
void append_jsonl(const std::string& path, const nlohmann::json& line);
void write_json_file(const std::string& path, const nlohmann::json& value);

}  // namespace concbench
