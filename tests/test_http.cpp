// The protocol core (workloads/): HTTP/1.1 and echo framing, sans IO.
#include <gtest/gtest.h>

#include <time.h>

#include <cmath>
#include <sys/uio.h>

#include <string>
#include <vector>

#include "concbench/routes.hpp"
#include "concbench/session.hpp"
#include "concbench/work.hpp"
#include "concbench/workloads.hpp"

using namespace concbench;

namespace {

const ServerIdentity kId{"concbench-test"};

std::string drain(Outbox& out) {
    std::string s;
    iovec iov[16];
    while (!out.empty()) {
        int n = out.fill(iov, 16);
        std::size_t total = 0;
        for (int i = 0; i < n; ++i) {
            s.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
            total += iov[i].iov_len;
        }
        out.consume(total);
    }
    return s;
}

struct Parsed {
    int status;
    std::string headers;
    std::string body;
};

// Splits a byte stream of responses (Content-Length framed) into responses.
std::vector<Parsed> split_responses(const std::string& s) {
    std::vector<Parsed> out;
    std::size_t pos = 0;
    while (pos < s.size()) {
        std::size_t end = s.find("\r\n\r\n", pos);
        if (end == std::string::npos) break;
        Parsed p;
        p.headers = s.substr(pos, end + 4 - pos);
        p.status = std::stoi(p.headers.substr(9, 3));
        std::size_t cl = p.headers.find("Content-Length: ");
        std::size_t len = cl == std::string::npos ? 0 : std::stoul(p.headers.substr(cl + 16));
        p.body = s.substr(end + 4, len);
        out.push_back(p);
        pos = end + 4 + len;
    }
    EXPECT_EQ(pos, s.size()) << "trailing bytes in the response stream";
    return out;
}

std::string feed_all(Session& s, const std::string& in) {
    s.feed(in.data(), in.size());
    return drain(s.out());
}

const std::string kGet = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

}  // namespace

TEST(Http, HelloHasContractHeaders) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, kGet));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 200);
    EXPECT_EQ(r[0].body, "Hello, World!");
    EXPECT_NE(r[0].headers.find("\r\nServer: concbench-test\r\n"), std::string::npos);
    EXPECT_NE(r[0].headers.find("\r\nDate: "), std::string::npos);
    EXPECT_NE(r[0].headers.find(" GMT\r\n"), std::string::npos);
    EXPECT_NE(r[0].headers.find("\r\nContent-Type: text/plain\r\n"), std::string::npos);
    EXPECT_NE(r[0].headers.find("\r\nContent-Length: 13\r\n"), std::string::npos);
    EXPECT_FALSE(s->close_after_write());
}

TEST(Http, SplitAtEveryByteGivesTheSameAnswer) {
    const std::string two = kGet + "GET /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n";
    auto whole = make_session(Proto::http, kId);
    std::string expect = feed_all(*whole, two);
    for (std::size_t cut = 1; cut < two.size(); ++cut) {
        auto s = make_session(Proto::http, kId);
        std::string got = feed_all(*s, two.substr(0, cut));
        got += feed_all(*s, two.substr(cut));
        // Date may tick between the two sessions: compare everything but the Date lines.
        auto a = split_responses(got), b = split_responses(expect);
        ASSERT_EQ(a.size(), 2u) << "cut at " << cut;
        for (int i = 0; i < 2; ++i) {
            EXPECT_EQ(a[i].status, b[i].status);
            EXPECT_EQ(a[i].body, b[i].body) << "cut at " << cut;
        }
    }
    // One byte at a time.
    auto s = make_session(Proto::http, kId);
    std::string got;
    for (char c : two) got += feed_all(*s, std::string(1, c));
    EXPECT_EQ(split_responses(got).size(), 2u);
}

TEST(Http, SixteenPipelinedAnsweredInOrder) {
    std::string in;
    for (int i = 0; i < 16; ++i) in += "GET /bytes/" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, in));
    ASSERT_EQ(r.size(), 16u);
    for (int i = 0; i < 16; ++i) {
        EXPECT_EQ(r[i].body.size(), static_cast<std::size_t>(i));
        for (int k = 0; k < i; ++k) EXPECT_EQ(r[i].body[k], pattern_byte(k));
    }
}

TEST(Http, Http10ClosesAfterTheResponse) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, "GET / HTTP/1.0\r\n\r\n" + kGet));
    ASSERT_EQ(r.size(), 1u) << "nothing after the HTTP/1.0 request may be answered";
    EXPECT_NE(r[0].headers.find("Connection: close"), std::string::npos);
    EXPECT_TRUE(s->close_after_write());
}

TEST(Http, Http10KeepAliveStaysOpen) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_NE(r[0].headers.find("Connection: keep-alive"), std::string::npos);
    EXPECT_FALSE(s->close_after_write());
}

TEST(Http, ConnectionCloseClosesAndIgnoresTheRest) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(
        feed_all(*s, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n" + kGet));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_TRUE(s->close_after_write());
    EXPECT_TRUE(feed_all(*s, kGet).empty());
}

TEST(Http, MalformedIs400AndClose) {
    for (std::string bad : std::vector<std::string>{"GARBAGE\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                            std::string("\x00\x01\x02\xff\r\n\r\n", 8)}) {
        auto s = make_session(Proto::http, kId);
        auto r = split_responses(feed_all(*s, bad));
        ASSERT_EQ(r.size(), 1u) << bad;
        EXPECT_EQ(r[0].status, 400) << bad;
        EXPECT_TRUE(s->close_after_write());
    }
}

TEST(Http, AnswersBeforeAMalformedRequestStillGoOut) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, kGet + "NOT HTTP AT ALL\r\n\r\n"));
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].status, 200);
    EXPECT_EQ(r[1].status, 400);
}

TEST(Http, OversizedHeadIs431AndClose) {
    auto s = make_session(Proto::http, kId);
    std::string big = "GET / HTTP/1.1\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n";
    auto r = split_responses(feed_all(*s, big));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 431);
    EXPECT_TRUE(s->close_after_write());
    // Just under the limit is fine.
    auto ok = make_session(Proto::http, kId);
    std::string fits = "GET / HTTP/1.1\r\nX-Big: " + std::string(7000, 'a') + "\r\n\r\n";
    EXPECT_EQ(split_responses(feed_all(*ok, fits)).at(0).status, 200);
}

TEST(Http, OversizedHeadFedInPiecesIs431) {
    auto s = make_session(Proto::http, kId);
    std::string out = feed_all(*s, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 200 && !s->close_after_write(); ++i)
        out += feed_all(*s, "X-H" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n");
    auto r = split_responses(out);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 431);
}

TEST(Http, UnknownPathIs404AndKeepsTheConnection) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, "GET /nope HTTP/1.1\r\n\r\n" + kGet));
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].status, 404);
    EXPECT_EQ(r[1].status, 200);
}

TEST(Http, BadBytesArgumentIs400NotAnAllocation) {
    for (std::string arg : std::vector<std::string>{"abc", "-1", "99999999999999999999", "1e9", "", "67108865"}) {
        EXPECT_EQ(route("GET", "/bytes/" + arg).status, 400) << arg;
    }
    EXPECT_EQ(route("GET", "/bytes/67108864").pattern_len, 64u << 20);
}

TEST(Http, BodyOfAnotherMethodDoesNotDesyncThePipeline) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(
        feed_all(*s, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /" + kGet));
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].status, 405);
    EXPECT_EQ(r[1].status, 200);
}

TEST(Http, HeadHasLengthButNoBody) {
    auto s = make_session(Proto::http, kId);
    std::string out = feed_all(*s, "HEAD /bytes/1000 HTTP/1.1\r\n\r\n");
    EXPECT_NE(out.find("Content-Length: 1000\r\n"), std::string::npos);
    EXPECT_EQ(out.substr(out.size() - 4), "\r\n\r\n");
}

TEST(Http, LargeBodyIsThePattern) {
    auto s = make_session(Proto::http, kId);
    auto r = split_responses(feed_all(*s, "GET /bytes/4194304 HTTP/1.1\r\n\r\n"));
    ASSERT_EQ(r.size(), 1u);
    ASSERT_EQ(r[0].body.size(), 4194304u);
    const Workload& w = *find_workload("bytes-16k");
    for (std::size_t i = 0; i < r[0].body.size(); i += 65536)
        ASSERT_EQ(r[0].body[i], pattern_byte(i));
    EXPECT_TRUE(w.body_ok(0, std::string_view(r[0].body).substr(0, 16384)));
}

TEST(Echo, EveryByteBackInOrder) {
    auto s = make_session(Proto::echo, kId);
    std::string in;
    for (int i = 0; i < 100000; ++i) in += static_cast<char>(i * 7);
    std::string out;
    for (std::size_t i = 0; i < in.size(); i += 777) out += feed_all(*s, in.substr(i, 777));
    EXPECT_EQ(out, in);
    EXPECT_FALSE(s->close_after_write());
    s->peer_closed();
    EXPECT_TRUE(s->close_after_write());
}

TEST(Outbox, PartialConsumeKeepsOrder) {
    Outbox o;
    o.append("abc");
    o.append_pattern(100000);
    o.append("xyz");
    EXPECT_EQ(o.size(), 100006u);
    std::string got;
    iovec iov[3];
    while (!o.empty()) {
        int n = o.fill(iov, 3);
        ASSERT_GT(n, 0);
        std::size_t take = std::min<std::size_t>(iov[0].iov_len, 999);  // a short write
        got.append(static_cast<char*>(iov[0].iov_base), take);
        o.consume(take);
    }
    ASSERT_EQ(got.size(), 100006u);
    EXPECT_EQ(got.substr(0, 3), "abc");
    for (std::size_t i = 0; i < 100000; ++i) ASSERT_EQ(got[3 + i], pattern_byte(i)) << i;
    EXPECT_EQ(got.substr(100003), "xyz");
}

// Carries out every pending effect at once, as a model would but without IO: a wait completes,
// a fan-out's calls go to a second session (the backend) and their answers are read back with
// BackendReader, a file of `file_size` pattern bytes is "sent" by appending it to `stream`.
std::string serve_all(Session& s, const std::string& in, std::size_t file_size = 0) {
    std::string stream;
    s.feed(in.data(), in.size());
    for (int guard = 0; guard < 1000; ++guard) {
        stream += drain(s.out());
        const Effect e = s.effect();
        if (e.kind == Effect::Kind::none) break;
        if (e.kind == Effect::Kind::wait) {
            s.complete_wait();
        } else if (e.kind == Effect::Kind::fanout) {
            std::vector<std::string> bodies;
            bool ok = true;
            for (int i = 0; i < e.calls; ++i) {
                auto backend = make_session(Proto::http, kId);
                std::string req = backend_request(e.ms, i);
                backend->feed(req.data(), req.size());
                EXPECT_EQ(backend->effect().kind, Effect::Kind::wait);
                EXPECT_EQ(backend->effect().id, i);
                backend->complete_wait();
                std::string answer = drain(backend->out());
                BackendReader r;
                ok = ok && r.feed(answer.data(), answer.size()) == BackendReader::State::done && r.status() == 200;
                bodies.push_back(r.body());
            }
            s.complete_fanout(bodies, ok);
        } else {
            std::size_t n = s.complete_file(static_cast<long long>(file_size));
            stream += drain(s.out());
            for (std::size_t i = 0; i < n; ++i) stream += pattern_byte(i);
            if (n) s.file_sent();
        }
    }
    return stream + drain(s.out());
}

TEST(Workloads, TableIsConsistent) {
    for (const auto& w : all_workloads()) {
        EXPECT_EQ(find_workload(w.name), &w);
        if (w.proto == Proto::http) {
            auto s = make_session(Proto::http, kId);
            auto r = split_responses(serve_all(*s, w.request, w.file_size));
            ASSERT_EQ(r.size(), 1u) << w.name;
            EXPECT_EQ(r[0].status, w.expected_status) << w.name;
            EXPECT_EQ(r[0].body.size(), w.expected_body) << w.name;
            EXPECT_TRUE(w.body_ok(0, r[0].body)) << w.name;
            EXPECT_EQ(s->close_after_write(), !w.keep_alive) << w.name;
        }
    }
    EXPECT_EQ(find_workload("nope"), nullptr);
    const Workload& hello = *find_workload("hello");
    EXPECT_FALSE(hello.body_ok(0, "Hello, world!"));
    EXPECT_FALSE(hello.body_ok(10, "d!!!"));
}

TEST(Workloads, ParametersAreParsedAndChecked) {
    const Workload* b = find_workload("bytes-4m");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->expected_body, 4u * 1024 * 1024);
    EXPECT_EQ(b->family, "bytes");
    EXPECT_EQ(find_workload("bytes-4m"), b);  // the same object each time
    const Workload* d = find_workload("delay-250");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->delay_ms, 250);
    EXPECT_EQ(d->request.substr(0, 16), "GET /delay/250 H");
    const Workload* f = find_workload("fanout-3x7");
    ASSERT_NE(f, nullptr);
    EXPECT_TRUE(f->needs_backend);
    EXPECT_EQ(f->expected, "delayed 7 ms id 0\ndelayed 7 ms id 1\ndelayed 7 ms id 2\n");
    const Workload* file = find_workload("file-1m");
    ASSERT_NE(file, nullptr);
    EXPECT_EQ(file->file_name, "1m");
    EXPECT_EQ(file->file_size, 1024u * 1024);
    for (const char* bad : {"delay-", "delay-x", "delay-60001", "fanout-0x10", "fanout-101x1", "fanout-3",
                            "bytes-", "bytes-65m", "file-", "file-1g", "hello-1", "idle-5", "echo-"})
        EXPECT_EQ(find_workload(bad), nullptr) << bad;
    EXPECT_EQ(find_workload("idle")->idle, true);
}

TEST(Effects, DelayHoldsTheAnswerAndLaterPipelinedRequests) {
    auto s = make_session(Proto::http, kId);
    std::string in = "GET / HTTP/1.1\r\n\r\nGET /delay/30?id=7 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    s->feed(in.data(), in.size());
    auto first = split_responses(drain(s->out()));
    ASSERT_EQ(first.size(), 1u);  // the answer before the effect goes out at once
    ASSERT_TRUE(s->busy());
    EXPECT_EQ(s->effect().kind, Effect::Kind::wait);
    EXPECT_EQ(s->effect().ms, 30);
    EXPECT_EQ(s->effect().id, 7);
    EXPECT_FALSE(s->close_after_write());
    std::string more = "GET /bytes/3 HTTP/1.1\r\n\r\n";  // arrives while waiting: held
    s->feed(more.data(), more.size());
    EXPECT_TRUE(s->out().empty());
    s->complete_wait();
    EXPECT_FALSE(s->busy());
    auto rest = split_responses(drain(s->out()));
    ASSERT_EQ(rest.size(), 3u);
    EXPECT_EQ(rest[0].body, "delayed 30 ms id 7\n");
    EXPECT_EQ(rest[1].body, "Hello, World!");
    EXPECT_EQ(rest[2].body, "ABC");
}

TEST(Effects, BadParametersAre400WithoutAnEffect) {
    for (const char* t : {"/delay/", "/delay/abc", "/delay/60001", "/delay/99999999999", "/fanout/0/10",
                          "/fanout/101/10", "/fanout/3", "/fanout/3/x", "/fanout//10"}) {
        auto s = make_session(Proto::http, kId);
        auto r = split_responses(feed_all(*s, std::string("GET ") + t + " HTTP/1.1\r\n\r\n"));
        ASSERT_EQ(r.size(), 1u) << t;
        EXPECT_EQ(r[0].status, 400) << t;
        EXPECT_FALSE(s->busy()) << t;
    }
    for (const char* t : {"/file/", "/file/..", "/file/.hidden", "/file/a/b", "/file/%2e%2e"}) {
        auto s = make_session(Proto::http, kId);
        auto r = split_responses(feed_all(*s, std::string("GET ") + t + " HTTP/1.1\r\n\r\n"));
        ASSERT_EQ(r.size(), 1u) << t;
        EXPECT_EQ(r[0].status, 404) << t;
        EXPECT_FALSE(s->busy()) << t;
    }
}

// /work/US: the same digests as the Python and Node.js models compute (values from both).
TEST(Work, DigestIsFnv1aOverTheRoundIndexBytes) {
    EXPECT_EQ(work_digest(0), 0x811c9dc5u);  // FNV-1a's offset basis: no rounds
    EXPECT_EQ(work_digest(1), 0x050c5d1fu);
    EXPECT_EQ(work_digest(256), 0x90a458c5u);
    EXPECT_EQ(work_digest(3000), 0x576a7d8du);
    EXPECT_EQ(work_digest(167062), 0xade1bf6eu);
    EXPECT_GT(work_rounds_per_us(), 0);
    EXPECT_EQ(work_digest_from(work_digest(1000), 1000, 2000), work_digest(3000));  // chunks chain
    const WorkDone none = run_work(0);
    EXPECT_EQ(none.rounds, 0u);
    EXPECT_EQ(none.digest, 0x811c9dc5u);
    const WorkDone some = run_work(50);
    EXPECT_GT(some.rounds, 0u);
    EXPECT_EQ(some.digest, work_digest(some.rounds));
}

TEST(Work, BodyIsFixedLengthAndParsedBack) {
    const std::string b = work_body(200, 167062, 0xade1bf6e);
    EXPECT_EQ(b, "work 200 us: 0000167062 rounds, fnv1a ade1bf6e\n");
    EXPECT_EQ(b.size(), work_body_layout(200).size);
    uint64_t rounds = 0;
    uint32_t digest = 0;
    ASSERT_TRUE(parse_work_body(b, 200, rounds, digest));
    EXPECT_EQ(rounds, 167062u);
    EXPECT_EQ(digest, 0xade1bf6eu);
    EXPECT_FALSE(parse_work_body(b, 201, rounds, digest));  // another US
    EXPECT_FALSE(parse_work_body("work 200 us: 00001670x2 rounds, fnv1a ade1bf6e\n", 200, rounds, digest));
    EXPECT_FALSE(parse_work_body("work 200 us: 0000167062 rounds, fnv1a ADE1BF6E\n", 200, rounds, digest));
    // The load generator's check, a chunk at a time: digits and lowercase hex where they belong.
    const Workload& w = *find_workload("work-200");
    EXPECT_EQ(w.family, "work");
    EXPECT_TRUE(w.probe);
    EXPECT_EQ(w.expected_body, b.size());
    EXPECT_TRUE(w.body_ok(0, b));
    for (std::size_t cut = 1; cut < b.size(); ++cut)
        EXPECT_TRUE(w.body_ok(0, b.substr(0, cut)) && w.body_ok(cut, b.substr(cut))) << cut;
    std::string bad = b;
    bad[15] = 'x';  // in the rounds
    EXPECT_FALSE(w.body_ok(0, bad));
    bad = b;
    bad[b.size() - 2] = 'G';  // in the digest
    EXPECT_FALSE(w.body_ok(0, bad));
    EXPECT_FALSE(w.body_ok(0, b + "x"));
    for (const char* name : {"work-", "work-x", "work-1000001", "work--1"})
        EXPECT_EQ(find_workload(name), nullptr) << name;
}

TEST(Work, TheSessionComputesAndAnswersInOrder) {
    auto s = make_session(Proto::http, kId);
    auto thread_cpu_us = [] {
        timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
    };
    const double t0 = thread_cpu_us();
    auto r = split_responses(feed_all(*s, "GET /work/1000 HTTP/1.1\r\n\r\n" + kGet));
    const double spent = thread_cpu_us() - t0;
    ASSERT_EQ(r.size(), 2u);
    ASSERT_EQ(r[0].status, 200);
    uint64_t rounds = 0;
    uint32_t digest = 0;
    ASSERT_TRUE(parse_work_body(r[0].body, 1000, rounds, digest)) << r[0].body;
    EXPECT_EQ(digest, work_digest(rounds));
    EXPECT_GT(rounds, 0u);
    EXPECT_GE(spent, 1000) << "/work/1000 spent less than 1000 µs of this thread's CPU";
    EXPECT_EQ(r[1].body, "Hello, World!");
    for (const char* t : {"/work/", "/work/-1", "/work/abc", "/work/1000001", "/work/5.0", "/work/0x10"}) {
        auto e = make_session(Proto::http, kId);
        auto a = split_responses(feed_all(*e, std::string("GET ") + t + " HTTP/1.1\r\n\r\n"));
        ASSERT_EQ(a.size(), 1u) << t;
        EXPECT_EQ(a[0].status, 400) << t;
    }
    auto p = make_session(Proto::http, kId);
    EXPECT_EQ(split_responses(feed_all(*p, "POST /work/10 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))[0].status, 405);
}

TEST(Effects, FanoutChecksEveryCallsBody) {
    auto s = make_session(Proto::http, kId);
    std::string in = "GET /fanout/2/5 HTTP/1.1\r\n\r\n";
    s->feed(in.data(), in.size());
    ASSERT_EQ(s->effect().kind, Effect::Kind::fanout);
    EXPECT_EQ(s->effect().calls, 2);
    s->complete_fanout({delay_body(5, 1), delay_body(5, 0)}, true);  // swapped: not the right answer
    auto r = split_responses(drain(s->out()));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 502);
    EXPECT_FALSE(s->close_after_write());  // the connection stays usable

    s->feed(in.data(), in.size());
    s->complete_fanout({}, false);  // a call failed
    r = split_responses(drain(s->out()));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 502);

    s->feed(in.data(), in.size());
    s->complete_fanout({delay_body(5, 0), delay_body(5, 1)}, true);
    r = split_responses(drain(s->out()));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 200);
    EXPECT_EQ(r[0].body, "delayed 5 ms id 0\ndelayed 5 ms id 1\n");
}

TEST(Effects, FileHeadThenBodyThenTheNextAnswer) {
    auto s = make_session(Proto::http, kId);
    std::string in = "GET /file/data.bin HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    s->feed(in.data(), in.size());
    ASSERT_EQ(s->effect().kind, Effect::Kind::file);
    EXPECT_EQ(s->effect().file, "data.bin");
    EXPECT_EQ(s->complete_file(5), 5u);
    std::string head = drain(s->out());
    EXPECT_NE(head.find("Content-Length: 5\r\n"), std::string::npos);
    EXPECT_NE(head.find("Content-Type: application/octet-stream"), std::string::npos);
    EXPECT_TRUE(s->busy());  // the next answer waits for the file's bytes
    EXPECT_TRUE(s->out().empty());
    s->file_sent();
    auto r = split_responses(drain(s->out()));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].body, "Hello, World!");

    std::string missing = "GET /file/nope HTTP/1.1\r\n\r\nHEAD /file/x HTTP/1.1\r\n\r\n";
    s->feed(missing.data(), missing.size());
    EXPECT_EQ(s->complete_file(-1), 0u);
    ASSERT_EQ(s->effect().kind, Effect::Kind::file);  // the HEAD behind it
    EXPECT_EQ(s->complete_file(1000), 0u);            // HEAD: no body to send
    EXPECT_FALSE(s->busy());
    std::string out = drain(s->out());
    EXPECT_EQ(out.find("HTTP/1.1 404"), 0u);
    EXPECT_NE(out.find("Content-Length: 1000\r\n\r\n"), std::string::npos);
    EXPECT_EQ(out.size(), out.find("Content-Length: 1000\r\n\r\n") + 24);
}

TEST(Effects, CloseAfterTheEffectsAnswer) {
    // HTTP/1.0 and Connection: close: the connection closes after the delayed answer, not before.
    auto s = make_session(Proto::http, kId);
    std::string in = "GET /delay/1 HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    s->feed(in.data(), in.size());
    EXPECT_FALSE(s->close_after_write());
    s->complete_wait();
    auto r = split_responses(drain(s->out()));
    ASSERT_EQ(r.size(), 1u);  // the request after a closing one is not answered
    EXPECT_TRUE(s->close_after_write());
    EXPECT_NE(r[0].headers.find("Connection: close"), std::string::npos);

    // A peer that half-closes after pipelining still gets every answer, then the close.
    auto h = make_session(Proto::http, kId);
    std::string two = "GET /delay/1 HTTP/1.1\r\n\r\nGET /delay/2 HTTP/1.1\r\n\r\n";
    h->feed(two.data(), two.size());
    h->peer_closed();
    EXPECT_FALSE(h->close_after_write());
    h->complete_wait();
    EXPECT_TRUE(h->busy());
    EXPECT_EQ(h->effect().ms, 2);
    EXPECT_FALSE(h->close_after_write());
    h->complete_wait();
    EXPECT_TRUE(h->close_after_write());
    EXPECT_EQ(split_responses(drain(h->out())).size(), 2u);
}

TEST(Backend, ReaderTakesOneAnswerAtATime) {
    BackendReader r;
    std::string a = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef";
    for (std::size_t i = 0; i + 1 < a.size(); ++i)
        ASSERT_EQ(r.feed(&a[i], 1), BackendReader::State::more) << i;
    EXPECT_EQ(r.feed(&a.back(), 1), BackendReader::State::done);
    EXPECT_EQ(r.status(), 200);
    EXPECT_EQ(r.body(), "abcdef");
    EXPECT_TRUE(r.keep_alive());
    r.reset();
    std::string two = a + a;  // calls do not pipeline: bytes past the answer are an error
    EXPECT_EQ(r.feed(two.data(), two.size()), BackendReader::State::error);
    r.reset();
    std::string bad = "HTTX/1.1 200\r\n\r\n";
    EXPECT_EQ(r.feed(bad.data(), bad.size()), BackendReader::State::error);
    r.reset();
    std::string closing = "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    EXPECT_EQ(r.feed(closing.data(), closing.size()), BackendReader::State::done);
    EXPECT_EQ(r.status(), 503);
    EXPECT_FALSE(r.keep_alive());
    EXPECT_EQ(backend_request(20, 3), "GET /delay/20?id=3 HTTP/1.1\r\nHost: backend\r\n\r\n");
}

TEST(Session, AtRestOnlyBetweenRequests) {
    auto s = make_session(Proto::http, kId);
    EXPECT_TRUE(s->at_rest());
    std::string part = "GET / HTTP/1.1\r\nHo";
    s->feed(part.data(), part.size());
    EXPECT_FALSE(s->at_rest());  // half a request is in the parser
    std::string rest = "st: x\r\n\r\n";
    s->feed(rest.data(), rest.size());
    EXPECT_FALSE(s->at_rest());  // its answer is not written yet
    drain(s->out());
    EXPECT_TRUE(s->at_rest());
    std::string wait = "GET /delay/5 HTTP/1.1\r\n\r\n";
    s->feed(wait.data(), wait.size());
    EXPECT_FALSE(s->at_rest());  // an effect is pending
    s->complete_wait();
    drain(s->out());
    EXPECT_TRUE(s->at_rest());
    std::string closing = "GET / HTTP/1.0\r\n\r\n";
    s->feed(closing.data(), closing.size());
    drain(s->out());
    EXPECT_FALSE(s->at_rest());  // closing: not to be replaced by a fresh session

    auto e = make_session(Proto::echo, kId);
    EXPECT_TRUE(e->at_rest());
    e->feed("ab", 2);
    EXPECT_FALSE(e->at_rest());
    drain(e->out());
    EXPECT_TRUE(e->at_rest());
}
