// The launcher: templates, the registry's [reference] table, and a reference-style launch of a
// real server (Python's http.server, which prints no readiness line) — independent of nginx and
// Apache being installed; tests/test_models.cpp runs the real reference models.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "concbench/launch.hpp"
#include "concbench/registry.hpp"

using namespace concbench;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

TEST(RenderTemplate, ReplacesPlaceholdersAndLeavesOtherAtSigns) {
    std::map<std::string, std::string> v = {{"port", "8080"}, {"workers", "150"}, {"dir", "/x"}};
    EXPECT_EQ(render_template("listen @port@; root @dir@/a;", v, "t"), "listen 8080; root /x/a;");
    EXPECT_EQ(render_template("ServerLimit @workers/25@", v, "t"), "ServerLimit 6");   // 150/25
    EXPECT_EQ(render_template("@workers/7@", v, "t"), "22");                          // rounded up
    EXPECT_EQ(render_template("user@example.org, location @fallback {", v, "t"),
              "user@example.org, location @fallback {");
    EXPECT_EQ(render_template("@@ @ @port", v, "t"), "@@ @ @port");
}

TEST(RenderTemplate, UnknownPlaceholderNamesItAndTheFile) {
    std::string e = error_of([] { render_template("x @nope@ y", {{"port", "1"}}, "conf.in"); });
    EXPECT_NE(e.find("conf.in"), std::string::npos) << e;
    EXPECT_NE(e.find("@nope@"), std::string::npos) << e;
    EXPECT_NE(e.find("port"), std::string::npos) << e;  // the known names
    e = error_of([] { render_template("@dir/2@", {{"dir", "/x"}}, "conf.in"); });
    EXPECT_NE(e.find("whole number"), std::string::npos) << e;
}

TEST(PickFreePort, GivesABindablePort) {
    uint16_t p = pick_free_port("127.0.0.1");
    ASSERT_NE(p, 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(p);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    close(fd);
}

class ReferenceRegistry : public testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("concbench-launch-" + std::to_string(getpid()));
        fs::create_directories(dir_ / "models" / "pyhttp");
        // Runtime directories go under TMPDIR: a private one, to see what is left there.
        fs::create_directories(dir_ / "tmp");
        old_tmpdir_ = getenv("TMPDIR") ? getenv("TMPDIR") : "";
        setenv("TMPDIR", (dir_ / "tmp").c_str(), 1);
        // Python's http.server as a "reference server": serves @dir@, prints nothing useful on stdout.
        write("models/pyhttp/index.html.in", "@greeting@ @workers@");
        toml_ = R"(name = "pyhttp"
description = "Python's http.server"
mechanism = "reference"
structure = "one thread"
workloads = ["hello"]
workers = 1
[reference]
command = ["/usr/bin/python3", "-m", "http.server", "--bind", "@host@", "--directory", "@dir@", "@port@"]
config = "index.html.in"
config_name = "index.html"
files = { "hello.txt" = "Hello, World!" }
version = ["/usr/bin/python3", "--version"]
package = "python3"
readiness = "http"
settings = { greeting = "hi" }
[verify]
skip = { echo = "HTTP only" }
)";
        write("models/pyhttp/model.toml", toml_);
    }
    void TearDown() override {
        if (old_tmpdir_.empty()) unsetenv("TMPDIR");
        else setenv("TMPDIR", old_tmpdir_.c_str(), 1);
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    void write(const std::string& rel, const std::string& text) { std::ofstream(dir_ / rel) << text; }
    std::vector<std::string> left_in_tmp() {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(dir_ / "tmp")) names.push_back(e.path().filename().string());
        return names;
    }
    std::string old_tmpdir_;
    std::vector<ModelInfo> load() { return load_registry((dir_ / "models").string(), "/nonexistent"); }
    fs::path dir_;
    std::string toml_;
};

TEST_F(ReferenceRegistry, ReadsTheReferenceAndVerifyTables) {
    auto reg = load();
    ASSERT_EQ(reg.size(), 1u);
    const ModelInfo& m = reg[0];
    ASSERT_TRUE(m.is_reference());
    EXPECT_EQ(m.binary_path, "/usr/bin/python3");
    EXPECT_TRUE(m.built);
    EXPECT_EQ(m.reference->config_name, "index.html");
    EXPECT_EQ(m.reference->files.at("hello.txt"), "Hello, World!");
    EXPECT_EQ(m.skips("echo"), "HTTP only");
    EXPECT_EQ(m.skips("hello"), "");
    nlohmann::json meta = reference_meta(m, 3);
    EXPECT_NE(meta["version"].get<std::string>().find("Python 3"), std::string::npos) << meta.dump();
    EXPECT_EQ(meta["settings"]["workers"], 3);
}

TEST_F(ReferenceRegistry, RefusesAReferenceModelWithoutItsTableAndBadKeys) {
    auto expect_refused = [&](const std::string& from, const std::string& to, const std::string& says) {
        std::string t = toml_;
        t.replace(t.find(from), from.size(), to);
        write("models/pyhttp/model.toml", t);
        std::string e = error_of([&] { load(); });
        EXPECT_NE(e.find(says), std::string::npos) << "expected '" << says << "' in: " << e;
        EXPECT_NE(e.find("model.toml:"), std::string::npos) << e;
    };
    expect_refused("[reference]", "[elsewhere]", "unknown key 'elsewhere'");
    expect_refused("mechanism = \"reference\"", "mechanism = \"blocking\"", "exactly when mechanism");
    expect_refused("config = \"index.html.in\"", "config = \"missing.in\"", "not found");
    expect_refused("readiness = \"http\"", "readiness = \"line\"", "not supported");
    expect_refused("\"/usr/bin/python3\", \"-m\"", "\"python3\", \"-m\"", "absolute path");
    expect_refused("skip = {", "skop = {", "unknown key 'verify.skop'");
}

// [emulated.<platform>]: the entry for this machine's platform is kept; a model with one is not
// native here (profiles' "all" leaves it out); every platform's entry is checked.
TEST_F(ReferenceRegistry, ReadsTheEmulatedTableForThisPlatformOnly) {
    auto with = [&](const std::string& extra) {
        write("models/pyhttp/model.toml", "platforms = [\"linux\"]\n" + toml_ + extra);
        return load();
    };
    auto reg = with("");
    EXPECT_FALSE(reg[0].emulated);
    EXPECT_EQ(reg[0].native(), std::string(this_platform()) == "linux");
    reg = with(std::string("[emulated.") + this_platform() + "]\nby = \"wine\"\nrun = \"allowed\"\nreason = \"measures Wine\"\n");
    ASSERT_TRUE(reg[0].emulated);
    EXPECT_EQ(reg[0].emulated->by, "wine");
    EXPECT_TRUE(reg[0].emulated->run);
    EXPECT_EQ(reg[0].emulated->reason, "measures Wine");
    EXPECT_FALSE(reg[0].native());
    reg = with("[emulated.windows]\nby = \"x\"\nrun = \"refused\"\nreason = \"y\"\n");
    EXPECT_EQ(bool(reg[0].emulated), std::string(this_platform()) == "windows");

    auto refused = [&](const std::string& extra, const std::string& says) {
        std::string e = error_of([&] { with(extra); });
        EXPECT_NE(e.find(says), std::string::npos) << "expected '" << says << "' in: " << e;
        EXPECT_NE(e.find("model.toml:"), std::string::npos) << e;
    };
    refused("[emulated.beos]\nby = \"x\"\nrun = \"refused\"\nreason = \"y\"\n", "unknown platform 'emulated.beos'");
    refused("[emulated.linux]\nby = \"x\"\nrun = \"maybe\"\nreason = \"y\"\n", "must be \"allowed\"");
    refused("[emulated.linux]\nby = \"x\"\nrun = \"refused\"\n", "reason");
    refused("[emulated.linux]\nby = \"x\"\nrun = \"refused\"\nreason = \"y\"\nwhy = \"z\"\n",
            "unknown key 'emulated.linux.why'");
}

TEST_F(ReferenceRegistry, MissingBinaryIsOneLineNamingThePackage) {
    std::string t = toml_;
    const std::string from = "command = [\"/usr/bin/python3\"";
    t.replace(t.find(from), from.size(), "command = [\"/usr/sbin/no-such-srv\"");
    write("models/pyhttp/model.toml", t);
    auto reg = load();
    ASSERT_FALSE(reg[0].built);
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    std::string err;
    EXPECT_FALSE(launch_server(reg[0], o, std::chrono::seconds(2), err));
    EXPECT_NE(err.find("/usr/sbin/no-such-srv not found"), std::string::npos) << err;
    EXPECT_NE(err.find("install Debian package python3 (make deps)"), std::string::npos) << err;
}

TEST_F(ReferenceRegistry, LaunchesRendersServesAndStopsByGroup) {
    auto reg = load();
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    o.log_path = (dir_ / "server.log").string();
    o.workers = 4;
    std::string err;
    auto s = launch_server(reg[0], o, std::chrono::seconds(10), err);
    ASSERT_TRUE(s) << err;
    EXPECT_NE(s->port(), 0);
    // It runs in a runtime directory of its own under TMPDIR, 0755, named after the cell's.
    auto runtime = left_in_tmp();
    ASSERT_EQ(runtime.size(), 1u);
    EXPECT_EQ(runtime[0].rfind("concbench-ref-" + std::to_string(getpid()) + "-run-", 0), 0u) << runtime[0];
    const fs::path rt = dir_ / "tmp" / runtime[0];
    EXPECT_EQ(fs::status(rt).permissions(), fs::perms(0755));
    // The template and the extra file were written, with settings and variables substituted.
    std::ifstream idx(rt / "index.html");
    std::string text((std::istreambuf_iterator<char>(idx)), {});
    EXPECT_EQ(text, "hi 4");
    EXPECT_TRUE(fs::exists(rt / "hello.txt"));
    EXPECT_EQ(fs::status(rt / "hello.txt").permissions(), fs::perms(0644));
    // The measured process is the server itself, not a wrapper.
    std::ifstream comm("/proc/" + std::to_string(s->pid()) + "/comm");
    std::string name;
    comm >> name;
    EXPECT_EQ(name.rfind("python3", 0), 0u) << name;
    // It answers on the port the launcher chose.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(s->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    std::string req = "GET /hello.txt HTTP/1.0\r\n\r\n";
    ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) got.append(buf, n);
    close(fd);
    EXPECT_NE(got.find(" 200 "), std::string::npos) << got;
    EXPECT_NE(got.find("Hello, World!"), std::string::npos) << got;
    pid_t pgid = s->pid();
    std::ofstream(rt / "error.log") << "a log line\n";
    StopReport r = s->stop(std::chrono::seconds(5));
    EXPECT_EQ(r.leftover, 0);
    EXPECT_FALSE(r.killed) << r.describe();
    EXPECT_EQ(live_processes_in_group(pgid), 0);
    // Stopped: the runtime directory is gone; the configuration, extra files and logs are kept.
    EXPECT_TRUE(left_in_tmp().empty());
    std::ifstream kept(dir_ / "run" / "index.html");
    std::string kept_text((std::istreambuf_iterator<char>(kept)), {});
    EXPECT_EQ(kept_text, "hi 4");
    EXPECT_TRUE(fs::exists(dir_ / "run" / "hello.txt"));
    EXPECT_TRUE(fs::exists(dir_ / "run" / "error.log"));
    EXPECT_FALSE(fs::exists(dir_ / "run" / "empty"));
}

TEST_F(ReferenceRegistry, ServesTheDocrootInPlaceOrACopyOfIt) {
    std::string t = toml_;
    const std::string from = "\"--directory\", \"@dir@\"";
    t.replace(t.find(from), from.size(), "\"--directory\", \"@docroot@\"");
    write("models/pyhttp/model.toml", t);
    auto reg = load();
    fs::create_directories(dir_ / "docroot");
    std::ofstream(dir_ / "docroot" / "f") << "file body";
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    o.docroot = (dir_ / "docroot").string();
    std::string err;
    auto s = launch_server(reg[0], o, std::chrono::seconds(10), err);
    ASSERT_TRUE(s) << err;
    // Run as ourselves, the workers reach the docroot: served in place, not copied.
    std::ifstream cmd("/proc/" + std::to_string(s->pid()) + "/cmdline");
    std::string line((std::istreambuf_iterator<char>(cmd)), {});
    EXPECT_NE(line.find((dir_ / "docroot").string()), std::string::npos) << line;
    s->stop(std::chrono::seconds(5));
    EXPECT_TRUE(left_in_tmp().empty());

    // Workers of another user (root's servers) that cannot enter the docroot get a copy of it.
    if (geteuid() != 0) GTEST_SKIP() << "only root's servers run their workers as another user";
    t.replace(t.find("readiness"), 0, "run_as = \"nobody\"\n");
    write("models/pyhttp/model.toml", t);
    reg = load();
    fs::create_directories(dir_ / "home" / "docroot");
    fs::permissions(dir_ / "home", fs::perms(0700));
    std::ofstream(dir_ / "home" / "docroot" / "f") << "file body";
    o.docroot = (dir_ / "home" / "docroot").string();
    s = launch_server(reg[0], o, std::chrono::seconds(10), err);
    ASSERT_TRUE(s) << err;
    auto runtime = left_in_tmp();
    ASSERT_EQ(runtime.size(), 1u);
    const fs::path copy = dir_ / "tmp" / runtime[0] / "docroot";
    std::ifstream cmd2("/proc/" + std::to_string(s->pid()) + "/cmdline");
    std::string line2((std::istreambuf_iterator<char>(cmd2)), {});
    EXPECT_NE(line2.find(copy.string()), std::string::npos) << line2;
    std::ifstream f(copy / "f");
    std::string body((std::istreambuf_iterator<char>(f)), {});
    EXPECT_EQ(body, "file body");
    EXPECT_EQ(fs::status(copy / "f").permissions(), fs::perms(0644));
    s->stop(std::chrono::seconds(5));
    EXPECT_TRUE(left_in_tmp().empty());
}

TEST_F(ReferenceRegistry, SweepsRuntimeDirectoriesOfAConcbenchThatWasKilled) {
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    ASSERT_GT(dead, 0);
    waitpid(dead, nullptr, 0);
    const fs::path stale = dir_ / "tmp" / ("concbench-ref-" + std::to_string(dead) + "-cell-AbC123");
    const fs::path alive = dir_ / "tmp" / ("concbench-ref-1-cell-AbC123");  // pid 1 is alive
    const fs::path other = dir_ / "tmp" / "someone-else";
    for (const auto& d : {stale, alive, other}) fs::create_directories(d / "docroot");
    auto reg = load();
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    std::string err;
    auto s = launch_server(reg[0], o, std::chrono::seconds(10), err);
    ASSERT_TRUE(s) << err;
    s->stop(std::chrono::seconds(5));
    EXPECT_FALSE(fs::exists(stale));
    EXPECT_TRUE(fs::exists(alive));
    EXPECT_TRUE(fs::exists(other));
}

TEST_F(ReferenceRegistry, AnUnreachableTmpdirIsOneLine) {
    auto reg = load();
    if (geteuid() != 0) GTEST_SKIP() << "only root's servers run their workers as another user";
    std::string t = toml_;
    t.replace(t.find("readiness"), 0, "run_as = \"nobody\"\n");
    write("models/pyhttp/model.toml", t);
    reg = load();
    fs::create_directories(dir_ / "home" / "tmp");
    fs::permissions(dir_ / "home", fs::perms(0700));
    setenv("TMPDIR", (dir_ / "home" / "tmp").c_str(), 1);
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    std::string err;
    EXPECT_FALSE(launch_server(reg[0], o, std::chrono::seconds(2), err));
    EXPECT_NE(err.find("is not reachable by user 'nobody'"), std::string::npos) << err;
    EXPECT_NE(err.find("set TMPDIR to a directory others may enter"), std::string::npos) << err;
    EXPECT_TRUE(fs::is_empty(dir_ / "home" / "tmp"));  // nothing left behind
}

TEST_F(ReferenceRegistry, AServerThatExitsIsReportedWithItsLastLogLine) {
    std::string t = toml_;
    const std::string from = "\"-m\", \"http.server\"";
    t.replace(t.find(from), from.size(), "\"-m\", \"no_such_module_xyz\"");
    write("models/pyhttp/model.toml", t);
    auto reg = load();
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    o.log_path = (dir_ / "server.log").string();
    std::string err;
    EXPECT_FALSE(launch_server(reg[0], o, std::chrono::seconds(10), err));
    EXPECT_NE(err.find("exited before it was ready"), std::string::npos) << err;
    EXPECT_NE(err.find("no_such_module_xyz"), std::string::npos) << err;
    EXPECT_TRUE(left_in_tmp().empty());                     // the runtime directory removed
    EXPECT_TRUE(fs::exists(dir_ / "run" / "index.html"));  // what it held kept
}

TEST_F(ReferenceRegistry, EchoIsRefusedForAnHttpReferenceServer) {
    auto reg = load();
    LaunchOptions o;
    o.proto = "echo";
    o.work_dir = (dir_ / "run").string();
    std::string err;
    EXPECT_FALSE(launch_server(reg[0], o, std::chrono::seconds(2), err));
    EXPECT_NE(err.find("does not speak 'echo'"), std::string::npos) << err;
}

// A model in an interpreted runtime (models/py-*, node-http): its launcher is built, but an
// interpreter or module it needs may be missing; that is one line naming the package, in the
// registry and at launch, never a crash or an unexplained "not built".
class RuntimeRegistry : public testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("concbench-runtime-" + std::to_string(getpid()));
        fs::create_directories(dir_ / "models" / "pyx");
        fs::create_directories(dir_ / "bin");
        std::ofstream(dir_ / "bin" / "server-pyx") << "#!/bin/sh\nexit 0\n";
        fs::permissions(dir_ / "bin" / "server-pyx", fs::perms::owner_all);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    std::vector<ModelInfo> load(const std::string& runtime) {
        std::ofstream(dir_ / "models" / "pyx" / "model.toml")
            << "name = \"pyx\"\ndescription = \"d\"\nmechanism = \"readiness\"\nstructure = \"s\"\n"
               "workloads = [\"hello\"]\n[runtime]\n" << runtime;
        return load_registry((dir_ / "models").string(), (dir_ / "bin").string());
    }
    fs::path dir_;
};

TEST_F(RuntimeRegistry, PresentRuntimeIsBuilt) {
    auto reg = load("needs = [\"/bin/sh\"]\npackage = \"dash\"\n");
    ASSERT_EQ(reg.size(), 1u);
    EXPECT_TRUE(reg[0].built);
    EXPECT_TRUE(reg[0].unavailable.empty());
    ASSERT_TRUE(reg[0].runtime);
    EXPECT_EQ(reg[0].runtime->package, "dash");
}

TEST_F(RuntimeRegistry, MissingModuleIsNotAvailableNamingThePackage) {
    auto reg = load("needs = [\"/bin/sh\", \"/usr/lib/python3/dist-packages/no_such_module\"]\n"
                    "package = \"python3-no-such\"\n");
    ASSERT_EQ(reg.size(), 1u);
    EXPECT_FALSE(reg[0].built);
    EXPECT_NE(reg[0].unavailable.find("not available: install Debian package python3-no-such"), std::string::npos)
        << reg[0].unavailable;
    EXPECT_EQ(reg[0].how_to_build(), reg[0].unavailable);
    LaunchOptions o;
    o.work_dir = (dir_ / "run").string();
    std::string err;
    EXPECT_FALSE(launch_server(reg[0], o, std::chrono::seconds(2), err));
    EXPECT_EQ(err, "pyx: " + reg[0].unavailable);
}

TEST_F(RuntimeRegistry, RefusesBadRuntimeTables) {
    EXPECT_NE(error_of([&] { load("needs = [\"python3\"]\npackage = \"p\"\n"); }).find("not an absolute path"),
              std::string::npos);
    EXPECT_NE(error_of([&] { load("needs = []\n"); }).find("missing key 'package'"), std::string::npos);
    EXPECT_NE(error_of([&] { load("package = \"p\"\nneed = []\n"); }).find("unknown key 'runtime.need'"),
              std::string::npos);
}

}  // namespace
