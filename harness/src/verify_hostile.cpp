// verify's hostile-client cases: resets mid-request, half-closed connections, slowloris (with
// the latency Probe of a normal client beside it) and a client that never reads its answers.
#include <algorithm>
#include <atomic>
#include <thread>

#include "verify_case.hpp"

using namespace std::chrono;

namespace concbench::verify_detail {

std::string case_reset(Ctx& x) {
    auto& s = x.start(Proto::http);
    const std::string big = x.body_path(1048576);
    {
        Conn w(s.port());
        w.send(get("/"));
        expect_hello(w.response(), "warm-up");
    }
    pause_ms(200);
    TreeSample base = sample_tree(s.pid());
    for (int i = 0; i < 500 && !x.interrupted(); ++i) {
        Conn c(s.port());
        need(c.ok(), "connection {}: {}", i + 1, c.error());
        switch (i % 4) {
            case 0: c.try_send("GET / HTTP/1.1\r\nHost: "); break;                // mid-head
            case 1: c.try_send("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nab"); break;  // mid-body
            case 2: c.try_send(get(big)); break;                                  // mid-answer
            case 3: break;                                                        // before a byte
        }
        if (i % 4 == 0) pause_ms(1);  // let the server read the partial request first
        c.reset();
    }
    // A process-per-connection server ends one child per reset: on a loaded machine (or under a
    // sanitizer) the last of them may take seconds to be scheduled, exit and be reaped.
    TreeSample after = settle(s.pid(), [&](const TreeSample& t) { return t.fds <= base.fds; }, seconds(10));
    need(after.fds <= base.fds, "fds {} before, {} after 500 resets (processes: {} before, {} after; {})", base.fds,
         after.fds, base.processes, after.processes, describe_fds(s.pid()));
    return fmt::format("fds {} -> {}", base.fds, after.fds);
}

std::string case_half_closed(Ctx& x) {
    auto& s = x.start(Proto::http);
    {
        Conn c(s.port());
        c.send(get("/"));
        c.shutdown_write();
        expect_hello(c.response(), "GET / then shutdown(SHUT_WR)");
        std::string why = c.expect_closed();
        need(why.empty(), "after the answer to a half-closed connection: {}", why);
    }
    {
        Conn c(s.port());
        c.send(get(x.body_path(10)) + get("/") + get(x.body_path(1048576)));
        c.shutdown_write();
        expect_bytes(c.response(), 10, "first of three pipelined, half-closed");
        expect_hello(c.response(), "second of three pipelined, half-closed");
        expect_bytes(c.response(seconds(10)), 1048576, "third (1 MiB) of three pipelined, half-closed");
    }
    return "";
}

std::string case_half_closed_echo(Ctx& x) {
    auto& s = x.start(Proto::echo);
    Conn c(s.port());
    std::string msg = payload(100000, 3);
    c.send(msg);
    c.shutdown_write();
    auto deadline = Clock::now() + seconds(10);
    int rc;
    while ((rc = c.read_some(deadline)) > 0) {}
    need(rc == 0, "half-closed echo: {} of {} bytes back, then {}", c.in().size(), msg.size(),
         rc == -1 ? "no close" : "an error");
    need(c.in() == msg, "half-closed echo: {} bytes back, expected the {} sent", c.in().size(), msg.size());
    return "";
}

namespace {

// A normal client for 3 s: a fresh connection and GET / every 10 ms, each answer within 1 s.
struct Probe {
    std::vector<double> lat_ms;  // sorted
    int failed = 0;
    std::string first_error;
    double pct(double p) const {
        return lat_ms.empty() ? 0.0 : lat_ms[std::min(lat_ms.size() - 1, static_cast<std::size_t>(p / 100 * lat_ms.size()))];
    }
    double p99() const { return pct(99); }
    std::string figures() const {
        return fmt::format("{} answered, {} failed; p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms", lat_ms.size(),
                           failed, pct(50), p99(), lat_ms.empty() ? 0.0 : lat_ms.back());
    }
};

Probe probe_latency(Ctx& x, uint16_t port) {
    Probe p;
    auto end = Clock::now() + seconds(3);
    while (Clock::now() < end && p.failed < 5 && !x.interrupted()) {
        auto t0 = Clock::now();
        Conn c(port, seconds(kSlowdown));
        Response r;
        std::string why;
        bool ok = c.ok();
        if (ok) ok = c.try_send(get("/")) && c.next(r, t0 + seconds(kSlowdown), why) && r.status == 200;
        else why = c.error();
        if (!ok) {
            ++p.failed;
            if (p.first_error.empty()) p.first_error = why.empty() ? fmt::format("status {}", r.status) : why;
        } else {
            p.lat_ms.push_back(duration<double, std::milli>(Clock::now() - t0).count());
        }
        pause_ms(10);
    }
    std::sort(p.lat_ms.begin(), p.lat_ms.end());
    return p;
}

}  // namespace

// 200 connections dribbling a header byte a second while a normal client makes requests on
// fresh connections: its latency is what other clients pay for the slow ones.
std::string case_slowloris(Ctx& x) {
    auto& s = x.start(Proto::http);
    std::vector<std::unique_ptr<Conn>> slow;
    for (int i = 0; i < 200; ++i) {
        slow.push_back(std::make_unique<Conn>(s.port()));
        if (slow.back()->ok()) slow.back()->try_send("GET / HTTP/1.1\r\nX-Slow: ");
    }
    std::atomic<bool> stop{false};
    std::thread dribble([&] {
        while (!stop) {
            for (auto& c : slow)
                if (c->ok()) c->try_send("a");
            for (int i = 0; i < 10 && !stop; ++i) pause_ms(100);
        }
    });
    Probe with = probe_latency(x, s.port());
    stop = true;
    dribble.join();
    slow.clear();
    need(with.failed == 0, "with 200 slowloris connections: {} (first: {})", with.figures(), with.first_error);
    // The 100 ms bound is for event loops (readiness, completion); a thread or process per
    // connection pays a spawn per client, so there the figures are reported, not judged.
    if (x.model.mechanism == "blocking")
        return with.figures() + " (blocking model: latency reported, not judged)";
    if (with.p99() < 100) return with.figures();
    // Over 100 ms: the slow clients' doing, or a busy machine's? The same probe without them
    // decides; p99 must stay within twice the quiet figure plus 10 ms.
    pause_ms(300);
    Probe quiet = probe_latency(x, s.port());
    std::string both = fmt::format("with 200 slowloris connections {}; without them {}", with.figures(), quiet.figures());
    need(quiet.failed == 0 && quiet.p99() >= 50 && with.p99() <= 2 * quiet.p99() + 10,
         "p99 over 100 ms: {}", both);
    return both + " (the machine is busy: p99 compared with the quiet figure)";
}

std::string case_never_reading(Ctx& x) {
    auto& s = x.start(Proto::http);
    Conn hog(s.port());
    std::string many;
    const std::string big = get(x.body_path(4194304));
    for (int i = 0; i < 16; ++i) many += big;
    hog.send(many);  // 64 MiB asked for, never read
    pause_ms(200);
    double worst = 0;
    for (int i = 0; i < 50; ++i) {  // others are served meanwhile, on old and new connections
        auto t0 = Clock::now();
        Conn c(s.port(), seconds(2));
        need(c.ok(), "while a client does not read its 4 MiB answers: connect: {}", c.error());
        c.send(get("/"));
        Response r;
        std::string why;
        need(c.next(r, t0 + seconds(2), why), "while a client does not read its 4 MiB answers, "
             "request #{} of another client: {}", i + 1, why);
        expect_hello(r, "another client");
        worst = std::max(worst, duration<double, std::milli>(Clock::now() - t0).count());
    }
    TreeSample t = sample_tree(s.pid());
    return fmt::format("other clients' worst {:.1f} ms; server PSS {} KiB with 64 MiB unread", worst, t.pss_kib);
}

}  // namespace concbench::verify_detail
