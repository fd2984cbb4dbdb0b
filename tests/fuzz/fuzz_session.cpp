// Fuzz target for the protocol core: bytes in through Session::feed, in chunks the input itself
// chooses, out through the Outbox in partial writes. libFuzzer drives it (`make fuzz`, clang);
// the same function replays the committed corpus and every crash input under g++ (ctest
// fuzz_replay), so a fixed crash stays fixed.
//
// Input: byte 0 picks the protocol (bit 0: echo) and the chunk and write sizes (bits 1-7);
// the rest is what a peer sends. Invariants checked (abort on violation):
//   - the Outbox's iovecs add up to its size(), and consume() empties it exactly;
//   - echo: the output is the input, in order;
//   - HTTP: the output is a sequence of well-formed HTTP/1.1 responses (llhttp, strict), with
//     status 200, 400, 404, 405 or 431, each with Server, Date, Content-Type, Content-Length;
//     one answer per complete request (a strict llhttp mirror of the input says which were
//     HEAD) plus at most one 400/431 for a parse error, which closes; none after a closing
//     one; nothing is answered after close_after_write().
#include <llhttp.h>
#include <sys/uio.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "concbench/session.hpp"

using namespace concbench;

namespace {

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "fuzz_session: invariant violated: %s\n", what);
    std::abort();
}
#define CHECK(cond) \
    do {            \
        if (!(cond)) violated(#cond); \
    } while (0)

// Parses the input as the server should (strict llhttp) to know which requests were HEAD: their
// answers carry a Content-Length but no body.
struct RequestMirror {
    llhttp_t p;
    llhttp_settings_t s;
    std::vector<bool> head;  // per complete request, in order
    bool stopped = false;
    RequestMirror() {
        llhttp_settings_init(&s);
        s.on_message_complete = [](llhttp_t* p) {
            static_cast<RequestMirror*>(p->data)->head.push_back(p->method == HTTP_HEAD);
            return 0;
        };
        llhttp_init(&p, HTTP_REQUEST, &s);
        p.data = this;
    }
    void feed(const char* d, std::size_t n) {
        if (!stopped && llhttp_execute(&p, d, n) != HPE_OK) stopped = true;
    }
};

// Parses the server's output as responses; counts them and checks each one's head.
struct ResponseChecker {
    const RequestMirror* requests = nullptr;
    llhttp_t p;
    llhttp_settings_t s;
    int responses = 0;
    bool closing = false;  // a response said Connection: close (or was a 400/431)
    std::string field;
    bool has_server = false, has_date = false, has_type = false, has_length = false;
    bool in_message = false;
    std::size_t answered_requests = 0;
    bool error_answer = false;

    ResponseChecker() {
        llhttp_settings_init(&s);
        s.on_header_field = [](llhttp_t* p, const char* at, std::size_t n) {
            static_cast<ResponseChecker*>(p->data)->field.append(at, n);  // may come in pieces
            return 0;
        };
        s.on_header_field_complete = [](llhttp_t* p) {
            auto& c = *static_cast<ResponseChecker*>(p->data);
            for (auto& ch : c.field) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
            c.has_server |= c.field == "server";
            c.has_date |= c.field == "date";
            c.has_type |= c.field == "content-type";
            c.has_length |= c.field == "content-length";
            c.field.clear();
            return 0;
        };
        s.on_headers_complete = [](llhttp_t* p) {
            // Answers match complete requests in order; a 431, or a 400 with no complete request
            // left to answer, is the parse-error answer (which must close). A 400 for a complete
            // request (/bytes/abc) may keep the connection.
            auto& c = *static_cast<ResponseChecker*>(p->data);
            c.error_answer = p->status_code == 431 ||
                             (p->status_code == 400 && c.answered_requests == c.requests->head.size());
            if (c.error_answer) return 0;
            std::size_t k = c.answered_requests++;
            CHECK(k < c.requests->head.size());  // never an answer without a request
            return c.requests->head[k] ? 1 : 0;  // 1: no body follows (HEAD)
        };
        s.on_message_begin = [](llhttp_t* p) {
            static_cast<ResponseChecker*>(p->data)->in_message = true;
            return 0;
        };
        s.on_message_complete = [](llhttp_t* p) {
            auto& c = *static_cast<ResponseChecker*>(p->data);
            int st = p->status_code;
            CHECK(st == 200 || st == 400 || st == 404 || st == 405 || st == 431);
            CHECK(c.has_server && c.has_date && c.has_type && c.has_length);
            CHECK(!c.closing);  // nothing may follow a closing answer
            if (!llhttp_should_keep_alive(p)) c.closing = true;
            if (c.error_answer) CHECK(c.closing);
            ++c.responses;
            c.has_server = c.has_date = c.has_type = c.has_length = false;
            c.in_message = false;
            return 0;
        };
        llhttp_init(&p, HTTP_RESPONSE, &s);
        p.data = this;
    }
    void feed(const char* d, std::size_t n) {
        llhttp_errno_t e = llhttp_execute(&p, d, n);
        if (e != HPE_OK) {
            std::fprintf(stderr, "fuzz_session: bad response: %s (%s)\n", llhttp_errno_name(e), p.reason);
            std::abort();
        }
    }
};

// Writes out what the outbox holds in pieces of `step` bytes, checking its accounting. HTTP
// output is passed to the checker; a /bytes body is checked by length only past 64 KiB (the
// pattern itself is the Outbox's business, covered by test_http).
void drain(Outbox& out, std::size_t step, ResponseChecker* http, std::string* echo_out) {
    while (!out.empty()) {
        iovec iov[64];
        int k = out.fill(iov, 64);
        CHECK(k > 0);
        std::size_t total = 0;
        for (int i = 0; i < k; ++i) total += iov[i].iov_len;
        CHECK(total <= out.size());
        if (k < 64) CHECK(total == out.size());
        // Partial writes of `step` bytes, but never fewer than a quarter of what is offered, so a
        // 64 MiB /bytes answer drains in a few dozen rounds.
        std::size_t take = std::min(total, std::max(step, total / 4));
        std::size_t left = take;
        for (int i = 0; i < k && left > 0; ++i) {
            std::size_t n = std::min(left, iov[i].iov_len);
            const char* d = static_cast<const char*>(iov[i].iov_base);
            if (http) http->feed(d, n);
            if (echo_out) echo_out->append(d, n);
            left -= n;
        }
        std::size_t before = out.size();
        out.consume(take);
        CHECK(out.size() == before - take);
    }
    CHECK(out.size() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const uint8_t ctl = data[0];
    const bool echo = ctl & 1;
    const std::size_t chunk = 1 + ((ctl >> 1) & 7) * 9;         // 1, 10, ..., 64 bytes per feed
    const std::size_t step = std::size_t{1} << (4 + ((ctl >> 4) & 7) * 2);  // 16 B .. 256 MiB per write
    const char* in = reinterpret_cast<const char*>(data + 1);
    const std::size_t n = size - 1;

    ServerIdentity id{"concbench-fuzz"};
    auto session = make_session(echo ? Proto::echo : Proto::http, id);
    RequestMirror mirror;
    ResponseChecker checker;
    checker.requests = &mirror;
    std::string echoed;
    for (std::size_t off = 0; off < n; off += chunk) {
        std::size_t len = std::min(chunk, n - off);
        bool closed_before = session->close_after_write();
        session->feed(in + off, len);
        if (!echo) mirror.feed(in + off, len);
        if (closed_before) CHECK(session->out().empty());  // fed after close: ignored
        drain(session->out(), step, echo ? nullptr : &checker, echo ? &echoed : nullptr);
    }
    session->peer_closed();
    drain(session->out(), step, echo ? nullptr : &checker, echo ? &echoed : nullptr);
    if (echo) {
        CHECK(echoed.size() == n && std::memcmp(echoed.data(), in, n) == 0);
    } else {
        CHECK(!checker.in_message);  // no response left half-written: a framing bug
    }
    return 0;
}
