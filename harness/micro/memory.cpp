// The memory group: what one unit of concurrency costs in memory and file descriptors, on this
// kernel. The essays' claims it checks: "each thread uses a file descriptor" (it uses none: a
// thread is a kernel stack, a task_struct and a page of its user stack), "a process per
// connection is heavy" (a fork shares its pages copy-on-write: what does a child really add?),
// "a coroutine is a few hundred bytes" (the frame the compiler asks for), "epoll's interest set
// costs kernel memory per fd", and "an idle TCP connection costs the kernel a few KiB".
// Each row creates many units, measures while they all exist, and tears them down; the figures
// are counters (Iterations(1); repeat the row with --benchmark_repetitions):
//   units                the count;
//   pss_kib_per_unit     PSS (smaps_rollup) delta of the processes involved / units;
//   kernel_kib_per_unit  kernel memory delta / units, from /proc/meminfo: KernelStack + PageTables
//                        + Slab (Slab, not SUnreclaim alone: a live socket's inode and the dentry
//                        of every socket/eventfd sit in "reclaimable" caches, yet cannot be
//                        reclaimed while the unit lives). It is machine-wide: the window between
//                        the two readings is kept to the creation of the units;
//   fds_per_unit         open-fd delta / units.
// Manual time: real_time is the time it took to create all units (until every one exists in the
// state measured), so the JSON's time says something; the figure is in the counters.
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "micro.hpp"

namespace {

using concbench::micro::errno_text;
using concbench::micro::open_fds;
using concbench::micro::pss_kib;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// KernelStack + PageTables + Slab from /proc/meminfo, KiB (see the comment at the top).
int64_t kernel_kib() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    int64_t value = 0, sum = 0;
    while (in >> key >> value) {
        if (key == "KernelStack:" || key == "PageTables:" || key == "Slab:") sum += value;
        in.ignore(1 << 10, '\n');
    }
    return sum;
}

// Waits (up to ~1 s) until the kernel memory stops moving: what an earlier row or repetition
// freed is partly freed late (RCU-deferred sockets, dentries, task_structs), and a baseline taken
// while it drains would shrink the delta. Called before every first reading.
void settle_kernel_memory() {
    int64_t last = kernel_kib();
    for (int i = 0; i < 20; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        int64_t now = kernel_kib();
        bool still = std::abs(now - last) < 64;
        last = now;
        if (still) break;
    }
}

// The "mem" field (pages) of the "TCP:" line of /proc/net/sockstat; -1 if unreadable.
int64_t sockstat_tcp_pages() {
    std::ifstream in("/proc/net/sockstat");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("TCP:", 0) != 0) continue;
        std::istringstream fields(line);
        std::string word;
        while (fields >> word)
            if (word == "mem" && fields >> word) return std::stoll(word);
    }
    return -1;
}

// One cache's line of /proc/slabinfo (active objects, object size); found = false if unreadable
// (it is root-only) or the cache is merged into another.
struct SlabCache {
    bool found = false;
    int64_t active = 0, objsize = 0;
};
SlabCache slab_cache(const std::string& name) {
    std::ifstream in("/proc/slabinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string n;
        SlabCache c;
        int64_t total = 0;
        if (fields >> n && n == name && fields >> c.active >> total >> c.objsize) {
            c.found = true;
            return c;
        }
    }
    return {};
}

// Soft RLIMIT_NOFILE up to the hard limit.
void raise_nofile() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// The readings taken before and after the units exist.
struct Reading {
    int64_t pss = 0, kernel = 0, fds = 0;
};
Reading read_self() {
    return {static_cast<int64_t>(pss_kib()), kernel_kib(), static_cast<int64_t>(open_fds())};
}

void report(benchmark::State& state, double units, double seconds, double pss_kib, double kernel_kib, double fds) {
    state.SetIterationTime(seconds);
    state.counters["units"] = units;
    state.counters["pss_kib_per_unit"] = pss_kib / units;
    state.counters["kernel_kib_per_unit"] = kernel_kib / units;
    state.counters["fds_per_unit"] = fds / units;
}

// --- memory/thread: 1,000 threads blocked on a condition variable ---------------------------
// One unit: a std::thread with the default stack, blocked in a condition-variable wait.
void BM_Thread(benchmark::State& state) {
    constexpr size_t kUnits = 1000;
    for (auto _ : state) {
        malloc_trim(0);   // freed heap from earlier rows must not be reused as "free" memory
        std::mutex m;
        std::condition_variable release, parked_cv;
        size_t parked = 0;
        bool go = false;
        std::vector<std::thread> threads(kUnits);   // the handles' storage, touched before the
        threads.clear();                             // first reading (capacity stays): not a unit's cost
        std::string error;
        settle_kernel_memory();
        Reading before = read_self();
        auto t0 = Clock::now();
        try {
            for (size_t i = 0; i < kUnits; ++i)
                threads.emplace_back([&] {
                    std::unique_lock lock(m);
                    ++parked;
                    parked_cv.notify_one();
                    release.wait(lock, [&] { return go; });
                });
        } catch (const std::system_error& e) {
            error = "std::thread #" + std::to_string(threads.size() + 1) + ": " + e.what();
        }
        {
            std::unique_lock lock(m);
            parked_cv.wait(lock, [&] { return parked == threads.size(); });
        }
        double secs = seconds_since(t0);
        Reading after = read_self();   // all threads exist and are blocked
        {
            std::lock_guard lock(m);
            go = true;
        }
        release.notify_all();
        for (auto& t : threads) t.join();
        if (!error.empty()) {
            state.SkipWithError(error.c_str());
            break;
        }
        report(state, kUnits, secs, after.pss - before.pss, after.kernel - before.kernel, after.fds - before.fds);
    }
}
BENCHMARK(BM_Thread)->Name("memory/thread")->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// --- memory/process: 100 idle forked children of a process with 8 MiB of touched heap --------
// One unit: a child process, forked from this one (8 MiB of its own heap touched, like a small
// server), blocked in pause(). pss_kib_per_unit is the sum of the children's PSS / units (their
// share of the copy-on-write pages included); pss_delta_kib_per_unit is the delta of the whole
// family's PSS (this process + children) / units: what the children add, since the shared pages
// were paid for before the fork. fds_per_unit counts this process's fds: a child only holds
// copies of the descriptors it inherited (it closes the start-up pipe), no new open files.
void BM_Process(benchmark::State& state) {
    constexpr size_t kUnits = 100;
    constexpr size_t kHeap = 8u << 20;
    for (auto _ : state) {
        malloc_trim(0);
        std::vector<char> heap(kHeap);
        std::memset(heap.data(), 0x5a, heap.size());
        benchmark::DoNotOptimize(heap.data());
        std::vector<pid_t> children;
        children.reserve(kUnits);
        std::string error;
        const pid_t parent = getpid();
        settle_kernel_memory();
        Reading before = read_self();
        auto t0 = Clock::now();
        int ready[2];
        if (pipe2(ready, O_CLOEXEC) != 0) {
            state.SkipWithError(errno_text("pipe2").c_str());
            break;
        }
        for (size_t i = 0; i < kUnits; ++i) {
            pid_t pid = fork();
            if (pid < 0) {
                error = errno_text("fork") + " after " + std::to_string(i) + " children";
                break;
            }
            if (pid == 0) {   // the child: async-signal-safe calls only
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent) _exit(0);
                close(ready[0]);
                char byte = 1;
                ssize_t n = write(ready[1], &byte, 1);
                (void)n;
                close(ready[1]);
                for (;;) pause();
            }
            children.push_back(pid);
        }
        close(ready[1]);
        size_t started = 0;   // one byte per child once it runs; EOF when every child closed its end
        for (char buf[128];;) {
            ssize_t n = read(ready[0], buf, sizeof buf);
            if (n > 0) started += static_cast<size_t>(n);
            else if (n == 0 || errno != EINTR) break;
        }
        close(ready[0]);
        double secs = seconds_since(t0);
        if (error.empty() && started != children.size())
            error = "only " + std::to_string(started) + " of " + std::to_string(children.size()) + " children started";
        Reading after = read_self();   // every child exists and is blocked in pause()
        int64_t children_pss = 0;
        for (pid_t pid : children) children_pss += static_cast<int64_t>(pss_kib(pid));
        for (pid_t pid : children) kill(pid, SIGKILL);
        for (pid_t pid : children)
            while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        if (!error.empty()) {
            state.SkipWithError(error.c_str());
            break;
        }
        report(state, kUnits, secs, static_cast<double>(children_pss), after.kernel - before.kernel,
               after.fds - before.fds);
        state.counters["pss_delta_kib_per_unit"] =
            static_cast<double>(after.pss + children_pss - before.pss) / kUnits;
    }
}
BENCHMARK(BM_Process)->Name("memory/process")->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// --- memory/coroutine: 100,000 suspended C++20 coroutine frames ------------------------------
// One unit: a coroutine suspended at an await point, holding a small local across it.
struct Parked {
    struct promise_type {
        static inline size_t frame_bytes = 0;   // what the compiler asked operator new for
        static void* operator new(size_t n) {
            frame_bytes = n;
            return ::operator new(n);
        }
        static void operator delete(void* p, size_t n) { ::operator delete(p, n); }
        Parked get_return_object() { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }   // the frame frees itself at the end
        void return_void() {}
        void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
};

Parked park(uint64_t seed, uint64_t& sink) {
    uint64_t local = seed * 0x9E3779B97F4A7C15ull;   // lives across the suspension: in the frame
    co_await std::suspend_always{};
    sink += local;
}

void BM_Coroutine(benchmark::State& state) {
    constexpr size_t kUnits = 100'000;
    for (auto _ : state) {
        malloc_trim(0);
        std::vector<std::coroutine_handle<>> frames;
        frames.resize(kUnits);   // the handles' storage, touched before the first reading
        frames.clear();          // (capacity stays): the handles are not the frames
        uint64_t sink = 0;
        settle_kernel_memory();
        Reading before = read_self();
        auto t0 = Clock::now();
        for (size_t i = 0; i < kUnits; ++i) frames.push_back(park(i, sink).handle);
        double secs = seconds_since(t0);
        Reading after = read_self();   // every frame is suspended
        for (auto h : frames) h.resume();   // runs to the end; the frame frees itself
        benchmark::DoNotOptimize(sink);
        report(state, kUnits, secs, after.pss - before.pss, after.kernel - before.kernel, after.fds - before.fds);
        state.counters["frame_bytes"] = static_cast<double>(Parked::promise_type::frame_bytes);
    }
}
BENCHMARK(BM_Coroutine)->Name("memory/coroutine")->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// --- memory/epoll_registration: 10,000 eventfds registered in one epoll set -------------------
// One unit: an EPOLL_CTL_ADD of an existing eventfd (the fds and the epoll fd exist before the
// first reading, so the delta is the registrations alone: an epitem, in the eventpoll_epi slab,
// and its wait-queue hook, in eventpoll_pwq, which SLUB usually merges into a shared 64-byte
// cache). slab_bytes_per_unit: eventpoll_epi's active objects delta x its objsize / units, if
// /proc/slabinfo is readable.
void BM_EpollRegistration(benchmark::State& state) {
    constexpr size_t kUnits = 10'000;
    raise_nofile();
    for (auto _ : state) {
        std::vector<int> fds;
        fds.reserve(kUnits);
        std::string error;
        for (size_t i = 0; i < kUnits && error.empty(); ++i) {
            int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            if (fd < 0) error = errno_text("eventfd") + " after " + std::to_string(i) + " fds";
            else fds.push_back(fd);
        }
        int ep = error.empty() ? epoll_create1(EPOLL_CLOEXEC) : -1;
        if (error.empty() && ep < 0) error = errno_text("epoll_create1");
        if (!error.empty()) {
            for (int fd : fds) close(fd);
            state.SkipWithError(error.c_str());
            break;
        }
        malloc_trim(0);
        settle_kernel_memory();
        SlabCache slab_before = slab_cache("eventpoll_epi");
        Reading before = read_self();
        auto t0 = Clock::now();
        for (size_t i = 0; i < kUnits; ++i) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.fd = fds[i];
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) {
                error = errno_text("epoll_ctl(ADD)") + " after " + std::to_string(i) + " registrations";
                break;
            }
        }
        double secs = seconds_since(t0);
        Reading after = read_self();
        SlabCache slab_after = slab_cache("eventpoll_epi");
        close(ep);
        for (int fd : fds) close(fd);
        if (!error.empty()) {
            state.SkipWithError(error.c_str());
            break;
        }
        report(state, kUnits, secs, after.pss - before.pss, after.kernel - before.kernel, after.fds - before.fds);
        if (slab_before.found && slab_after.found)
            state.counters["slab_bytes_per_unit"] =
                static_cast<double>(slab_after.active - slab_before.active) * slab_after.objsize / kUnits;
    }
}
BENCHMARK(BM_EpollRegistration)
    ->Name("memory/epoll_registration")
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// --- memory/tcp_connection: 10,000 idle accepted loopback TCP connections ----------------------
// One unit: an established, idle connection on 127.0.0.1. The connecting ends live in a forked
// child (each process may hold 20,000 fds), the accepting ends here. Per-unit bases, both ends
// being on this machine: pss_kib_per_unit and sockstat_kib_per_unit are per connection (both
// processes' PSS delta, and TCP's "mem" pages of /proc/net/sockstat x page size: the pages
// charged to socket buffers, about nothing for idle sockets, and counted in per-CPU batches);
// kernel_kib_per_unit and fds_per_unit are per connection END (delta / (2 x units)).
struct ConnectStatus {
    int connected = 0, error = 0;
};

// The child: waits for the go byte, connects `units` sockets, reports, and blocks until killed.
[[noreturn]] void connector(pid_t parent, int go_fd, int status_fd, const sockaddr_in& addr, int units) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    raise_nofile();
    char byte;
    if (read(go_fd, &byte, 1) != 1) _exit(0);
    ConnectStatus status;
    for (; status.connected < units; ++status.connected) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) {
            status.error = errno;
            break;
        }
        if (connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
            status.error = errno;
            close(s);
            break;
        }
    }
    ssize_t n = write(status_fd, &status, sizeof status);
    (void)n;
    for (;;) pause();
}

void BM_TcpConnection(benchmark::State& state) {
    constexpr int kUnits = 10'000;
    raise_nofile();
    for (auto _ : state) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        int go[2] = {-1, -1}, status[2] = {-1, -1};
        std::string error;
        if (lfd < 0) error = errno_text("socket");
        else if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) error = errno_text("bind");
        else if (listen(lfd, 65535) != 0) error = errno_text("listen");   // capped at net.core.somaxconn
        else if (getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) error = errno_text("getsockname");
        else if (pipe2(go, O_CLOEXEC) != 0 || pipe2(status, O_CLOEXEC) != 0) error = errno_text("pipe2");
        pid_t child = -1;
        if (error.empty()) {
            const pid_t parent = getpid();
            child = fork();
            if (child == 0) connector(parent, go[0], status[1], addr, kUnits);
            if (child < 0) error = errno_text("fork");
        }
        auto close_all = [&] {
            for (int fd : {lfd, go[0], go[1], status[0], status[1]})
                if (fd >= 0) close(fd);
        };
        if (!error.empty()) {
            close_all();
            state.SkipWithError(error.c_str());
            break;
        }
        close(go[0]);
        close(status[1]);
        go[0] = status[1] = -1;
        std::vector<int> accepted(kUnits);   // touched before the first reading; capacity stays
        accepted.clear();
        settle_kernel_memory();
        Reading before = read_self();
        before.pss += static_cast<int64_t>(pss_kib(child));
        before.fds += static_cast<int64_t>(open_fds(child));
        int64_t sock_before = sockstat_tcp_pages();
        auto t0 = Clock::now();
        if (write(go[1], "g", 1) != 1) error = errno_text("write(go)");
        int expected = -1;   // the child's count, once it reported
        while (error.empty() && (expected < 0 || static_cast<int>(accepted.size()) < expected)) {
            pollfd p[2] = {{lfd, POLLIN, 0}, {status[0], POLLIN, 0}};
            int rc = poll(p, expected < 0 ? 2 : 1, 10'000);
            if (rc <= 0) {
                error = rc == 0 ? "no progress for 10 s after " + std::to_string(accepted.size()) + " accepts"
                                : errno_text("poll");
                break;
            }
            if (p[0].revents & POLLIN)
                for (;;) {
                    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
                    if (fd >= 0) {
                        accepted.push_back(fd);
                        continue;
                    }
                    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        error = errno_text("accept4") + " after " + std::to_string(accepted.size()) + " accepts";
                    if (errno != EINTR) break;
                }
            if (expected < 0 && p[1].revents) {
                ConnectStatus st;
                if (read(status[0], &st, sizeof st) != sizeof st) {
                    error = "the connecting child died";
                } else if (st.error != 0) {
                    errno = st.error;
                    error = errno_text("connect") + " after " + std::to_string(st.connected) + " connections";
                } else {
                    expected = st.connected;
                }
            }
        }
        double secs = seconds_since(t0);
        Reading after = read_self();
        after.pss += static_cast<int64_t>(pss_kib(child));
        after.fds += static_cast<int64_t>(open_fds(child));
        int64_t sock_after = sockstat_tcp_pages();
        // Abortive close (RST): no TIME_WAIT sockets left to expire inside a later row's window.
        for (int fd : accepted) {
            linger abort_close{1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
            close(fd);
        }
        kill(child, SIGKILL);
        while (waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
        }
        close_all();
        if (!error.empty()) {
            state.SkipWithError(error.c_str());
            break;
        }
        const double ends = 2.0 * kUnits;
        report(state, kUnits, secs, after.pss - before.pss, 0, 0);
        state.counters["kernel_kib_per_unit"] = (after.kernel - before.kernel) / ends;
        state.counters["fds_per_unit"] = (after.fds - before.fds) / ends;
        if (sock_before >= 0 && sock_after >= 0)
            state.counters["sockstat_kib_per_unit"] =
                static_cast<double>(sock_after - sock_before) * (sysconf(_SC_PAGESIZE) / 1024.0) / kUnits;
    }
}
BENCHMARK(BM_TcpConnection)->Name("memory/tcp_connection")->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
