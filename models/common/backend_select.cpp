// Reactor backend: POSIX select(2), level-triggered; fd_sets kept incrementally, copied for each
// wait (select overwrites them), and scanned from 0 to the highest fd (O(highest fd) per wait).
#include <errno.h>
#include <sys/select.h>

#include "reactor.hpp"

namespace concbench {

struct BackendState {
    fd_set rd, wr;                     // what we watch; select() gets copies
    fd_set rd_out, wr_out;             // what the last wait reported
    int maxfd = -1;                    // highest watched fd
    int next = 0;                      // where the next scan starts when one wait fills `max`
    Watcher* watchers[FD_SETSIZE];     // fd -> watcher; fds are < FD_SETSIZE by construction
};

BackendState* backend_create() {
    auto* st = new BackendState;
    FD_ZERO(&st->rd);
    FD_ZERO(&st->wr);
    for (auto& w : st->watchers) w = nullptr;
    return st;
}

void backend_free(BackendState* st) { delete st; }

int backend_set(BackendState* st, Watcher* w, int mask) {
    int fd = w->fd;
    // An fd_set is a FD_SETSIZE-bit (1024) bitmap: FD_SET past it writes out of bounds (glibc's
    // _FORTIFY_SOURCE aborts), so such an fd is refused and its connection must be turned away.
    if (fd < 0 || fd >= FD_SETSIZE) return -EMFILE;
    if (w->mask == 0 && st->watchers[fd]) return -EEXIST;
    if (mask & kReadable) FD_SET(fd, &st->rd);
    else FD_CLR(fd, &st->rd);
    if (mask & kWritable) FD_SET(fd, &st->wr);
    else FD_CLR(fd, &st->wr);
    st->watchers[fd] = mask ? w : nullptr;
    if (mask && fd > st->maxfd) st->maxfd = fd;
    while (st->maxfd >= 0 && !st->watchers[st->maxfd]) --st->maxfd;
    return 0;
}

int backend_poll(BackendState* st, long long timeout_ns, Fired* out, int max) {
    st->rd_out = st->rd;
    st->wr_out = st->wr;
    const long long us = (timeout_ns + 999) / 1000;  // select's timeval: microseconds, rounded up
    timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
    // Errors and hang-ups show up as readable (and writable if asked): read/write then sees
    // them. exceptfds is for TCP urgent data only, not errors, so it is not used.
    int n = ::select(st->maxfd + 1, &st->rd_out, &st->wr_out, nullptr, timeout_ns < 0 ? nullptr : &tv);
    if (n <= 0) return 0;  // EINTR: the caller loops
    // Scan from where the last full batch stopped, so high fds are not starved.
    int span = st->maxfd + 1, start = st->next < span ? st->next : 0, k = 0;
    for (int j = 0; j < span && n > 0; ++j) {
        int fd = start + j < span ? start + j : start + j - span;
        int ready = (FD_ISSET(fd, &st->rd_out) ? kReadable : 0) | (FD_ISSET(fd, &st->wr_out) ? kWritable : 0);
        if (!ready) continue;
        n -= (ready & kReadable ? 1 : 0) + (ready & kWritable ? 1 : 0);  // select counts bits
        if (k == max) {  // more ready than the caller takes: resume here next time
            st->next = fd;
            return k;
        }
        out[k++] = Fired{st->watchers[fd], ready};
    }
    st->next = 0;
    return k;
}

const char* backend_name() { return "select"; }

}  // namespace concbench
