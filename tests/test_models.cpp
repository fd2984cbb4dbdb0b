// End to end, over loopback, for every model in the registry: real requests against the real
// server binary, then SIGTERM must leave nothing behind. A new model is covered by adding its
// folder; nothing here names a model. Reference servers (nginx, Apache) run every case their
// configuration supports; a case a model's [verify] skip table names is skipped with its reason.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "concbench/docroot.hpp"
#include "concbench/host.hpp"
#include "concbench/launch.hpp"
#include "concbench/registry.hpp"
#include "concbench/sampler.hpp"
#include "concbench/workloads.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

const std::vector<ModelInfo>& registry() {
    static const std::vector<ModelInfo> reg = load_registry(models_dir(), CONCBENCH_BIN_DIR);
    return reg;
}

std::vector<std::string> model_names() {
    std::vector<std::string> names;
    for (const auto& m : registry()) names.push_back(m.name);
    return names;
}

// A blocking client socket with a receive timeout, so a broken server fails a test, not hangs it.
struct Client {
    int fd = -1;
    explicit Client(uint16_t port) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        timeval tv{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            close(fd);
            fd = -1;
        }
    }
    ~Client() {
        if (fd >= 0) close(fd);
    }
    bool send_all(const std::string& s) {
        std::size_t off = 0;
        while (off < s.size()) {
            ssize_t n = write(fd, s.data() + off, s.size() - off);
            if (n <= 0) return false;
            off += n;
        }
        return true;
    }
    // Reads until `n` bytes are buffered, the peer closes, or the timeout passes.
    bool fill(std::size_t n) {
        char buf[65536];
        while (in.size() < n) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) return false;
            in.append(buf, r);
        }
        return true;
    }
    // One Content-Length-framed HTTP response: {status, headers, body}; status 0 if none came.
    struct Resp {
        int status = 0;
        std::string headers, body;
    };
    Resp response(bool head_only = false) {  // head_only: the answer to a HEAD (no body follows)
        Resp r;
        std::size_t end;
        while ((end = in.find("\r\n\r\n")) == std::string::npos)
            if (!fill(in.size() + 1)) return r;
        r.headers = in.substr(0, end + 4);
        std::size_t cl = r.headers.find("Content-Length: ");
        std::size_t len = cl == std::string::npos || head_only ? 0 : std::stoul(r.headers.substr(cl + 16));
        if (!fill(end + 4 + len)) return r;
        r.status = std::stoi(r.headers.substr(9, 3));
        r.body = in.substr(end + 4, len);
        in.erase(0, end + 4 + len);
        return r;
    }
    // True if the server closed the connection (read returns 0) within the timeout.
    bool closed_by_peer() {
        char c;
        return in.empty() && read(fd, &c, 1) == 0;
    }
    std::string in;
};

class ModelTest : public testing::TestWithParam<std::string> {
protected:
    const ModelInfo& model() { return *find_model(registry(), GetParam()); }

    void SetUp() override {
        work_ = std::filesystem::temp_directory_path() /
                ("concbench-test-" + GetParam() + "-" + std::to_string(getpid()));
        std::filesystem::create_directories(work_ / "docroot");
        std::filesystem::permissions(work_, std::filesystem::perms(0755));  // reachable by www-data
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(work_, ec);
    }

    // `extra`: --docroot DIR and --backend HOST:PORT, as the server contract spells them.
    std::unique_ptr<ServerProcess> start(const std::string& proto, uint16_t port = 0,
                                         const std::vector<std::string>& extra = {}) {
        LaunchOptions o;
        o.proto = proto;
        o.port = port;
        o.log_path = log_path();
        o.work_dir = (work_ / "server").string();
        o.docroot = (work_ / "docroot").string();  // a reference server's /file/ (empty)
        o.docroot_flag = false;
        for (std::size_t i = 0; i + 1 < extra.size(); i += 2) {
            if (extra[i] == "--docroot") {
                o.docroot = extra[i + 1];
                o.docroot_flag = true;
            } else if (extra[i] == "--backend") {
                o.backend = extra[i + 1];
            } else {
                ADD_FAILURE() << "start(): unknown extra option " << extra[i];
            }
        }
        std::string err;
        auto s = launch_server(model(), o, seconds(10), err);
        EXPECT_TRUE(s) << model().name << ": " << err;
        return s;
    }
    std::string log_path() {
        return (std::filesystem::temp_directory_path() / ("concbench-test-" + GetParam() + ".log")).string();
    }
    void expect_clean_stop(ServerProcess& s) {
        StopReport r = s.stop(seconds(5));
        EXPECT_TRUE(r.clean()) << model().name << ": " << r.describe();
        EXPECT_LT(r.stop_s, 5.0);
    }
    std::filesystem::path work_;
};

// The conformance case `verify_case` does not apply to this model: skip it, saying why (model.toml).
#define SKIP_IF_NOT_APPLICABLE(verify_case)                                                   \
    do {                                                                                      \
        if (std::string why = model().skips(verify_case); !why.empty())                      \
            GTEST_SKIP() << model().name << " skips '" << verify_case << "': " << why;       \
    } while (0)

TEST_P(ModelTest, IsBuiltAndDescribed) {
    const ModelInfo& m = model();
    EXPECT_TRUE(m.built) << m.binary_path << " is missing";
    EXPECT_FALSE(m.description.empty());
    EXPECT_FALSE(m.workloads.empty());
}

TEST_P(ModelTest, ServesHello) {
    SKIP_IF_NOT_APPLICABLE("hello");
    auto s = start("http");
    ASSERT_TRUE(s);
    Client c(s->port());
    ASSERT_GE(c.fd, 0);
    ASSERT_TRUE(c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto r = c.response();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "Hello, World!");
    EXPECT_NE(r.headers.find("Date: "), std::string::npos);
    EXPECT_NE(r.headers.find("Content-Type: text/plain"), std::string::npos) << r.headers;
    EXPECT_NE(r.headers.find("Content-Length: 13\r\n"), std::string::npos) << r.headers;
    // Kept alive: the same connection answers again.
    ASSERT_TRUE(c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
    EXPECT_EQ(c.response().body, "Hello, World!");
    expect_clean_stop(*s);
}

TEST_P(ModelTest, ServerHeaderNamesTheModel) {
    SKIP_IF_NOT_APPLICABLE("server-header");
    auto s = start("http");
    ASSERT_TRUE(s);
    Client c(s->port());
    ASSERT_TRUE(c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto r = c.response();
    EXPECT_NE(r.headers.find("Server: concbench-" + GetParam() + "\r\n"), std::string::npos) << r.headers;
    expect_clean_stop(*s);
}

TEST_P(ModelTest, AnswersPipelinedRequestsInOrder) {
    SKIP_IF_NOT_APPLICABLE("pipelining");
    auto s = start("http");
    ASSERT_TRUE(s);
    Client c(s->port());
    ASSERT_GE(c.fd, 0);
    std::string many;
    for (int i = 0; i < 16; ++i) many += i % 2 ? "GET /missing HTTP/1.1\r\nHost: t\r\n\r\n" : "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    ASSERT_TRUE(c.send_all(many));
    for (int i = 0; i < 16; ++i) {
        auto p = c.response();
        ASSERT_EQ(p.status, i % 2 ? 404 : 200) << "pipelined #" << i;
        if (i % 2 == 0) {
            EXPECT_EQ(p.body, "Hello, World!");
        }
    }
    expect_clean_stop(*s);
}

TEST_P(ModelTest, ServesTheBytesRoute) {
    SKIP_IF_NOT_APPLICABLE("bytes");
    auto s = start("http");
    ASSERT_TRUE(s);
    Client c(s->port());
    ASSERT_GE(c.fd, 0);
    // 16 pipelined in one write, answered in order on the same connection.
    std::string many;
    for (int i = 0; i < 16; ++i) many += "GET /bytes/" + std::to_string(i * 10) + " HTTP/1.1\r\n\r\n";
    ASSERT_TRUE(c.send_all(many));
    for (int i = 0; i < 16; ++i) {
        auto p = c.response();
        ASSERT_EQ(p.status, 200) << "pipelined #" << i;
        EXPECT_EQ(p.body.size(), static_cast<std::size_t>(i * 10));
    }
    // A large body, which cannot leave in one write: partial writes handled.
    ASSERT_TRUE(c.send_all("GET /bytes/4194304 HTTP/1.1\r\n\r\n"));
    auto big = c.response();
    ASSERT_EQ(big.body.size(), 4194304u);
    EXPECT_TRUE(find_workload("bytes-16k")->body_ok(0, std::string_view(big.body).substr(0, 16384)));
    EXPECT_EQ(big.body[4194303], pattern_byte(4194303));
    expect_clean_stop(*s);
}

TEST_P(ModelTest, AnswersErrorsAndClosesWhenItMust) {
    auto s = start("http");
    ASSERT_TRUE(s);
    if (model().skips("not-found").empty()) {  // unknown path: 404, connection kept
        Client c(s->port());
        ASSERT_TRUE(c.send_all("GET /missing HTTP/1.1\r\nHost: t\r\n\r\n"));
        EXPECT_EQ(c.response().status, 404);
        ASSERT_TRUE(c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
        EXPECT_EQ(c.response().status, 200);
    }
    if (model().skips("bad-request").empty()) {  // malformed: 400, then the server closes
        Client c(s->port());
        ASSERT_TRUE(c.send_all("BLAH\r\n\r\n"));
        EXPECT_EQ(c.response().status, 400);
        EXPECT_TRUE(c.closed_by_peer());
    }
    if (model().skips("http10").empty()) {  // HTTP/1.0: answered, then closed
        Client c10(s->port());
        ASSERT_TRUE(c10.send_all("GET / HTTP/1.0\r\n\r\n"));
        EXPECT_EQ(c10.response().status, 200);
        EXPECT_TRUE(c10.closed_by_peer());
    }
    if (model().skips("header-too-large").empty()) {  // over 8 KiB of headers: 431, closed
        Client big_head(s->port());
        ASSERT_TRUE(big_head.send_all("GET / HTTP/1.1\r\nX: " + std::string(10000, 'x') + "\r\n\r\n"));
        EXPECT_EQ(big_head.response().status, 431);
        EXPECT_TRUE(big_head.closed_by_peer());
    }
    expect_clean_stop(*s);
}

TEST_P(ModelTest, EchoesEveryByteInOrder) {
    SKIP_IF_NOT_APPLICABLE("echo");
    auto s = start("echo");
    ASSERT_TRUE(s);
    Client c(s->port());
    ASSERT_GE(c.fd, 0);
    std::string msg(1 << 20, '\0');
    for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>((i * 131) >> 3);
    // Send from another thread: the server echoes while we send, and both directions must flow.
    std::thread sender([&] { c.send_all(msg); });
    bool got = c.fill(msg.size());
    sender.join();
    ASSERT_TRUE(got) << "echoed " << c.in.size() << " of " << msg.size() << " bytes";
    EXPECT_TRUE(c.in == msg);
    shutdown(c.fd, SHUT_WR);
    EXPECT_TRUE(c.fill(msg.size() + 1) == false) << "the server must close after our FIN";
    expect_clean_stop(*s);
}

TEST_P(ModelTest, SigtermUnderLoadLeavesNothingAndFreesThePort) {
    SKIP_IF_NOT_APPLICABLE("sigterm");
    auto s = start("http");
    ASSERT_TRUE(s);
    uint16_t port = s->port();
    std::vector<std::unique_ptr<Client>> idle;
    for (int i = 0; i < 50; ++i) {
        idle.push_back(std::make_unique<Client>(port));
        ASSERT_TRUE(idle.back()->send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
        ASSERT_EQ(idle.back()->response().status, 200);
    }
    Client half(port);  // mid-request when SIGTERM comes
    ASSERT_TRUE(half.send_all("GET / HTTP/1.1\r\nHost: "));
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0};
    std::thread hammer([&] {
        while (!stop) {
            Client c(port);
            if (c.fd < 0 || !c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n") || c.response().status != 200) break;
            ++answered;
        }
    });
    std::this_thread::sleep_for(milliseconds(300));
    expect_clean_stop(*s);
    stop = true;
    hammer.join();
    EXPECT_GT(answered.load(), 0);
    // The port is free at once: a new server binds it.
    auto again = start("http", port);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->port(), port);
    expect_clean_stop(*again);
}

TEST_P(ModelTest, SurvivesRunningOutOfFds) {
    SKIP_IF_NOT_APPLICABLE("emfile");
    // The server inherits a low fd limit; connections past it must not kill or wedge it.
    rlimit old{};
    getrlimit(RLIMIT_NOFILE, &old);
    rlimit low = old;
    low.rlim_cur = 40;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    auto s = start("http");
    setrlimit(RLIMIT_NOFILE, &old);
    ASSERT_TRUE(s);
    std::vector<std::unique_ptr<Client>> flood;
    for (int i = 0; i < 80; ++i) {
        flood.push_back(std::make_unique<Client>(s->port()));
        if (flood.back()->fd >= 0) flood.back()->send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_TRUE(s->died().empty()) << "the server died when it ran out of fds";
    flood.clear();  // fds free up on the server as it sees the closes
    std::this_thread::sleep_for(milliseconds(300));
    bool served = false;
    for (int attempt = 0; attempt < 20 && !served; ++attempt) {
        Client c(s->port());
        served = c.fd >= 0 && c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n") && c.response().status == 200;
        if (!served) std::this_thread::sleep_for(milliseconds(100));
    }
    EXPECT_TRUE(served) << "the server does not serve again after fds were freed";
    expect_clean_stop(*s);
}

TEST_P(ModelTest, SurvivesClientsThatLeaveMidRequest) {
    SKIP_IF_NOT_APPLICABLE("leave-mid-request");
    // A large answer: /bytes/4 MiB, or a 4 MiB file where the model has no /bytes route.
    const bool has_bytes = model().skips("bytes").empty();
    if (!has_bytes) std::ofstream(work_ / "docroot" / "big") << std::string(4194304, 'x');
    const std::string big = has_bytes ? "GET /bytes/4194304 HTTP/1.1\r\n\r\n" : "GET /file/big HTTP/1.1\r\nHost: t\r\n\r\n";
    auto s = start("http");
    ASSERT_TRUE(s);
    auto serves = [&] {
        Client c(s->port());
        return c.fd >= 0 && c.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n") && c.response().status == 200;
    };
    ASSERT_TRUE(serves());
    std::this_thread::sleep_for(milliseconds(200));
    const uint64_t fds_before = sample_tree(s->pid()).fds;
    for (int i = 0; i < 300; ++i) {
        Client c(s->port());
        ASSERT_GE(c.fd, 0);
        switch (i % 3) {
            case 0:  // half a request, then a normal close
                c.send_all("GET / HTTP/1.1\r\nHost: ");
                break;
            case 1: {  // half a request, then a reset
                c.send_all("GET /bytes/100 HT");  // any model: the request line is cut short
                linger l{1, 0};
                setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                break;
            }
            case 2:  // a large answer asked for and never read
                c.send_all(big);
                break;
        }
    }  // every Client closes here
    EXPECT_TRUE(s->died().empty()) << "the server died";
    EXPECT_TRUE(serves()) << "the server no longer answers";
    // Everything those clients held is released: the tree's fds return to where they were.
    uint64_t fds_after = 0;
    for (int i = 0; i < 50; ++i) {
        std::this_thread::sleep_for(milliseconds(100));
        if ((fds_after = sample_tree(s->pid()).fds) <= fds_before) break;
    }
    EXPECT_LE(fds_after, fds_before) << "fds leaked by clients that left mid-request";
    expect_clean_stop(*s);
}

TEST_P(ModelTest, BadFlagIsOneLineAndExit2) {
    SKIP_IF_NOT_APPLICABLE("cli");
    for (std::vector<std::string> args : {std::vector<std::string>{"--no-such-flag"},
                                          {"--port", "70000"},
                                          {"--proto", "gopher"},
                                          {"--host", "not-an-ip"}}) {
        ServerCommand cmd;
        cmd.binary = model().binary_path;
        cmd.args = args;
        cmd.log_path = log_path();
        std::string err;
        auto s = ServerProcess::start(cmd, seconds(5), err);
        EXPECT_FALSE(s) << args[0];
        EXPECT_NE(err.find("exit code 2"), std::string::npos) << args[0] << ": " << err;
        std::string last = last_line_of(cmd.log_path);
        EXPECT_NE(last.find("server-" + GetParam()), std::string::npos) << last;
    }
}

// --- the IO-bound routes (effects), for the models that list their family -------------------

double seconds_since(steady_clock::time_point t0) { return duration<double>(steady_clock::now() - t0).count(); }

TEST_P(ModelTest, DelayWaitsWithoutHoldingUpOtherConnections) {
    if (!model().serves("delay-10")) GTEST_SKIP() << GetParam() << " does not list 'delay'";
    auto s = start("http");
    ASSERT_TRUE(s);
    // One request waits 400 ms; meanwhile another connection is answered at once.
    auto t0 = steady_clock::now();
    Client slow(s->port());
    ASSERT_TRUE(slow.send_all("GET /delay/400?id=5 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
    std::this_thread::sleep_for(milliseconds(50));
    Client quick(s->port());
    ASSERT_TRUE(quick.send_all("GET / HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(quick.response().status, 200);
    EXPECT_LT(seconds_since(t0), 0.35) << "a waiting request held up another connection";
    auto r = slow.response();
    double waited = seconds_since(t0);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "delayed 400 ms id 5\n");
    EXPECT_GE(waited, 0.39) << "answered before the delay was over";
    EXPECT_LT(waited, 1.5);
    EXPECT_EQ(slow.response().body, "Hello, World!");  // the pipelined request, after it

    // Never early, not even by a fraction of a millisecond (a timer rounded down would be).
    for (int i = 0; i < 15; ++i) {
        auto t = steady_clock::now();
        ASSERT_TRUE(quick.send_all("GET /delay/7 HTTP/1.1\r\n\r\n"));
        EXPECT_EQ(quick.response().status, 200);
        EXPECT_GE(seconds_since(t), 0.007) << "a 7 ms wait answered early";
    }

    // 40 connections wait 300 ms each at the same time: about 300 ms in all, not 12 s.
    std::vector<std::unique_ptr<Client>> many;
    t0 = steady_clock::now();
    for (int i = 0; i < 40; ++i) {
        many.push_back(std::make_unique<Client>(s->port()));
        ASSERT_TRUE(many.back()->send_all("GET /delay/300 HTTP/1.1\r\n\r\n"));
    }
    for (auto& c : many) EXPECT_EQ(c->response().body, "delayed 300 ms\n");
    EXPECT_LT(seconds_since(t0), 1.5) << "the waits did not overlap";
    // Clients that leave while their answer waits cost nothing lasting.
    for (int i = 0; i < 100; ++i) {
        Client c(s->port());
        c.send_all("GET /delay/100 HTTP/1.1\r\n\r\n");
        if (i % 2) {
            linger l{1, 0};
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
    }
    // SIGTERM while requests wait 5 s: the server still stops promptly and cleanly.
    std::vector<std::unique_ptr<Client>> waiting;
    for (int i = 0; i < 10; ++i) {
        waiting.push_back(std::make_unique<Client>(s->port()));
        waiting.back()->send_all("GET /delay/5000 HTTP/1.1\r\n\r\n");
    }
    std::this_thread::sleep_for(milliseconds(200));
    EXPECT_TRUE(s->died().empty());
    expect_clean_stop(*s);
}

TEST_P(ModelTest, FanoutCallsTheBackendConcurrently) {
    if (!model().serves("fanout-1x1")) GTEST_SKIP() << GetParam() << " does not list 'fanout'";
    auto backend = start("http");  // the model itself serves /delay: it is a fine backend
    ASSERT_TRUE(backend);
    auto s = start("http", 0, {"--backend", "127.0.0.1:" + std::to_string(backend->port())});
    ASSERT_TRUE(s);
    const Workload& w = *find_workload("fanout-10x300");
    Client c(s->port());
    for (int round = 0; round < 3; ++round) {  // later rounds reuse pooled backend connections
        auto t0 = steady_clock::now();
        ASSERT_TRUE(c.send_all(w.request));
        auto r = c.response();
        double took = seconds_since(t0);
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.body, w.expected);
        EXPECT_GE(took, 0.29);
        EXPECT_LT(took, 1.5) << "the 10 backend calls did not overlap (10 x 300 ms = 3 s)";
    }
    // Several fan-outs at once, pipelined behind each other and on other connections.
    std::vector<std::unique_ptr<Client>> many;
    for (int i = 0; i < 8; ++i) {
        many.push_back(std::make_unique<Client>(s->port()));
        ASSERT_TRUE(many.back()->send_all("GET /fanout/4/50 HTTP/1.1\r\n\r\nGET /fanout/2/10 HTTP/1.1\r\n\r\n"));
    }
    for (auto& m : many) {
        EXPECT_EQ(m->response().body, find_workload("fanout-4x50")->expected);
        EXPECT_EQ(m->response().body, find_workload("fanout-2x10")->expected);
    }
    // Clients that leave mid-fan-out; then the backend goes away: 502, and the server lives on.
    for (int i = 0; i < 20; ++i) {
        Client gone(s->port());
        gone.send_all("GET /fanout/5/100 HTTP/1.1\r\n\r\n");
    }
    std::this_thread::sleep_for(milliseconds(300));
    expect_clean_stop(*backend);
    ASSERT_TRUE(c.send_all("GET /fanout/3/10 HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(c.response().status, 502);
    EXPECT_TRUE(s->died().empty());
    expect_clean_stop(*s);

    auto alone = start("http");  // no --backend: 502, not a crash
    ASSERT_TRUE(alone);
    Client a(alone->port());
    ASSERT_TRUE(a.send_all("GET /fanout/2/10 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(a.response().status, 502);
    EXPECT_EQ(a.response().status, 200);
    expect_clean_stop(*alone);
}

TEST_P(ModelTest, ServesDocrootFilesByteExact) {
    if (!model().serves("file-1k")) GTEST_SKIP() << GetParam() << " does not list 'file'";
    std::string docroot = (std::filesystem::temp_directory_path() / ("concbench-docroot-" + GetParam())).string();
    std::string err;
    for (const char* name : {"file-1k", "file-1m", "file-0"})
        ASSERT_TRUE(write_docroot_file(docroot, *find_workload(name), err)) << err;
    auto s = start("http", 0, {"--docroot", docroot});
    ASSERT_TRUE(s);
    Client c(s->port());
    ASSERT_TRUE(c.send_all("GET /file/1m HTTP/1.1\r\nHost: t\r\n\r\nGET /file/1k HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto big = c.response();
    ASSERT_EQ(big.status, 200);
    ASSERT_EQ(big.body.size(), 1048576u);
    EXPECT_TRUE(find_workload("file-1m")->body_ok(0, big.body)) << "file bytes differ";
    auto small = c.response();
    ASSERT_EQ(small.body.size(), 1024u);
    EXPECT_TRUE(find_workload("file-1k")->body_ok(0, small.body));
    EXPECT_EQ(c.response().body, "Hello, World!");
    ASSERT_TRUE(c.send_all("GET /file/0 HTTP/1.1\r\nHost: t\r\n\r\nGET /file/missing HTTP/1.1\r\nHost: t\r\n\r\n"
                           "HEAD /file/1m HTTP/1.1\r\nHost: t\r\n\r\nGET /file/1k HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto empty = c.response();
    EXPECT_EQ(empty.status, 200);
    EXPECT_EQ(empty.body, "");
    EXPECT_EQ(c.response().status, 404);
    auto head = c.response(true);  // HEAD: the length, no body (the next answer follows at once)
    EXPECT_EQ(head.status, 200);
    EXPECT_NE(head.headers.find("Content-Length: 1048576\r\n"), std::string::npos);
    EXPECT_EQ(c.response().body.size(), 1024u);
    // Clients that ask for the large file and leave without reading it.
    for (int i = 0; i < 30; ++i) {
        Client gone(s->port());
        gone.send_all("GET /file/1m HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    Client d(s->port());
    ASSERT_TRUE(d.send_all("GET /file/1k HTTP/1.1\r\nHost: t\r\n\r\n"));
    EXPECT_EQ(d.response().status, 200);
    expect_clean_stop(*s);

    auto none = start("http");  // no --docroot: 404
    ASSERT_TRUE(none);
    Client n(none->port());
    ASSERT_TRUE(n.send_all("GET /file/1k HTTP/1.1\r\nHost: t\r\n\r\n"));
    EXPECT_EQ(n.response().status, 404);
    expect_clean_stop(*none);
    std::filesystem::remove_all(docroot);
}

INSTANTIATE_TEST_SUITE_P(Registry, ModelTest, testing::ValuesIn(model_names()),
                         [](const auto& info) {
                             std::string name = info.param;  // gtest names allow no '-'
                             std::replace(name.begin(), name.end(), '-', '_');
                             return name;
                         });

}  // namespace
