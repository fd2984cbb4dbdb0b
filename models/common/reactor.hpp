// Reactor: a readiness event loop with one small interface and one small file per kernel
// backend (backend_epoll.cpp, backend_poll.cpp, backend_select.cpp), each defining the same
// backend_* functions — the shape of Redis's ae. A model links exactly one backend library.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>

namespace concbench {

enum : int { kReadable = 1, kWritable = 2 };

// Something registered with the reactor: a socket plus what to do when it is ready.
struct Watcher {
    int fd = -1;
    int mask = 0;  // what it is registered for now (kReadable | kWritable)
    // `ready`: kReadable / kWritable; an error or hang-up is reported as both, so the owner's
    // next read or write sees it.
    virtual void on_ready(int ready) = 0;

protected:
    ~Watcher() = default;
};

// A one-shot timer (the Wait effect): armed for a delay, fired once by the loop, or disarmed.
struct Timer {
    virtual void on_timer() = 0;

protected:
    ~Timer() = default;

private:
    friend class Reactor;
    bool armed_ = false;
    std::multimap<std::chrono::steady_clock::time_point, Timer*>::iterator at_;
};

// --- the backend interface: every backend_<name>.cpp defines exactly these -------------------
struct BackendState;
struct Fired {
    Watcher* w;
    int ready;
};
BackendState* backend_create();
void backend_free(BackendState* st);
// Changes `w`'s registration from w->mask to `mask` (0 removes it). Returns 0 or -errno, and on
// an error leaves the registration as it was. -EMFILE: this backend cannot watch an fd that large
// (select: FD_SETSIZE).
int backend_set(BackendState* st, Watcher* w, int mask);
// Waits up to timeout_ns nanoseconds (-1: forever) and fills at most `max` fired watchers;
// returns how many. Timers fire from this timeout, so it is kept to the nanosecond (epoll_pwait2,
// ppoll) or microsecond (select), not rounded up to epoll_wait's millisecond.
int backend_poll(BackendState* st, long long timeout_ns, Fired* out, int max);
const char* backend_name();  // "epoll", recorded in results

// --- the loop ---------------------------------------------------------------------------------
class Reactor {
public:
    Reactor();
    ~Reactor();
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;

    // Registers, re-registers or (mask 0) removes `w`. Call with mask 0 before closing w->fd.
    // A failure is fatal: for registrations that cannot fail short of a bug.
    void set(Watcher& w, int mask);
    // The same, but a failure is survivable: returns false with errno set and w unchanged (a new
    // connection the backend cannot watch — select past FD_SETSIZE, epoll out of memory).
    bool try_set(Watcher& w, int mask);
    // Fires `t` once, `ms` from now (re-arming moves it). disarm() of an unarmed timer is a no-op.
    void arm(Timer& t, int ms);
    void disarm(Timer& t);
    // Runs until stop(): waits for readiness or the next timer, calls each ready watcher, fires
    // due timers, then `after_batch` (where a model frees what its callbacks retired, since a
    // callback may close another watcher that is still in the same batch).
    void run(const std::function<void()>& after_batch = {});
    void stop() { running_ = false; }
    bool running() const { return running_; }
    const char* backend() const { return backend_name(); }

private:
    long long next_timeout_ns();
    BackendState* st_;
    bool running_ = false;
    std::multimap<std::chrono::steady_clock::time_point, Timer*> timers_;
};

}  // namespace concbench
