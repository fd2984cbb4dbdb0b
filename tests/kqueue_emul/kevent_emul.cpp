// kevent emulation over epoll — TEST ONLY, never used for numbers (see sys/event.h beside it).
// One epoll fd per kqueue (that fd is the kqueue: close() it as usual). kqueue keys a
// registration by (ident, filter); epoll has one per fd, so an fd's READ and WRITE filters are
// merged into one epoll mask and each epoll event is split back into one kevent per filter.
//   - READ = EPOLLIN | EPOLLRDHUP, data = FIONREAD (0 where the fd has none, e.g. a listener);
//     WRITE = EPOLLOUT, data = send-buffer space for a socket (SO_SNDBUF - SIOCOUTQ), else 0;
//   - EV_EOF: READ on EPOLLRDHUP/EPOLLHUP/EPOLLERR, WRITE on EPOLLHUP/EPOLLERR. fflags stays 0:
//     reading SO_ERROR on Linux clears the error that the owner's next read should see;
//   - EV_CLEAR is EPOLLET (per fd, so both filters of an fd must agree: EINVAL otherwise);
//     EV_ONESHOT is EPOLLONESHOT, the fd re-armed with its remaining filters after each event;
//   - a closed fd's epoll registration goes with its close, as kqueue's knotes do; a registration
//     remembers its file (st_dev, st_ino) and a generation, so one left by a closed fd whose
//     number came back is dropped rather than merged into the new file's;
//   - more kevents than the eventlist holds (one epoll event can give two) wait in a queue and
//     are returned first next time, unless a change to that filter came in between.
// Thread-safe for one kqueue per thread (each kqueue has its own lock; the wait runs unlocked).
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/event.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace {

struct Filter {
    bool on = false, enabled = true, oneshot = false, clear = false;
    void* udata = nullptr;
};

struct FdRegs {
    dev_t dev;
    ino_t ino;
    uint32_t gen;
    Filter rd, wr;
    bool in_epoll = false;
    bool armed_oneshot = false;  // the epoll registration has EPOLLONESHOT: re-arm after an event
};

struct Kq {
    std::mutex m;
    std::unordered_map<int, FdRegs> fds;
    std::deque<struct kevent> queued;  // kevents that did not fit in the last eventlist
    uint32_t next_gen = 1;
};

std::mutex g_mu;
std::unordered_map<int, std::shared_ptr<Kq>> g_kqs;  // epoll fd -> its kqueue state

std::shared_ptr<Kq> find_kq(int kq) {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_kqs.find(kq);
    if (it == g_kqs.end()) return nullptr;
    if (fcntl(kq, F_GETFD) < 0) {  // closed since: its number may come back as another kqueue
        g_kqs.erase(it);
        return nullptr;
    }
    return it->second;
}

// Brings the epoll registration of `fd` in line with its filters. 0 or an errno.
int sync_epoll(int epfd, int fd, FdRegs& r) {
    uint32_t mask = 0;
    bool clear = false, oneshot = false;
    for (const Filter* f : {&r.rd, &r.wr}) {
        if (!f->on || !f->enabled) continue;
        mask |= f == &r.rd ? uint32_t(EPOLLIN | EPOLLRDHUP) : uint32_t(EPOLLOUT);
        clear = clear || f->clear;
        oneshot = oneshot || f->oneshot;
    }
    if (mask == 0) {
        if (r.in_epoll && epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr) != 0 && errno != ENOENT) return errno;
        r.in_epoll = r.armed_oneshot = false;
        return 0;
    }
    epoll_event ev{};
    ev.events = mask | (clear ? uint32_t(EPOLLET) : 0u) | (oneshot ? uint32_t(EPOLLONESHOT) : 0u);
    ev.data.u64 = uint64_t(r.gen) << 32 | uint32_t(fd);
    int rc = epoll_ctl(epfd, r.in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
    if (rc != 0 && r.in_epoll && errno == ENOENT) rc = epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    if (rc != 0) return errno;
    r.in_epoll = true;
    r.armed_oneshot = oneshot;
    return 0;
}

// Applies one change. 0 or an errno (the registration then is as it was).
int apply(Kq& q, int epfd, const struct kevent& c) {
    if (c.filter != EVFILT_READ && c.filter != EVFILT_WRITE) return EINVAL;  // TIMER etc.: not emulated
    const int fd = static_cast<int>(c.ident);
    struct stat st;
    if (c.ident > uintptr_t(INT32_MAX) || fstat(fd, &st) != 0) return EBADF;
    // A change drops a kevent of this filter still queued (kqueue: a deleted knote is not returned).
    q.queued.erase(std::remove_if(q.queued.begin(), q.queued.end(),
                                  [&](const struct kevent& k) { return int(k.ident) == fd && k.filter == c.filter; }),
                   q.queued.end());
    auto it = q.fds.find(fd);
    if (it != q.fds.end() && (it->second.dev != st.st_dev || it->second.ino != st.st_ino)) {
        q.fds.erase(it);  // left by a file closed since: its epoll registration went with it
        it = q.fds.end();
    }
    if (it == q.fds.end()) {
        if (!(c.flags & EV_ADD)) return ENOENT;
        it = q.fds.emplace(fd, FdRegs{st.st_dev, st.st_ino, q.next_gen++, {}, {}}).first;
    }
    FdRegs& r = it->second;
    Filter& f = c.filter == EVFILT_READ ? r.rd : r.wr;
    const Filter& other = c.filter == EVFILT_READ ? r.wr : r.rd;
    const Filter before = f;
    if (c.flags & EV_DELETE) {
        if (!f.on) return ENOENT;
        f = Filter{};
    } else if (c.flags & EV_ADD) {
        bool clear = (c.flags & EV_CLEAR) != 0;
        if (other.on && other.clear != clear) {  // emulation limit: EPOLLET is per fd
            if (!r.rd.on && !r.wr.on) q.fds.erase(it);
            return EINVAL;
        }
        f = Filter{true, !(c.flags & EV_DISABLE), (c.flags & EV_ONESHOT) != 0, clear, c.udata};
    } else if (c.flags & (EV_ENABLE | EV_DISABLE)) {
        if (!f.on) return ENOENT;
        f.enabled = (c.flags & EV_ENABLE) != 0;
    } else if (!f.on) {
        return ENOENT;
    }
    if (int err = sync_epoll(epfd, fd, r)) {
        f = before;
        if (!r.rd.on && !r.wr.on) q.fds.erase(it);
        return err;
    }
    if (!r.rd.on && !r.wr.on) q.fds.erase(it);
    return 0;
}

int64_t readable_bytes(int fd) {
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

int64_t writable_space(int fd) {
    int size = 0, queued = 0;
    socklen_t len = sizeof size;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) != 0 || ioctl(fd, SIOCOUTQ, &queued) != 0) return 0;
    return size > queued ? size - queued : 0;
}

// Splits one epoll event into the kevents of its fd's filters, appended to `out`.
void translate(Kq& q, int epfd, const epoll_event& e, std::deque<struct kevent>& out) {
    const int fd = static_cast<int>(e.data.u64 & 0xffffffffu);
    auto it = q.fds.find(fd);
    if (it == q.fds.end() || it->second.gen != uint32_t(e.data.u64 >> 32)) return;  // stale
    FdRegs& r = it->second;
    const uint32_t bits = e.events;
    bool rearm = r.armed_oneshot;
    for (Filter* f : {&r.rd, &r.wr}) {
        if (!f->on || !f->enabled) continue;
        const bool rd = f == &r.rd;
        if (!(bits & (rd ? uint32_t(EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR) : uint32_t(EPOLLOUT | EPOLLHUP | EPOLLERR))))
            continue;
        struct kevent k;
        const bool eof = (bits & (EPOLLHUP | EPOLLERR)) || (rd && (bits & EPOLLRDHUP));
        EV_SET(&k, uintptr_t(fd), rd ? EVFILT_READ : EVFILT_WRITE,
               (f->oneshot ? EV_ONESHOT : 0) | (f->clear ? EV_CLEAR : 0) | (eof ? EV_EOF : 0), 0,
               rd ? readable_bytes(fd) : writable_space(fd), f->udata);
        out.push_back(k);
        if (f->oneshot) {
            *f = Filter{};
            rearm = true;
        }
    }
    if (rearm) sync_epoll(epfd, fd, r);  // the remaining filters (EPOLLONESHOT disabled them all)
    if (!r.rd.on && !r.wr.on) q.fds.erase(it);
}

}  // namespace

extern "C" int kqueue(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return -1;
    std::lock_guard<std::mutex> lk(g_mu);
    g_kqs[fd] = std::make_shared<Kq>();  // replaces the state of a closed kqueue with this number
    return fd;
}

extern "C" int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist, int nevents,
                      const struct timespec* timeout) {
    std::shared_ptr<Kq> q = find_kq(kq);
    if (!q) {
        errno = EBADF;
        return -1;
    }
    if (nchanges < 0 || nevents < 0 ||
        (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000))) {
        errno = EINVAL;
        return -1;
    }
    std::unique_lock<std::mutex> lk(q->m);
    int n = 0;
    for (int i = 0; i < nchanges; ++i) {
        const struct kevent c = changelist[i];  // a copy: the lists may be one array (n <= i)
        int err = apply(*q, kq, c);
        if (!err && !(c.flags & EV_RECEIPT)) continue;
        if (n == nevents) {
            if (!err) continue;
            errno = err;  // no room to report it: fail here, the rest not applied
            return -1;
        }
        eventlist[n] = c;
        eventlist[n].flags = EV_ERROR;
        eventlist[n].data = err;
        ++n;
    }
    if (n > 0 || nevents == 0) return n;  // errors and receipts come back without waiting
    while (!q->queued.empty() && n < nevents) {
        eventlist[n++] = q->queued.front();
        q->queued.pop_front();
    }
    if (n == nevents) return n;
    epoll_event evs[256];
    const int room = std::min(nevents - n, 256);
    const struct timespec zero{0, 0};
    lk.unlock();
    int got = epoll_pwait2(kq, evs, room, n > 0 ? &zero : timeout, nullptr);
    int saved = errno;
    lk.lock();
    if (got < 0) {
        if (n > 0) return n;
        errno = saved;
        return -1;
    }
    std::deque<struct kevent> out;
    for (int i = 0; i < got; ++i) translate(*q, kq, evs[i], out);
    while (!out.empty() && n < nevents) {
        eventlist[n++] = out.front();
        out.pop_front();
    }
    q->queued.insert(q->queued.end(), out.begin(), out.end());
    return n;
}
