// verify's effects cases: the Wait (/delay), Fanout (/fanout, against the runner's backend) and
// File (/file, from the docroot) effects, each honoured without holding up other connections;
// and the CPU work of /work/US, checked and calibrated.
#include <algorithm>
#include <map>

#include "concbench/host.hpp"
#include "concbench/work.hpp"
#include "concbench/workloads.hpp"
#include "verify_case.hpp"

using namespace std::chrono;

namespace concbench::verify_detail {
namespace {

double ms_since(Clock::time_point t0) { return duration<double, std::milli>(Clock::now() - t0).count(); }

}  // namespace

// The Wait effect: honoured, never early, and it holds up nothing but its own connection.
std::string case_delay(Ctx& x) {
    auto& s = x.start(Proto::http);
    auto t0 = Clock::now();
    Conn slow(s.port());
    slow.send(get("/delay/400?id=5") + get("/"));
    pause_ms(50);
    Conn quick(s.port());
    quick.send(get("/"));
    expect_hello(quick.response(), "another connection while one request waits");
    const double other_ms = ms_since(t0);
    need(other_ms < 350, "while one request waited 400 ms, another connection was answered only after {:.0f} ms",
         other_ms);
    Response r = slow.response();
    const double waited_ms = ms_since(t0);
    need(r.status == 200, "/delay/400: status {}", r.status);
    need(r.body == delay_body(400, 5), "/delay/400?id=5: body '{}' (expected '{}')", r.body.substr(0, 60),
         delay_body(400, 5));
    need(waited_ms >= 400, "/delay/400 answered after {:.1f} ms: early", waited_ms);
    need(waited_ms < 1500, "/delay/400 answered after {:.0f} ms", waited_ms);
    expect_hello(slow.response(), "the request pipelined behind the wait");
    // Never early, not even by a fraction of a millisecond (a timer rounded down would be).
    for (int i = 0; i < 15; ++i) {
        auto t = Clock::now();
        quick.send(get("/delay/7"));
        Response d = quick.response();
        need(d.status == 200 && d.body == delay_body(7, -1), "/delay/7 #{}: status {}, body '{}'", i + 1,
             d.status, d.body.substr(0, 60));
        const double ms = ms_since(t);
        need(ms >= 7, "/delay/7 #{} answered after {:.2f} ms: early", i + 1, ms);
    }
    // 40 connections wait 300 ms each at once: about 300 ms in all, not 40 x 300 = 12 s.
    std::vector<std::unique_ptr<Conn>> many;
    auto t40 = Clock::now();
    for (int i = 0; i < 40; ++i) {
        many.push_back(std::make_unique<Conn>(s.port()));
        many.back()->send(get("/delay/300"));
    }
    for (int i = 0; i < 40; ++i) {
        Response d = many[i]->response();
        need(d.body == delay_body(300, -1), "/delay/300 on connection {} of 40: status {}, body '{}'", i + 1,
             d.status, d.body.substr(0, 60));
    }
    const double all_ms = ms_since(t40);
    need(all_ms < 1500, "40 waits of 300 ms at once took {:.0f} ms: they did not overlap", all_ms);
    many.clear();
    // Clients that leave while their answer waits (a FIN or a reset) cost nothing lasting.
    for (int i = 0; i < 100; ++i) {
        Conn c(s.port());
        c.send(get("/delay/100"));
        if (i % 2) c.reset();
    }
    // SIGTERM while requests wait 5 s: the server still stops promptly and cleanly.
    for (int i = 0; i < 10; ++i) {
        many.push_back(std::make_unique<Conn>(s.port()));
        many.back()->send(get("/delay/5000"));
    }
    pause_ms(200);
    need(s.died().empty(), "the server died: {}", s.died());
    StopReport stop = x.stop(s, seconds(5));
    need(stop.clean() && stop.stop_s <= 5.0, "SIGTERM with 10 requests waiting 5 s: {}", stop.describe());
    return fmt::format("400 ms wait answered after {:.0f} ms, another connection meanwhile after {:.0f} ms; "
                       "40 waits of 300 ms in {:.0f} ms; stopped in {:.2f} s with 10 waits pending",
                       waited_ms, other_ms, all_ms, stop.stop_s);
}

// The Fanout effect against the backend the runner uses: bodies in id order, calls overlapping,
// and a backend gone is a 502, not a crash.
std::string case_fanout(Ctx& x) {
    auto& backend = x.start_backend();
    auto& s = x.start(Proto::http);
    const Workload& w = *find_workload("fanout-10x300");
    Conn c(s.port());
    double slowest = 0;
    for (int round = 0; round < 3; ++round) {  // later rounds may reuse pooled backend connections
        auto t0 = Clock::now();
        c.send(w.request);
        Response r = c.response();
        const double ms = ms_since(t0);
        need(r.status == 200, "/fanout/10/300 round {}: status {} ({})", round + 1, r.status, r.body.substr(0, 80));
        need(r.body == w.expected, "/fanout/10/300 round {}: the body is not the 10 backend bodies in id order: '{}'",
             round + 1, r.body.substr(0, 80));
        need(ms >= 300, "/fanout/10/300 answered after {:.1f} ms, before its 300 ms calls could end", ms);
        need(ms < 1500, "/fanout/10/300 took {:.0f} ms: the 10 calls did not overlap (in turn: 3 s)", ms);
        slowest = std::max(slowest, ms);
    }
    // Several fan-outs at once, pipelined behind each other and on other connections.
    std::vector<std::unique_ptr<Conn>> many;
    for (int i = 0; i < 8; ++i) {
        many.push_back(std::make_unique<Conn>(s.port()));
        many.back()->send(get("/fanout/4/50") + get("/fanout/2/10"));
    }
    for (int i = 0; i < 8; ++i)
        for (const char* name : {"fanout-4x50", "fanout-2x10"}) {
            Response r = many[i]->response();
            need(r.status == 200 && r.body == find_workload(name)->expected,
                 "connection {} of 8, {} pipelined: status {}, body '{}'", i + 1, name, r.status, r.body.substr(0, 80));
        }
    many.clear();
    // Clients that leave mid-fan-out; then the backend goes away: 502, and the server lives on.
    for (int i = 0; i < 20; ++i) {
        Conn gone(s.port());
        gone.send(get("/fanout/5/100"));
    }
    pause_ms(300);
    StopReport b = x.stop(backend, seconds(5));
    need(b.clean(), "the backend did not stop cleanly: {}", b.describe());
    Conn after(s.port());
    after.send(get("/fanout/3/10"));
    Response r = after.response();
    need(r.status == 502, "/fanout/3/10 with the backend gone: status {} (expected 502)", r.status);
    return fmt::format("/fanout/10/300 in at most {:.0f} ms (in turn: 3,000 ms); backend gone: 502", slowest);
}

// The File effect: docroot files byte-exact, in order among pipelined answers; missing: 404.
std::string case_file(Ctx& x) {
    const Workload& k1 = x.docroot_file("file-1k");
    const Workload& m1 = x.docroot_file("file-1m");
    const Workload& empty = x.docroot_file("file-0");
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    c.send(get("/file/" + m1.file_name) + get("/file/" + k1.file_name) + get("/"));
    expect_bytes(c.response(seconds(10)), m1.file_size, "/file/" + m1.file_name);
    expect_bytes(c.response(), k1.file_size, "/file/" + k1.file_name);
    expect_hello(c.response(), "GET / pipelined after two files");
    c.send(get("/file/" + empty.file_name) + get("/file/missing") + get("/file/" + k1.file_name));
    expect_bytes(c.response(), 0, "/file/" + empty.file_name);
    Response r = c.response();
    need(r.status == 404, "/file/missing: status {} (expected 404)", r.status);
    expect_bytes(c.response(), k1.file_size, "/file/" + k1.file_name + " after a 404 on the same connection");
    return "0 B, 1 KiB, 1 MiB byte-exact; missing: 404, connection kept";
}

// /work/US: the computation the contract names (work.hpp), in the server's language, checked
// against ours for the rounds it says it ran, run until US µs of the server's CPU are spent.
std::string case_work(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn c(s.port());
    uint64_t rounds = 0;
    uint32_t digest = 0;
    c.send(get("/work/0"));
    Response r = c.response();
    need(r.status == 200 && parse_work_body(r.body, 0, rounds, digest),
         "/work/0: status {}, body '{}' (expected 'work 0 us: 0000000000 rounds, fnv1a 811c9dc5')", r.status,
         r.body.substr(0, 80));
    need(rounds == 0 && digest == work_digest(0), "/work/0: {} rounds, digest {:08x} (expected 0 and 811c9dc5)",
         rounds, digest);
    // 10 x 20 ms of CPU: each digest right for its rounds, and the server's CPU near 200 ms (a
    // loose band: the machine may be busy, and a chunk may overshoot)
    const TreeSample a = sample_tree(s.pid());
    std::map<uint64_t, uint32_t> known;
    for (int i = 0; i < 10; ++i) {
        c.send(get("/work/20000"));
        r = c.response();
        need(r.status == 200 && parse_work_body(r.body, 20000, rounds, digest), "/work/20000 #{}: status {}, body '{}'",
             i + 1, r.status, r.body.substr(0, 80));
        auto [it, fresh] = known.try_emplace(rounds, 0);
        if (fresh) it->second = work_digest(rounds);
        need(digest == it->second, "/work/20000 #{}: {} rounds give digest {:08x}, the server said {:08x}", i + 1,
             rounds, it->second, digest);
    }
    const double cpu = sample_tree(s.pid()).cpu_s - a.cpu_s;
    need(cpu >= 0.1 && cpu <= 0.5,
         "10 x /work/20000 (200 ms of CPU asked) cost the server {:.3f} s of CPU: it does not compute until its CPU clock says 20 ms", cpu);
    for (const char* arg : {"abc", "-1", "", "1000001", "99999999999999999999", "0x10", "+5", "5.0"}) {
        Conn b(s.port());
        b.send(get(std::string("/work/") + arg));
        Response e = b.response();
        need(e.status == 400, "/work/{}: status {} (expected 400)", arg, e.status);
    }
    c.send(get("/"));  // the connection is still in step
    expect_hello(c.response(), "GET / after the work");
    return fmt::format("10 x /work/20000: {:.0f} ms of server CPU, {} to {} rounds", cpu * 1000, known.begin()->first,
                       known.rbegin()->first);
}

}  // namespace concbench::verify_detail
