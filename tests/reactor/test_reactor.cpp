// The reactor core (models/common/reactor.hpp) on one backend, chosen at link time: tests/
// reactor.cmake builds this file once per backend (test_reactor_epoll, _poll, _select, _kqueue),
// since every backend defines the same backend_* names. Behaviour only, never speed: timers are
// checked for order and a lower bound.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reactor.hpp"

using namespace concbench;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kBackend = CONCBENCH_BACKEND;

struct FnWatcher final : Watcher {
    std::function<void(int)> fn;
    void on_ready(int ready) override { fn(ready); }
};

struct FnTimer final : Timer {
    std::function<void()> fn;
    void on_timer() override { fn(); }
};

// A non-blocking socketpair, closed at the end of the test unless closed before.
struct Pair {
    int a = -1, b = -1;
    Pair() {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) ADD_FAILURE() << strerror(errno);
        a = sv[0];
        b = sv[1];
    }
    ~Pair() {
        if (a >= 0) close(a);
        if (b >= 0) close(b);
    }
    Pair(const Pair&) = delete;
    Pair& operator=(const Pair&) = delete;
};

void send_bytes(int fd, const char* s) { ASSERT_EQ(write(fd, s, strlen(s)), ssize_t(strlen(s))); }

// Runs the loop until the test stops it, or fails it after `limit_ms` (a test never hangs).
void run_for(Reactor& r, int limit_ms, const std::function<void()>& after_batch = {}, bool expect_stop = true) {
    FnTimer guard;
    bool expired = false;
    guard.fn = [&] {
        expired = true;
        r.stop();
    };
    r.arm(guard, limit_ms);
    r.run(after_batch);
    r.disarm(guard);
    if (expect_stop) {
        EXPECT_FALSE(expired) << "nothing stopped the loop within " << limit_ms << " ms";
    }
}

TEST(Reactor, NamesItsBackend) { EXPECT_EQ(std::string(backend_name()), kBackend); }

TEST(Reactor, ReadableWhenBytesArrive) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    int got = 0;
    w.fn = [&](int ready) {
        got = ready;
        r.stop();
    };
    r.set(w, kReadable);
    send_bytes(p.b, "hello");
    run_for(r, 5000);
    EXPECT_TRUE(got & kReadable);
    r.set(w, 0);
}

TEST(Reactor, WritableWhenSpace) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    int got = 0;
    w.fn = [&](int ready) {
        got = ready;
        r.stop();
    };
    r.set(w, kWritable);
    run_for(r, 5000);
    EXPECT_TRUE(got & kWritable);
    r.set(w, 0);
}

TEST(Reactor, LevelTriggeredFiresAgainWhileBytesRemain) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    int calls = 0;
    w.fn = [&](int ready) {
        EXPECT_TRUE(ready & kReadable);
        if (++calls == 3) r.stop();  // never read: the bytes stay, so it must fire again
    };
    r.set(w, kReadable);
    send_bytes(p.b, "x");
    run_for(r, 5000);
    EXPECT_EQ(calls, 3);
    // Read part of it: what is left is still reported.
    char c;
    send_bytes(p.b, "y");
    ASSERT_EQ(read(p.a, &c, 1), 1);
    calls = 2;
    run_for(r, 5000);
    EXPECT_EQ(calls, 3);
    r.set(w, 0);
}

TEST(Reactor, ReadAndWriteOnOneWatcherComeInOneCall) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    std::vector<int> calls;
    w.fn = [&](int ready) { calls.push_back(ready); };
    r.set(w, kReadable | kWritable);
    send_bytes(p.b, "x");
    run_for(r, 5000, [&] { r.stop(); });
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0] & (kReadable | kWritable), kReadable | kWritable);
    r.set(w, 0);
}

TEST(Reactor, ChangingTheRegistration) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    std::vector<int> calls;
    w.fn = [&](int ready) {
        calls.push_back(ready);
        r.stop();
    };
    r.set(w, kWritable);
    run_for(r, 5000);
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_TRUE(calls[0] & kWritable);
    // Readable only, nothing to read: silent (writability is no longer asked for).
    r.set(w, kReadable);
    EXPECT_EQ(w.mask, kReadable);
    calls.clear();
    run_for(r, 50, {}, false);
    EXPECT_TRUE(calls.empty());
    send_bytes(p.b, "x");
    run_for(r, 5000);
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_TRUE(calls[0] & kReadable);
    r.set(w, 0);
}

TEST(Reactor, RemovedWatcherIsNotCalled) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    int calls = 0;
    w.fn = [&](int) { ++calls; };
    r.set(w, kReadable | kWritable);
    r.set(w, 0);
    EXPECT_EQ(w.mask, 0);
    send_bytes(p.b, "x");
    run_for(r, 50, {}, false);
    EXPECT_EQ(calls, 0);
    // Removed after it was watched for a while, then its fd closed (the model's order).
    r.set(w, kReadable);
    run_for(r, 5000, [&] { r.stop(); });
    EXPECT_GE(calls, 1);
    r.set(w, 0);
    close(p.a);
    p.a = -1;
    calls = 0;
    run_for(r, 50, {}, false);
    EXPECT_EQ(calls, 0);
}

TEST(Reactor, PeerCloseIsReadableAndReadSeesEof) {
    Reactor r;
    Pair p;
    FnWatcher w;
    w.fd = p.a;
    int got = 0;
    ssize_t n = -2;
    w.fn = [&](int ready) {
        got = ready;
        char buf[16];
        n = read(p.a, buf, sizeof buf);
        r.stop();
    };
    r.set(w, kReadable);
    close(p.b);
    p.b = -1;
    run_for(r, 5000);
    EXPECT_TRUE(got & kReadable);
    EXPECT_EQ(n, 0);
    r.set(w, 0);
}

TEST(Reactor, TimerFiresNotBeforeItsDelayAndInOrder) {
    Reactor r;
    FnTimer late, early;
    std::vector<std::string> order;
    Clock::time_point armed = Clock::now(), early_at, late_at;
    early.fn = [&] {
        early_at = Clock::now();
        order.push_back("early");
    };
    late.fn = [&] {
        late_at = Clock::now();
        order.push_back("late");
        r.stop();
    };
    r.arm(late, 40);
    r.arm(early, 20);
    run_for(r, 5000);
    ASSERT_EQ(order, (std::vector<std::string>{"early", "late"}));
    EXPECT_GE(early_at - armed, std::chrono::milliseconds(20));
    EXPECT_GE(late_at - armed, std::chrono::milliseconds(40));
}

TEST(Reactor, DisarmedTimerNeverFires) {
    Reactor r;
    FnTimer gone, end;
    bool fired = false;
    gone.fn = [&] { fired = true; };
    end.fn = [&] { r.stop(); };
    r.arm(gone, 10);
    r.arm(end, 40);
    r.disarm(gone);
    r.disarm(gone);  // disarming an unarmed timer: a no-op
    run_for(r, 5000);
    EXPECT_FALSE(fired);
    // Re-arming moves it.
    Clock::time_point armed = Clock::now(), at;
    gone.fn = [&] {
        at = Clock::now();
        r.stop();
    };
    r.arm(gone, 5);
    r.arm(gone, 30);
    run_for(r, 5000);
    EXPECT_GE(at - armed, std::chrono::milliseconds(30));
}

TEST(Reactor, ManyWatchersEachFired) {
    // 480 pairs: 960 fds, under select's FD_SETSIZE (1024) with stdio and the backend's own.
    constexpr int kPairs = 480;
    Reactor r;
    std::vector<std::unique_ptr<Pair>> pairs;
    std::vector<std::unique_ptr<FnWatcher>> ws;
    std::vector<int> seen(kPairs, 0);
    int done = 0;
    for (int i = 0; i < kPairs; ++i) {
        pairs.push_back(std::make_unique<Pair>());
        auto w = std::make_unique<FnWatcher>();
        w->fd = pairs.back()->a;
        FnWatcher* self = w.get();
        w->fn = [&, i, self](int ready) {
            EXPECT_TRUE(ready & kReadable);
            char c;
            EXPECT_EQ(read(self->fd, &c, 1), 1);
            ++seen[i];
            r.set(*self, 0);
            if (++done == kPairs) r.stop();
        };
        r.set(*w, kReadable);
        ws.push_back(std::move(w));
    }
    for (auto& p : pairs) send_bytes(p->b, "x");
    run_for(r, 10000);
    EXPECT_EQ(done, kPairs);
    for (int i = 0; i < kPairs; ++i) EXPECT_EQ(seen[i], 1) << "watcher " << i;
}

// What each backend refuses at once (backend_set's contract: -errno, registration unchanged).
TEST(Reactor, TrySetFailureLeavesTheWatcherUnchanged) {
    Reactor r;
    Pair p;
    FnWatcher first, second;
    first.fn = second.fn = [](int) {};
    int expected;
    if (kBackend == "epoll") {  // a closed fd
        second.fd = p.b;
        close(p.b);
        p.b = -1;
        expected = EBADF;
    } else if (kBackend == "kqueue") {  // batched: only what it sees itself (a closed fd: below)
        second.fd = -1;
        expected = EBADF;
    } else {  // poll, select: a second watcher of a watched fd
        first.fd = second.fd = p.a;
        r.set(first, kReadable);
        expected = EEXIST;
    }
    errno = 0;
    EXPECT_FALSE(r.try_set(second, kReadable));
    EXPECT_EQ(errno, expected);
    EXPECT_EQ(second.mask, 0);
    if (first.mask) r.set(first, 0);
    // select: an fd past FD_SETSIZE is refused with EMFILE.
    if (kBackend == "select") {
        int high = fcntl(p.a, F_DUPFD_CLOEXEC, 1500);
        ASSERT_GE(high, 1500) << strerror(errno);
        FnWatcher w;
        w.fd = high;
        w.fn = [](int) {};
        errno = 0;
        EXPECT_FALSE(r.try_set(w, kReadable));
        EXPECT_EQ(errno, EMFILE);
        EXPECT_EQ(w.mask, 0);
        close(high);
    }
}

// kqueue batches changes into the next wait: a change the kernel refuses then (a closed fd) is
// reported as readable and writable, so the owner's next read or write meets the error — for
// the changes refused in the wait itself and for those of a full changelist submitted early.
TEST(Reactor, KqueueBatchedChangeRefusedLaterIsReportedReady) {
    if (kBackend != "kqueue") GTEST_SKIP() << "kqueue only";
    constexpr int kWatchers = 100;  // more than one changelist (64)
    Reactor r;
    std::vector<int> fds;
    for (int i = 0; i < kWatchers; ++i) fds.push_back(socket(AF_UNIX, SOCK_STREAM, 0));
    for (int fd : fds) close(fd);  // now closed: every EV_ADD of them fails with EBADF
    std::vector<FnWatcher> ws(kWatchers);
    std::vector<int> ready(kWatchers, 0);
    int done = 0;
    for (int i = 0; i < kWatchers; ++i) {
        ws[i].fd = fds[i];
        ws[i].fn = [&, i](int got) {
            if (ready[i] == 0 && ++done == kWatchers) r.stop();
            ready[i] |= got;
            r.set(ws[i], 0);
        };
        ASSERT_TRUE(r.try_set(ws[i], kReadable));
    }
    run_for(r, 5000);
    for (int i = 0; i < kWatchers; ++i) EXPECT_EQ(ready[i], kReadable | kWritable) << "watcher " << i;
}

// A callback that removes (and closes) another watcher of the same batch: the reactor may still
// call it in that batch (the model's `closed` flag), but the memory lives until after_batch and
// it is never called in a later batch.
TEST(Reactor, CallbackRemovesAnotherWatcherOfTheSameBatch) {
    Reactor r;
    Pair p1, p2;
    auto* w1 = new FnWatcher;
    auto* w2 = new FnWatcher;
    w1->fd = p1.a;
    w2->fd = p2.a;
    int batch = 0, removed_in = -1, late_calls = 0;
    std::vector<FnWatcher*> retired;
    bool closed[2] = {false, false};
    auto make = [&](FnWatcher* self, FnWatcher* other, int me, Pair& other_pair) {
        return [&, self, other, me](int) {
            if (closed[me]) {  // removed earlier in this batch: allowed, but only in this batch
                if (batch != removed_in) ++late_calls;
                return;
            }
            if (!closed[1 - me]) {
                r.set(*other, 0);
                close(other_pair.a);
                other_pair.a = -1;
                closed[1 - me] = true;
                removed_in = batch;
                retired.push_back(other);
            }
            char c;
            (void)!read(self->fd, &c, 1);
        };
    };
    w1->fn = make(w1, w2, 0, p2);
    w2->fn = make(w2, w1, 1, p1);
    r.set(*w1, kReadable);
    r.set(*w2, kReadable);
    send_bytes(p1.b, "x");
    send_bytes(p2.b, "x");
    FnTimer tick;  // keeps batches coming once the bytes are read
    tick.fn = [&] { r.arm(tick, 5); };
    r.arm(tick, 5);
    run_for(r, 5000, [&] {
        for (FnWatcher* w : retired) delete w;  // freed only after the batch
        retired.clear();
        if (++batch == 5) r.stop();
    });
    r.disarm(tick);
    EXPECT_GE(removed_in, 0);
    EXPECT_EQ(late_calls, 0);
    FnWatcher* survivor = closed[0] ? w2 : w1;
    r.set(*survivor, 0);
    delete survivor;
}

}  // namespace
