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

void Reactor::run() {
    constexpr int kBatch = 256;
    Fired fired[kBatch];
    running_ = true;
    while (running_) {
        int n = backend_poll(st_, -1, fired, kBatch);
        for (int i = 0; i < n; ++i) fired[i].w->on_ready(fired[i].ready);
    }
}

}  // namespace concbench
