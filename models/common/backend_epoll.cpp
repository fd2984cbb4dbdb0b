// Reactor backend: Linux epoll, level-triggered (the same semantics as the poll and select
// backends, so one server loop serves all three).
#include <errno.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "reactor.hpp"

namespace concbench {

struct BackendState {
    int epfd;
    epoll_event events[256];
};

BackendState* backend_create() {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return nullptr;
    return new BackendState{fd, {}};
}

void backend_free(BackendState* st) {
    close(st->epfd);
    delete st;
}

int backend_set(BackendState* st, Watcher* w, int mask) {
    epoll_event ev{};
    ev.events = (mask & kReadable ? uint32_t(EPOLLIN) : 0u) | (mask & kWritable ? uint32_t(EPOLLOUT) : 0u);
    ev.data.ptr = w;
    int op = w->mask == 0 ? EPOLL_CTL_ADD : mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    return epoll_ctl(st->epfd, op, w->fd, &ev) == 0 ? 0 : -errno;
}

int backend_poll(BackendState* st, long long timeout_ns, Fired* out, int max) {
    if (max > 256) max = 256;
    int n;
    if (timeout_ns < 0) {
        n = epoll_wait(st->epfd, st->events, max, -1);
    } else {
        // epoll_pwait2 (Linux 5.11) takes a timespec, so a timer fires when it is due.
        timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
        n = epoll_pwait2(st->epfd, st->events, max, &ts, nullptr);
        if (n < 0 && errno == ENOSYS)  // an older kernel: whole milliseconds, rounded up
            n = epoll_wait(st->epfd, st->events, max, static_cast<int>((timeout_ns + 999999) / 1000000));
    }
    if (n < 0) return 0;  // EINTR: the caller loops
    for (int i = 0; i < n; ++i) {
        uint32_t e = st->events[i].events;
        int ready = (e & (EPOLLIN | EPOLLHUP | EPOLLERR) ? kReadable : 0) |
                    (e & (EPOLLOUT | EPOLLHUP | EPOLLERR) ? kWritable : 0);
        out[i] = Fired{static_cast<Watcher*>(st->events[i].data.ptr), ready};
    }
    return n;
}

const char* backend_name() { return "epoll"; }

}  // namespace concbench
