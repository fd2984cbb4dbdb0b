// verify's framing, headers and bad-input cases: requests split and pipelined, HTTP/1.0 and
// Connection: close, keep-alive, bodies and echo sizes, the headers every answer carries, and
// the statuses malformed, oversized, unknown or garbage requests get.
#include <cstdlib>
#include <ctime>
#include <random>

#include "concbench/workloads.hpp"
#include "verify_case.hpp"

namespace concbench::verify_detail {

std::string case_split(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    const std::string req =
        fmt::format("GET {} HTTP/1.1\r\nHost: verify\r\nUser-Agent: concbench-verify\r\n\r\n", x.body_path(7));
    for (std::size_t k = 1; k < req.size(); ++k) {
        c.send(std::string_view(req).substr(0, k));
        pause_ms(2);  // TCP_NODELAY and a pause: the server reads the two parts separately
        c.send(std::string_view(req).substr(k));
        expect_bytes(c.response(), 7, fmt::format("request split after byte {}", k));
    }
    for (char ch : req) {  // one byte per write
        c.send(std::string_view(&ch, 1));
        pause_ms(1);
    }
    expect_bytes(c.response(), 7, "request sent one byte per write");
    return fmt::format("{} split points and one byte per write", req.size() - 1);
}

std::string pipelined(Ctx& x, int n) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    std::string many;
    for (int i = 0; i < n; ++i) many += i % 5 == 0 ? get("/") : get(x.body_path(static_cast<std::size_t>(i * 3)));
    c.send(many);
    for (int i = 0; i < n; ++i) {
        Response r = c.response();
        if (i % 5 == 0) expect_hello(r, fmt::format("pipelined answer #{}", i));
        else expect_bytes(r, static_cast<std::size_t>(i * 3), fmt::format("pipelined answer #{}", i));
    }
    c.send(get("/"));  // the connection is still in step
    expect_hello(c.response(), "request after the pipeline");
    return "";
}

std::string case_http10(Ctx& x) {
    auto& s = x.start(Proto::http);
    {
        Conn c(s.port());
        c.send("GET / HTTP/1.0\r\n\r\n");
        Response r = c.response();
        expect_hello(r, "HTTP/1.0");
        need(r.header("content-length"), "HTTP/1.0 answer without Content-Length");
        std::string why = c.expect_closed();
        need(why.empty(), "HTTP/1.0 without keep-alive: {}", why);
    }
    Conn k(s.port());  // HTTP/1.0 asking for keep-alive: kept
    k.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    Response r = k.response();
    expect_hello(r, "HTTP/1.0 keep-alive");
    need(r.keep_alive, "HTTP/1.0 with Connection: keep-alive: the answer does not keep the connection");
    k.send(fmt::format("GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", x.body_path(5)));
    expect_bytes(k.response(), 5, "second HTTP/1.0 keep-alive request");
    return "";
}

std::string case_connection_close(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    // A request after the closing one, in the same write: it must be ignored.
    c.send("GET / HTTP/1.1\r\nHost: verify\r\nConnection: close\r\n\r\n" + get(x.body_path(3)));
    Response r = c.response();
    expect_hello(r, "Connection: close");
    need(!r.keep_alive, "the answer to Connection: close does not say close");
    std::string why = c.expect_closed();
    need(why.empty(), "after Connection: close: {}", why);
    return "";
}

std::string case_keepalive(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    const std::string req = get("/");
    for (int i = 0; i < 10000; ++i) {
        c.send(req);
        Response r = c.response();
        if (r.status != 200 || r.body != kHelloBody) expect_hello(r, fmt::format("request #{}", i + 1));
        need(r.keep_alive, "request #{}: the server asked to close", i + 1);
        if (x.interrupted()) break;
    }
    return "10,000 requests on one connection";
}

std::string case_bodies(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{13},
                          std::size_t{1023}, std::size_t{16384}, std::size_t{65537},
                          std::size_t{1} << 20, std::size_t{4} << 20}) {
        std::string path = x.body_path(n);
        c.send(get(path));
        expect_bytes(c.response(seconds(10)), n, path);
    }
    return "/bytes/0 .. /bytes/4194304, every byte checked";
}

std::string case_echo_sizes(Ctx& x) {
    auto& s = x.start(Proto::echo);
    Conn c(s.port());
    need(c.ok(), "connect: {}", c.error());
    unsigned seed = 1;
    for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{1000}, std::size_t{65537},
                          std::size_t{1} << 20, std::size_t{4} << 20}) {
        std::string msg = payload(n, seed++);
        std::string back = echo_roundtrip(c, msg);
        need(back == msg, "echo of {} bytes: the bytes came back different", n);
    }
    return "1 B .. 4 MiB echoed in order";
}

std::string case_headers(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    const std::string server = "concbench-" + x.model.name;
    for (const std::string& path : {std::string("/"), x.body_path(100), x.body_path(0), std::string("/no-such-path"),
                                    std::string("/bytes/x")}) {
        c.send(get(path));
        Response r = c.response();
        for (const char* h : {"server", "date", "content-type", "content-length"})
            need(r.count(h) == 1, "{} (status {}): {} '{}' header(s), expected exactly one", path,
                 r.status, r.count(h), h);
        // A server that names itself (nginx, Apache: their model.toml says so) is not judged by name.
        need(!x.model.skips("server-header").empty() || *r.header("server") == server,
             "{}: Server '{}' (expected '{}')", path, *r.header("server"), server);
        need(!r.header("content-type")->empty(), "{}: empty Content-Type", path);
        need(*r.header("content-length") == std::to_string(r.body.size()),
             "{}: Content-Length {} but {} body bytes", path, *r.header("content-length"), r.body.size());
        // The Date is an IMF-fixdate of now (RFC 9110 5.6.7), within a few seconds.
        std::tm tm{};
        const char* end = strptime(r.header("date")->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        need(end && *end == '\0', "{}: Date '{}' is not an IMF-fixdate", path, *r.header("date"));
        long skew = static_cast<long>(timegm(&tm) - time(nullptr));
        need(std::labs(skew) <= 5, "{}: Date '{}' is {} s off the clock", path, *r.header("date"), skew);
    }
    if (std::string why = x.model.skips("server-header"); !why.empty())
        return "the Server value is not checked: " + why;
    return "";
}

std::string case_date_changes(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    c.send(get("/"));
    Response a = c.response();
    need(a.header("date"), "no Date header");
    pause_ms(1500);
    c.send(get("/"));
    Response b = c.response();
    need(b.header("date"), "no Date header on the second answer");
    need(*a.header("date") != *b.header("date"), "Date '{}' did not change over 1.5 s", *a.header("date"));
    return fmt::format("'{}' then '{}'", *a.header("date"), *b.header("date"));
}

std::string case_bad_request(Ctx& x) {
    auto& s = x.start(Proto::http);
    expect_status_and_close(s.port(), "BLAH\r\n\r\n", 400, "request line 'BLAH'");
    expect_status_and_close(s.port(), "GET / HTTP/1.1 extra\r\n\r\n", 400, "request line with a 4th field");
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost verify\r\n\r\n", 400, "header without a colon");
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost: verify\r\nBad Name: x\r\n\r\n", 400, "header name with a space");
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost: verify\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
                            "two different Content-Lengths");
    return "";
}

std::string case_431(Ctx& x) {
    auto& s = x.start(Proto::http);
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nX-Big: " + std::string(10000, 'x') + "\r\n\r\n", 431,
                            "one 10,000-byte header");
    std::string many = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 200; ++i) many += fmt::format("X-H{}: {}\r\n", i, std::string(40, 'v'));
    expect_status_and_close(s.port(), many + "\r\n", 431, "200 headers of 50 bytes");
    expect_status_and_close(s.port(), "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n", 431,
                            "a 9,000-byte request target");
    return "";
}

std::string case_404(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    for (const char* path : {"/missing", "/bytes", "/hello/world", "/%00"}) {
        c.send(get(path));
        Response r = c.response();
        need(r.status == 404, "{}: status {} (expected 404)", path, r.status);
    }
    c.send(get("/"));  // a 404 keeps the connection
    expect_hello(c.response(), "request after the 404s");
    return "";
}

std::string case_bytes_bad(Ctx& x) {
    auto& s = x.start(Proto::http);
    uint64_t pss0 = sample_tree(s.pid()).pss_kib;
    for (const char* arg : {"abc", "-1", "1e9", "", "99999999999999999999999999", "67108865",
                            "0x10", "+5", "5.0", "18446744073709551617", "4294967296"}) {
        Conn c(s.port());
        c.send(get(std::string("/bytes/") + arg));
        Response r = c.response();
        need(r.status == 400, "/bytes/{}: status {} (expected 400)", arg, r.status);
    }
    uint64_t pss1 = sample_tree(s.pid()).pss_kib;
    need(pss1 < pss0 + 64 * 1024, "PSS grew from {} to {} KiB answering bad /bytes/ numbers", pss0, pss1);
    return "";
}

std::string case_garbage(Ctx& x) {
    auto& s = x.start(Proto::http);
    std::mt19937 rng(42);
    for (int round = 0; round < 5; ++round) {
        std::string g(512, '\0');
        for (auto& ch : g) ch = static_cast<char>(rng());
        g[0] = static_cast<char>(0x80 | round);  // never a token character: no method can start
        expect_status_and_close(s.port(), g, 400, fmt::format("512 bytes of binary garbage #{}", round + 1));
    }
    expect_status_and_close(s.port(), "GET / HTTP/1.1\r\nHost: verify\r\nX: a" + std::string(1, '\0') + "b\r\n\r\n", 400,
                            "a NUL in a header value");
    return "";
}

// A request with a body the route does not take, pipelined with a second request: the body is
// consumed (or the connection closed), never parsed as the next request.
std::string case_body_not_accepted(Ctx& x) {
    auto& s = x.start(Proto::http);
    struct Case {
        const char* what;
        std::string req;
    };
    // Bodies that look like requests: a server that does not consume them answers them.
    auto with_body = [](std::string head, const std::string& body) {
        return head + fmt::format("Content-Length: {}\r\n\r\n", body.size()) + body;
    };
    const Case cases[] = {
        {"POST / with Content-Length",
         with_body("POST / HTTP/1.1\r\nHost: verify\r\n", "GET " + x.body_path(9) + " HTTP/1.1\r\nHost: verify\r\n\r\n")},
        {"GET with a body", with_body("GET / HTTP/1.1\r\nHost: verify\r\n", "GET /missing HTTP/1.1\r\nHost: verify\r\n\r\n")},
        {"POST chunked", "POST " + x.body_path(1) + " HTTP/1.1\r\nHost: verify\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5\r\nGET /\r\n0\r\n\r\n"},
        {"PUT, large body", "PUT / HTTP/1.1\r\nHost: verify\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'G')},
    };
    std::string seen;
    for (const auto& k : cases) {
        Conn c(s.port());
        c.send(k.req + get(x.body_path(3)));
        Response first = c.response();
        need(first.status >= 200, "{}: status {}", k.what, first.status);
        seen += fmt::format("{}{} -> {}", seen.empty() ? "" : ", ", k.what, first.status);
        if (!first.keep_alive) {  // closing is allowed by HTTP/1.1; then nothing more may come
            std::string why = c.expect_closed();
            need(why.empty(), "{}: answered with Connection: close, then: {}", k.what, why);
            continue;
        }
        expect_bytes(c.response(), 3, fmt::format("{}: the pipelined request after it", k.what));
    }
    return seen;
}

}  // namespace concbench::verify_detail
