// Reactor backend: BSD/macOS kqueue, level-triggered (EVFILT_READ / EVFILT_WRITE without
// EV_CLEAR), registration changes batched into the next kevent() — the wait itself.
//   - backend_set queues EV_ADD / EV_DELETE entries in a changelist (a second change of the same
//     fd and filter before the wait overwrites the first); the wait submits them with the same
//     kevent() call that collects events, so a connection that goes readable → writable →
//     readable costs no syscall of its own. Only a full changelist is submitted at once, with
//     EV_RECEIPT on every entry (each change answered, no pending event drained).
//   - Errors: backend_set can refuse at once only what it sees itself (a negative fd); a batched
//     change fails later, inside kevent(). Such a failure (an EV_ERROR entry in the wait's
//     eventlist, or an EV_RECEIPT answer with data != 0 from a full-list submit) is reported as
//     the watcher being readable and writable, so its owner's next read or write meets the error
//     (EBADF: an fd closed while watched) and closes it — the reactor.hpp rule for errors. A
//     deletion carries udata = null: its error (ENOENT/EBADF — the fd was closed, which drops
//     its filters already) is dropped, and never names a watcher that may be freed by then.
//   - No EV_CLEAR: the server loop reads once per readiness (one 64 KiB read, 64 accepts) and
//     relies on being told again while bytes remain. EV_CLEAR (edge) would leave them unread
//     until more came; and level-triggered kqueue filters need no re-arming anyway (EV_ADD
//     stays until EV_DELETE), so EV_CLEAR would save nothing here.
//   - EV_EOF (the peer closed, or the socket failed) is reported as both, like EPOLLHUP.
//   - Timers: no EVFILT_TIMER. The reactor keeps its timers (a multimap) and passes the nearest
//     deadline as the wait's timeout, which kevent() takes as a timespec to the nanosecond —
//     exactly the EVFILT_TIMER's effect for one deadline, without a kernel timer per Wait effect
//     or a changelist entry per arm/disarm (libevent and Redis's ae do the same).
//   - kqueue drops an fd's filters when it is closed, but the reactor removes (mask 0) before
//     close() anyway; the EV_DELETE then goes out with the next wait, after the close: it finds
//     nothing (ENOENT or EBADF, ignored) unless the fd number was reused and re-added in between,
//     in which case the later EV_ADD overwrote it in the changelist.
// FreeBSD and macOS (<sys/event.h>). On Linux it is built against tests/kqueue_emul, a test-only
// kevent emulation over epoll, for verify only.
#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "reactor.hpp"

namespace concbench {

namespace {
constexpr int kMaxChanges = 64;  // queued registration changes; a full list is submitted at once
constexpr int kMaxEvents = 256;
}  // namespace

struct BackendState {
    int kq;
    int nchanges = 0;
    struct kevent changes[kMaxChanges];
    struct kevent events[kMaxEvents];
    std::vector<Watcher*> failed;  // a full-list submit refused their change: reported next wait
};

BackendState* backend_create() {
    int kq = kqueue();
    if (kq < 0) return nullptr;
    fcntl(kq, F_SETFD, FD_CLOEXEC);
    auto* st = new BackendState;
    st->kq = kq;
    return st;
}

void backend_free(BackendState* st) {
    close(st->kq);
    delete st;
}

namespace {

// Submits the changelist now, each entry answered (EV_RECEIPT) and no event drained.
void submit_changes(BackendState* st) {
    if (st->nchanges == 0) return;
    struct kevent answers[kMaxChanges];
    for (int i = 0; i < st->nchanges; ++i) st->changes[i].flags |= EV_RECEIPT;
    const timespec zero{0, 0};
    int n = kevent(st->kq, st->changes, st->nchanges, answers, kMaxChanges, &zero);
    if (n < 0) {  // the whole call failed: every addition counts as refused
        for (int i = 0; i < st->nchanges; ++i)
            if (st->changes[i].udata) st->failed.push_back(static_cast<Watcher*>(st->changes[i].udata));
    }
    for (int i = 0; i < n; ++i)
        if ((answers[i].flags & EV_ERROR) && answers[i].data != 0 && answers[i].udata)
            st->failed.push_back(static_cast<Watcher*>(answers[i].udata));
    st->nchanges = 0;
}

// Queues one change; a later change of the same fd and filter replaces an unsubmitted one.
void queue_change(BackendState* st, int fd, short filter, bool add, Watcher* w) {
    const unsigned short flags = add ? EV_ADD : EV_DELETE;
    void* udata = add ? w : nullptr;
    for (int i = 0; i < st->nchanges; ++i) {
        struct kevent& c = st->changes[i];
        if (c.ident == static_cast<uintptr_t>(fd) && c.filter == filter) {
            EV_SET(&c, fd, filter, flags, 0, 0, udata);
            return;
        }
    }
    if (st->nchanges == kMaxChanges) submit_changes(st);
    EV_SET(&st->changes[st->nchanges], fd, filter, flags, 0, 0, udata);
    ++st->nchanges;
}

}  // namespace

int backend_set(BackendState* st, Watcher* w, int mask) {
    if (w->fd < 0) return -EBADF;
    if ((w->mask ^ mask) & kReadable) queue_change(st, w->fd, EVFILT_READ, mask & kReadable, w);
    if ((w->mask ^ mask) & kWritable) queue_change(st, w->fd, EVFILT_WRITE, mask & kWritable, w);
    if (mask == 0) st->failed.erase(std::remove(st->failed.begin(), st->failed.end(), w), st->failed.end());
    return 0;
}

int backend_poll(BackendState* st, long long timeout_ns, Fired* out, int max) {
    if (max > kMaxEvents) max = kMaxEvents;
    int k = 0;
    while (!st->failed.empty() && k < max) {
        out[k++] = Fired{st->failed.back(), kReadable | kWritable};
        st->failed.pop_back();
    }
    if (k > 0) return k;
    // A change that fails takes an eventlist entry; with no room kevent() would fail and stop.
    if (st->nchanges > max) submit_changes(st);
    timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
    int n = kevent(st->kq, st->changes, st->nchanges, st->events, max, timeout_ns < 0 ? nullptr : &ts);
    if (n < 0) {
        // EINTR: every change was applied (kqueue(2)); anything else: submit them again one by
        // one, answered — EV_ADD and EV_DELETE are idempotent here. The caller loops.
        if (errno != EINTR) submit_changes(st);
        st->nchanges = 0;
        return 0;
    }
    st->nchanges = 0;
    for (int i = 0; i < n; ++i) {
        const struct kevent& e = st->events[i];
        auto* w = static_cast<Watcher*>(e.udata);
        int ready;
        if (e.flags & EV_ERROR) {
            if (!w || e.data == 0) continue;  // a deletion that found nothing: the goal anyway
            ready = kReadable | kWritable;    // a refused addition: the owner's I/O sees why
        } else if (e.flags & EV_EOF) {
            ready = kReadable | kWritable;
        } else {
            ready = e.filter == EVFILT_READ ? kReadable : kWritable;
        }
        // Each filter comes back as its own event: a watcher of both gets them merged.
        if (w->mask == (kReadable | kWritable)) {
            auto same = std::find_if(out, out + k, [w](const Fired& f) { return f.w == w; });
            if (same != out + k) {
                same->ready |= ready;
                continue;
            }
        }
        out[k++] = Fired{w, ready};
    }
    return k;
}

const char* backend_name() { return "kqueue"; }

}  // namespace concbench
