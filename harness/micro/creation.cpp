// Group "create": what creating (and finishing) one unit of concurrency costs on this machine.
// The essays' claim: "threads and processes are expensive to create", so servers pool them, and
// event loops / coroutines win because their unit is cheap. One iteration = one unit created
// and run to its end (joined, reaped, destroyed, or its callback/completion delivered), so
// real_time is the figure for every row:
//   create/thread, create/fork, create/fork_256MiB (fork's cost grows with the page tables it
//   copies), create/posix_spawn (vfork-style, then exec of /bin/true): the kernel's units;
//   create/coroutine (a C++20 frame on the heap), create/asio_post, create/uv_async: what an
//   event loop or a coroutine runtime pays for one more task;
//   create/epoll_ctl, create/uring_nop: what registering one fd with epoll, and one
//   submission + completion through io_uring, cost (the per-connection/per-IO set-up of the
//   readiness and completion models).
// A row that cannot run here (fork refused, no memory, io_uring refused) is skipped with its
// reason; every child is reaped and every fd closed, on the skip path too.
#include <liburing.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <coroutine>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <thread>

#include <boost/asio.hpp>
#include <benchmark/benchmark.h>

#include "micro.hpp"

extern char** environ;

namespace {

using concbench::micro::errno_text;

// Reaps one child; false if it did not exit with status 0.
bool reap(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// One operation: std::thread constructed on an empty function, then joined.
void BM_thread(benchmark::State& state) {
    for (auto _ : state) {
        try {
            std::thread t([] {});
            t.join();
        } catch (const std::system_error& e) {
            state.SkipWithError((std::string("std::thread: ") + e.what()).c_str());
            break;
        }
    }
}
BENCHMARK(BM_thread)->Name("create/thread");

// One operation: fork(), the child _exit(0)s at once, the parent waitpid()s it.
void fork_loop(benchmark::State& state) {
    for (auto _ : state) {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid < 0) {
            state.SkipWithError(errno_text("fork").c_str());
            break;
        }
        if (!reap(pid)) {
            state.SkipWithError("fork: the child did not exit cleanly");
            break;
        }
    }
}

void BM_fork(benchmark::State& state) { fork_loop(state); }
BENCHMARK(BM_fork)->Name("create/fork");

// One operation: as create/fork, from a process holding 256 MiB of touched anonymous memory
// (65,536 4 KiB pages: MADV_NOHUGEPAGE keeps them small whatever the THP setting, as glibc's
// malloc heap is by default), so fork copies their page tables and the child's exit frees them.
class Fork256 : public benchmark::Fixture {
public:
    static constexpr size_t kBytes = size_t{256} << 20;
    void SetUp(const benchmark::State&) override {
        void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            error_ = errno_text("mmap 256 MiB");
            return;
        }
        madvise(p, kBytes, MADV_NOHUGEPAGE);
        std::memset(p, 0x5a, kBytes);   // every page present and private to this process
        buf_ = static_cast<char*>(p);
        error_.clear();
    }
    void TearDown(const benchmark::State&) override {
        if (buf_) munmap(buf_, kBytes);
        buf_ = nullptr;
    }
    char* buf_ = nullptr;
    std::string error_;
};

BENCHMARK_DEFINE_F(Fork256, Run)(benchmark::State& state) {
    if (!buf_) {
        state.SkipWithError(error_.c_str());
        return;
    }
    benchmark::DoNotOptimize(buf_);
    fork_loop(state);
}
BENCHMARK_REGISTER_F(Fork256, Run)->Name("create/fork_256MiB");

// One operation: posix_spawn of /bin/true (glibc: clone(CLONE_VM|CLONE_VFORK) + execve), then
// waitpid: what starting a fresh program costs, the CGI model's unit.
void BM_posix_spawn(benchmark::State& state) {
    static const char kPath[] = "/bin/true";
    if (access(kPath, X_OK) != 0) {
        state.SkipWithError(errno_text("/bin/true").c_str());
        return;
    }
    char arg0[] = "true";
    char* argv[] = {arg0, nullptr};
    for (auto _ : state) {
        pid_t pid = 0;
        int rc = posix_spawn(&pid, kPath, nullptr, nullptr, argv, environ);
        if (rc != 0) {
            state.SkipWithError((std::string("posix_spawn: ") + std::strerror(rc)).c_str());
            break;
        }
        if (!reap(pid)) {
            state.SkipWithError("posix_spawn: /bin/true did not exit with status 0");
            break;
        }
    }
}
BENCHMARK(BM_posix_spawn)->Name("create/posix_spawn");

// The smallest coroutine task type: lazy (initial_suspend suspends), keeps its frame after the
// end (final_suspend suspends) so the caller destroys it.
struct Task {
    struct promise_type {
        Task get_return_object() noexcept { return Task{std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
};

// noinline: the frame is allocated by operator new in the ramp, not elided into the caller.
[[gnu::noinline]] Task add_one(int* counter) {
    ++*counter;
    co_return;
}

// One operation: a coroutine frame allocated (operator new), resumed to its end, destroyed.
void BM_coroutine(benchmark::State& state) {
    int counter = 0;
    for (auto _ : state) {
        Task t = add_one(&counter);
        benchmark::DoNotOptimize(t.handle);
        t.handle.resume();
        t.handle.destroy();
    }
    if (counter != static_cast<int>(state.iterations())) state.SkipWithError("coroutine: a body did not run");
}
BENCHMARK(BM_coroutine)->Name("create/coroutine");

// One operation: boost::asio::post of a handler to a single-threaded io_context (concurrency
// hint 1, as a one-thread loop is written) and poll_one() running it. The work guard keeps
// the context from stopping when its queue empties, as a long-lived server loop's would.
void BM_asio_post(benchmark::State& state) {
    boost::asio::io_context ctx(1);
    auto guard = boost::asio::make_work_guard(ctx);
    int64_t ran = 0;
    for (auto _ : state) {
        boost::asio::post(ctx, [&ran] { ++ran; });
        ctx.poll_one();
    }
    guard.reset();
    ctx.poll();
    if (ran != static_cast<int64_t>(state.iterations())) state.SkipWithError("asio: a handler did not run");
}
BENCHMARK(BM_asio_post)->Name("create/asio_post");

// One operation: uv_async_send (an eventfd write) and one non-blocking turn of the libuv loop
// that polls epoll, reads the eventfd and calls the async callback.
void BM_uv_async(benchmark::State& state) {
    uv_loop_t loop;
    if (int rc = uv_loop_init(&loop); rc != 0) {
        state.SkipWithError((std::string("uv_loop_init: ") + uv_strerror(rc)).c_str());
        return;
    }
    uv_async_t async;
    int64_t ran = 0;
    async.data = &ran;
    if (int rc = uv_async_init(&loop, &async, [](uv_async_t* a) { ++*static_cast<int64_t*>(a->data); }); rc != 0) {
        state.SkipWithError((std::string("uv_async_init: ") + uv_strerror(rc)).c_str());
        uv_loop_close(&loop);
        return;
    }
    for (auto _ : state) {
        uv_async_send(&async);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&async), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);   // runs the close callback; no handle left, returns
    uv_loop_close(&loop);
    if (ran != static_cast<int64_t>(state.iterations())) state.SkipWithError("uv: a callback did not run");
}
BENCHMARK(BM_uv_async)->Name("create/uv_async");

// One operation: epoll_ctl(ADD) of an eventfd, then epoll_ctl(DEL): registering and
// unregistering one connection's fd with a readiness loop.
void BM_epoll_ctl(benchmark::State& state) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        state.SkipWithError(errno_text("epoll_create1").c_str());
        return;
    }
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        state.SkipWithError(errno_text("eventfd").c_str());
        close(ep);
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = efd;
    for (auto _ : state) {
        if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0 || epoll_ctl(ep, EPOLL_CTL_DEL, efd, nullptr) != 0) {
            state.SkipWithError(errno_text("epoll_ctl").c_str());
            break;
        }
    }
    close(efd);
    close(ep);
}
BENCHMARK(BM_epoll_ctl)->Name("create/epoll_ctl");

// One operation: one IORING_OP_NOP submitted with io_uring_submit_and_wait (one io_uring_enter)
// and its completion reaped: the floor of one IO through the completion model.
void BM_uring_nop(benchmark::State& state) {
    io_uring ring;
    if (int rc = io_uring_queue_init(8, &ring, 0); rc < 0) {
        state.SkipWithError((std::string("io_uring_queue_init: ") + std::strerror(-rc)).c_str());
        return;
    }
    for (auto _ : state) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_nop(sqe);
        int rc = io_uring_submit_and_wait(&ring, 1);
        io_uring_cqe* cqe = nullptr;
        if (rc >= 0) rc = io_uring_peek_cqe(&ring, &cqe);
        if (rc < 0 || cqe == nullptr || cqe->res < 0) {
            state.SkipWithError((std::string("io_uring NOP: ") + std::strerror(rc < 0 ? -rc : cqe ? -cqe->res : EIO)).c_str());
            break;
        }
        io_uring_cqe_seen(&ring, cqe);
    }
    io_uring_queue_exit(&ring);
}
BENCHMARK(BM_uring_nop)->Name("create/uring_nop");

}  // namespace
