// loadgen's load thread: connections, requests and answers on one epoll loop (see
// loadgen_worker.hpp for the technique).
#include "loadgen_worker.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace concbench::loadgen_detail {
namespace {

// llhttp callbacks reach the workload through the thread (settings are static and shared).
thread_local const Workload* tl_workload = nullptr;
thread_local bool tl_check_body = true;

int on_headers_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    if (p->status_code != tl_workload->expected_status) c->flags |= kStatusBad;
    return 0;
}

int on_body(llhttp_t* p, const char* at, std::size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (tl_check_body && !(c->flags & kBodyBad) && !tl_workload->body_ok(c->body, std::string_view(at, n)))
        c->flags |= kBodyBad;
    c->body += n;
    return 0;
}

int on_message_complete(llhttp_t* p) {
    static_cast<Conn*>(p->data)->flags |= kDoneFlag;
    return HPE_PAUSED;  // stop at the answer's end: the next bytes belong to the next answer
}

const llhttp_settings_t* http_settings() {
    static const llhttp_settings_t settings = [] {
        llhttp_settings_t s;
        llhttp_settings_init(&s);
        s.on_headers_complete = on_headers_complete;
        s.on_body = on_body;
        s.on_message_complete = on_message_complete;
        return s;
    }();
    return &settings;
}

}  // namespace

void Worker::run() {
    tl_workload = &wl_;
    tl_check_body = sh_.spec.check_body;
    setup_thread();
    if (!fatal.empty()) {
        sh_.ready.fetch_add(1);
        sh_.checked.fetch_add(1);
        return;
    }
    if (open_) prctl(PR_SET_TIMERSLACK, 1UL);  // wake at the due time, not 50 µs after it
    uint64_t now = now_ns(), last_scan = now;
    open_pending(now);
    epoll_event events[kMaxEvents];
    for (;;) {
        const int phase = sh_.phase.load(std::memory_order_acquire);
        if (phase != phase_) on_phase(phase, now_ns());
        if (phase_ == kDone) break;
        int n;
        if (open_ && sending() && !heap_.empty()) {
            const uint64_t t = now_ns(), due = heap_.top().first;
            const uint64_t wait = due > t ? std::min<uint64_t>(due - t, kPollMs * 1'000'000ull) : 0;
            timespec ts{time_t(wait / 1'000'000'000), long(wait % 1'000'000'000)};
            n = epoll_pwait2(ep_, events, kMaxEvents, &ts, nullptr);
        } else {
            n = epoll_wait(ep_, events, kMaxEvents, kPollMs);
        }
        for (int i = 0; i < n; ++i) dispatch(conns_[events[i].data.u32], events[i].events);
        now = now_ns();
        if (open_ && sending()) run_heap(now);
        if (now - last_scan >= kScanNs) {
            scan(now);
            last_scan = now;
        }
        if (!setup_done_) {
            open_pending(now);
            finish_setup();
        }
        if (checking_ && !check_acked_) {
            bool busy = false;
            for (const Conn& c : conns_) busy |= c.idler && c.st == St::busy && !c.priming;
            if (!busy) {
                check_acked_ = true;
                sh_.checked.fetch_add(1, std::memory_order_release);
            }
        }
    }
    if (!setup_done_)  // stopped during setup: report what was established by then
        for (const Conn& c : conns_) established += counts_established(c);
    close_all();
}

void Worker::setup_thread() {
    const auto& cpus = sh_.spec.cpus;
    if (!cpus.empty()) {
        const int cpu = cpus[std::size_t(index_) % cpus.size()];
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (cpu < 0 || cpu >= CPU_SETSIZE || sched_setaffinity(0, sizeof set, &set) != 0)
            fatal = "cannot pin client thread " + std::to_string(index_) + " to CPU " +
                    std::to_string(cpu) + ": " + std::strerror(cpu < 0 ? EINVAL : errno);
    }
    if (fatal.empty() && (ep_ = epoll_create1(EPOLL_CLOEXEC)) < 0)
        fatal = std::string("epoll_create1: ") + std::strerror(errno);
}

// Set-up opens connections at most kMaxConnecting at a time, so 10,000 connects do not overrun
// the server's listen backlog (a dropped SYN costs a one-second retransmission). Once the primer
// is over (the server stopped taking connections up, or its time ran out) the connections not
// opened yet are left out: a server whose pool and backlog are full would only time them out.
void Worker::open_pending(uint64_t now) {
    if (sh_.primer_over.load(std::memory_order_relaxed)) {
        for (; open_cursor_ < conns_.size(); ++open_cursor_) {
            Conn& c = conns_[open_cursor_];
            c.st = St::unused;
            ++(c.idler ? idle_not_opened : not_opened);
        }
        return;
    }
    while (open_cursor_ < conns_.size() && connecting_ < kMaxConnecting) {
        Conn& c = conns_[open_cursor_++];
        open_conn(c, now);
        if (c.st == St::connecting) ++connecting_;
    }
}

// Setup ends once every connection has been opened and none is still connecting (each ends
// established or failed), every idle connection has had its first answer, and the primer is
// over (every active connection answered once, or the calling thread ended it).
void Worker::finish_setup() {
    if (open_cursor_ < conns_.size()) return;
    const bool primer_over = sh_.primer_over.load(std::memory_order_acquire);
    for (const Conn& c : conns_)
        if (c.st == St::connecting || (c.priming && !primer_over)) return;
    for (const Conn& c : conns_) established += counts_established(c);
    setup_done_ = true;
    sh_.ready.fetch_add(1, std::memory_order_release);
}

void Worker::on_phase(int phase, uint64_t now) {
    if (phase >= kWarmup && phase < kCheck && !loading_) {  // start the load
        loading_ = true;
        start_ns_ = sh_.load_start_ns.load(std::memory_order_acquire);
        // A primer request still unanswered (the server has not taken its connection up yet)
        // waits on: its time-out runs from the load's start, not from set-up, so a long primer
        // (10,000 forks) does not end in every such connection timing out at once.
        for (Conn& c : conns_)
            if (c.priming && !c.idler && c.inflight > 0) ring_sent(c, 0) = now;
        for (Conn& c : conns_) {
            if (c.idler || c.st != St::ready) continue;
            if (open_) schedule(c, now);
            else queue_requests(c, keep_alive_ ? pipeline_ : 1, now, now);
        }
    }
    if (phase == kMeasure && !recording_) {  // the window opens: count from zero
        std::fill(std::begin(errors), std::end(errors), 0);
        hist.reset();
        hist_uncorrected.reset();
        requests = sent = 0;
        for (Conn& c : conns_) c.done = 0;
        open_ns_ = sh_.open_ns.load(std::memory_order_acquire);
        cur_sec_ = 0;
        sec_hist_.reset();
        recording_ = true;
        cpu_at_open_ = thread_cpu_s();
    }
    if (phase >= kCheck && recording_) {  // the window closes
        cpu_s = thread_cpu_s() - cpu_at_open_;
        closed_ns = now;
        flush_second();
        for (Conn& c : conns_) {
            if (c.idler || c.st == St::unused || c.st == St::pending) continue;
            per_conn.push_back(c.done);
            if (c.inflight > 0 && now > ring_sent(c, 0))
                oldest_pending_ns = std::max(oldest_pending_ns, now - ring_sent(c, 0));
        }
        recording_ = false;
    }
    if (phase == kCheck && !checking_) {  // active load stops; idle connections ask once more
        checking_ = true;
        for (Conn& c : conns_) {
            if (c.idler && c.st == St::ready) queue_requests(c, 1, now, now);
            if (c.idler && c.priming) {  // never answered its first request: it was never held
                close_conn(c);
                c.priming = false;
                c.st = St::unused;
            }
        }
    }
    phase_ = phase;
}

void Worker::dispatch(Conn& c, uint32_t events) {
    switch (c.st) {
    case St::connecting:
        finish_connect(c, now_ns());
        break;
    case St::ready:  // nothing is expected on a connection with nothing in flight
        read_answers(c, events);
        break;
    case St::busy:
        if ((events & EPOLLOUT) && c.out_pending > 0 && !flush_out(c)) break;
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) read_answers(c, events);
        break;
    default:
        break;
    }
}

void Worker::scan(uint64_t now) {
    // (A time may be a little after `now`: a connection replaced during this iteration.)
    for (Conn& c : conns_) {
        if (c.st == St::connecting && now > c.t_conn + connect_timeout_ns_)
            connect_failed(c, ETIMEDOUT);
        else if (c.st == St::busy && c.inflight > 0 && now > ring_sent(c, 0) + request_timeout_ns_ &&
                 !(c.priming && !setup_done_))  // the primer has its own end
            fail(c, kTimeout, now);
        else if (c.st == St::down && sending()) {
            if (open_ && !keep_alive_) {
                c.st = St::parked;
                schedule(c, now);
            } else {
                open_conn(c, now);
            }
        }
    }
}

// Open loop: every connection whose due time has come sends (or opens its connection).
void Worker::run_heap(uint64_t now) {
    while (!heap_.empty() && heap_.top().first <= now) {
        Conn& c = conns_[heap_.top().second];
        heap_.pop();
        c.in_heap = false;
        schedule(c, now);
    }
}

void Worker::close_all() {
    for (Conn& c : conns_) close_conn(c);
    if (ep_ >= 0) close(ep_);
    ep_ = -1;
}

// ---- connections (net.c) -------------------------------------------------------------------------

void Worker::set_events(Conn& c, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = uint32_t(idx(c));
    epoll_ctl(ep_, op, c.fd, &ev);
}

// `due`: the intended time of the request a per-request connection carries (0: now).
void Worker::open_conn(Conn& c, uint64_t now, uint64_t due) {
    const Target& t = sh_.target;
    c.t_conn = now;
    c.t_due = due ? due : now;
    c.inflight = c.head = 0;
    c.out_pending = c.out_off = 0;
    c.fd = socket(t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return connect_failed(c, errno);
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (wl_.proto == Proto::http) {
        llhttp_init(&c.http, HTTP_RESPONSE, http_settings());
        c.http.data = &c;
    }
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&t.addr), t.len) == 0) {
        set_events(c, kIn, EPOLL_CTL_ADD);
        return established_conn(c, now);
    }
    if (errno != EINPROGRESS) return connect_failed(c, errno);
    c.st = St::connecting;
    c.out_armed = true;
    set_events(c, EPOLLOUT, EPOLL_CTL_ADD);
}

void Worker::finish_connect(Conn& c, uint64_t now) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return connect_failed(c, err);
    if (!setup_done_) --connecting_;
    c.out_armed = false;
    set_events(c, kIn, EPOLL_CTL_MOD);
    established_conn(c, now);
}

void Worker::connect_failed(Conn& c, int err) {
    if (c.st == St::connecting && !setup_done_) --connecting_;
    close_conn(c);
    connect_error = std::strerror(err);
    if (!setup_done_) {  // a connection of the initial set: left out
        if (!c.idler) ++setup_failures;
        c.st = St::unused;
    } else if (c.idler) {
        c.st = St::finished;
    } else {
        ++errors[kConnect];
        if (recording_) ++sec_errors[sec_of(now_ns())];
        c.st = St::down;
    }
}

void Worker::established_conn(Conn& c, uint64_t now) {
    c.st = St::ready;
    if (c.idler) {  // its one request before the load
        if (!setup_done_) {
            c.priming = true;
            queue_requests(c, 1, now, now);
        }
        return;
    }
    if (!setup_done_ && primer_ && !sh_.primer_over.load(std::memory_order_relaxed)) {
        c.priming = true;  // the primer: one request, answered before the load starts
        return queue_requests(c, 1, now, now);
    }
    if (!sending()) return;
    if (!keep_alive_) return queue_requests(c, 1, c.t_due, c.t_conn);  // timed from connect()
    if (open_) return schedule(c, now);
    queue_requests(c, pipeline_, now, now);
}

void Worker::close_conn(Conn& c) {
    if (c.fd >= 0) close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    c.out_armed = false;
}

// ---- requests and answers ------------------------------------------------------------------------

// Puts n requests in flight (intended time `due`, sent at `now`) and writes them.
void Worker::queue_requests(Conn& c, int n, uint64_t due, uint64_t now) {
    n = std::min(n, pipeline_ - int(c.inflight));
    if (n <= 0) return;
    for (int k = 0; k < n; ++k) {
        ring_sent(c, c.inflight) = now;
        if (open_) ring_due(c, c.inflight) = due;
        ++c.inflight;
    }
    c.st = St::busy;
    c.out_pending += uint32_t(n) * req_len_;
    if (recording_) {
        sent += uint64_t(n);
        sec_sent[sec_of(now)] += uint64_t(n);
    }
    flush_out(c);
}

// Writes what is pending; arms EPOLLOUT while the socket is full. False: the connection failed.
bool Worker::flush_out(Conn& c) {
    while (c.out_pending > 0) {
        const ssize_t n = send(c.fd, sendbuf_.data() + c.out_off, c.out_pending, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_pending -= uint32_t(n);
            c.out_off = uint32_t((c.out_off + uint64_t(n)) % req_len_);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!c.out_armed) set_events(c, kIn | EPOLLOUT, EPOLL_CTL_MOD);
            c.out_armed = true;
            return true;
        } else if (errno != EINTR) {
            fail(c, errno == EPIPE ? kClosed : kReset, now_ns());
            return false;
        }
    }
    if (c.out_armed) set_events(c, kIn, EPOLL_CTL_MOD);
    c.out_armed = false;
    return true;
}

// Open loop: sends every request of `c` that is due (as far as the pipeline allows), and puts
// the connection in the heap for its next due time.
void Worker::schedule(Conn& c, uint64_t now) {
    const int n = sh_.spec.connections;
    while (!c.in_heap && sending()) {
        const bool can_send = keep_alive_ ? (c.st == St::ready || c.st == St::busy) && c.inflight < pipeline_
                                          : c.st == St::parked || c.st == St::ready;
        if (!can_send) return;
        const uint64_t due = intended_send_ns(start_ns_, sh_.spec.rate, n, int(c.gid), c.next_k);
        if (due > now) {
            heap_.emplace(due, uint32_t(idx(c)));
            c.in_heap = true;
            return;
        }
        ++c.next_k;
        if (c.st == St::parked)
            open_conn(c, now, due);  // its request leaves once connected
        else
            queue_requests(c, 1, due, now);
    }
}

void Worker::read_answers(Conn& c, uint32_t events) {
    // Edge-triggered: read until a read leaves the socket empty; when the peer has closed or
    // failed, on until recv() says so (0 or an error).
    const bool to_the_end = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    for (;;) {
        const ssize_t n = recv(c.fd, buf_.get(), kReadBufBytes, 0);
        if (!read_some(c, n) || (std::size_t(n) < kReadBufBytes && !to_the_end)) return;
    }
}

// Handles one recv() result. False: stop reading this connection now (empty, failed, closed).
bool Worker::read_some(Conn& c, ssize_t n) {
    const uint64_t now = now_ns();
    if (n < 0) {
        if (errno == EINTR) return true;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
        fail(c, kReset, now);
        return false;
    }
    if (c.inflight == 0) {  // data or EOF on a connection nobody has asked anything
        fail(c, n == 0 ? kClosed : kBadResponse, now);
        return false;
    }
    if (n == 0) {
        // An HTTP answer delimited by the end of the connection ends here; anything else is cut.
        if (wl_.proto == Proto::http && c.rx > 0 && c.inflight == 1) {
            llhttp_finish(&c.http);
            if (c.flags & kDoneFlag) {
                complete_one(c, now);  // closes (or fails) the connection either way
                return false;
            }
        }
        fail(c, c.rx == 0 ? kClosed : kShortRead, now);
        return false;
    }
    int completed = 0;
    const bool ok = wl_.proto == Proto::http ? feed_http(c, buf_.get(), std::size_t(n), now, completed)
                                             : feed_echo(c, buf_.get(), std::size_t(n), now, completed);
    if (ok) after_answers(c, completed, now);
    return ok && c.fd >= 0;
}

// False: the connection failed (and was replaced).
bool Worker::feed_http(Conn& c, const char* data, std::size_t n, uint64_t now, int& completed) {
    while (n > 0) {
        if (c.inflight == 0) {  // bytes beyond the answers asked for
            fail(c, kBadResponse, now);
            return false;
        }
        c.rx += 1;  // (only "something was read" matters for the answer in progress)
        const llhttp_errno_t err = llhttp_execute(&c.http, data, n);
        if (err == HPE_OK) return true;  // the answer continues in a later read
        if (err != HPE_PAUSED) {
            fail(c, kBadResponse, now);
            return false;
        }
        const char* pos = llhttp_get_error_pos(&c.http);
        n -= std::size_t(pos - data);
        data = pos;
        if (!complete_one(c, now)) return false;  // failed, or closed (later bytes unasked)
        ++completed;
        llhttp_resume(&c.http);
    }
    return true;
}

bool Worker::feed_echo(Conn& c, const char* data, std::size_t n, uint64_t now, int& completed) {
    const std::size_t msg = wl_.expected_body;
    while (n > 0) {
        if (c.inflight == 0) {
            fail(c, kBadBody, now);
            return false;
        }
        const std::size_t take = std::min<std::size_t>(n, msg - c.body);
        if (!wl_.body_ok(c.body, std::string_view(data, take))) {
            fail(c, kBadBody, now);
            return false;
        }
        c.body += take;
        c.rx += take;
        data += take;
        n -= take;
        if (c.body == msg) {
            if (!complete_one(c, now)) return false;
            ++completed;
        }
    }
    return true;
}

// The oldest request's answer arrived whole: judge it and record it. False: the connection does
// not go on (the answer was wrong and the connection replaced, or the connection was closed).
bool Worker::complete_one(Conn& c, uint64_t now) {
    if (c.flags & kStatusBad) return fail(c, kBadStatus, now), false;
    if (wl_.proto == Proto::http && tl_check_body && ((c.flags & kBodyBad) || c.body != wl_.expected_body))
        return fail(c, kBadBody, now), false;
    const uint64_t t_sent = ring_sent(c, 0);
    const uint64_t t_due = open_ ? ring_due(c, 0) : t_sent;
    c.head = uint16_t((c.head + 1) % pipeline_);
    --c.inflight;
    c.flags = 0;
    c.body = c.rx = 0;
    if (c.idler) {
        if (checking_) {
            ++idle.answered_at_end;
            close_conn(c);
            c.st = St::finished;
            return false;
        }
        ++idle.established;  // answered its first request: held from now on
        c.priming = false;
        c.st = St::ready;
        sh_.last_primed_ns.store(now, std::memory_order_relaxed);  // set-up is making progress
        return true;
    }
    if (c.priming) {  // the primer's answer: the server has taken this connection up. Set-up,
        c.priming = false;  // not load: not measured, even when it comes late, in the window
        sh_.primed.fetch_add(1, std::memory_order_relaxed);
        sh_.last_primed_ns.store(now, std::memory_order_relaxed);
    } else if (recording_) {
        const uint64_t lat = now > t_due ? now - t_due : 0;
        if (open_) hist_uncorrected.record(now > t_sent ? now - t_sent : 0);
        const std::size_t s = sec_of(now);
        if (s != cur_sec_) flush_second(), cur_sec_ = s;
        sec_hist_.record(lat);  // into `hist` when the second is flushed: one record per answer
        ++sec_requests[s];
        ++requests;
        ++c.done;
    }
    const bool reuse = keep_alive_ && (wl_.proto != Proto::http || llhttp_should_keep_alive(&c.http));
    if (!reuse) {  // the workload (or the server, per HTTP) wants a new connection
        if (c.inflight > 0) {  // pipelined requests the server will not answer
            fail(c, kClosed, now);
            return false;
        }
        close_conn(c);
        replace(c, now);
        return false;
    }
    if (c.inflight == 0) c.st = St::ready;
    return true;
}

// `completed` answers were taken off a keep-alive connection: closed loop sends the next batch
// once the connection has nothing in flight, open loop sends what is due.
void Worker::after_answers(Conn& c, int completed, uint64_t now) {
    if (completed == 0 || c.idler || !sending()) return;
    if (open_) return schedule(c, now);
    // Pipelined in batches, as wrk and TechEmpower do: the next P leave together once the last
    // batch is answered (one send per batch, and the server reads them with one recv).
    if (c.inflight == 0) queue_requests(c, pipeline_, now, now);
}

// A broken connection: count it, close it, open its replacement.
void Worker::fail(Conn& c, Err kind, uint64_t now) {
    c.priming = false;
    if (c.idler) {
        const bool held = c.st == St::ready;  // it had answered before: the server dropped it
        if (!held && !checking_) c.st = St::unused;  // never held: a set-up failure
        else {
            if (held) ++idle.lost_while_idle;
            c.st = St::finished;
        }
        close_conn(c);
        c.inflight = 0;
        c.out_pending = 0;
        return;
    }
    if (!setup_done_ && c.st == St::ready) {
        // Answered by the primer, then closed while others were primed (Apache's event MPM sheds
        // idle keep-alive connections past its limit): part of the load, reopened when it starts,
        // as a connection the server closes during the load is.
        close_conn(c);
        c.inflight = 0;
        c.out_pending = 0;
        c.st = St::down;
        return;
    }
    if (!setup_done_) {
        // Lost before the load began, never answered (a server that accepts and closes what it
        // cannot serve, like select past FD_SETSIZE): left out like a failed connect, never
        // retried in a loop.
        close_conn(c);
        ++setup_closed;
        c.st = St::unused;
        connect_error = "closed by the server before the load started";
        return;
    }
    ++errors[kind];
    if (recording_) ++sec_errors[sec_of(now)];
    close_conn(c);
    c.inflight = 0;
    c.out_pending = 0;
    replace(c, now);
}

// After a closed connection: its slot opens a new one (connection per request, or a broken one
// replaced), waits for its next intended time (open loop), or stays down once sending ended.
void Worker::replace(Conn& c, uint64_t now) {
    if (!sending()) {
        c.st = St::down;
    } else if (open_ && !keep_alive_) {
        c.st = St::parked;
        schedule(c, now);
    } else {
        open_conn(c, now);
    }
}

// Index of the window's second `now` falls in; the per-second arrays grow to hold it.
std::size_t Worker::sec_of(uint64_t now) {
    const std::size_t s = now > open_ns_ ? std::size_t((now - open_ns_) / 1'000'000'000) : 0;
    if (s >= sec_requests.size()) {
        sec_requests.resize(s + 1, 0);
        sec_errors.resize(s + 1, 0);
        sec_sent.resize(s + 1, 0);
        sec_slots.resize(s + 1);
    }
    return s;
}

// The current second's histogram goes into the window's (exact min, max and mean carried) and,
// as its slots, into the series.
void Worker::flush_second() {
    if (sec_hist_.count() == 0) return;
    sec_of(open_ns_ + cur_sec_ * 1'000'000'000);  // make room
    hist.merge(sec_hist_);
    Histogram::Slots s = sec_hist_.slots();
    Histogram::Slots& into = sec_slots[cur_sec_];
    into.insert(into.end(), s.begin(), s.end());
    sec_hist_.reset();
}

}  // namespace concbench::loadgen_detail
