// The sampler on known process trees: processes forked here with a known number of threads,
// fds and bytes of private/shared memory, and known CPU use.
#include "concbench/sampler.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

using namespace concbench;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMiB = 1024;   // in KiB

// ThreadSanitizer adds a thread and hundreds of MiB of shadow to every process: exact thread
// and memory counts of a known tree do not hold under it.
#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif
#else
constexpr bool kTsan = false;
#endif
#define SKIP_UNDER_TSAN() \
    if (kTsan) GTEST_SKIP() << "exact counts do not hold under ThreadSanitizer"

// ---- helpers that run inside forked processes: no gtest, always _exit ----

void* block_forever(void*) {
    for (;;) pause();
    return nullptr;
}

void start_blocked_threads(int n) {
    for (int i = 0; i < n; ++i) {
        pthread_t t;
        if (pthread_create(&t, nullptr, block_forever, nullptr) != 0) _exit(90);
    }
}

void touch_private(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) _exit(91);
    std::memset(p, 0x5a, bytes);
}

void signal_ready(int fd) {
    char c = 'r';
    while (write(fd, &c, 1) < 0 && errno == EINTR) {}
}

double own_cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void burn_cpu(double seconds) {
    volatile uint64_t x = 0;
    double start = own_cpu_s();
    while (own_cpu_s() - start < seconds)
        for (int i = 0; i < 100000; ++i) x = x + static_cast<uint64_t>(i);
}

// ---- the tree under test, killed and reaped whatever happens ----

// The root runs body(ready_fd) in its own process group with exactly fds 0, 1, 2 and the ready
// pipe's write end as fd 3 open. The destructor SIGKILLs the whole group and reaps every member:
// the test process is a child subreaper, so orphaned descendants become its children.
class Tree {
public:
    explicit Tree(const std::function<void(int ready_fd)>& body) {
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) return;
        pid_ = fork();
        if (pid_ == 0) {
            setpgid(0, 0);
            if (dup2(p[1], 3) < 0) _exit(92);   // dup2 clears O_CLOEXEC on fd 3
            close_range(4, ~0U, 0);
            for (int fd = 0; fd < 3; ++fd)
                if (fcntl(fd, F_GETFD) < 0) open("/dev/null", O_RDWR);   // lands on fd
            body(3);
            for (;;) pause();
        }
        if (pid_ > 0) setpgid(pid_, pid_);   // also here: no race with kill(-pid)
        close(p[1]);
        ready_ = p[0];
    }
    ~Tree() {
        if (pid_ > 0) {
            kill(-pid_, SIGKILL);
            kill(pid_, SIGKILL);
            while (waitpid(-pid_, nullptr, 0) > 0 || errno == EINTR) {}
        }
        if (ready_ >= 0) close(ready_);
    }
    Tree(const Tree&) = delete;
    Tree& operator=(const Tree&) = delete;

    pid_t pid() const { return pid_; }

    // Waits for n readiness bytes from the tree; false on timeout or if the tree died.
    bool wait_ready(int n, std::chrono::milliseconds timeout = 10s) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (n > 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd pfd{ready_, POLLIN, 0};
            int r = poll(&pfd, 1, static_cast<int>(left.count()));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return false;
            char buf[16];
            ssize_t got = read(ready_, buf, std::min<size_t>(sizeof buf, static_cast<size_t>(n)));
            if (got <= 0) return false;
            n -= static_cast<int>(got);
        }
        return true;
    }

private:
    pid_t pid_ = -1;
    int ready_ = -1;
};

// ---- trees ----

constexpr int kChildren = 3;
constexpr size_t kPrivateBytes = 32u << 20;
constexpr int kExtraFds = 50;
constexpr int kExtraThreads = 2;

// Root (comm with spaces and parens) forks kChildren children, each with 32 MiB touched private
// memory, 50 dups of /dev/null and 2 blocked threads.
void known_tree(int ready) {
    prctl(PR_SET_NAME, "a) (b c) d");
    for (int i = 0; i < kChildren; ++i) {
        pid_t c = fork();
        if (c < 0) _exit(93);
        if (c == 0) {
            touch_private(kPrivateBytes);
            int null = open("/dev/null", O_RDONLY);
            if (null < 0) _exit(94);
            for (int k = 1; k < kExtraFds; ++k)
                if (dup(null) < 0) _exit(95);
            start_blocked_threads(kExtraThreads);
            signal_ready(ready);
            for (;;) pause();
        }
    }
}

}  // namespace

TEST(Sampler, KnownProcessTree) {
    SKIP_UNDER_TSAN();
    Tree tree(known_tree);
    ASSERT_GT(tree.pid(), 0);
    ASSERT_TRUE(tree.wait_ready(kChildren)) << "children did not get ready";

    std::vector<pid_t> pids = process_tree(tree.pid());
    ASSERT_EQ(pids.size(), 4u);
    EXPECT_EQ(pids.front(), tree.pid());

    TreeSample s = sample_tree(tree.pid());
    EXPECT_EQ(s.processes, 4u);
    EXPECT_EQ(s.threads, 1u + kChildren * (1u + kExtraThreads));
    // Every process has fds 0-2 and the pipe (fd 3); each child also has its 50 extra.
    const uint64_t known_fds = kChildren * kExtraFds + 4;
    EXPECT_GE(s.fds, known_fds);
    EXPECT_LE(s.fds, known_fds + 4 * 3 + 2);
    const uint64_t private_kib = kChildren * (kPrivateBytes / 1024);
    EXPECT_GE(s.pss_kib, private_kib);
    EXPECT_LE(s.pss_kib, private_kib + 64 * kMiB) << "PSS far above what the tree touched";
    EXPECT_GE(s.rss_kib, s.pss_kib);
    EXPECT_GE(s.cpu_user_s + s.cpu_sys_s, 0.0);
}

TEST(Sampler, SharedMemoryCountsOnceInPss) {
    SKIP_UNDER_TSAN();
    constexpr size_t kShared = 64u << 20;
    // root -> child -> 2 grandchildren; the child maps 64 MiB shared, all three touch it.
    Tree tree([](int ready) {
        pid_t c = fork();
        if (c < 0) _exit(93);
        if (c > 0) return;
        void* p = mmap(nullptr, kShared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) _exit(91);
        std::memset(p, 1, kShared);
        for (int i = 0; i < 2; ++i) {
            pid_t g = fork();
            if (g < 0) _exit(93);
            if (g == 0) {
                std::memset(p, 2 + i, kShared);
                signal_ready(ready);
                for (;;) pause();
            }
        }
        signal_ready(ready);
        for (;;) pause();
    });
    ASSERT_GT(tree.pid(), 0);
    ASSERT_TRUE(tree.wait_ready(3));

    TreeSample s = sample_tree(tree.pid());
    EXPECT_EQ(s.processes, 4u);
    const uint64_t shared_kib = kShared / 1024;
    EXPECT_GE(s.rss_kib, 3 * shared_kib) << "RSS counts the shared region in each mapper";
    EXPECT_GE(s.pss_kib, shared_kib);
    EXPECT_LT(s.pss_kib, 2 * shared_kib) << "PSS must count the shared region about once";
    EXPECT_GE(s.rss_kib, s.pss_kib + 100 * kMiB);
}

TEST(Sampler, RootCountsCpuOfReapedChildren) {
    // A child burns 0.3 s of CPU and exits; the root reaps it. Only the root remains, so the
    // CPU can only be seen through the root's cutime/cstime.
    Tree tree([](int ready) {
        pid_t c = fork();
        if (c < 0) _exit(93);
        if (c == 0) {
            burn_cpu(0.3);
            _exit(0);
        }
        while (waitpid(c, nullptr, 0) < 0 && errno == EINTR) {}
        signal_ready(ready);
    });
    ASSERT_GT(tree.pid(), 0);
    ASSERT_TRUE(tree.wait_ready(1, 20s));
    TreeSample s = sample_tree(tree.pid());
    EXPECT_EQ(s.processes, 1u);
    EXPECT_GE(s.cpu_user_s + s.cpu_sys_s, 0.28);
    EXPECT_LE(s.cpu_user_s + s.cpu_sys_s, 3.0);
}

TEST(Sampler, VanishedRootReadsEmpty) {
    pid_t c = fork();
    ASSERT_GE(c, 0);
    if (c == 0) _exit(0);
    ASSERT_EQ(waitpid(c, nullptr, 0), c);
    EXPECT_TRUE(process_tree(c).empty());
    TreeSample s = sample_tree(c);
    EXPECT_EQ(s.processes, 0u);
    EXPECT_EQ(s.pss_kib, 0u);
    CtxSwitches x = ctx_switches_tree(c);
    EXPECT_EQ(x.voluntary + x.involuntary, 0u);
}

namespace {
// Root: 16 MiB touched, main thread (the leader) burns CPU, a second thread sleeps 1 ms in a loop
// (voluntary context switches that only /proc/PID/task/*/status shows, not the leader's status).
void busy_tree(int ready) {
    touch_private(16u << 20);
    pthread_t t;
    pthread_create(&t, nullptr, [](void*) -> void* {
        timespec ms{0, 1000000};
        for (;;) nanosleep(&ms, nullptr);
        return nullptr;
    }, nullptr);
    signal_ready(ready);
    for (;;) burn_cpu(1.0);
}
}  // namespace

TEST(Sampler, WindowPeaksMeansCpuAndContextSwitches) {
    Tree tree(busy_tree);
    ASSERT_GT(tree.pid(), 0);
    ASSERT_TRUE(tree.wait_ready(1));

    Sampler sampler(tree.pid());
    sampler.start();
    std::this_thread::sleep_for(200ms);   // CPU burnt before the window must not count
    auto w0 = std::chrono::steady_clock::now();
    sampler.mark_start();
    std::this_thread::sleep_for(300ms);
    sampler.mark_end();
    double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
    std::this_thread::sleep_for(150ms);
    sampler.stop();

    SamplerSummary sum = sampler.summary();
    EXPECT_GE(sum.samples, 2u);
    EXPECT_EQ(sum.processes_peak, 1u);
    if (!kTsan) {
        EXPECT_EQ(sum.threads_peak, 2u);
    }
    EXPECT_GE(sum.pss_kib_peak, 16 * kMiB);
    EXPECT_GE(sum.rss_kib_peak, sum.pss_kib_peak);
    EXPECT_GE(sum.fds_peak, 4u);
    EXPECT_GT(sum.pss_kib_mean, 0.0);
    EXPECT_LE(sum.pss_kib_mean, static_cast<double>(sum.pss_kib_peak));
    if (!kTsan) {
        EXPECT_DOUBLE_EQ(sum.threads_mean, 2.0);
    }
    EXPECT_DOUBLE_EQ(sum.processes_mean, 1.0);
    const double cpu = sum.cpu_user_s + sum.cpu_sys_s;
    EXPECT_GE(cpu, 0.05) << "the burner ran during the window";
    // One burning thread cannot use more than the window's wall time (+ one clock tick each).
    EXPECT_LE(cpu, window_s + 0.03) << "CPU must be end - start, not cumulative";
    EXPECT_GE(sum.ctx_voluntary, 50u) << "the sleeping non-leader thread's switches";

    std::vector<TreeSample> series = sampler.samples();
    EXPECT_GE(series.size(), sum.samples + 2);   // ticks before and after the window too
    for (size_t i = 1; i < series.size(); ++i) EXPECT_GT(series[i].t_s, series[i - 1].t_s);
    // Ticks are ~100 ms apart: 650 ms of run gives about 7 of them.
    EXPECT_GE(series.size(), 5u);
    EXPECT_LE(series.size(), 12u);
}

TEST(Sampler, WithoutMarkEndUsesLastSample) {
    Tree tree(busy_tree);
    ASSERT_GT(tree.pid(), 0);
    ASSERT_TRUE(tree.wait_ready(1));
    Sampler sampler(tree.pid(), 50ms);
    sampler.start();
    sampler.mark_start();
    std::this_thread::sleep_for(300ms);
    SamplerSummary sum = sampler.summary();
    EXPECT_GE(sum.samples, 2u);
    EXPECT_GT(sum.cpu_user_s + sum.cpu_sys_s, 0.0);
    if (!kTsan) {
        EXPECT_EQ(sum.threads_peak, 2u);
    }
}

TEST(Sampler, StopsPromptly) {
    Sampler sampler(getpid(), 10s);
    sampler.start();
    std::this_thread::sleep_for(50ms);
    auto t0 = std::chrono::steady_clock::now();
    sampler.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
    EXPECT_EQ(sampler.samples().size(), 1u);
    {
        Sampler in_scope(getpid(), 10s);
        in_scope.start();
        t0 = std::chrono::steady_clock::now();
    }   // the destructor stops and joins
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
}

TEST(Sampler, TcpMemSeesUnreadLoopbackData) {
    // Machine-wide counter, so only a clear rise is asserted: ~MiBs parked in socket buffers.
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(ls, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ASSERT_EQ(bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(listen(ls, 1), 0);
    ASSERT_EQ(getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(c, 0);
    connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    int s = accept(ls, nullptr, nullptr);
    ASSERT_GE(s, 0);
    const uint64_t before = tcp_mem_kib();
    static char chunk[65536];
    std::memset(chunk, 'x', sizeof chunk);
    size_t sent = 0;
    for (int i = 0; i < 2000; ++i) {
        ssize_t r = send(c, chunk, sizeof chunk, MSG_NOSIGNAL);
        if (r <= 0) {
            if (errno == EAGAIN) { std::this_thread::sleep_for(5ms); if (i > 200) break; continue; }
            break;
        }
        sent += static_cast<size_t>(r);
    }
    const uint64_t after = tcp_mem_kib();
    close(c);
    close(s);
    close(ls);
    ASSERT_GT(sent, 1u << 20);
    EXPECT_GE(after, before + 512) << "sent " << sent << " bytes, tcp mem " << before << " -> " << after;
}
