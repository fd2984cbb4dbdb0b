// The waiting group: what one wake-up costs when N fds are watched and one of them is ready.
// The essays' claim: "this is why nginx's loop scales and select's does not": select and poll
// hand the kernel the whole interest set on every call and the kernel walks all N fds (and the
// caller walks the answer again), so a wake-up costs O(N); epoll keeps the interest set in the
// kernel and returns only the ready fds, and io_uring's multishot poll posts a completion for
// the ready fd alone, so their wake-up should not grow with N.
// Set-up (shared by the four families, a fixture): N non-blocking eventfds, created once per
// benchmark run outside the timed loop and closed at its end. One iteration = one wake-up:
// write to ONE eventfd (the same seeded pseudo-random sequence over the N for every mechanism,
// so none profits from the ready fd always being first or last), wait with the mechanism until
// it reports ready, read (clear) every eventfd it reported. real_time is the figure.
// select stops at FD_SETSIZE: the rows past it are registered anyway and skip with the reason.
#include <liburing.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "micro.hpp"

namespace {

using concbench::micro::errno_text;

// N eventfds, and the pseudo-random choice of the one made ready in each iteration.
class WaitFds : public benchmark::Fixture {
public:
    void SetUp(const benchmark::State& state) override {
        error_.clear();
        rng_ = 0x9E3779B97F4A7C15ull;   // the same sequence for every mechanism and every N
        auto n = static_cast<size_t>(state.range(0));
        fds_.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            if (fd < 0) {
                error_ = errno_text("eventfd") + " after " + std::to_string(i) + " fds";
                return;
            }
            fds_.push_back(fd);
        }
    }
    void TearDown(const benchmark::State&) override {
        for (int fd : fds_) close(fd);
        fds_.clear();
    }

protected:
    // False (the row skipped with the reason) if the set-up failed.
    bool ready(benchmark::State& state) {
        if (error_.empty()) return true;
        state.SkipWithError(error_.c_str());
        return false;
    }
    // The index of the eventfd to make ready: xorshift64, reduced to [0, N) without a division.
    size_t next_index() {
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        return static_cast<size_t>((static_cast<uint64_t>(static_cast<uint32_t>(rng_)) * fds_.size()) >> 32);
    }
    // Makes one eventfd readable.
    bool signal(size_t i) {
        uint64_t one = 1;
        return write(fds_[i], &one, sizeof one) == sizeof one;
    }
    // Clears a reported eventfd (EAGAIN: already cleared, harmless).
    void drain(int fd) {
        uint64_t value;
        ssize_t n = read(fd, &value, sizeof value);
        benchmark::DoNotOptimize(n);
    }

    std::vector<int> fds_;
    std::string error_;
    uint64_t rng_ = 0;
};

// One operation (= one iteration): a wake-up through select.
BENCHMARK_DEFINE_F(WaitFds, Select)(benchmark::State& state) {
    if (!ready(state)) return;
    int max_fd = 0;
    for (int fd : fds_) max_fd = std::max(max_fd, fd);
    if (max_fd >= FD_SETSIZE) {
        std::string why = "select: fd " + std::to_string(max_fd) + " is past FD_SETSIZE (" +
                          std::to_string(FD_SETSIZE) + ")";
        state.SkipWithError(why.c_str());
        return;
    }
    // select overwrites its set with the answer, so its users keep a master set and copy it in
    // before every call (the cheapest rebuild), then walk the fds until they met all it reported.
    fd_set master;
    FD_ZERO(&master);
    for (int fd : fds_) FD_SET(fd, &master);
    for (auto _ : state) {
        if (!signal(next_index())) {
            state.SkipWithError(errno_text("eventfd write").c_str());
            break;
        }
        fd_set readable = master;
        timeval timeout{1, 0};
        int rc = select(max_fd + 1, &readable, nullptr, nullptr, &timeout);
        if (rc <= 0) {
            state.SkipWithError(rc == 0 ? "select: no fd ready after 1 s" : errno_text("select").c_str());
            break;
        }
        for (size_t i = 0; rc > 0 && i < fds_.size(); ++i)
            if (FD_ISSET(fds_[i], &readable)) {
                drain(fds_[i]);
                --rc;
            }
    }
}

// One operation (= one iteration): a wake-up through poll.
BENCHMARK_DEFINE_F(WaitFds, Poll)(benchmark::State& state) {
    if (!ready(state)) return;
    // One pollfd array, kept across calls as a poll loop keeps it (revents is output only).
    std::vector<pollfd> set(fds_.size());
    for (size_t i = 0; i < fds_.size(); ++i) set[i] = pollfd{fds_[i], POLLIN, 0};
    for (auto _ : state) {
        if (!signal(next_index())) {
            state.SkipWithError(errno_text("eventfd write").c_str());
            break;
        }
        int rc = poll(set.data(), set.size(), 1000);
        if (rc <= 0) {
            state.SkipWithError(rc == 0 ? "poll: no fd ready after 1 s" : errno_text("poll").c_str());
            break;
        }
        for (size_t i = 0; rc > 0 && i < set.size(); ++i)
            if (set[i].revents & POLLIN) {
                drain(set[i].fd);
                --rc;
            }
    }
}

// One operation (= one iteration): a wake-up through epoll (level-triggered EPOLLIN).
BENCHMARK_DEFINE_F(WaitFds, Epoll)(benchmark::State& state) {
    if (!ready(state)) return;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        state.SkipWithError(errno_text("epoll_create1").c_str());
        return;
    }
    for (int fd : fds_) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            state.SkipWithError(errno_text("epoll_ctl(ADD)").c_str());
            close(ep);
            return;
        }
    }
    constexpr int kMaxEvents = 64;
    epoll_event events[kMaxEvents];
    for (auto _ : state) {
        if (!signal(next_index())) {
            state.SkipWithError(errno_text("eventfd write").c_str());
            break;
        }
        int rc = epoll_wait(ep, events, kMaxEvents, 1000);
        if (rc <= 0) {
            state.SkipWithError(rc == 0 ? "epoll_wait: no fd ready after 1 s" : errno_text("epoll_wait").c_str());
            break;
        }
        for (int i = 0; i < rc; ++i) drain(events[i].data.fd);
    }
    close(ep);
}

// One operation (= one iteration): a wake-up through io_uring multishot poll, armed once per fd.
BENCHMARK_DEFINE_F(WaitFds, UringPoll)(benchmark::State& state) {
    if (!ready(state)) return;
    // The SQ only carries the arming (in batches of its size) and the rare re-arm; the CQ gets one
    // CQE per wake-up, so a modest ring serves any N.
    constexpr unsigned kEntries = 256;
    io_uring ring;
    int rc = io_uring_queue_init(kEntries, &ring, 0);
    if (rc < 0) {
        state.SkipWithError((std::string("io_uring unavailable: io_uring_queue_init: ") + std::strerror(-rc)).c_str());
        return;
    }
    auto arm = [&](size_t i) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (!sqe) {   // SQ full: hand the batch to the kernel and take a fresh entry
            io_uring_submit(&ring);
            sqe = io_uring_get_sqe(&ring);
        }
        io_uring_prep_poll_multishot(sqe, fds_[i], POLLIN);
        io_uring_sqe_set_data64(sqe, i);
    };
    for (size_t i = 0; i < fds_.size(); ++i) arm(i);
    rc = io_uring_submit(&ring);
    if (rc < 0) {
        state.SkipWithError((std::string("io_uring_submit: ") + std::strerror(-rc)).c_str());
        io_uring_queue_exit(&ring);
        return;
    }
    for (auto _ : state) {
        if (!signal(next_index())) {
            state.SkipWithError(errno_text("eventfd write").c_str());
            break;
        }
        io_uring_cqe* cqe = nullptr;
        rc = io_uring_peek_cqe(&ring, &cqe);   // usually already posted: no system call
        if (rc == -EAGAIN) {
            __kernel_timespec timeout{1, 0};
            rc = io_uring_wait_cqe_timeout(&ring, &cqe, &timeout);
        }
        if (rc < 0) {
            state.SkipWithError(rc == -ETIME ? "io_uring: no CQE after 1 s"
                                             : (std::string("io_uring_wait_cqe: ") + std::strerror(-rc)).c_str());
            break;
        }
        unsigned head, seen = 0;
        bool rearmed = false, failed = false;
        io_uring_for_each_cqe(&ring, head, cqe) {
            ++seen;
            auto i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
            if (cqe->res < 0) {
                failed = true;
                rc = cqe->res;
                continue;
            }
            drain(fds_[i]);
            if (!(cqe->flags & IORING_CQE_F_MORE)) {   // the kernel ended this multishot: re-arm it
                arm(i);
                rearmed = true;
            }
        }
        io_uring_cq_advance(&ring, seen);
        if (failed) {
            state.SkipWithError((std::string("io_uring poll: ") + std::strerror(-rc)).c_str());
            break;
        }
        if (rearmed) io_uring_submit(&ring);
    }
    io_uring_queue_exit(&ring);   // cancels the armed polls
}

// Up to 10,000 fds: the fd limit here is 20,000. select's rows past FD_SETSIZE skip with the reason.
void fd_counts(benchmark::internal::Benchmark* b) {
    b->ArgName("fds");
    for (int n : {10, 30, 100, 300, 1000, 3000, 10000}) b->Arg(n);
}

BENCHMARK_REGISTER_F(WaitFds, Select)->Name("wait/select")->Apply(fd_counts);
BENCHMARK_REGISTER_F(WaitFds, Poll)->Name("wait/poll")->Apply(fd_counts);
BENCHMARK_REGISTER_F(WaitFds, Epoll)->Name("wait/epoll")->Apply(fd_counts);
BENCHMARK_REGISTER_F(WaitFds, UringPoll)->Name("wait/uring_poll")->Apply(fd_counts);

}  // namespace
