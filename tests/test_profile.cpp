// Profile validation against the real registry: every problem is refused before anything runs,
// with "<file>:<line>: <what>" and, where a name is wrong, the names that would have been valid.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <ostream>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "concbench/host.hpp"
#include "concbench/profile.hpp"
#include "concbench/registry.hpp"
#include "concbench/workloads.hpp"

using namespace concbench;
namespace fs = std::filesystem;

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

// A valid profile body; tests replace or add single lines and know which line that is.
//   line 1: name, 2: models, 3: workloads, 4: connections, 5: repetitions, 6: duration_s
std::vector<std::string> base_lines() {
    return {"name = \"t\"", "models = [\"epoll\"]", "workloads = [\"hello\"]", "connections = [1, 10]",
            "repetitions = 1", "duration_s = 0.5"};
}

class ProfileTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_FALSE(registry().empty()) << "no models found under " << models_dir();
        std::string tmpl = (fs::temp_directory_path() / "concbench-profile-XXXXXX").string();
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        if (!dir_.empty()) fs::remove_all(dir_, ec);
    }
    std::string write(const std::string& text, const std::string& name = "p.toml") {
        std::string path = (fs::path(dir_) / name).string();
        std::ofstream(path) << text;
        return path;
    }
    std::string write_lines(const std::vector<std::string>& lines) {
        std::string text;
        for (const auto& l : lines) text += l + "\n";
        return write(text);
    }
    // The message load_profile throws for `path`, or "" (and a test failure) if it accepts it.
    std::string refusal(const std::string& path) {
        try {
            Profile p = load_profile(path, registry());
            ADD_FAILURE() << path << " was accepted, expected a refusal";
        } catch (const std::runtime_error& e) {
            return e.what();
        }
        return "";
    }
    std::string dir_;
};

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

#define EXPECT_CONTAINS(haystack, needle) \
    EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "missing '" << (needle) << "' in: " << (haystack)
#define EXPECT_AT_LINE(msg, path, line) \
    EXPECT_TRUE(starts_with(msg, (path) + ":" + std::to_string(line) + ":")) \
        << "expected " << (path) << ":" << (line) << ": at the start of: " << (msg)

TEST_F(ProfileTest, ShippedQuickProfileLoads) {
    for (const std::string& spec : {std::string("quick"), source_dir() + "/profiles/quick.toml"}) {
        Profile p = load_profile(spec, registry());
        EXPECT_EQ(p.name, "quick") << spec;
        EXPECT_FALSE(p.models.empty()) << spec;
        EXPECT_FALSE(p.workloads.empty()) << spec;
        EXPECT_FALSE(p.connections.empty()) << spec;
        EXPECT_GE(p.repetitions, 1);
        EXPECT_GT(p.duration_s, 0);
        EXPECT_FALSE(p.text.empty());
        for (const auto& m : p.models) EXPECT_NE(find_model(registry(), m), nullptr) << m;
        for (const auto& w : p.workloads) EXPECT_NE(find_workload(w), nullptr) << w;
    }
}

TEST_F(ProfileTest, MinimalProfileGetsDefaults) {
    std::string path = write_lines(base_lines());
    Profile p = load_profile(path, registry());
    EXPECT_EQ(p.name, "t");
    EXPECT_EQ(p.models, std::vector<std::string>{"epoll"});
    EXPECT_EQ(p.workloads, std::vector<std::string>{"hello"});
    EXPECT_EQ(p.connections, (std::vector<int>{1, 10}));
    EXPECT_DOUBLE_EQ(p.duration_s, 0.5);
    std::vector<int> cpus = allowed_cpus();
    ASSERT_FALSE(cpus.empty());
    EXPECT_EQ(p.server_cpus, std::vector<int>{cpus.front()});
    ASSERT_EQ(p.client_cpus.size(), 1u);
    EXPECT_NE(std::find(cpus.begin(), cpus.end(), p.client_cpus[0]), cpus.end());
    EXPECT_EQ(p.client_threads, 1);
}

TEST_F(ProfileTest, UnknownKeyNamesFileLineKeyAndValidKeys) {
    auto lines = base_lines();
    lines.push_back("# a comment");
    lines.push_back("durration_s = 3");  // line 8
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 8);
    EXPECT_CONTAINS(msg, "durration_s");
    EXPECT_CONTAINS(msg, "valid:");
    EXPECT_CONTAINS(msg, "duration_s");
    EXPECT_CONTAINS(msg, "connections");
}

TEST_F(ProfileTest, UnknownTableIsRefused) {
    auto lines = base_lines();
    lines.push_back("[extra]");  // line 7
    lines.push_back("x = 1");
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 7);
    EXPECT_CONTAINS(msg, "extra");
    EXPECT_CONTAINS(msg, "valid:");
}

TEST_F(ProfileTest, UnknownModelNamesModelLineAndValidModels) {
    auto lines = base_lines();
    lines[1] = "models = [\"epoll\", \"no-such-model\"]";
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 2);
    EXPECT_CONTAINS(msg, "no-such-model");
    EXPECT_CONTAINS(msg, "valid:");
    for (const auto& m : model_names()) EXPECT_CONTAINS(msg, m);
}

TEST_F(ProfileTest, UnknownModelOnItsOwnLineOfAMultiLineArray) {
    auto lines = base_lines();
    lines[1] = "models = [\n  \"epoll\",\n  \"nope\",\n]";  // "nope" is on line 4
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 4);
    EXPECT_CONTAINS(msg, "nope");
}

TEST_F(ProfileTest, UnknownWorkloadNamesWorkloadLineAndValidWorkloads) {
    auto lines = base_lines();
    lines[2] = "workloads = [\"hello\", \"gopher\"]";
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 3);
    EXPECT_CONTAINS(msg, "gopher");
    EXPECT_CONTAINS(msg, "valid:");
    for (const auto& w : all_workloads()) EXPECT_CONTAINS(msg, w.name);
}

struct BadValue {
    int line;           // 1-based index into base_lines() to replace, or base_lines().size()+1 to add
    std::string text;
    std::string key;    // must appear in the message
};
void PrintTo(const BadValue& b, std::ostream* os) { *os << "line " << b.line << ": " << b.text; }
std::string bad_value_name(const ::testing::TestParamInfo<BadValue>& info) {
    std::string name = std::to_string(info.index) + "_";
    for (char ch : info.param.text)
        if (std::isalnum(static_cast<unsigned char>(ch))) name += ch;
    return name;
}

class ProfileBadValue : public ProfileTest, public ::testing::WithParamInterface<BadValue> {};

TEST_P(ProfileBadValue, RefusedWithFileLineAndKey) {
    const BadValue& b = GetParam();
    auto lines = base_lines();
    if (b.line <= static_cast<int>(lines.size())) lines[b.line - 1] = b.text;
    else lines.push_back(b.text);
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, b.line);
    EXPECT_CONTAINS(msg, b.key);
}

INSTANTIATE_TEST_SUITE_P(
    Values, ProfileBadValue,
    ::testing::Values(BadValue{4, "connections = [0]", "connections"},
                      BadValue{4, "connections = [\"x\"]", "connections"},
                      BadValue{4, "connections = []", "connections"},
                      BadValue{4, "connections = 10", "connections"},
                      BadValue{4, "connections = [1, 200000]", "connections"},
                      BadValue{6, "duration_s = -1", "duration_s"},
                      BadValue{6, "duration_s = 0", "duration_s"},
                      BadValue{6, "duration_s = \"5\"", "duration_s"},
                      BadValue{5, "repetitions = 1.5", "repetitions"},
                      BadValue{5, "repetitions = 0", "repetitions"},
                      BadValue{7, "server_cpus = [999]", "server_cpus"},
                      BadValue{7, "client_cpus = [-1]", "client_cpus"},
                      BadValue{7, "server_cpus = 0", "server_cpus"},
                      BadValue{7, "warmup_s = -0.5", "warmup_s"},
                      BadValue{7, "client_threads = 0", "client_threads"},
                      BadValue{2, "models = []", "models"},
                      BadValue{2, "models = \"epoll\"", "models"},
                      BadValue{2, "models = [\"epoll\", \"epoll\"]", "epoll"},
                      BadValue{1, "name = 3", "name"},
                      BadValue{7, "interference_threshold = 0", "above 0 and at most 1"},
                      BadValue{7, "interference_threshold = 5", "at most 1"},
                      BadValue{7, "interference_threshold = \"5 %\"", "interference_threshold"},
                      BadValue{7, "slowdown_threshold = 1.5", "slowdown_threshold"},
                      BadValue{7, "disturbed_reruns = -1", "from 0 to 10"},
                      BadValue{7, "disturbed_reruns = 11", "disturbed_reruns"},
                      BadValue{7, "disturbed_reruns = 1.5", "disturbed_reruns"},
                      BadValue{7, "quiet_wait_s = -1", "quiet_wait_s"},
                      BadValue{7, "rest_check_s = 61", "from 0 to 60"},
                      BadValue{7, "primer_stall_s = 0", "primer_stall_s"},
                      BadValue{7, "primer_timeout_s = -5", "primer_timeout_s"},
                      BadValue{5, "repetitions = 101", "from 1 to 100"}),
    bad_value_name);

TEST_F(ProfileTest, ServerCpuOutOfRangeListsAvailableCpus) {
    auto lines = base_lines();
    lines.push_back("server_cpus = [999]");
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_CONTAINS(msg, "999");
    EXPECT_CONTAINS(msg, "available:");
    EXPECT_CONTAINS(msg, std::to_string(allowed_cpus().front()));
}

TEST_F(ProfileTest, MissingRequiredKeyIsRefused) {
    auto lines = base_lines();
    lines.erase(lines.begin() + 1);  // models
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_TRUE(starts_with(msg, path + ":")) << msg;
    EXPECT_CONTAINS(msg, "missing");
    EXPECT_CONTAINS(msg, "models");
    EXPECT_EQ(msg.find("workloads"), std::string::npos) << "only the missing key is named: " << msg;
}

TEST_F(ProfileTest, EmptyFileNamesEveryMissingKey) {
    std::string msg = refusal(write("# nothing\n"));
    EXPECT_CONTAINS(msg, "models");
    EXPECT_CONTAINS(msg, "workloads");
    EXPECT_CONTAINS(msg, "connections");
}

TEST_F(ProfileTest, TomlSyntaxErrorNamesFileAndLine) {
    auto lines = base_lines();
    lines[4] = "repetitions = = 2";  // line 5
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 5);
}

TEST_F(ProfileTest, DuplicateKeyIsASyntaxError) {
    auto lines = base_lines();
    lines.push_back("repetitions = 2");  // line 7, repeats line 5
    std::string path = write_lines(lines);
    std::string msg = refusal(path);
    EXPECT_AT_LINE(msg, path, 7);
}

TEST_F(ProfileTest, UnknownProfileNameListsAvailableProfiles) {
    std::string msg = refusal("no-such-profile");
    EXPECT_CONTAINS(msg, "no-such-profile");
    EXPECT_CONTAINS(msg, "available:");
    EXPECT_CONTAINS(msg, "quick");
}

TEST_F(ProfileTest, MissingPathIsRefused) {
    std::string path = (fs::path(dir_) / "absent.toml").string();
    std::string msg = refusal(path);
    EXPECT_CONTAINS(msg, path);
}

TEST_F(ProfileTest, ModelsAllExpandsToEveryModelNativeHere) {
    // Expansion, independent of which binaries happen to be built right now.
    std::vector<ModelInfo> reg = registry();
    for (auto& m : reg) m.built = true;
    auto lines = base_lines();
    lines[1] = "models = \"all\"";
    Profile p = load_profile(write_lines(lines), reg);
    std::vector<std::string> native;
    for (const auto& m : reg)
        if (m.native()) native.push_back(m.name);
    EXPECT_EQ(p.models, native);
    EXPECT_GE(p.models.size(), 2u);
    // A model emulated here (kqueue, iocp on Linux) or made for another platform is left out of
    // "all"; named, it is still a known model (the runner decides whether it may run).
    reg[0].emulated = Emulation{"wine", true, "measures Wine"};
    reg[1].platforms = {"no-such-platform"};
    p = load_profile(write_lines(lines), reg);
    EXPECT_EQ(std::count(p.models.begin(), p.models.end(), reg[0].name), 0);
    EXPECT_EQ(std::count(p.models.begin(), p.models.end(), reg[1].name), 0);
    std::vector<std::string> expected;
    for (const auto& m : reg)
        if (m.native()) expected.push_back(m.name);
    EXPECT_EQ(p.models, expected);
    lines[1] = "models = [\"" + reg[0].name + "\"]";
    EXPECT_EQ(load_profile(write_lines(lines), reg).models, std::vector<std::string>{reg[0].name});
}

TEST_F(ProfileTest, UnbuiltModelIsRefusedWithItsBinaryPath) {
    std::vector<ModelInfo> reg = registry();
    for (auto& m : reg) m.built = m.name != "threads";
    auto lines = base_lines();
    lines[1] = "models = [\"threads\"]";
    std::string path = write_lines(lines);
    try {
        load_profile(path, reg);
        ADD_FAILURE() << "an unbuilt model was accepted";
    } catch (const std::runtime_error& e) {
        std::string msg = e.what();
        EXPECT_TRUE(starts_with(msg, path + ":")) << msg;
        EXPECT_CONTAINS(msg, "threads");
        EXPECT_CONTAINS(msg, "not built");
        EXPECT_CONTAINS(msg, find_model(reg, "threads")->binary_path);
    }
}

TEST_F(ProfileTest, WorkloadsAllExpandsToEveryWorkload) {
    auto lines = base_lines();
    lines[2] = "workloads = \"all\"";
    Profile p = load_profile(write_lines(lines), registry());
    std::vector<std::string> names;
    for (const auto& w : all_workloads()) names.push_back(w.name);
    EXPECT_EQ(p.workloads, names);
}

TEST_F(ProfileTest, NameDefaultsToFileStem) {
    auto lines = base_lines();
    lines.erase(lines.begin());
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    Profile p = load_profile(write(text, "my-profile.toml"), registry());
    EXPECT_EQ(p.name, "my-profile");
}

TEST_F(ProfileTest, LoadShapeKeysDefaultToClosedLoopWithoutIdleConnections) {
    Profile p = load_profile(write_lines(base_lines()), registry());
    EXPECT_EQ(p.pipeline, 1);
    EXPECT_EQ(p.idle_connections, std::vector<int>{0});
    EXPECT_TRUE(p.rate_sweep.empty());
    EXPECT_DOUBLE_EQ(p.request_timeout_s, 10);
}

TEST_F(ProfileTest, LoadShapeKeysAreRead) {
    auto lines = base_lines();
    lines.push_back("pipeline = 16");
    lines.push_back("idle_connections = [0, 10000]");
    lines.push_back("rate_sweep = [0.1, 0.5, 1, 1.2]");
    lines.push_back("request_timeout_s = 2.5");
    Profile p = load_profile(write_lines(lines), registry());
    EXPECT_EQ(p.pipeline, 16);
    EXPECT_EQ(p.idle_connections, (std::vector<int>{0, 10000}));
    EXPECT_EQ(p.rate_sweep, (std::vector<double>{0.1, 0.5, 1.0, 1.2}));
    EXPECT_DOUBLE_EQ(p.request_timeout_s, 2.5);
}

TEST_F(ProfileTest, InterferenceKeysDefaultAndAreRead) {
    Profile d = load_profile(write_lines(base_lines()), registry());
    EXPECT_DOUBLE_EQ(d.interference_threshold, 0.05);
    EXPECT_EQ(d.disturbed_reruns, 2);
    EXPECT_DOUBLE_EQ(d.rest_check_s, 2);
    EXPECT_DOUBLE_EQ(d.primer_stall_s, 2);
    auto lines = base_lines();
    for (const char* l : {"interference_threshold = 0.1", "slowdown_threshold = 0.3", "disturbed_reruns = 0",
                          "quiet_wait_s = 0", "rest_check_s = 0", "primer_stall_s = 0.5", "primer_timeout_s = 90"})
        lines.push_back(l);
    Profile p = load_profile(write_lines(lines), registry());
    EXPECT_DOUBLE_EQ(p.interference_threshold, 0.1);
    EXPECT_DOUBLE_EQ(p.slowdown_threshold, 0.3);
    EXPECT_EQ(p.disturbed_reruns, 0);
    EXPECT_DOUBLE_EQ(p.quiet_wait_s, 0);
    EXPECT_DOUBLE_EQ(p.rest_check_s, 0);
    EXPECT_DOUBLE_EQ(p.primer_stall_s, 0.5);
    EXPECT_DOUBLE_EQ(p.primer_timeout_s, 90);
}

TEST_F(ProfileTest, BadLoadShapeValuesAreRefusedWithTheirLine) {
    for (const std::string& bad : {std::string("pipeline = 0"), std::string("pipeline = 1.5"),
                                   std::string("idle_connections = 5"), std::string("idle_connections = [-1]"),
                                   std::string("rate_sweep = [0.5, 0]"), std::string("rate_sweep = [0.5, 0.5]"),
                                   std::string("rate_sweep = 0.5"), std::string("request_timeout_s = 0")}) {
        auto lines = base_lines();
        lines.push_back(bad);  // line 7
        std::string path = write_lines(lines);
        std::string msg = refusal(path);
        EXPECT_AT_LINE(msg, path, 7) << bad;
        EXPECT_CONTAINS(msg, bad.substr(0, bad.find(' ')));
    }
}

}  // namespace

TEST_F(ProfileTest, CellsForRestrictsAModelToSomeCells) {
    Profile p = load_profile(write_lines({"models = [\"epoll\", \"threads\"]", "workloads = [\"hello\", \"idle\"]",
                                          "connections = [1, 100]", "[cells_for]", "threads = { hello = [100] }"}),
                             registry());
    EXPECT_TRUE(p.runs("epoll", "hello", 1));
    EXPECT_TRUE(p.runs("epoll", "idle", 100));
    EXPECT_TRUE(p.runs("threads", "hello", 100));
    EXPECT_FALSE(p.runs("threads", "hello", 1));
    EXPECT_FALSE(p.runs("threads", "idle", 100));
}

TEST_F(ProfileTest, CellsForOutsideTheProfileIsRefused) {
    const std::vector<std::string> head = {"models = [\"epoll\", \"threads\"]", "workloads = [\"hello\"]",
                                           "connections = [1, 100]", "[cells_for]"};
    auto with = [&](const std::string& line) {
        auto lines = head;
        lines.push_back(line);
        return refusal(write_lines(lines));
    };
    EXPECT_CONTAINS(with("uring = { hello = [1] }"), "'uring', which is not in models");
    EXPECT_CONTAINS(with("threads = { idle = [1] }"), "workload 'idle' is not in workloads");
    EXPECT_CONTAINS(with("threads = { hello = [1000] }"), "1000 connections is not among hello's (1, 100)");
    EXPECT_CONTAINS(with("nosuch = { hello = [1] }"), "unknown model 'nosuch'");
    EXPECT_CONTAINS(with("threads = { nosuch = [1] }"), "unknown workload 'nosuch'");
}

TEST_F(ProfileTest, ServerCpuSetsRunEachCellOnEachSet) {
    const std::vector<int> cpus = allowed_cpus();
    if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
    const std::string a = std::to_string(cpus[0]), b = std::to_string(cpus[1]);
    auto lines = base_lines();
    lines.push_back("server_cpus = [[" + a + "], [" + a + ", " + b + "]]");
    Profile p = load_profile(write_lines(lines), registry());
    ASSERT_EQ(p.server_cpu_sets.size(), 2u);
    EXPECT_EQ(p.server_cpu_sets[0], std::vector<int>({cpus[0]}));
    EXPECT_EQ(p.server_cpu_sets[1], std::vector<int>({cpus[0], cpus[1]}));
    EXPECT_EQ(p.server_cpus, std::vector<int>({cpus[0], cpus[1]}));  // all of them: verify, the rest check
    auto with = [&](const std::string& line) {
        auto l = base_lines();
        l.push_back(line);
        return refusal(write_lines(l));
    };
    EXPECT_CONTAINS(with("server_cpus = [[" + a + "], [" + a + "]]"), "listed twice");
    EXPECT_CONTAINS(with("server_cpus = [[" + a + "], []]"), "must not be empty");
    EXPECT_CONTAINS(with("server_cpus = [[" + a + "], [999]]"), "no CPU 999");
}

TEST_F(ProfileTest, WorkersListGivesACellPerCount) {
    Profile p = load_profile(write_lines({"models = [\"epoll\", \"threads\", \"threadpool\"]", "workloads = [\"hello\"]",
                                          "connections = [1]", "[workers]", "epoll = [1, 2]", "threadpool = 8"}),
                             registry());
    EXPECT_EQ(p.workers_list(*find_model(registry(), "epoll")), std::vector<int>({1, 2}));
    EXPECT_EQ(p.workers_for(*find_model(registry(), "epoll")), 1);
    EXPECT_EQ(p.workers_list(*find_model(registry(), "threadpool")), std::vector<int>({8}));
    EXPECT_EQ(p.workers_list(*find_model(registry(), "threads")), std::vector<int>({0}));  // takes none
    const std::vector<std::string> head = {"models = [\"epoll\"]", "workloads = [\"hello\"]", "connections = [1]",
                                           "[workers]"};
    auto with = [&](const std::string& line) {
        auto lines = head;
        lines.push_back(line);
        return refusal(write_lines(lines));
    };
    EXPECT_CONTAINS(with("epoll = [1, 1]"), "listed twice");
    EXPECT_CONTAINS(with("epoll = []"), "must not be empty");
    EXPECT_CONTAINS(with("epoll = [0, 2]"), "workers");
    EXPECT_CONTAINS(with("threads = [1, 2]"), "takes no --workers");
}

TEST_F(ProfileTest, ShippedGilProfileLoads) {
    Profile p = load_profile("gil", registry());
    EXPECT_EQ(p.workloads, std::vector<std::string>({"work-200"}));
    EXPECT_EQ(p.connections, std::vector<int>({1, 10, 100}));
    EXPECT_EQ(p.server_cpu_sets.size(), 2u);
    EXPECT_EQ(p.workers_list(*find_model(registry(), "epoll")), std::vector<int>({1, 2}));
}
