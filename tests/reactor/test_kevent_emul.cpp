// The test-only kevent emulation (tests/kqueue_emul) against what kqueue(2) says: the kqueue
// backend is tested on Linux through it, so it must behave as the manual page describes.
#include <sys/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

namespace {

using Clock = std::chrono::steady_clock;
const timespec kZero{0, 0};

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
};

struct Kq {
    int fd = kqueue();
    ~Kq() { close(fd); }
};

int change(int kq, int fd, short filter, unsigned short flags, void* udata = nullptr) {
    struct kevent c;
    EV_SET(&c, fd, filter, flags, 0, 0, udata);
    return kevent(kq, &c, 1, nullptr, 0, nullptr);
}

int poll_now(int kq, struct kevent* out, int max) { return kevent(kq, nullptr, 0, out, max, &kZero); }

TEST(KeventEmul, KqueueIsARealFd) {
    int kq = kqueue();
    ASSERT_GE(kq, 0);
    EXPECT_EQ(close(kq), 0);
    struct kevent e;
    EXPECT_EQ(kevent(kq, nullptr, 0, &e, 1, &kZero), -1);
    EXPECT_EQ(errno, EBADF);
}

TEST(KeventEmul, AddReportsBytesReadableThenDeleteSilences) {
    Kq q;
    Pair p;
    int tag;
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD, &tag), 0);
    struct kevent e[4];
    EXPECT_EQ(poll_now(q.fd, e, 4), 0);
    ASSERT_EQ(write(p.b, "hello", 5), 5);
    ASSERT_EQ(poll_now(q.fd, e, 4), 1);
    EXPECT_EQ(e[0].ident, uintptr_t(p.a));
    EXPECT_EQ(e[0].filter, EVFILT_READ);
    EXPECT_EQ(e[0].data, 5);
    EXPECT_EQ(e[0].udata, &tag);
    EXPECT_EQ(e[0].flags & (EV_EOF | EV_ERROR), 0);
    // Level-triggered: again while the bytes stay.
    EXPECT_EQ(poll_now(q.fd, e, 4), 1);
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_DELETE), 0);
    EXPECT_EQ(poll_now(q.fd, e, 4), 0);
    // Deleting what is not there: ENOENT, as an EV_ERROR entry when there is room.
    struct kevent c;
    EV_SET(&c, p.a, EVFILT_READ, EV_DELETE, 0, 0, nullptr);
    ASSERT_EQ(kevent(q.fd, &c, 1, e, 4, nullptr), 1);
    EXPECT_TRUE(e[0].flags & EV_ERROR);
    EXPECT_EQ(e[0].data, ENOENT);
}

TEST(KeventEmul, ReadAndWriteOnOneFdAreTwoEvents) {
    Kq q;
    Pair p;
    int rtag, wtag;
    struct kevent c[2];
    EV_SET(&c[0], p.a, EVFILT_READ, EV_ADD, 0, 0, &rtag);
    EV_SET(&c[1], p.a, EVFILT_WRITE, EV_ADD, 0, 0, &wtag);
    ASSERT_EQ(kevent(q.fd, c, 2, nullptr, 0, nullptr), 0);
    ASSERT_EQ(write(p.b, "abc", 3), 3);
    struct kevent e[4];
    ASSERT_EQ(poll_now(q.fd, e, 4), 2);
    bool rd = false, wr = false;
    for (int i = 0; i < 2; ++i) {
        EXPECT_EQ(e[i].ident, uintptr_t(p.a));
        if (e[i].filter == EVFILT_READ) {
            rd = true;
            EXPECT_EQ(e[i].udata, &rtag);
            EXPECT_EQ(e[i].data, 3);
        } else {
            wr = e[i].filter == EVFILT_WRITE;
            EXPECT_EQ(e[i].udata, &wtag);
            EXPECT_GT(e[i].data, 0);
        }
    }
    EXPECT_TRUE(rd && wr);
    // Deleting one filter leaves the other.
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_DELETE), 0);
    ASSERT_EQ(poll_now(q.fd, e, 4), 1);
    EXPECT_EQ(e[0].filter, EVFILT_WRITE);
    // One slot: the second filter's event waits for the next call.
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD, &rtag), 0);
    ASSERT_EQ(poll_now(q.fd, e, 1), 1);
    short first = e[0].filter;
    ASSERT_EQ(poll_now(q.fd, e, 1), 1);
    EXPECT_NE(e[0].filter, first);
}

TEST(KeventEmul, BadFdIsAnErrorEntryWithErrno) {
    Kq q;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    close(fd);
    struct kevent c, e[2];
    EV_SET(&c, fd, EVFILT_READ, EV_ADD, 0, 0, nullptr);
    ASSERT_EQ(kevent(q.fd, &c, 1, e, 2, nullptr), 1);  // returns at once, despite no timeout
    EXPECT_TRUE(e[0].flags & EV_ERROR);
    EXPECT_EQ(e[0].data, EBADF);
    EXPECT_EQ(e[0].ident, uintptr_t(fd));
    // No room to report it: -1 with errno.
    EXPECT_EQ(kevent(q.fd, &c, 1, nullptr, 0, nullptr), -1);
    EXPECT_EQ(errno, EBADF);
    // A filter it does not emulate.
    EV_SET(&c, 1, EVFILT_TIMER, EV_ADD, 0, 10, nullptr);
    ASSERT_EQ(kevent(q.fd, &c, 1, e, 2, nullptr), 1);
    EXPECT_EQ(e[0].data, EINVAL);
}

TEST(KeventEmul, ReceiptAnswersEveryChangeWithoutDrainingEvents) {
    Kq q;
    Pair p;
    ASSERT_EQ(write(p.b, "x", 1), 1);
    int bad = socket(AF_UNIX, SOCK_STREAM, 0);
    close(bad);
    struct kevent c[2], e[4];
    EV_SET(&c[0], p.a, EVFILT_READ, EV_ADD | EV_RECEIPT, 0, 0, nullptr);
    EV_SET(&c[1], bad, EVFILT_READ, EV_ADD | EV_RECEIPT, 0, 0, nullptr);
    ASSERT_EQ(kevent(q.fd, c, 2, e, 4, nullptr), 2);
    EXPECT_TRUE(e[0].flags & EV_ERROR);
    EXPECT_EQ(e[0].data, 0);
    EXPECT_TRUE(e[1].flags & EV_ERROR);
    EXPECT_EQ(e[1].data, EBADF);
    // The pending readability comes with the next call.
    ASSERT_EQ(poll_now(q.fd, e, 4), 1);
    EXPECT_EQ(e[0].filter, EVFILT_READ);
    EXPECT_FALSE(e[0].flags & EV_ERROR);
}

TEST(KeventEmul, PeerCloseIsEofWithTheBytesLeft) {
    Kq q;
    Pair p;
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD), 0);
    ASSERT_EQ(write(p.b, "bye", 3), 3);
    close(p.b);
    p.b = -1;
    struct kevent e[2];
    ASSERT_EQ(poll_now(q.fd, e, 2), 1);
    EXPECT_TRUE(e[0].flags & EV_EOF);
    EXPECT_EQ(e[0].data, 3);
    char buf[8];
    EXPECT_EQ(read(p.a, buf, sizeof buf), 3);
    ASSERT_EQ(poll_now(q.fd, e, 2), 1);
    EXPECT_TRUE(e[0].flags & EV_EOF);
    EXPECT_EQ(e[0].data, 0);
}

TEST(KeventEmul, OneshotIsDeletedAfterItsEvent) {
    Kq q;
    Pair p;
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD | EV_ONESHOT), 0);
    ASSERT_EQ(change(q.fd, p.a, EVFILT_WRITE, EV_ADD), 0);  // a persistent filter beside it
    ASSERT_EQ(write(p.b, "x", 1), 1);
    struct kevent e[4];
    ASSERT_EQ(poll_now(q.fd, e, 4), 2);
    ASSERT_EQ(poll_now(q.fd, e, 4), 1);  // the write filter only
    EXPECT_EQ(e[0].filter, EVFILT_WRITE);
    EXPECT_EQ(change(q.fd, p.a, EVFILT_READ, EV_DELETE), -1);
    EXPECT_EQ(errno, ENOENT);
}

TEST(KeventEmul, ClearReportsChangesOnly) {
    Kq q;
    Pair p;
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD | EV_CLEAR), 0);
    ASSERT_EQ(write(p.b, "x", 1), 1);
    struct kevent e[2];
    ASSERT_EQ(poll_now(q.fd, e, 2), 1);
    EXPECT_TRUE(e[0].flags & EV_CLEAR);
    EXPECT_EQ(poll_now(q.fd, e, 2), 0);  // nothing new, though the byte is still there
    ASSERT_EQ(write(p.b, "y", 1), 1);
    ASSERT_EQ(poll_now(q.fd, e, 2), 1);
    EXPECT_EQ(e[0].data, 2);
    // EPOLLET is per fd: a level-triggered filter beside an EV_CLEAR one is refused.
    EXPECT_EQ(change(q.fd, p.a, EVFILT_WRITE, EV_ADD), -1);
    EXPECT_EQ(errno, EINVAL);
}

TEST(KeventEmul, DisableKeepsTheFilterSilent) {
    Kq q;
    Pair p;
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD), 0);
    ASSERT_EQ(write(p.b, "x", 1), 1);
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_DISABLE), 0);
    struct kevent e[2];
    EXPECT_EQ(poll_now(q.fd, e, 2), 0);
    ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ENABLE), 0);
    EXPECT_EQ(poll_now(q.fd, e, 2), 1);
}

TEST(KeventEmul, ClosedFdsRegistrationDoesNotLeakIntoAReusedNumber) {
    Kq q;
    Pair p;
    int fd = p.a;
    ASSERT_EQ(change(q.fd, fd, EVFILT_READ, EV_ADD), 0);
    close(p.a);  // no EV_DELETE: kqueue drops the filter with the close
    Pair again;  // likely takes the same number
    int tag;
    ASSERT_EQ(change(q.fd, again.a, EVFILT_WRITE, EV_ADD, &tag), 0);
    ASSERT_EQ(write(again.b, "x", 1), 1);
    struct kevent e[4];
    ASSERT_EQ(poll_now(q.fd, e, 4), 1);
    EXPECT_EQ(e[0].filter, EVFILT_WRITE);
    EXPECT_EQ(e[0].udata, &tag);
    p.a = -1;
}

TEST(KeventEmul, TimeoutIsNotShorterThanAsked) {
    Kq q;
    struct kevent e;
    for (long ns : {1000000L, 15500000L, 30000000L}) {
        timespec ts{0, ns};
        auto t0 = Clock::now();
        EXPECT_EQ(kevent(q.fd, nullptr, 0, &e, 1, &ts), 0);
        EXPECT_GE(Clock::now() - t0, std::chrono::nanoseconds(ns));
    }
}

// One kqueue per thread, side by side (the server's --workers N).
TEST(KeventEmul, OneKqueuePerThread) {
    auto ping = [] {
        Kq q;
        Pair p;
        ASSERT_EQ(change(q.fd, p.a, EVFILT_READ, EV_ADD), 0);
        for (int i = 0; i < 200; ++i) {
            ASSERT_EQ(write(p.b, "x", 1), 1);
            struct kevent e;
            ASSERT_EQ(kevent(q.fd, nullptr, 0, &e, 1, nullptr), 1);
            char c;
            ASSERT_EQ(read(p.a, &c, 1), 1);
        }
    };
    std::thread a(ping), b(ping);
    a.join();
    b.join();
}

}  // namespace
