// The workload table: each workload's request bytes and the answer a correct server gives.
#include "concbench/workloads.hpp"

#include <charconv>
#include <cstring>
#include <deque>
#include <mutex>

#include "concbench/work.hpp"

namespace concbench {
namespace {

std::string echo_message(std::size_t n) {
    std::string m(n, '\0');
    for (std::size_t i = 0; i < n; ++i) m[i] = pattern_byte(i);
    return m;
}

std::string get(std::string_view path, bool keep_alive = true) {
    std::string r = "GET ";
    r.append(path).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if (!keep_alive) r += "Connection: close\r\n";
    return r + "\r\n";
}

// "16k" -> 16384, "4m" -> 4194304, "100" -> 100; false past `max` or when malformed.
bool parse_size(std::string_view s, std::size_t max, std::size_t& out) {
    std::size_t mult = 1;
    if (!s.empty() && (s.back() == 'k' || s.back() == 'm')) {
        mult = s.back() == 'k' ? 1024 : 1024 * 1024;
        s.remove_suffix(1);
    }
    std::size_t n = 0;
    if (s.empty() || s.size() > 9) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || end != s.data() + s.size()) return false;
    out = n * mult;
    return out <= max;
}

bool parse_int(std::string_view s, int max, int& out) {
    if (s.empty() || s.size() > 9) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && out >= 0 && out <= max;
}

bool make(std::string_view name, Workload& w) {
    w = Workload{};
    w.name = std::string(name);
    w.proto = Proto::http;
    w.expected_status = 200;
    w.keep_alive = true;
    if (name == "hello" || name == "hello-close" || name == "idle") {
        w.family = std::string(name);
        w.keep_alive = name != "hello-close";
        w.request = get("/", w.keep_alive);
        w.expected_body = kHelloBody.size();
        w.body_kind = Workload::Body::hello;
        w.idle = name == "idle";
        w.description = name == "hello"         ? "GET / on keep-alive connections: the raw per-request cost"
                        : name == "hello-close" ? "GET / with Connection: close: a new connection per request"
                                                : "C10K: the cell's connection count held idle (keep-alive, one "
                                                  "request each) while 10 connections run GET /";
        return true;
    }
    if (name == "echo") {
        w.family = "echo";
        w.proto = Proto::echo;
        w.request = echo_message(64);
        w.expected_status = 0;
        w.expected_body = 64;
        w.body_kind = Workload::Body::echo;
        w.description = "64-byte messages echoed back on persistent connections";
        return true;
    }
    std::size_t dash = name.find('-');
    if (dash == std::string_view::npos) return false;
    std::string_view family = name.substr(0, dash), arg = name.substr(dash + 1);
    w.family = std::string(family);
    if (family == "bytes") {
        if (!parse_size(arg, kMaxBytesRoute, w.expected_body)) return false;
        w.request = get("/bytes/" + std::to_string(w.expected_body));
        w.body_kind = Workload::Body::pattern;
        w.description = "GET /bytes/" + std::to_string(w.expected_body) + " on keep-alive connections: large answers";
        return true;
    }
    if (family == "delay") {
        if (!parse_int(arg, kMaxDelayMs, w.delay_ms)) return false;
        w.request = get("/delay/" + std::string(arg));
        w.expected = delay_body(w.delay_ms, -1);
        w.expected_body = w.expected.size();
        w.body_kind = Workload::Body::exact;
        w.description = "GET /delay/" + std::string(arg) + ": each answer held " + std::string(arg) +
                        " ms without blocking other connections (the Wait effect)";
        return true;
    }
    if (family == "fanout") {
        std::size_t x = arg.find('x');
        int k;
        if (x == std::string_view::npos || !parse_int(arg.substr(0, x), kMaxFanoutCalls, k) || k < 1 ||
            !parse_int(arg.substr(x + 1), kMaxDelayMs, w.delay_ms))
            return false;
        w.request = get("/fanout/" + std::to_string(k) + "/" + std::to_string(w.delay_ms));
        for (int i = 0; i < k; ++i) w.expected += delay_body(w.delay_ms, i);
        w.expected_body = w.expected.size();
        w.body_kind = Workload::Body::exact;
        w.needs_backend = true;
        w.description = "GET /fanout/" + std::to_string(k) + "/" + std::to_string(w.delay_ms) + ": " +
                        std::to_string(k) + " concurrent backend calls of /delay/" +
                        std::to_string(w.delay_ms) + ", answered when all are back (the Fanout effect)";
        return true;
    }
    if (family == "file") {
        if (!parse_size(arg, kMaxBytesRoute, w.file_size)) return false;
        w.file_name = std::string(arg);
        w.request = get("/file/" + w.file_name);
        w.expected_body = w.file_size;
        w.body_kind = Workload::Body::pattern;
        w.description = "GET /file/" + w.file_name + ": a static file of " + std::to_string(w.file_size) +
                        " bytes from the docroot";
        return true;
    }
    if (family == "work") {
        if (!parse_int(arg, kMaxWorkUs, w.work_us)) return false;
        w.request = get("/work/" + std::to_string(w.work_us));
        w.expected = work_body(w.work_us, 0, 0);
        const WorkBodyLayout l = work_body_layout(w.work_us);  // once, not per chunk received
        w.work_rounds_at = l.rounds_at;
        w.work_digest_at = l.digest_at;
        w.expected_body = w.expected.size();
        w.body_kind = Workload::Body::work;
        w.probe = true;
        w.description = "GET /work/" + std::to_string(w.work_us) + ": " + std::to_string(w.work_us) +
                        " µs of CPU per request, with GET / at " + std::to_string(static_cast<int>(kProbeRate)) +
                        "/s on " + std::to_string(kProbeConnections) +
                        " more connections (the probe: what CPU work does to other requests)";
        return true;
    }
    return false;
}

}  // namespace

bool Workload::body_ok(std::size_t offset, std::string_view chunk) const {
    if (offset + chunk.size() > expected_body) return false;
    switch (body_kind) {
        case Body::hello:
            return std::memcmp(kHelloBody.data() + offset, chunk.data(), chunk.size()) == 0;
        case Body::echo:
            return std::memcmp(request.data() + offset, chunk.data(), chunk.size()) == 0;
        case Body::exact:
            return std::memcmp(expected.data() + offset, chunk.data(), chunk.size()) == 0;
        case Body::work: {
            for (std::size_t i = 0; i < chunk.size(); ++i) {
                const std::size_t at = offset + i;
                const char c = chunk[i];
                if (at >= work_rounds_at && at < work_rounds_at + 10) {
                    if (c < '0' || c > '9') return false;
                } else if (at >= work_digest_at && at < work_digest_at + 8) {
                    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
                } else if (c != expected[at]) {
                    return false;
                }
            }
            return true;
        }
        case Body::pattern:
            for (std::size_t i = 0; i < chunk.size(); ++i)
                if (chunk[i] != pattern_byte(offset + i)) return false;
            return true;
    }
    return false;
}

const std::vector<Workload>& all_workloads() {
    static const std::vector<Workload> table = [] {
        std::vector<Workload> t;
        for (const char* n : {"hello", "hello-close", "bytes-16k", "echo", "delay-10", "fanout-10x20",
                              "file-64k", "idle", "work-200"}) {
            t.emplace_back();
            make(n, t.back());
        }
        return t;
    }();
    return table;
}

const Workload* find_workload(std::string_view name) {
    for (const Workload& w : all_workloads())
        if (w.name == name) return &w;
    static std::mutex mu;
    static std::deque<Workload> made;  // a deque keeps the addresses it hands out
    std::lock_guard<std::mutex> lock(mu);
    for (const Workload& w : made)
        if (w.name == name) return &w;
    Workload w;
    if (!make(name, w)) return nullptr;
    made.push_back(std::move(w));
    return &made.back();
}

const std::vector<std::string>& workload_families() {
    static const std::vector<std::string> f = {"hello", "hello-close", "bytes", "echo",
                                               "delay", "fanout",      "file",  "idle",
                                               "work"};
    return f;
}

}  // namespace concbench
