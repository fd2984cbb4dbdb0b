// loadgen: the pure parts on synthetic inputs (open-loop schedule, fairness, Little's law), then
// the load shapes end to end over loopback — against the real build/bin/server-epoll, and against
// a scripted peer where the test needs a server that behaves in one exact way (answers only once
// P requests have arrived, never answers, closes idle connections). No speed is asserted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "concbench/host.hpp"
#include "concbench/loadgen.hpp"
#include "concbench/results.hpp"
#include "concbench/workloads.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

// ---- the open-loop schedule -------------------------------------------------------------------

TEST(Schedule, AllConnectionsTogetherAreEvenlySpaced) {
    const uint64_t start = 1'000'000'000;
    const double rate = 1000;  // 1 ms apart
    const int n = 4;
    std::vector<uint64_t> all;
    for (int i = 0; i < n; ++i)
        for (uint64_t k = 0; k < 50; ++k) all.push_back(intended_send_ns(start, rate, n, i, k));
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all.front(), start);
    for (std::size_t j = 1; j < all.size(); ++j) EXPECT_EQ(all[j] - all[j - 1], 1'000'000u) << j;
}

TEST(Schedule, EachConnectionSendsAtItsShareOfTheRate) {
    // 10 connections at 2000 req/s: each sends every 5 ms, connection i offset by i * 0.5 ms.
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(intended_send_ns(0, 2000, 10, i, 0), uint64_t(i) * 500'000);
        for (uint64_t k = 1; k < 100; ++k)
            EXPECT_EQ(intended_send_ns(0, 2000, 10, i, k) - intended_send_ns(0, 2000, 10, i, k - 1), 5'000'000u);
    }
}

TEST(Schedule, IntendedTimesDoNotDriftOverLongRuns) {
    // 3 req/s is not a whole number of ns apart: times are computed from k, not accumulated.
    const uint64_t t = intended_send_ns(0, 3, 1, 0, 3 * 3600);  // one hour later
    EXPECT_EQ(t, 3600ull * 1'000'000'000);
    // A million requests/s over an hour on 1000 connections stays exact to the nanosecond.
    EXPECT_EQ(intended_send_ns(5, 1e6, 1000, 999, 3'600'000), 5 + (3'600'000ull * 1000 + 999) * 1000);
}

TEST(Schedule, DependsOnlyOnItsArguments) {
    // The intended time of request k is fixed in advance: asking late (as a stalled client would)
    // gives the same answer as asking on time, which is what makes the latency correction honest.
    const uint64_t early = intended_send_ns(42, 777, 7, 3, 1000);
    std::this_thread::sleep_for(milliseconds(5));
    EXPECT_EQ(intended_send_ns(42, 777, 7, 3, 1000), early);
}

// ---- fairness and Little's law ------------------------------------------------------------------

TEST(Fairness, EvenSpreadIsOne) {
    Fairness f = fairness({100, 100, 100, 100});
    EXPECT_DOUBLE_EQ(f.jain, 1.0);
    EXPECT_EQ(f.min, 100u);
    EXPECT_EQ(f.max, 100u);
    EXPECT_EQ(f.median, 100u);
    EXPECT_EQ(f.starved, 0);
}

TEST(Fairness, OneConnectionGettingEverythingIsOneOverN) {
    Fairness f = fairness({0, 0, 0, 0, 500});
    EXPECT_DOUBLE_EQ(f.jain, 1.0 / 5);
    EXPECT_EQ(f.starved, 4);
    EXPECT_EQ(f.min, 0u);
    EXPECT_EQ(f.median, 0u);
    EXPECT_EQ(f.max, 500u);
}

TEST(Fairness, KnownValueAndEmpty) {
    // (1+2+3+4)^2 / (4 * (1+4+9+16)) = 100 / 120
    EXPECT_NEAR(fairness({4, 1, 3, 2}).jain, 100.0 / 120, 1e-12);
    EXPECT_EQ(fairness({4, 1, 3, 2}).median, 3u);  // upper median of an even count
    Fairness e = fairness({});
    EXPECT_EQ(e.jain, 0);
    EXPECT_EQ(e.starved, 0);
}

TEST(LittleLaw, HoldsForAFullClosedLoop) {
    // 100 connections, 10,000 req/s, 10 ms each: 100 in flight.
    LittleCheck l = little_law(10'000, 0.010, 100, 1);
    EXPECT_NEAR(l.in_flight, 100, 1e-9);
    EXPECT_NEAR(l.ratio, 1.0, 1e-12);
    EXPECT_TRUE(l.ok);
}

TEST(LittleLaw, CountsThePipelineDepth) {
    LittleCheck l = little_law(160'000, 0.010, 100, 16);  // 1600 in flight = 100 x 16
    EXPECT_DOUBLE_EQ(l.expected, 1600);
    EXPECT_TRUE(l.ok);
    // Batches drain one answer at a time: anything from C to C x P in flight is a full loop...
    EXPECT_TRUE(little_law(10'000, 0.010, 100, 16).ok);   // 100 of 1600
    EXPECT_TRUE(little_law(100'000, 0.010, 100, 16).ok);  // 1000
    // ...fewer than C is not, nor more than C x P.
    EXPECT_FALSE(little_law(5'000, 0.010, 100, 16).ok);   // 50
    EXPECT_FALSE(little_law(200'000, 0.010, 100, 16).ok); // 2000
}

TEST(LittleLaw, FlagsStarvedConnectionsAndTheTwentyPercentEdge) {
    EXPECT_FALSE(little_law(10'000, 0.005, 100, 1).ok);  // half the connections idle
    EXPECT_TRUE(little_law(10'000, 0.0081, 100, 1).ok);
    EXPECT_FALSE(little_law(10'000, 0.0079, 100, 1).ok);
    EXPECT_TRUE(little_law(10'000, 0.0119, 100, 1).ok);
    EXPECT_FALSE(little_law(10'000, 0.0121, 100, 1).ok);
    EXPECT_FALSE(little_law(0, 0, 0, 1).ok);
}

// ---- a real server --------------------------------------------------------------------------------

std::unique_ptr<ServerProcess> start_epoll(const std::string& proto = "http") {
    ServerCommand cmd;
    cmd.binary = std::string(CONCBENCH_BIN_DIR) + "/server-epoll";
    cmd.args = {"--proto", proto, "--host", "127.0.0.1", "--port", "0"};
    cmd.log_path = (std::filesystem::temp_directory_path() / "concbench-test-loadgen.log").string();
    std::string err;
    auto s = ServerProcess::start(cmd, seconds(10), err);
    EXPECT_TRUE(s) << err;
    return s;
}

LoadSpec spec_for(uint16_t port, const char* workload, int connections) {
    LoadSpec s;
    s.port = port;
    s.workload = find_workload(workload);
    s.connections = connections;
    s.warmup_s = 0.2;
    s.duration_s = 1.0;
    s.request_timeout_s = 5;
    return s;
}

uint64_t total(const std::map<std::string, uint64_t>& errors) {
    uint64_t n = 0;
    for (const auto& [k, v] : errors) n += v;
    return n;
}

TEST(LoadEndToEnd, ClosedLoopWithPipelining) {
    auto server = start_epoll();
    ASSERT_TRUE(server);
    LoadSpec s = spec_for(server->port(), "hello", 8);
    s.pipeline = 16;
    s.threads = 2;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.connections_established, 8);
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(total(r.errors), 0u);
    EXPECT_EQ(r.latency.count(), r.requests);  // one latency per request, not per batch
    EXPECT_EQ(r.per_connection.size(), 8u);
    EXPECT_EQ(fairness(r.per_connection).starved, 0);
    EXPECT_EQ(r.latency_uncorrected.count(), 0u);  // closed loop: nothing to correct
    // Every request sent in the window is answered in it, give or take what was in flight at
    // its edges: at most the pipeline of every connection.
    EXPECT_LE(r.sent, r.requests + 8 * 16);
    EXPECT_LE(r.requests, r.sent + 8 * 16);
    server->stop();
}

TEST(LoadEndToEnd, OpenLoopSendsOnScheduleAndRecordsBothLatencies) {
    auto server = start_epoll();
    ASSERT_TRUE(server);
    LoadSpec s = spec_for(server->port(), "hello", 10);
    s.rate = 2000;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(total(r.errors), 0u);
    EXPECT_DOUBLE_EQ(r.offered_rps, 2000);
    // Never more than the schedule allows (the window plus a warm-up's backlog at most).
    EXPECT_LE(double(r.sent), 2000 * (r.measured_s + 0.05) + 10);
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(r.latency.count(), r.requests);
    EXPECT_EQ(r.latency_uncorrected.count(), r.requests);
    // Per request, actual send >= intended send, so uncorrected <= corrected everywhere.
    for (double p : {50.0, 90.0, 99.0, 100.0})
        EXPECT_LE(r.latency_uncorrected.percentile_ns(p), r.latency.percentile_ns(p)) << p;
    EXPECT_LE(r.latency_uncorrected.mean_ns(), r.latency.mean_ns());
    // Evenly spread: every connection got its share.
    Fairness f = fairness(r.per_connection);
    EXPECT_EQ(f.starved, 0);
    EXPECT_LE(f.max - f.min, 3u);
    server->stop();
}

TEST(LoadEndToEnd, OpenLoopCountsAStalledServerFromTheIntendedTime) {
    // The server is stopped for 0.5 s of a 2 s open-loop window: every request due meanwhile
    // waits, and the corrected latency says so; the uncorrected one sees only the few requests
    // that were in flight when it stopped (coordinated omission).
    auto server = start_epoll();
    ASSERT_TRUE(server);
    LoadSpec s = spec_for(server->port(), "hello", 4);
    s.rate = 1000;
    s.duration_s = 2.0;
    std::thread freezer([&] {
        std::this_thread::sleep_for(milliseconds(900));  // warm-up 0.2 s, then 0.7 s into the window
        kill(server->pid(), SIGSTOP);
        std::this_thread::sleep_for(milliseconds(500));
        kill(server->pid(), SIGCONT);
    });
    LoadResult r = run_load(s);
    freezer.join();
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(total(r.errors), 0u);
    // ~25 % of the window's requests were due during the stop: p90 waited a good part of it.
    EXPECT_GE(r.latency.percentile_ns(90), 200'000'000u);
    EXPECT_GE(r.latency.max_ns(), 400'000'000u);
    // Uncorrected: 4 requests of ~2000 saw the stall; p99 is far below it.
    EXPECT_LT(r.latency_uncorrected.percentile_ns(99), r.latency.percentile_ns(90));
    server->stop();
}

TEST(LoadEndToEnd, ConnectionPerRequest) {
    auto server = start_epoll();
    ASSERT_TRUE(server);
    LoadSpec s = spec_for(server->port(), "hello-close", 4);
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(total(r.errors), 0u);
    EXPECT_EQ(fairness(r.per_connection).starved, 0);
    // Open loop with a connection per request works the same way.
    s.rate = 500;
    LoadResult o = run_load(s);
    ASSERT_TRUE(o.fatal.empty()) << o.fatal;
    EXPECT_GT(o.requests, 0u);
    EXPECT_EQ(total(o.errors), 0u);
    EXPECT_LE(double(o.sent), 500 * (o.measured_s + 0.05) + 4);
    // Pipelining and idle holding need keep-alive: refused in one line.
    s.rate = 0;
    s.pipeline = 2;
    EXPECT_NE(run_load(s).fatal.find("keep-alive"), std::string::npos);
    server->stop();
}

TEST(LoadEndToEnd, IdleConnectionsAreHeldAndCheckedAtTheEnd) {
    auto server = start_epoll();
    ASSERT_TRUE(server);
    LoadSpec s = spec_for(server->port(), "hello", 2);
    s.idle_connections = 300;
    s.threads = 2;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.connections_established, 2);  // idle ones are not active connections
    EXPECT_EQ(r.per_connection.size(), 2u);
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(r.idle.requested, 300);
    EXPECT_EQ(r.idle.established, 300);
    EXPECT_EQ(r.idle.lost_while_idle, 0);
    EXPECT_EQ(r.idle.answered_at_end, 300);
    EXPECT_EQ(r.idle.dropped, 0);
    nlohmann::json j = load_json(s, r);
    EXPECT_EQ(j["idle"]["dropped"], 0);
    server->stop();
}

TEST(LoadEndToEnd, PerSecondSeriesAddsUp) {
    auto server = start_epoll("echo");
    ASSERT_TRUE(server);
    LoadSpec s = spec_for(server->port(), "echo", 4);
    s.duration_s = 2.0;
    s.pipeline = 4;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(total(r.errors), 0u);
    ASSERT_GE(r.series.size(), 2u);
    ASSERT_LE(r.series.size(), 3u);
    uint64_t sum = 0;
    for (const SecondStats& st : r.series) {
        sum += st.requests;
        EXPECT_GT(st.length_s, 0);
        EXPECT_LE(st.length_s, 1.0);
        if (st.requests > 0) {
            EXPECT_GT(st.p99_us, 0);
        }
    }
    EXPECT_EQ(sum, r.requests);
    EXPECT_EQ(load_series_json(r)["rows"].size(), r.series.size());
    server->stop();
}

// ---- a scripted peer ------------------------------------------------------------------------------

// A blocking TCP server on 127.0.0.1 with one thread per connection running `serve(fd, index)`.
class Peer {
public:
    explicit Peer(std::function<void(int fd, int index)> serve) : serve_(std::move(serve)) {
        lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const int one = 1;
        setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(lfd_, 512);
        socklen_t len = sizeof a;
        getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        acceptor_ = std::thread([this] {
            for (int i = 0;; ++i) {
                int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd < 0) return;
                timeval tv{0, 200'000};  // so a handler notices the end of the test
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                std::lock_guard<std::mutex> g(mu_);
                fds_.push_back(fd);
                handlers_.emplace_back([this, fd, i] { serve_(fd, i); });
            }
        });
    }
    ~Peer() {
        stopping = true;
        shutdown(lfd_, SHUT_RDWR);
        close(lfd_);
        acceptor_.join();
        for (int fd : fds_) shutdown(fd, SHUT_RDWR);
        for (auto& t : handlers_) t.join();
        for (int fd : fds_) close(fd);
    }
    uint16_t port() const { return port_; }
    std::atomic<bool> stopping{false};

private:
    std::function<void(int, int)> serve_;
    int lfd_ = -1;
    uint16_t port_ = 0;
    std::thread acceptor_;
    std::mutex mu_;
    std::vector<int> fds_;
    std::vector<std::thread> handlers_;
};

const std::string kAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";

// Reads until `n` whole requests (ending in a blank line) are buffered; false if the peer left.
bool read_requests(int fd, std::string& in, std::size_t n, const std::atomic<bool>& stopping) {
    char buf[4096];
    for (;;) {
        std::size_t count = 0;
        for (std::size_t p = 0; (p = in.find("\r\n\r\n", p)) != std::string::npos; p += 4) ++count;
        if (count >= n) return true;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r == 0) return false;
        if (r < 0) {
            if ((errno == EAGAIN || errno == EINTR) && !stopping) continue;
            return false;
        }
        in.append(buf, std::size_t(r));
    }
}

void drop_requests(std::string& in, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) in.erase(0, in.find("\r\n\r\n") + 4);
}

TEST(LoadScripted, PipelineDepthIsReallyInFlight) {
    // This peer answers only once 8 requests have arrived on a connection: a client that does not
    // keep 8 in flight gets no answer at all and times out.
    std::atomic<int> batches{0};
    Peer peer([&](int fd, int) {
        std::string in;
        while (read_requests(fd, in, 8, peer.stopping)) {
            drop_requests(in, 8);
            std::string out;
            for (int i = 0; i < 8; ++i) out += kAnswer;
            if (write(fd, out.data(), out.size()) != ssize_t(out.size())) return;
            ++batches;
        }
    });
    LoadSpec s = spec_for(peer.port(), "hello", 2);
    s.primer = false;  // this peer never answers the primer's single request
    s.pipeline = 8;
    s.duration_s = 0.5;
    s.request_timeout_s = 2;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(total(r.errors), 0u) << nlohmann::json(r.errors).dump();
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(r.requests % 8, 0u);  // answers came in batches of 8 per connection
    EXPECT_GT(batches.load(), 0);
}

TEST(LoadScripted, ADeadServerEndsTheCellWithTimeouts) {
    // Answers nothing: every request times out after request_timeout_s, and the run still ends.
    Peer peer([&](int fd, int) {
        std::string in;
        read_requests(fd, in, 1000000, peer.stopping);
    });
    LoadSpec s = spec_for(peer.port(), "hello", 2);
    s.warmup_s = 0;
    s.duration_s = 1.0;
    s.request_timeout_s = 0.3;
    const auto t0 = steady_clock::now();
    LoadResult r = run_load(s);
    EXPECT_LT(duration<double>(steady_clock::now() - t0).count(), 5.0);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.requests, 0u);
    EXPECT_GE(r.errors["timeout"], 2u);
}

TEST(LoadScripted, IdleConnectionsTheServerDropsAreCounted) {
    // Answers every request, but closes every other connection after its first answer (a server
    // shedding idle connections). The 2 active connections are the first two accepted and kept.
    Peer peer([&](int fd, int index) {
        std::string in;
        int answered = 0;
        while (read_requests(fd, in, 1, peer.stopping)) {
            drop_requests(in, 1);
            if (write(fd, kAnswer.data(), kAnswer.size()) != ssize_t(kAnswer.size())) return;
            if (++answered == 1 && index >= 2 && index % 2 == 1) {
                shutdown(fd, SHUT_RDWR);
                return;
            }
        }
    });
    LoadSpec s = spec_for(peer.port(), "hello", 2);
    s.idle_connections = 20;
    s.duration_s = 0.5;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.idle.requested, 20);
    EXPECT_EQ(r.idle.established, 20);
    // Connections are accepted in the order they were opened only roughly: count, not identity.
    EXPECT_GE(r.idle.dropped, 8);
    EXPECT_LE(r.idle.dropped, 11);
    EXPECT_EQ(r.idle.dropped, r.idle.established - r.idle.answered_at_end);
    EXPECT_EQ(r.idle.lost_while_idle, r.idle.dropped);  // they were closed while idle
}

// Answers every request on connections below `served`; the others are read and never answered
// (a pool of `served` workers, each holding one keep-alive connection).
void serve_first(int fd, int index, int served, const std::atomic<bool>& stopping) {
    std::string in;
    while (read_requests(fd, in, 1, stopping)) {
        drop_requests(in, 1);
        if (index >= served) continue;
        if (send(fd, kAnswer.data(), kAnswer.size(), MSG_NOSIGNAL) != ssize_t(kAnswer.size())) return;
    }
}

TEST(LoadPrimer, WaitsUntilEveryConnectionIsAnsweredOnce) {
    // The server takes its connections up slowly (connection i answers its first request after
    // 15 ms x i, like a thread-per-connection server spawning its threads): the load starts only
    // once all 12 have answered, so none is starved in the window.
    Peer peer([&](int fd, int index) {
        std::this_thread::sleep_for(milliseconds(15 * index));
        serve_first(fd, index, 1 << 30, peer.stopping);
    });
    LoadSpec s = spec_for(peer.port(), "hello", 12);
    s.warmup_s = 0;
    s.duration_s = 0.3;
    s.primer_stall_s = 2;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.primer.ended, "all");
    EXPECT_EQ(r.primer.connections, 12);
    EXPECT_EQ(r.primer.answered, 12);
    EXPECT_GE(r.primer.seconds, 0.15);  // the last one answered after about 11 x 15 ms
    EXPECT_GE(r.setup_s, r.primer.seconds);
    EXPECT_EQ(fairness(r.per_connection).starved, 0);
    EXPECT_EQ(load_json(s, r)["primer"]["ended"], "all");
}

TEST(LoadPrimer, EndsWhenFirstAnswersStallAndKeepsTheUnansweredInTheRun) {
    // A pool of 3: the other 7 connections wait. The primer ends after primer_stall_s without a
    // new first answer; the 7 stay in the run (established, their request in flight) and show up
    // as starved, not as left out.
    Peer peer([&](int fd, int index) { serve_first(fd, index, 3, peer.stopping); });
    LoadSpec s = spec_for(peer.port(), "hello", 10);
    s.warmup_s = 0;
    s.duration_s = 0.3;
    s.primer_stall_s = 0.3;
    const auto t0 = steady_clock::now();
    LoadResult r = run_load(s);
    EXPECT_LT(duration<double>(steady_clock::now() - t0).count(), 3.0);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.primer.ended, "stalled");
    EXPECT_EQ(r.primer.connections, 10);
    EXPECT_EQ(r.primer.answered, 3);
    EXPECT_EQ(r.connections_established, 10);
    EXPECT_EQ(fairness(r.per_connection).starved, 7);
    EXPECT_GT(r.requests, 0u);
}

TEST(LoadPrimer, EndsAtItsTimeLimitWhileAnswersStillCome) {
    // Connection i answers after 120 ms x i: progress never stalls for 2 s, so the time limit ends it.
    Peer peer([&](int fd, int index) {
        std::this_thread::sleep_for(milliseconds(120 * index));
        serve_first(fd, index, 1 << 30, peer.stopping);
    });
    LoadSpec s = spec_for(peer.port(), "hello", 10);
    s.warmup_s = 0;
    s.duration_s = 0.2;
    s.primer_stall_s = 2;
    s.primer_timeout_s = 0.5;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.primer.ended, "timeout");
    EXPECT_GE(r.primer.answered, 2);
    EXPECT_LE(r.primer.answered, 7);
    EXPECT_EQ(r.connections_established, 10);
}

TEST(LoadPrimer, IdleConnectionsAPoolCannotHoldEndSetUpWhenAnswersStall) {
    // A pool of 5 holding 2 active and 3 idle connections: the other 17 idle connections' first
    // requests are never answered; set-up ends after the stall, not after the request time-out.
    Peer peer([&](int fd, int index) { serve_first(fd, index, 5, peer.stopping); });
    LoadSpec s = spec_for(peer.port(), "hello", 2);
    s.idle_connections = 20;
    s.warmup_s = 0;
    s.duration_s = 0.2;
    s.primer_stall_s = 0.3;
    s.request_timeout_s = 30;
    const auto t0 = steady_clock::now();
    LoadResult r = run_load(s);
    EXPECT_LT(duration<double>(steady_clock::now() - t0).count(), 5.0);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.idle.requested, 20);
    EXPECT_LE(r.idle.established, 5);
    EXPECT_GE(r.idle.established + r.primer.answered, 5);  // which 5 were accepted first varies
}

TEST(LoadPrimer, ConnectionsNotOpenedWhenThePrimerStallsAreLeftOut) {
    // A server that never accepts: its backlog of 4 fills and further SYNs are dropped. Nothing
    // answers, so the primer stalls; the connections not opened by then are not tried at all and
    // set-up ends after the connects in flight time out, not after 300 of them did one by one.
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    socklen_t len = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
    LoadSpec s = spec_for(ntohs(a.sin_port), "hello", 300);
    s.warmup_s = 0;
    s.duration_s = 0.2;
    s.primer_stall_s = 0.3;
    s.connect_timeout_s = 1.0;
    s.request_timeout_s = 30;
    const auto t0 = steady_clock::now();
    LoadResult r = run_load(s);
    const double took = duration<double>(steady_clock::now() - t0).count();
    close(lfd);
    EXPECT_LT(took, 6.0);
    EXPECT_EQ(r.primer.ended, "stalled");
    EXPECT_EQ(r.primer.answered, 0);
    EXPECT_GT(r.primer.not_opened, 0);  // 300 connections, at most 256 connecting at a time
    EXPECT_LT(r.connections_established, 300 - r.primer.not_opened);
    EXPECT_EQ(load_json(s, r)["primer"]["not_opened"], r.primer.not_opened);
}

TEST(LoadPrimer, AConnectionClosedAfterItsFirstAnswerStaysInTheLoad) {
    // The server answers each connection once and closes every other one right after (Apache's
    // event MPM shedding idle keep-alive connections): those were taken up, so they are part of
    // the run — reopened when the load starts, not left out like a connection refused in set-up.
    Peer peer([&](int fd, int index) {
        std::string in;
        for (int answered = 0; read_requests(fd, in, 1, peer.stopping); ++answered) {
            drop_requests(in, 1);
            if (send(fd, kAnswer.data(), kAnswer.size(), MSG_NOSIGNAL) != ssize_t(kAnswer.size())) return;
            if (answered == 0 && index % 2 == 1) {
                shutdown(fd, SHUT_RDWR);
                return;
            }
        }
    });
    LoadSpec s = spec_for(peer.port(), "hello", 10);
    s.warmup_s = 0.2;
    s.duration_s = 0.5;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.primer.answered, 10);
    EXPECT_EQ(r.connections_established, 10);
    EXPECT_EQ(r.per_connection.size(), 10u);
    EXPECT_GT(r.requests, 0u);
}

TEST(LoadPrimer, ALatePrimerAnswerJoinsTheLoadWithoutTimingOut) {
    // Connection 1 is taken up 1 s late, after the primer stalled (0.3 s). Its primer request is
    // then 1 s old, more than the 0.9 s time-out: it must not time out (its time-out runs from
    // the load's start), and once answered the connection joins the load.
    Peer peer([&](int fd, int index) {
        if (index == 1) std::this_thread::sleep_for(milliseconds(1000));
        serve_first(fd, index, 1 << 30, peer.stopping);
    });
    LoadSpec s = spec_for(peer.port(), "hello", 2);
    s.warmup_s = 0;
    s.duration_s = 1.5;
    s.primer_stall_s = 0.3;
    s.request_timeout_s = 0.9;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.primer.ended, "stalled");
    EXPECT_EQ(r.primer.answered, 1);
    EXPECT_EQ(r.errors.count("timeout"), 0u) << nlohmann::json(r.errors).dump();
    ASSERT_EQ(r.per_connection.size(), 2u);
    EXPECT_EQ(fairness(r.per_connection).starved, 0);  // both answered in the window
}

TEST(LoadPrimer, OffMeansNoPrimerInTheResult) {
    Peer peer([&](int fd, int index) { serve_first(fd, index, 1 << 30, peer.stopping); });
    LoadSpec s = spec_for(peer.port(), "hello", 4);
    s.primer = false;
    s.warmup_s = 0;
    s.duration_s = 0.2;
    LoadResult r = run_load(s);
    ASSERT_TRUE(r.fatal.empty()) << r.fatal;
    EXPECT_EQ(r.primer.ended, "");
    EXPECT_FALSE(load_json(s, r).contains("primer"));
    EXPECT_GT(r.requests, 0u);
}

}  // namespace

namespace {

// ---- the command line and the real clients -------------------------------------------------------

std::string run_command(const std::string& cmd, int& rc) {
    std::string out;
    FILE* f = popen((cmd + " 2>&1").c_str(), "r");
    if (!f) return out;
    char buf[4096];
    while (std::size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
    rc = WEXITSTATUS(pclose(f));
    return out;
}

nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in, nullptr, false);
}

class LoadCommand : public ::testing::Test {
protected:
    void SetUp() override {
        server_ = start_epoll();
        ASSERT_TRUE(server_);
        json_ = (std::filesystem::temp_directory_path() / ("concbench-load-" + std::to_string(getpid()) + ".json")).string();
    }
    void TearDown() override {
        if (server_) server_->stop();
        std::remove(json_.c_str());
    }
    // `concbench load` against the server with `args`; returns its stdout+stderr.
    std::string load(const std::string& args, int& rc) {
        return run_command(std::string(CONCBENCH_BIN_DIR) + "/concbench load --target 127.0.0.1:" +
                               std::to_string(server_->port()) + " " + args + " --json " + json_, rc);
    }
    std::unique_ptr<ServerProcess> server_;
    std::string json_;
};

TEST_F(LoadCommand, OpenLoopWritesTheResultsSchema) {
    int rc = -1;
    std::string out = load("-c 4 -d 1 --warmup 0.2 --rate 1000", rc);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("uncorrected"), std::string::npos) << out;
    nlohmann::json j = read_json(json_);
    ASSERT_FALSE(j.is_discarded());
    EXPECT_EQ(j["schema"], kResultsSchema);
    EXPECT_EQ(j["load"]["shape"], "open");
    EXPECT_EQ(j["load"]["offered_rps"], 1000.0);
    EXPECT_TRUE(j.contains("latency_uncorrected_us"));
    EXPECT_TRUE(j["latency_us"].contains("p999"));
    EXPECT_TRUE(j.contains("histogram_uncorrected"));
    EXPECT_GE(j["series"]["rows"].size(), 1u);
    EXPECT_EQ(j["client"]["tool"], "loadgen");
    EXPECT_EQ(j["errors_total"], 0);
}

TEST_F(LoadCommand, IdleAndPathAndBadInput) {
    int rc = -1;
    std::string out = load("-c 2 -d 0.5 --warmup 0 --idle 100 --path /bytes/10", rc);
    ASSERT_EQ(rc, 0) << out;
    nlohmann::json j = read_json(json_);
    EXPECT_EQ(j["idle"]["answered_at_end"], 100);
    EXPECT_EQ(j["path"], "/bytes/10");
    EXPECT_EQ(j["errors_total"], 0);
    out = load("-c 2 -d 0.5 --path nope", rc);
    EXPECT_EQ(rc, 2);
    EXPECT_NE(out.find("--path must start with /"), std::string::npos) << out;
    out = load("-c 2 -d 0.5 --close -P 4", rc);
    EXPECT_NE(rc, 0);
    EXPECT_NE(out.find("keep-alive"), std::string::npos) << out;
}

TEST_F(LoadCommand, WrkDrivesTheSameCellInTheSameSchema) {
    ASSERT_EQ(access("/usr/bin/wrk", X_OK), 0) << "wrk missing: scripts/deps.sh installs it";
    int rc = -1;
    std::string out = load("-c 4 -d 1 --client wrk", rc);
    ASSERT_EQ(rc, 0) << out;
    nlohmann::json j = read_json(json_);
    EXPECT_EQ(j["client"]["tool"], "wrk");
    EXPECT_GT(j["requests"].get<double>(), 0);
    EXPECT_GT(j["throughput_rps"].get<double>(), 0);
    EXPECT_GT(j["latency_us"]["p50"].get<double>(), 0);
    EXPECT_LE(j["latency_us"]["p50"].get<double>(), j["latency_us"]["p99"].get<double>());
    EXPECT_GT(j["client"]["cpu_s"].get<double>(), 0);
    EXPECT_EQ(j["errors_total"], 0);
    out = load("-c 4 -d 1 --client wrk --rate 100", rc);
    EXPECT_NE(rc, 0);
    EXPECT_NE(out.find("wrk2"), std::string::npos) << out;
}

TEST_F(LoadCommand, AbDrivesConnectionPerRequest) {
    ASSERT_EQ(access("/usr/bin/ab", X_OK), 0) << "ab missing: scripts/deps.sh installs apache2-utils";
    int rc = -1;
    std::string out = load("-c 4 -d 1 --client ab --close", rc);
    ASSERT_EQ(rc, 0) << out;
    nlohmann::json j = read_json(json_);
    EXPECT_EQ(j["client"]["tool"], "ab");
    EXPECT_TRUE(j["load"]["connection_per_request"].get<bool>());
    EXPECT_GT(j["requests"].get<double>(), 0);
    EXPECT_GT(j["latency_us"]["p50"].get<double>(), 0);
    EXPECT_EQ(j["errors_total"], 0) << j["errors"].dump();
}

}  // namespace
