// Workloads: what a client sends and what a correct server answers. The harness drives these,
// the models serve them; neither side defines them again.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "concbench/session.hpp"

namespace concbench {

struct Workload {
    std::string name;
    std::string description;
    Proto proto;
    std::string request;        // exact bytes a client sends for one request (echo: one message)
    int expected_status;        // HTTP status a correct server answers (0 for echo)
    std::size_t expected_body;  // body length (HTTP) or echoed bytes (echo)
    bool keep_alive;            // the connection is reused for the next request

    // True when `chunk`, found at byte `offset` of the body (or echo reply), is what a correct
    // server sends. Called per received chunk, so checking costs no copy.
    bool body_ok(std::size_t offset, std::string_view chunk) const;

    enum class Body { hello, pattern, echo } body_kind;
};

const std::vector<Workload>& all_workloads();
const Workload* find_workload(std::string_view name);  // nullptr if unknown

inline constexpr std::string_view kHelloBody = "Hello, World!";

}  // namespace concbench
