// Routes of the HTTP contract (DESIGN.md): GET / and /bytes/N; everything else 404/405/400.
#include "concbench/routes.hpp"

#include <charconv>

#include "concbench/session.hpp"
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
        default: r.body = "Error\n"; break;
    }
    return r;
}

namespace {

// "/bytes/N": N plain decimal digits, at most kMaxBytesRoute. Anything else is a 400, so a huge
// or malformed number costs neither a crash nor a large allocation.
Response bytes_route(std::string_view arg) {
    std::size_t n = 0;
    if (arg.empty() || arg.size() > 9) return error_response(400);
    auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
    if (ec != std::errc() || end != arg.data() + arg.size() || n > kMaxBytesRoute)
        return error_response(400);
    Response r;
    r.content_type = "application/octet-stream";
    r.pattern_len = n;
    return r;
}

}  // namespace

Response route(std::string_view method, std::string_view target) {
    std::string_view path = target.substr(0, target.find('?'));
    bool known = path == "/" || path.starts_with("/bytes/");
    if (!known) return error_response(404);
    if (method != "GET" && method != "HEAD") return error_response(405);
    if (path == "/") {
        Response r;
        r.body = kHelloBody;
        return r;
    }
    return bytes_route(path.substr(7));
}

}  // namespace concbench
