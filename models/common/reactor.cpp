// Reactor loop: portable logic over whichever backend_*.cpp the model links.
#include "reactor.hpp"

#include <cerrno>
#include <cstring>

#include "server.hpp"

namespace concbench {

Reactor::Reactor() : st_(backend_create()) {
    if (!st_) fatal("%s: cannot create the event backend: %s", backend_name(), strerror(errno));
}

Reactor::~Reactor() { backend_free(st_); }

void Reactor::set(Watcher& w, int mask) {
    if (w.mask != mask && !try_set(w, mask))
        fatal("%s: cannot watch fd %d: %s", backend_name(), w.fd, strerror(errno));
}

bool Reactor::try_set(Watcher& w, int mask) {
    if (w.mask == mask) return true;
    int rc = backend_set(st_, &w, mask);
    if (rc != 0) {
        errno = -rc;
        return false;
    }
    w.mask = mask;
    return true;
}

void Reactor::arm(Timer& t, int ms) {
    disarm(t);
    t.at_ = timers_.emplace(std::chrono::steady_clock::now() + std::chrono::milliseconds(ms), &t);
    t.armed_ = true;
}

void Reactor::disarm(Timer& t) {
    if (!t.armed_) return;
    timers_.erase(t.at_);
    t.armed_ = false;
}

// Until the earliest timer is due (-1: no timer). To the nanosecond: rounded up to a whole
// millisecond, as epoll_wait takes it, a 10 ms wait lasted 10.5 ms on average.
long long Reactor::next_timeout_ns() {
    if (timers_.empty()) return -1;
    auto left = timers_.begin()->first - std::chrono::steady_clock::now();
    if (left <= left.zero()) return 0;
    return std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
}

void Reactor::run(const std::function<void()>& after_batch) {
    constexpr int kBatch = 256;
    Fired fired[kBatch];
    running_ = true;
    while (running_) {
        int n = backend_poll(st_, next_timeout_ns(), fired, kBatch);
        for (int i = 0; i < n; ++i) fired[i].w->on_ready(fired[i].ready);
        // Due timers, in deadline order; one a callback arms now for "now" waits for the next turn.
        auto now = std::chrono::steady_clock::now();
        while (!timers_.empty() && timers_.begin()->first <= now) {
            Timer* t = timers_.begin()->second;
            timers_.erase(timers_.begin());
            t->armed_ = false;
            t->on_timer();
        }
        if (after_batch) after_batch();
    }
}

}  // namespace concbench
