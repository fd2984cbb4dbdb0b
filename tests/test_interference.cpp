// Interference: /proc/stat parsing, who used the CPU between two process scans (reaped children
// counted once), the per-role reading built from two marks, and the speed probe.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "concbench/interference.hpp"

using namespace concbench;
using namespace std::chrono;

namespace {

TEST(ProcStat, ParsesPerCpuLinesInSeconds) {
    const std::string text =
        "cpu  100 0 50 1000 5 0 10 0 0 0\n"
        "cpu0 60 1 30 400 3 2 8 4 0 0\n"
        "cpu1 40 0 20 600 2 0 2 0 0 0\n"
        "intr 12345 0 0\nctxt 999\nprocs_running 3\n";
    auto m = parse_proc_stat(text, 100);
    ASSERT_EQ(m.size(), 2u);  // the summary line "cpu " is not a CPU
    EXPECT_DOUBLE_EQ(m[0].user, 0.6);
    EXPECT_DOUBLE_EQ(m[0].nice, 0.01);
    EXPECT_DOUBLE_EQ(m[0].system, 0.3);
    EXPECT_DOUBLE_EQ(m[0].idle, 4.0);
    EXPECT_DOUBLE_EQ(m[0].iowait, 0.03);
    EXPECT_DOUBLE_EQ(m[0].irq, 0.02);
    EXPECT_DOUBLE_EQ(m[0].softirq, 0.08);
    EXPECT_DOUBLE_EQ(m[0].steal, 0.04);
    EXPECT_DOUBLE_EQ(m[1].idle, 6.0);
    EXPECT_FALSE(read_proc_stat().empty());
}

ProcCpu proc(pid_t ppid, unsigned long long start, double self, double children, const char* comm = "p") {
    ProcCpu p;
    p.ppid = ppid;
    p.start = start;
    p.self_s = self;
    p.children_s = children;
    p.comm = comm;
    return p;
}

double use_of(const std::vector<ProcUse>& v, pid_t pid) {
    for (const auto& u : v)
        if (u.pid == pid) return u.cpu_s;
    return 0;
}

TEST(CpuBetween, CountsOwnTimeAndNewProcessesWhole) {
    ProcScan a{{10, proc(1, 100, 5.0, 0)}, {11, proc(1, 100, 1.0, 0)}};
    ProcScan b{{10, proc(1, 100, 5.5, 0)}, {11, proc(1, 100, 1.0, 0)}, {12, proc(1, 900, 0.3, 0)}};
    auto u = cpu_between(a, b);
    EXPECT_NEAR(use_of(u, 10), 0.5, 1e-9);
    EXPECT_EQ(use_of(u, 11), 0);  // nothing used: left out
    EXPECT_NEAR(use_of(u, 12), 0.3, 1e-9);
    ASSERT_FALSE(u.empty());
    EXPECT_EQ(u[0].pid, 10);  // largest first
}

TEST(CpuBetween, AChildReapedMeanwhileCountsOnlyWhatItUsedInTheWindow) {
    // Child 21 had used 27 s before the window and 0.2 s in it; its parent reaps it: cutime += 27.2.
    // Child 22 was born and reaped within the window (0.4 s): all of it counts.
    ProcScan a{{20, proc(1, 100, 1.0, 0)}, {21, proc(20, 150, 27.0, 0)}};
    ProcScan b{{20, proc(1, 100, 1.0, 27.0 + 0.2 + 0.4)}};
    EXPECT_NEAR(use_of(cpu_between(a, b), 20), 0.6, 1e-9);
}

TEST(CpuBetween, AReusedPidIsANewProcess) {
    ProcScan a{{30, proc(1, 100, 9.0, 0)}};
    ProcScan b{{30, proc(1, 777, 0.25, 0)}};  // the old 30 ended unreaped by anyone we saw
    EXPECT_NEAR(use_of(cpu_between(a, b), 30), 0.25, 1e-9);
}

TEST(Descendants, WalksTheTreeFromARoot) {
    ProcScan s{{1, proc(0, 1, 0, 0)}, {5, proc(1, 1, 0, 0)}, {6, proc(5, 1, 0, 0)},
               {7, proc(6, 1, 0, 0)}, {8, proc(1, 1, 0, 0)}};
    auto d = descendants(s, 5);
    std::sort(d.begin(), d.end());
    EXPECT_EQ(d, (std::vector<pid_t>{5, 6, 7}));
    EXPECT_TRUE(descendants(s, 99).empty());
}

// Two marks one second apart, by hand: CPU 0 (server) and CPU 1 (client).
Mark mark(double t, double idle0, double idle1, double steal0, ProcScan procs) {
    Mark m;
    m.t = steady_clock::time_point(duration_cast<steady_clock::duration>(duration<double>(t)));
    m.stat[0].idle = idle0;
    m.stat[0].steal = steal0;
    m.stat[1].idle = idle1;
    m.procs = std::move(procs);
    return m;
}

TEST(MeasureInterference, ForeignIsWhatOthersUsedBoundedByWhatTheCpuHadBeyondOurs) {
    // CPU 0 busy 0.9 s of 1, the server used 0.55: 0.35 unaccounted. Another process (pid 4242,
    // allowed everywhere: unreadable affinity counts as everywhere) used 0.3 s: foreign 0.3.
    ProcScan a{{4242, proc(1, 5, 10.0, 0, "hog")}}, b{{4242, proc(1, 5, 10.3, 0, "hog")}};
    Mark m0 = mark(100, 50, 50, 0, a), m1 = mark(101, 50.1, 50.5, 0.0, b);
    OwnUse own{0.55, 0.5};
    Interference r = measure_interference(m0, m1, {0}, {1}, own, nullptr);
    EXPECT_NEAR(r.window_s, 1.0, 1e-9);
    EXPECT_NEAR(r.server.busy, 0.9, 1e-9);
    EXPECT_NEAR(r.server.own, 0.55, 1e-9);
    EXPECT_NEAR(r.server.unaccounted, 0.35, 1e-9);
    EXPECT_NEAR(r.server.foreign, 0.3, 1e-9);
    EXPECT_NEAR(r.client.busy, 0.5, 1e-9);
    EXPECT_NEAR(r.client.foreign, 0.0, 1e-9);  // nothing beyond ours there
    EXPECT_EQ(r.server.slowdown, -1);           // no probe
    ASSERT_EQ(r.top.size(), 1u);
    EXPECT_EQ(r.top[0].comm, "hog");
    const std::string why = r.disturbed_by(0.05, 0.25);
    EXPECT_NE(why.find("server CPU 0: 30 % of a core to other processes (hog 30 %)"), std::string::npos) << why;
    EXPECT_EQ(why.find("client"), std::string::npos) << why;
    EXPECT_EQ(r.disturbed_by(0.5, 0.25), "");
    auto j = r.to_json(0.05, 0.25);
    EXPECT_NEAR(j["server"]["foreign"].get<double>(), 0.3, 1e-9);
    EXPECT_TRUE(j["server"]["slowdown"].is_null());
    EXPECT_EQ(j["top"][0]["pid"], 4242);
}

TEST(MeasureInterference, KernelWorkForTheCellIsNotForeignWhenNoOtherProcessRan) {
    // CPU 0 0.6 busy, the server 0.5: the 0.1 is idle exits and interrupts, not another process.
    Mark m0 = mark(0, 10, 10, 0, {}), m1 = mark(2, 10.8, 10.0, 0, {});
    Interference r = measure_interference(m0, m1, {0}, {1}, {1.0, 2.0}, nullptr);
    EXPECT_NEAR(r.server.unaccounted, 0.1, 1e-9);
    EXPECT_EQ(r.server.foreign, 0);
    EXPECT_EQ(r.disturbed_by(0.05, 0.25), "");
}

TEST(MeasureInterference, StealIsItsOwnReason) {
    Mark m0 = mark(0, 10, 10, 1.0, {}), m1 = mark(1, 10.2, 10.0, 1.3, {});
    Interference r = measure_interference(m0, m1, {0}, {1}, {0.5, 1.0}, nullptr);
    EXPECT_NEAR(r.server.steal, 0.3, 1e-9);
    EXPECT_NEAR(r.server.busy, 0.5, 1e-9);  // 1 − 0.2 idle − 0.3 stolen
    EXPECT_NE(r.disturbed_by(0.05, 0.25).find("30 % stolen by the hypervisor"), std::string::npos);
}

TEST(MeasureInterference, ServerAndClientOnTheSameCpusAreOneReading) {
    Mark m0 = mark(0, 10, 10, 0, {}), m1 = mark(1, 10.0, 10.0, 0, {});
    Interference r = measure_interference(m0, m1, {0, 1}, {1}, {1.2, 0.7}, nullptr);
    EXPECT_EQ(r.server.cpus, (std::vector<int>{0, 1}));
    EXPECT_EQ(r.client.cpus, r.server.cpus);
    EXPECT_NEAR(r.server.own, 0.95, 1e-9);  // (1.2 + 0.7) over two CPUs
}

TEST(MeasureInterference, ABusyProcessOfOursIsNotForeign) {
    // A child of this process (as a server is) burning 300 ms of its own CPU between two real
    // marks: it starts after the first and the second is taken once it says it is done, so the
    // figure does not depend on how much CPU a busy machine lets it have in a fixed time.
    int go[2], done[2];
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(done), 0);
    pid_t child = fork();
    if (child == 0) {
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        timespec t{};
        do clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        while (t.tv_sec == 0 && t.tv_nsec < 300000000);
        if (write(done[1], "d", 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    ASSERT_GT(child, 0);
    Mark m0 = take_mark();
    ASSERT_EQ(write(go[1], "g", 1), 1);
    char c;
    ASSERT_EQ(read(done[0], &c, 1), 1);
    Mark m1 = take_mark();
    Interference r = measure_interference(m0, m1, {0}, {1}, {}, nullptr);
    for (const ProcUse& u : r.top) EXPECT_NE(u.pid, child);
    EXPECT_GT(others_of_ours_s(m0, m1, -1), 0.2);    // counted as ours
    EXPECT_LT(others_of_ours_s(m0, m1, child), 0.05);  // unless it is the server's tree
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    for (int fd : {go[0], go[1], done[0], done[1]}) close(fd);
}

TEST(SpeedProbe, CalibratesAndMeasuresTheShareOfSpeedLost) {
    SpeedProbe probe({0});
    probe.calibrate(0.3);
    const double base = probe.base_s(0);
    ASSERT_GT(base, 0);
    EXPECT_GT(probe.thread_cpu_s(0), 0);
    probe.mark_start();
    std::this_thread::sleep_for(milliseconds(400));
    probe.mark_end();
    EXPECT_GE(probe.samples(0), 2);
    EXPECT_GE(probe.loss(0), 0);
    EXPECT_LE(probe.base_s(0), base);  // a window never raises the base
    // Against a base half as long, each sample lost about half of the speed.
    probe.set_base_s(0, probe.base_s(0) / 2);
    EXPECT_GT(probe.loss(0), 0.4);
    EXPECT_LT(probe.loss(0), 1.0);
    EXPECT_EQ(probe.loss(99), -1);  // a CPU without a probe
}

}  // namespace
