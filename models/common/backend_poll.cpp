// Reactor backend: POSIX poll(2), level-triggered; the whole pollfd array goes to the kernel and
// is scanned on every wait (O(n) in watched fds, however few are ready).
#include <errno.h>
#include <poll.h>
#include <time.h>

#include <unordered_map>
#include <vector>

#include "reactor.hpp"

namespace concbench {

struct BackendState {
    std::vector<pollfd> fds;             // compact: what poll() gets
    std::vector<Watcher*> watchers;      // parallel to fds
    std::unordered_map<int, int> slot;   // fd -> index in both, for O(1) change and removal
    std::size_t next = 0;                // where the next scan starts when one wait fills `max`
};

BackendState* backend_create() { return new BackendState; }

void backend_free(BackendState* st) { delete st; }

int backend_set(BackendState* st, Watcher* w, int mask) {
    short events = static_cast<short>((mask & kReadable ? POLLIN : 0) | (mask & kWritable ? POLLOUT : 0));
    if (w->mask != 0) {
        auto it = st->slot.find(w->fd);
        if (it == st->slot.end()) return -ENOENT;
        int i = it->second;
        if (mask != 0) {
            st->fds[i].events = events;
            return 0;
        }
        // Removal: the last entry moves into the hole.
        int last = static_cast<int>(st->fds.size()) - 1;
        if (i != last) {
            st->fds[i] = st->fds[last];
            st->watchers[i] = st->watchers[last];
            st->slot[st->fds[i].fd] = i;
        }
        st->fds.pop_back();
        st->watchers.pop_back();
        st->slot.erase(it);
        return 0;
    }
    if (!st->slot.emplace(w->fd, static_cast<int>(st->fds.size())).second) return -EEXIST;
    st->fds.push_back(pollfd{w->fd, events, 0});
    st->watchers.push_back(w);
    return 0;
}

int backend_poll(BackendState* st, long long timeout_ns, Fired* out, int max) {
    timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
    int n = ::ppoll(st->fds.data(), st->fds.size(), timeout_ns < 0 ? nullptr : &ts, nullptr);
    if (n <= 0) return 0;  // EINTR: the caller loops
    // Scan from where the last full batch stopped, so fds late in the array are not starved.
    std::size_t size = st->fds.size(), start = st->next < size ? st->next : 0;
    int k = 0;
    for (std::size_t j = 0; j < size && n > 0; ++j) {
        std::size_t i = start + j < size ? start + j : start + j - size;
        short r = st->fds[i].revents;
        if (r == 0) continue;
        --n;
        if (k == max) {  // more ready than the caller takes: resume here next time
            st->next = i;
            return k;
        }
        // POLLHUP/POLLERR come unasked; POLLNVAL means a watched fd was closed (an owner's bug) —
        // all three are reported as both, so the owner's next read or write sees the error.
        int ready = (r & (POLLIN | POLLHUP | POLLERR | POLLNVAL) ? kReadable : 0) |
                    (r & (POLLOUT | POLLHUP | POLLERR | POLLNVAL) ? kWritable : 0);
        out[k++] = Fired{st->watchers[i], ready};
    }
    st->next = 0;
    return k;
}

const char* backend_name() { return "poll"; }

}  // namespace concbench
