// The micro suite's reading of Google Benchmark's JSON: one figure per benchmark (median of the
// repetitions, per_op where an iteration holds several operations, skipped rows with their
// reason), Dahl's table built from it, and the comparison's statistics.
#include <gtest/gtest.h>

#include <cmath>

#include "concbench/micro.hpp"

using namespace concbench;
using json = nlohmann::json;

namespace {

json run(const std::string& name, double real_ns, int rep = 0) {
    return {{"name", name},         {"run_name", name},     {"run_type", "iteration"}, {"repetitions", 3},
            {"repetition_index", rep}, {"iterations", 1000}, {"real_time", real_ns},    {"cpu_time", real_ns},
            {"time_unit", "ns"}};
}

json chase(long bytes, double per_op_ns) {
    json b = run("latency/chase/bytes:" + std::to_string(bytes), per_op_ns * 1000);
    b["per_op"] = per_op_ns / 1e9;
    return b;
}

const MicroFigure* find(const std::vector<MicroFigure>& v, const std::string& name) {
    for (const auto& f : v)
        if (f.name == name) return &f;
    return nullptr;
}

}  // namespace

TEST(MicroFigures, MedianOfRepetitionsInNanoseconds) {
    json m = {{"benchmarks", json::array()}};
    m["benchmarks"].push_back(run("create/thread", 30000, 0));
    m["benchmarks"].push_back(run("create/thread", 10000, 1));
    m["benchmarks"].push_back(run("create/thread", 20000, 2));
    json us = run("create/fork", 150, 0);
    us["time_unit"] = "us";
    m["benchmarks"].push_back(us);
    auto f = micro_figures(m);
    ASSERT_EQ(f.size(), 2u);
    EXPECT_DOUBLE_EQ(find(f, "create/thread")->ns, 20000);
    EXPECT_EQ(find(f, "create/thread")->samples_ns.size(), 3u);
    EXPECT_DOUBLE_EQ(find(f, "create/fork")->ns, 150000);   // µs read as such
}

TEST(MicroFigures, PerOpCounterWinsOverTheIterationTime) {
    json m = {{"benchmarks", {chase(16384, 1.25)}}};
    auto f = micro_figures(m);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_NEAR(f[0].ns, 1.25, 1e-9);
}

TEST(MicroFigures, MedianAggregateIsUsedWhenPresentAndSkippedRowsKeepTheirReason) {
    json m = {{"benchmarks", json::array()}};
    m["benchmarks"].push_back(run("wait/epoll/fds:10", 900, 0));
    m["benchmarks"].push_back(run("wait/epoll/fds:10", 1100, 1));
    json agg = run("wait/epoll/fds:10", 1000);
    agg["run_type"] = "aggregate";
    agg["aggregate_name"] = "median";
    m["benchmarks"].push_back(agg);
    json mean = agg;
    mean["aggregate_name"] = "mean";
    mean["real_time"] = 5000;   // not the median: must be ignored
    m["benchmarks"].push_back(mean);
    json skip = {{"name", "wait/select/fds:3000"}, {"run_name", "wait/select/fds:3000"}, {"run_type", "iteration"},
                 {"error_occurred", true}, {"error_message", "select: fd 1030 is past FD_SETSIZE (1024)"}};
    m["benchmarks"].push_back(skip);
    auto f = micro_figures(m);
    EXPECT_DOUBLE_EQ(find(f, "wait/epoll/fds:10")->ns, 1000);
    const MicroFigure* s = find(f, "wait/select/fds:3000");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->error, "select: fd 1030 is past FD_SETSIZE (1024)");
    EXPECT_EQ(s->ns, 0);
}

TEST(LatencyTable, RowsFromTheChaseAndTheClock) {
    json m = {{"context", {{"measured_mhz", "3000"}, {"cache_l2_kib", "512"}}}, {"benchmarks", json::array()}};
    for (auto [bytes, ns] : std::vector<std::pair<long, double>>{
             {16384, 1.0}, {131072, 3.0}, {262144, 4.0}, {1048576, 10.0}, {1073741824, 100.0}})
        m["benchmarks"].push_back(chase(bytes, ns));
    m["benchmarks"].push_back(run("latency/disk_read_4k", 100000));
    json t = latency_rows(m);
    EXPECT_DOUBLE_EQ(t["measured_mhz"].get<double>(), 3000);
    std::map<std::string, json> by;
    for (const auto& r : t["rows"]) by[r["device"].get<std::string>()] = r;
    // L1: the smallest set (no L1 size known: 16 KiB); L2: the largest within half of 512 KiB;
    // RAM: the largest set that ran.
    EXPECT_EQ(by["L1"]["benchmark"], "latency/chase/bytes:16384");
    EXPECT_DOUBLE_EQ(by["L1"]["cycles"].get<double>(), 3.0);
    EXPECT_DOUBLE_EQ(by["L1"]["human_s"].get<double>(), 1.0);
    EXPECT_EQ(by["L2"]["benchmark"], "latency/chase/bytes:262144");
    EXPECT_EQ(by["RAM"]["benchmark"], "latency/chase/bytes:1073741824");
    EXPECT_DOUBLE_EQ(by["RAM"]["cycles"].get<double>(), 300.0);
    EXPECT_DOUBLE_EQ(by["RAM"]["essay_cycles"].get<double>(), 250.0);
    EXPECT_DOUBLE_EQ(by["disk"]["human_s"].get<double>(), 100000.0);   // 300,000 cycles / 3
    EXPECT_FALSE(by["network"].contains("ns"));                        // the essay's WAN: not measured
    EXPECT_NE(by["mutex"]["what"].get<std::string>().find("not run"), std::string::npos);
    auto text = latency_table(m);
    ASSERT_GE(text.size(), 3u);
    EXPECT_NE(text[0].find("3000 MHz"), std::string::npos);
}

TEST(MannWhitney, ExactForSmallSamplesWithoutTies) {
    // Fully separated samples of 3 and 3: one ordering of C(6,3) = 20 is as extreme, each side.
    EXPECT_NEAR(mann_whitney_p({1, 2, 3}, {4, 5, 6}), 0.1, 1e-12);
    EXPECT_NEAR(mann_whitney_p({1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}), 2.0 / 252, 1e-12);
    // Interleaved: no evidence of a difference.
    EXPECT_NEAR(mann_whitney_p({1, 4, 5}, {2, 3, 6}), 1.0, 1e-12);
}

TEST(MannWhitney, NormalApproximationWithTiesAndTooFewSamples) {
    EXPECT_TRUE(std::isnan(mann_whitney_p({1}, {2, 3})));
    EXPECT_DOUBLE_EQ(mann_whitney_p({5, 5, 5}, {5, 5, 5}), 1.0);
    std::vector<double> a, b;
    for (int i = 0; i < 12; ++i) a.push_back(i % 4), b.push_back(10 + i % 4);   // ties, separated
    double p = mann_whitney_p(a, b);
    EXPECT_GT(p, 0);
    EXPECT_LT(p, 1e-4);
}

TEST(MicroCompare, SideBySideWithChange) {
    json a = {{"benchmarks", {run("create/thread", 20000, 0), run("create/thread", 20000, 1)}}};
    json b = {{"benchmarks", {run("create/thread", 30000, 0), run("create/thread", 30000, 1),
                              run("create/fork", 100000, 0)}}};
    auto lines = compare_micro(a, b);
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_NE(lines[1].find("+50.0%"), std::string::npos) << lines[1];
    EXPECT_NE(lines[2].find("(not in A)"), std::string::npos) << lines[2];
}

TEST(MicroFigures, GoogleBenchmarksNameSuffixesAreDropped) {
    EXPECT_EQ(base_name("switch/thread_pipe/cpus:2/real_time"), "switch/thread_pipe/cpus:2");
    EXPECT_EQ(base_name("memory/thread/iterations:1/manual_time"), "memory/thread");
    EXPECT_EQ(base_name("latency/disk_read_4k/min_time:0.500"), "latency/disk_read_4k");
    EXPECT_EQ(base_name("wait/epoll/fds:100"), "wait/epoll/fds:100");
    EXPECT_EQ(base_name("ring/threads/n:10/real_time"), "ring/threads/n:10");   // a family named threads
    EXPECT_EQ(base_name("create/thread/threads:4"), "create/thread");
    json m = {{"benchmarks", {run("latency/mutex/real_time", 4.0)}}};
    json t = latency_rows(m);
    bool seen = false;
    for (const auto& r : t["rows"])
        if (r["device"] == "mutex") {
            seen = true;
            EXPECT_DOUBLE_EQ(r["ns"].get<double>(), 4.0);
        }
    EXPECT_TRUE(seen);
}
