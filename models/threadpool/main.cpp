// server-threadpool: a fixed pool of N worker threads fed by a bounded queue of accepted
// connections — Apache's worker MPM in miniature. The acceptor (the main thread) polls the
// listening socket and the stop signal and queues each accepted connection; a worker takes one,
// serves it with blocking read/writev until the peer leaves, then takes the next.
//   - The queue holds at most N connections. While it is full the acceptor stops accepting, so
//     further connections wait in the kernel's listen backlog, as in Apache (whose listener
//     waits for an idle worker before it accepts). A worker that frees a slot wakes the acceptor
//     through an eventfd, so a stop signal is still seen while the queue is full.
//   - A keep-alive connection holds its worker until the client leaves: with more clients than
//     workers, the extra ones wait (in the queue, then the backlog) without an answer.
//   - SIGTERM/SIGINT: stop accepting, close the queued connections, shutdown() the active ones
//     (under the lock that guards their close, so a reused fd is never touched), join the workers.
// Linux (eventfd, signalfd). Run: server-threadpool --proto http --host 127.0.0.1 --port 0 --workers 64
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "blocking.hpp"
#include "server.hpp"

using namespace concbench;

namespace {

constexpr ModelTraits kTraits{"threadpool", true, 64};

// The connections waiting for a worker, and the one each worker is serving. All under one lock:
// a worker moves a connection from `queued` to its `active` slot, and closes it, holding it.
class Pool {
public:
    Pool(std::size_t workers, std::size_t bound, int wake_fd)
        : active_(workers, -1), bound_(bound), wake_fd_(wake_fd) {}

    bool has_room() {
        std::lock_guard lk(mu_);
        return queued_.size() < bound_;
    }
    void push(int fd) {
        {
            std::lock_guard lk(mu_);
            queued_.push_back(fd);
        }
        ready_.notify_one();
    }
    // Blocks until a connection is queued (returns its fd, now worker `w`'s) or the pool stops (-1).
    int take(std::size_t w) {
        std::unique_lock lk(mu_);
        ready_.wait(lk, [&] { return stopping_ || !queued_.empty(); });
        if (stopping_) return -1;
        bool was_full = queued_.size() >= bound_;
        int fd = queued_.front();
        queued_.pop_front();
        active_[w] = fd;
        if (was_full) {  // the acceptor may be waiting for room
            uint64_t one = 1;
            (void)!write(wake_fd_, &one, sizeof one);
        }
        return fd;
    }
    void release(std::size_t w) {
        std::lock_guard lk(mu_);
        close(active_[w]);
        active_[w] = -1;
    }
    // Closes what is queued, unblocks every worker (their connections are shut down, idle
    // workers are woken) so that they return from take().
    void stop() {
        {
            std::lock_guard lk(mu_);
            stopping_ = true;
            for (int fd : queued_) close(fd);
            queued_.clear();
            for (int fd : active_)
                if (fd >= 0) shutdown(fd, SHUT_RDWR);
        }
        ready_.notify_all();
    }

private:
    std::mutex mu_;
    std::condition_variable ready_;
    std::deque<int> queued_;
    std::vector<int> active_;  // per worker: the fd it serves, or -1
    std::size_t bound_;
    int wake_fd_;
    bool stopping_ = false;
};

void worker(Pool& pool, std::size_t w, const ServerOptions& opts, const ServerIdentity& id) {
    for (int fd; (fd = pool.take(w)) >= 0;) {
        serve_blocking(fd, opts, id);
        pool.release(w);
    }
}

}  // namespace

int main(int argc, char** argv) {
    ServerOptions opts = parse_options(argc, argv, kTraits);
    ServerIdentity id = identity(kTraits);
    int sigfd = stop_signal_fd();  // before any thread starts: they inherit the blocked mask
    int lfd = listen_socket(opts);
    int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0) fatal("eventfd: %s", strerror(errno));

    auto workers = static_cast<std::size_t>(opts.workers);
    Pool pool(workers, workers, wake_fd);
    std::vector<std::thread> threads;
    threads.reserve(workers);
    try {
        for (std::size_t w = 0; w < workers; ++w)
            threads.emplace_back(worker, std::ref(pool), w, std::cref(opts), std::cref(id));
    } catch (const std::system_error& e) {
        fatal("cannot start worker thread %zu of %zu: %s", threads.size() + 1, workers, e.what());
    }
    announce_listening(lfd);

    for (;;) {
        // While the queue is full, wait for room instead of the listening socket: new
        // connections stay in the kernel backlog until a worker frees a slot.
        bool room = pool.has_room();
        pollfd pfd[2] = {{sigfd, POLLIN, 0}, {room ? lfd : wake_fd, POLLIN, 0}};
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) fatal("poll: %s", strerror(errno));
        if (pfd[0].revents) break;  // SIGTERM or SIGINT
        if (!(pfd[1].revents & POLLIN)) continue;
        if (!room) {
            uint64_t n;
            (void)!read(wake_fd, &n, sizeof n);
            continue;
        }
        int fd = accept_connection(lfd, false);
        if (fd >= 0) pool.push(fd);
    }
    close(lfd);
    pool.stop();
    for (auto& t : threads) t.join();
    return 0;
}
