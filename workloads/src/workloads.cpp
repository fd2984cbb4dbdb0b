// The workload table: each workload's request bytes and the answer a correct server gives.
#include "concbench/workloads.hpp"

#include <cstring>

namespace concbench {
namespace {

std::string echo_message(std::size_t n) {
    std::string m(n, '\0');
    for (std::size_t i = 0; i < n; ++i) m[i] = pattern_byte(i);
    return m;
}

std::vector<Workload> make_table() {
    std::vector<Workload> t;
    t.push_back({"hello", "GET / on keep-alive connections: the raw per-request cost", Proto::http,
                 "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, kHelloBody.size(), true,
                 Workload::Body::hello});
    t.push_back({"hello-close", "GET / with Connection: close: a new connection per request",
                 Proto::http, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 200, kHelloBody.size(), false, Workload::Body::hello});
    t.push_back({"bytes-16k", "GET /bytes/16384 on keep-alive connections: larger answers",
                 Proto::http, "GET /bytes/16384 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, 16384,
                 true, Workload::Body::pattern});
    t.push_back({"echo", "64-byte messages echoed back on persistent connections", Proto::echo,
                 echo_message(64), 0, 64, true, Workload::Body::echo});
    return t;
}

}  // namespace

bool Workload::body_ok(std::size_t offset, std::string_view chunk) const {
    if (offset + chunk.size() > expected_body) return false;
    switch (body_kind) {
        case Body::hello:
            return std::memcmp(kHelloBody.data() + offset, chunk.data(), chunk.size()) == 0;
        case Body::echo:
            return std::memcmp(request.data() + offset, chunk.data(), chunk.size()) == 0;
        case Body::pattern:
            for (std::size_t i = 0; i < chunk.size(); ++i)
                if (chunk[i] != pattern_byte(offset + i)) return false;
            return true;
    }
    return false;
}

const std::vector<Workload>& all_workloads() {
    static const std::vector<Workload> table = make_table();
    return table;
}

const Workload* find_workload(std::string_view name) {
    for (const Workload& w : all_workloads())
        if (w.name == name) return &w;
    return nullptr;
}

}  // namespace concbench
