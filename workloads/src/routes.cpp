// Routes of the HTTP contract (DESIGN.md): GET /, /bytes/N, /delay/MS, /fanout/K/MS, /file/NAME,
// /work/US;
// everything else 404/405/400.
#include "concbench/routes.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string>

#include "concbench/session.hpp"
#include "concbench/work.hpp"
#include "concbench/workloads.hpp"

namespace concbench {

std::string_view reason_phrase(int status) {
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 502: return "Bad Gateway";
        default: return "Unknown";
    }
}

Response error_response(int status) {
    Response r;
    r.status = status;
    switch (status) {
        case 400: r.body = "Bad Request\n"; break;
        case 404: r.body = "Not Found\n"; break;
        case 405: r.body = "Method Not Allowed\n"; break;
        case 431: r.body = "Request Header Fields Too Large\n"; break;
        case 502: r.body = "Bad Gateway\n"; break;
        default: r.body = "Error\n"; break;
    }
    return r;
}

namespace {

// A plain decimal number of at most `max_digits` digits and at most `max`; false otherwise, so a
// huge or malformed number costs neither a crash nor a large allocation.
template <typename T>
bool parse_number(std::string_view s, T max, T& out, std::size_t max_digits = 9) {
    if (s.empty() || s.size() > max_digits) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && out <= max;
}

// "/bytes/N": N bytes of the pattern, at most kMaxBytesRoute.
Response bytes_route(std::string_view arg) {
    std::size_t n = 0;
    if (!parse_number(arg, kMaxBytesRoute, n)) return error_response(400);
    Response r;
    r.content_type = "application/octet-stream";
    r.pattern_len = n;
    return r;
}

// "?id=N" (any other parameter is ignored): the id a backend call carries.
int query_id(std::string_view query) {
    while (!query.empty()) {
        std::string_view kv = query.substr(0, query.find('&'));
        query.remove_prefix(std::min(query.size(), kv.size() + 1));
        int id;
        if (kv.starts_with("id=") && parse_number(kv.substr(3), 1'000'000'000, id)) return id;
    }
    return -1;
}

// "/delay/MS": answer after MS milliseconds (the model's Wait effect).
Response delay_route(std::string_view arg, std::string_view query) {
    int ms;
    if (!parse_number(arg, kMaxDelayMs, ms)) return error_response(400);
    Response r;
    r.effect.kind = Effect::Kind::wait;
    r.effect.ms = ms;
    r.effect.id = query_id(query);
    return r;
}

// "/fanout/K/MS": K concurrent backend calls of /delay/MS, answered when all are back.
Response fanout_route(std::string_view arg) {
    std::size_t slash = arg.find('/');
    int k, ms;
    if (slash == std::string_view::npos || !parse_number(arg.substr(0, slash), kMaxFanoutCalls, k) ||
        k < 1 || !parse_number(arg.substr(slash + 1), kMaxDelayMs, ms))
        return error_response(400);
    Response r;
    r.effect.kind = Effect::Kind::fanout;
    r.effect.calls = k;
    r.effect.ms = ms;
    return r;
}

// "/file/NAME": a plain file name (letters, digits, '.', '-', '_'; not starting with '.'), so no
// request can leave the docroot.
Response file_route(std::string_view name) {
    if (name.empty() || name.size() > 255 || name[0] == '.') return error_response(404);
    for (char c : name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
            return error_response(404);
    Response r;
    r.content_type = "application/octet-stream";
    r.effect.kind = Effect::Kind::file;
    r.effect.file = std::string(name);
    return r;
}

// "/work/US": US µs of CPU (work.hpp); the session does it, on the connection's thread.
Response work_route(std::string_view arg) {
    unsigned us;  // unsigned: "-1" is not a number of microseconds
    if (!parse_number(arg, static_cast<unsigned>(kMaxWorkUs), us)) return error_response(400);
    Response r;
    r.work_us = static_cast<int>(us);
    return r;
}

}  // namespace

Response route(std::string_view method, std::string_view target) {
    std::size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    bool known = path == "/" || path.starts_with("/bytes/") || path.starts_with("/delay/") ||
                 path.starts_with("/fanout/") || path.starts_with("/file/") || path.starts_with("/work/");
    if (!known) return error_response(404);
    if (method != "GET" && method != "HEAD") return error_response(405);
    if (path == "/") {
        Response r;
        r.body = kHelloBody;
        return r;
    }
    if (path.starts_with("/bytes/")) return bytes_route(path.substr(7));
    if (path.starts_with("/delay/")) return delay_route(path.substr(7), query);
    if (path.starts_with("/fanout/")) return fanout_route(path.substr(8));
    if (path.starts_with("/work/")) return work_route(path.substr(6));
    return file_route(path.substr(6));
}

}  // namespace concbench
