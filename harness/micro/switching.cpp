// Group "switch": what handing control from one party to another costs. The essays' claim:
// "the constant switching between threads can result in poor performance", while an event loop
// or coroutines hand control on without the kernel. Two parties ping-pong one token; one
// iteration = one round trip = 2 hand-offs; per_op = seconds per hand-off. The benchmark's
// thread is one party; cpus:1 pins both to one CPU (each hand-off a context switch there),
// cpus:2 to two CPUs (each hand-off wakes a sleeping CPU). switch/thread_{pipe,eventfd,futex}:
// two threads; switch/process_pipe: two processes (adds the address-space switch);
// switch/coroutine: symmetric transfer on one thread; switch/asio_handler: two handlers posting
// each other. The essays' own case, a token passed round a ring of N threads or N coroutines,
// is ring/threads/n:N and ring/coroutines/n:N at the end (per_op per hand-off; n:2 is a
// ping-pong, unpinned). Rows whose benchmark thread sleeps use real time (UseRealTime, so their
// names end in /real_time): its CPU time would leave out the very wait being measured.
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <benchmark/benchmark.h>

#include "micro.hpp"

namespace {

using namespace concbench::micro;

// A binary semaphore on one futex word, as glibc's and the standard library's are built: a
// post wakes (FUTEX_WAKE) only when the waiter is asleep; a wait that finds no token sleeps in
// FUTEX_WAIT at once (no spinning). One poster and one waiter at a time. 0 = empty, 1 = the
// token, 2 = empty with the waiter asleep. alignas(64): one cache line per word, so parties
// next to each other do not share a line.
class alignas(64) FutexSem {
public:
    void post() {
        if (word_.exchange(1, std::memory_order_acq_rel) == 2) futex(FUTEX_WAKE_PRIVATE, 1);
    }
    void wait() {
        for (;;) {
            uint32_t c = 1;
            if (word_.compare_exchange_strong(c, 0, std::memory_order_acq_rel)) return;
            if (c == 0 && !word_.compare_exchange_strong(c, 2, std::memory_order_acq_rel)) continue;
            futex(FUTEX_WAIT_PRIVATE, 2);   // returns at once if the word is no longer 2
        }
    }

private:
    void futex(int op, uint32_t val) {
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word_), op, val, nullptr, nullptr, 0);
    }
    std::atomic<uint32_t> word_{0};
    static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
};

// The coroutine type of the switch and ring rows: lazy, keeps its frame after the end, and
// owns it (destroys it, suspended or finished, with the object).
class Coro {
public:
    struct promise_type {
        Coro get_return_object() noexcept { return Coro(std::coroutine_handle<promise_type>::from_promise(*this)); }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    explicit Coro(std::coroutine_handle<promise_type> h) : h_(h) {}
    Coro(Coro&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    Coro& operator=(Coro&&) = delete;
    ~Coro() {
        if (h_) h_.destroy();
    }
    std::coroutine_handle<> handle() const { return h_; }

private:
    std::coroutine_handle<promise_type> h_;
};

// Symmetric transfer: suspends this coroutine and resumes `next` in its place (a tail call,
// so no stack grows however long the chain).
struct TransferTo {
    std::coroutine_handle<> next;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<>) const noexcept { return next; }
    void await_resume() const noexcept {}
};

// Symmetric transfer is a tail call only where the compiler makes it one: GCC does at -O2, not
// at -O0 nor under AddressSanitizer, where each transfer nests a call and a long chain overflows
// the stack. A short probe chain (1,000 round trips, a few hundred KiB at worst) watches the
// stack depth; the coroutine rows skip with the reason if it grows, rather than crash the suite.
struct DepthProbe {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    void note(const void* frame) {
        auto a = reinterpret_cast<uintptr_t>(frame);
        lo = std::min(lo, a);
        hi = std::max(hi, a);
    }
};

Coro probe_leader(DepthProbe* probe, std::coroutine_handle<>* partner) {
    for (int i = 0; i < 1000; ++i) {
        probe->note(__builtin_frame_address(0));
        co_await TransferTo{*partner};
    }
}

Coro probe_partner(DepthProbe* probe, std::coroutine_handle<>* leader) {
    for (;;) {
        probe->note(__builtin_frame_address(0));
        co_await TransferTo{*leader};
    }
}

bool transfer_is_tail_call() {
    static const bool tail = [] {
        DepthProbe probe;
        std::coroutine_handle<> leader_h, partner_h;
        Coro leader = probe_leader(&probe, &partner_h);
        Coro partner = probe_partner(&probe, &leader_h);
        leader_h = leader.handle();
        partner_h = partner.handle();
        leader_h.resume();
        return probe.hi - probe.lo < 4096;
    }();
    return tail;
}

constexpr const char* kNoTailCall =
    "symmetric transfer is not a tail call in this build (-O0 or a sanitizer): the chain would overflow the stack";

// A pipe carrying the token one way: send writes 1 byte, recv reads it (false at EOF: stop).
class PipeChan {
public:
    bool open() { return pipe2(fd_, O_CLOEXEC) == 0; }
    bool send() {
        char b = 1;
        return write(fd_[1], &b, 1) == 1;
    }
    bool recv() {
        char b = 0;
        return read(fd_[0], &b, 1) == 1;
    }
    void stop() { close_fd(fd_[1]); }          // the reader sees EOF
    void keep_reader() { close_fd(fd_[1]); }   // after fork: the reader's side keeps only its end
    void keep_writer() { close_fd(fd_[0]); }
    ~PipeChan() {
        close_fd(fd_[0]);
        close_fd(fd_[1]);
    }

private:
    static void close_fd(int& fd) {
        if (fd >= 0) close(fd);
        fd = -1;
    }
    int fd_[2] = {-1, -1};
};

// An eventfd carrying the token: send adds 1, recv reads the count (a count other than 1 is
// the stop value).
class EventfdChan {
public:
    bool open() { return (fd_ = eventfd(0, EFD_CLOEXEC)) >= 0; }
    bool send() { return add(1); }
    bool recv() {
        uint64_t v = 0;
        return read(fd_, &v, sizeof v) == sizeof v && v == 1;
    }
    void stop() { add(2); }
    ~EventfdChan() {
        if (fd_ >= 0) close(fd_);
    }

private:
    bool add(uint64_t v) { return write(fd_, &v, sizeof v) == sizeof v; }
    int fd_ = -1;
};

// A futex semaphore carrying the token (FutexSem in switching.hpp) plus a stop flag.
class alignas(64) FutexChan {
public:
    bool open() { return true; }
    bool send() {
        sem_.post();
        return true;
    }
    bool recv() {
        sem_.wait();
        return !stop_.load(std::memory_order_acquire);
    }
    void stop() {
        stop_.store(true, std::memory_order_release);
        sem_.post();
    }

private:
    FutexSem sem_;
    std::atomic<bool> stop_{false};
};

// Pins the benchmark's thread for cpus:N and gives the partner's CPU; restores the thread's
// original affinity (all allowed CPUs) when it goes out of scope.
class Pinning {
public:
    explicit Pinning(benchmark::State& state) {
        have_mask_ = sched_getaffinity(0, sizeof mask_, &mask_) == 0;
        const int cpus = static_cast<int>(state.range(0));
        if (cpus == 2 && allowed_cpus() < 2) {
            error_ = "cpus:2 needs two allowed CPUs, this process has " + std::to_string(allowed_cpus());
            return;
        }
        mine_ = nth_allowed_cpu(0);
        partner_ = nth_allowed_cpu(cpus == 2 ? 1 : 0);
        if (mine_ < 0 || partner_ < 0 || !pin_to_cpu(mine_)) error_ = errno_text("pin to CPU");
    }
    ~Pinning() {
        if (have_mask_) sched_setaffinity(0, sizeof mask_, &mask_);
    }
    const std::string& error() const { return error_; }
    int partner_cpu() const { return partner_; }

private:
    cpu_set_t mask_;
    bool have_mask_ = false;
    int mine_ = -1, partner_ = -1;
    std::string error_;
};

// The round trips, from the benchmark thread's side; the partner echoes each token.
template <class Chan>
void round_trips(benchmark::State& state, Chan& to_partner, Chan& from_partner) {
    // One warm-up round trip: the partner is up, pinned and asleep in its first recv.
    if (!to_partner.send() || !from_partner.recv()) {
        state.SkipWithError(errno_text("warm-up round trip").c_str());
        return;
    }
    for (auto _ : state) {
        if (!to_partner.send() || !from_partner.recv()) {
            state.SkipWithError(errno_text("round trip").c_str());
            break;
        }
    }
    state.counters["per_op"] = benchmark::Counter(2, benchmark::Counter::kIsIterationInvariantRate |
                                                          benchmark::Counter::kInvert);
}

// Two threads ping-pong through two Chans. One operation: one hand-off (a wake of the other
// thread and a sleep of this one), 2 per iteration.
template <class Chan>
void BM_thread_pingpong(benchmark::State& state) {
    Pinning pin(state);
    if (!pin.error().empty()) {
        state.SkipWithError(pin.error().c_str());
        return;
    }
    Chan to_partner, from_partner;
    if (!to_partner.open() || !from_partner.open()) {
        state.SkipWithError(errno_text("open channel").c_str());
        return;
    }
    std::atomic<bool> pinned{true};
    std::thread partner;
    try {
        partner = std::thread([&, cpu = pin.partner_cpu()] {
            if (!pin_to_cpu(cpu)) pinned = false;
            while (to_partner.recv())
                if (!from_partner.send()) break;
            from_partner.stop();   // wakes the benchmark thread if the partner failed
        });
    } catch (const std::system_error& e) {
        state.SkipWithError((std::string("std::thread: ") + e.what()).c_str());
        return;
    }
    round_trips(state, to_partner, from_partner);
    to_partner.stop();
    partner.join();
    if (!pinned) state.SkipWithError("the partner thread could not be pinned");
}
BENCHMARK(BM_thread_pingpong<PipeChan>)->Name("switch/thread_pipe")->ArgName("cpus")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_thread_pingpong<EventfdChan>)->Name("switch/thread_eventfd")->ArgName("cpus")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_thread_pingpong<FutexChan>)->Name("switch/thread_futex")->ArgName("cpus")->Arg(1)->Arg(2)->UseRealTime();

// Two processes ping-pong through two pipes. One operation: one hand-off, as for threads, plus
// the switch of address space (page tables) between the two processes.
void BM_process_pipe(benchmark::State& state) {
    Pinning pin(state);
    if (!pin.error().empty()) {
        state.SkipWithError(pin.error().c_str());
        return;
    }
    PipeChan to_child, from_child;
    if (!to_child.open() || !from_child.open()) {
        state.SkipWithError(errno_text("pipe2").c_str());
        return;
    }
    const int child_cpu = pin.partner_cpu();
    pid_t pid = fork();
    if (pid < 0) {
        state.SkipWithError(errno_text("fork").c_str());
        return;
    }
    if (pid == 0) {   // the child: async-signal-safe calls only, then _exit
        to_child.keep_reader();
        from_child.keep_writer();
        if (!pin_to_cpu(child_cpu)) _exit(3);
        while (to_child.recv())
            if (!from_child.send()) _exit(4);
        _exit(0);
    }
    to_child.keep_writer();
    from_child.keep_reader();
    round_trips(state, to_child, from_child);
    to_child.stop();   // EOF: the child leaves its loop and exits
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!state.error_occurred() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        state.SkipWithError("the child process failed (could not pin, or a pipe broke)");
}
BENCHMARK(BM_process_pipe)->Name("switch/process_pipe")->ArgName("cpus")->Arg(1)->Arg(2)->UseRealTime();

// Two coroutines on one thread: the leader runs the benchmark loop and transfers to the
// partner each iteration; the partner transfers straight back. One operation: one symmetric
// transfer (a tail call through the other frame's resume pointer), 2 per iteration.
Coro pingpong_leader(benchmark::State& state, const std::coroutine_handle<>* partner) {
    for (auto _ : state) co_await TransferTo{*partner};
}

Coro pingpong_partner(const std::coroutine_handle<>* leader) {
    for (;;) co_await TransferTo{*leader};
}

void BM_coroutine(benchmark::State& state) {
    if (!transfer_is_tail_call()) {
        state.SkipWithError(kNoTailCall);
        return;
    }
    std::coroutine_handle<> leader_h, partner_h;
    Coro leader = pingpong_leader(state, &partner_h);
    Coro partner = pingpong_partner(&leader_h);
    leader_h = leader.handle();
    partner_h = partner.handle();
    leader.handle().resume();   // returns when the leader's loop has ended (final_suspend)
    state.counters["per_op"] = benchmark::Counter(2, benchmark::Counter::kIsIterationInvariantRate |
                                                          benchmark::Counter::kInvert);
}
BENCHMARK(BM_coroutine)->Name("switch/coroutine");

// Two handlers on one single-threaded io_context, each posting the other. One operation: one
// handler dispatched by run_one() (dequeue, invoke, the post of the next into the queue), 2
// per iteration.
struct PingHandler {
    boost::asio::io_context* ctx;
    int64_t* ran;
    bool ping;
    void operator()() const {
        ++*ran;
        boost::asio::post(*ctx, PingHandler{ctx, ran, !ping});
    }
};

void BM_asio_handler(benchmark::State& state) {
    boost::asio::io_context ctx(1);
    int64_t ran = 0;
    boost::asio::post(ctx, PingHandler{&ctx, &ran, true});
    for (auto _ : state) {
        ctx.run_one();
        ctx.run_one();
    }
    if (ran != 2 * static_cast<int64_t>(state.iterations())) state.SkipWithError("asio: a handler did not run");
    state.counters["per_op"] = benchmark::Counter(2, benchmark::Counter::kIsIterationInvariantRate |
                                                          benchmark::Counter::kInvert);
}   // ~io_context destroys the one handler still queued
BENCHMARK(BM_asio_handler)->Name("switch/asio_handler");

// ---- The ring: N parties, one token, each party hands it to the next. ----

constexpr size_t kRingStack = 64 * 1024;   // small stacks: 10,000 threads = 640 MiB of address space

// N threads round a ring: party 0 is the benchmark's thread, parties 1..N-1 are threads made
// once per run (outside the timed loop), each asleep on its own futex word until the token
// comes. Not pinned: the scheduler places them, as in a server with N threads.
struct ThreadRing {
    explicit ThreadRing(int n) : n(n), sems(new FutexSem[n]) {}
    struct Party {
        ThreadRing* ring;
        int index;
    };
    static void* run(void* arg) {
        auto* p = static_cast<Party*>(arg);
        ThreadRing& r = *p->ring;
        FutexSem& mine = r.sems[p->index];
        FutexSem& next = r.sems[(p->index + 1) % r.n];
        for (;;) {
            mine.wait();
            const bool stop = r.stop.load(std::memory_order_acquire);
            next.post();   // on stop too: the stop goes round the ring
            if (stop) return nullptr;
        }
    }
    // Starts parties 1..N-1; "" or the reason it could not.
    std::string start() {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, kRingStack);
        parties.resize(n);
        threads.reserve(n);
        std::string error;
        for (int i = 1; i < n; ++i) {
            parties[i] = Party{this, i};
            pthread_t t;
            if (int rc = pthread_create(&t, &attr, &ThreadRing::run, &parties[i]); rc != 0) {
                error = "pthread_create of thread " + std::to_string(i) + " of " + std::to_string(n) + ": " +
                        std::strerror(rc);
                break;
            }
            threads.push_back(t);
        }
        pthread_attr_destroy(&attr);
        return error;
    }
    // Stops and joins every party started: the stop flag, then the token goes round once more
    // (with a partial ring the last party's post lands on a word no one waits on).
    void stop_and_join() {
        stop.store(true, std::memory_order_release);
        if (!threads.empty()) sems[1].post();
        for (pthread_t t : threads) pthread_join(t, nullptr);
        threads.clear();
    }
    const int n;
    std::unique_ptr<FutexSem[]> sems;
    std::vector<Party> parties;
    std::vector<pthread_t> threads;
    std::atomic<bool> stop{false};
};

// One operation: one hand-off (a FUTEX_WAKE of the next thread, a sleep of this one); one
// iteration is one lap, N hand-offs.
void BM_ring_threads(benchmark::State& state) {
    const int n = static_cast<int>(state.range(0));
    ThreadRing ring(n);
    std::string error = ring.start();
    if (!error.empty()) {
        ring.stop_and_join();
        state.SkipWithError(error.c_str());
        return;
    }
    ring.sems[1].post();   // a warm-up lap: every party has run and is asleep on its word
    ring.sems[0].wait();
    for (auto _ : state) {
        ring.sems[1].post();
        ring.sems[0].wait();
    }
    ring.stop_and_join();
    state.counters["per_op"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate |
                                                                               benchmark::Counter::kInvert);
}
BENCHMARK(BM_ring_threads)->Name("ring/threads")->ArgName("n")->Arg(2)->Arg(10)->Arg(100)->Arg(1000)->Arg(10000)->UseRealTime();

// N coroutines round a ring on the benchmark's thread: coroutine 0 runs the benchmark loop and
// transfers to 1, each of the others transfers to the next, N-1 back to 0. One operation: one
// symmetric transfer; one iteration is one lap, N transfers.
// (The same code as switch/coroutine's pair, so n:2 is that ping-pong.)
Coro ring_leader(benchmark::State& state, const std::coroutine_handle<>* next) {
    for (auto _ : state) co_await TransferTo{*next};
}

Coro ring_member(const std::coroutine_handle<>* next) {
    for (;;) co_await TransferTo{*next};
}

void BM_ring_coroutines(benchmark::State& state) {
    if (!transfer_is_tail_call()) {
        state.SkipWithError(kNoTailCall);
        return;
    }
    const size_t n = static_cast<size_t>(state.range(0));
    std::vector<std::coroutine_handle<>> handles(n);
    std::vector<Coro> coros;
    coros.reserve(n);
    coros.push_back(ring_leader(state, &handles[1]));
    for (size_t i = 1; i < n; ++i) coros.push_back(ring_member(&handles[(i + 1) % n]));
    for (size_t i = 0; i < n; ++i) handles[i] = coros[i].handle();
    handles[0].resume();   // returns when the leader's loop has ended
    state.counters["per_op"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate |
                                                                               benchmark::Counter::kInvert);
}
BENCHMARK(BM_ring_coroutines)->Name("ring/coroutines")->ArgName("n")->Arg(2)->Arg(10)->Arg(100)->Arg(1000)->Arg(10000);

}  // namespace
