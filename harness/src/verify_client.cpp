// verify's client: Conn, a non-blocking loopback connection whose every wait is bounded by a
// deadline (llhttp parses every answer), and the helpers the cases build requests and checks from.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "concbench/outbox.hpp"
#include "concbench/workloads.hpp"
#include "verify_case.hpp"

using namespace std::chrono;

namespace concbench::verify_detail {

// ---------------------------------------------------------------------------------------- Conn

Conn::Conn(uint16_t port, milliseconds timeout) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        error_ = fmt::format("socket: {}", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
        error_ = fmt::format("connect: {}", strerror(errno));
        close_now();
        return;
    }
    pollfd p{fd_, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) error_ = "connect: timed out";
    else if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
        error_ = fmt::format("connect: {}", strerror(soerr));
    if (!error_.empty()) close_now();
    llhttp_settings_init(&settings_);
    settings_.on_header_field = on_header_field;
    settings_.on_header_value = on_header_value;
    settings_.on_body = on_body;
    settings_.on_message_complete = on_message_complete;
    llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
    parser_.data = this;
}

void Conn::close_now() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
}

void Conn::reset() {
    if (fd_ < 0) return;
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close_now();
}

void Conn::shutdown_write() { ::shutdown(fd_, SHUT_WR); }

void Conn::send(std::string_view s, milliseconds timeout) {
    need(fd_ >= 0, "send on a connection that failed: {}", error_);
    auto deadline = Clock::now() + timeout;
    while (!s.empty()) {
        ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
        if (n > 0) {
            s.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        need(n < 0 && errno == EAGAIN, "send: {}", n == 0 ? "wrote nothing" : strerror(errno));
        need(wait(POLLOUT, deadline), "send: the server read nothing for {} ms",
             duration_cast<milliseconds>(timeout).count());
    }
}

bool Conn::try_send(std::string_view s) {
    while (!s.empty()) {
        ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        s.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

int Conn::read_some(Clock::time_point deadline) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0) {
            in_.append(buf, static_cast<std::size_t>(n));
            return 1;
        }
        if (n == 0) return 0;
        if (errno != EAGAIN && errno != EINTR) {
            err_ = errno;
            return -2;
        }
        if (!wait(POLLIN, deadline)) return -1;
    }
}

bool Conn::next(Response& r, Clock::time_point deadline, std::string& why) {
    if (fd_ < 0) {
        why = "connection failed: " + error_;
        return false;
    }
    for (;;) {
        if (!in_.empty()) {
            done_ = false;
            llhttp_errno_t e = llhttp_execute(&parser_, in_.data(), in_.size());
            if (e == HPE_PAUSED) {
                in_.erase(0, static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - in_.data()));
                llhttp_resume(&parser_);
            } else if (e == HPE_OK) {
                in_.clear();
            } else {
                why = fmt::format("malformed response: {} ({})", llhttp_errno_name(e),
                                  parser_.reason ? parser_.reason : "");
                return false;
            }
            if (done_) {
                r = std::move(done_msg_);
                return true;
            }
        }
        int rc = read_some(deadline);
        if (rc > 0) continue;
        if (rc == 0) why = "the server closed the connection before a complete answer";
        else if (rc == -1) why = "no complete answer within the timeout";
        else why = fmt::format("connection error before a complete answer: {}", strerror(err_));
        return false;
    }
}

std::string Conn::expect_closed(milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        if (!in_.empty()) return fmt::format("{} unexpected bytes instead of a close", in_.size());
        int rc = read_some(deadline);
        if (rc == 0 || rc == -2) return "";
        if (rc == -1) return "the server did not close the connection";
    }
}

bool Conn::wait(short events, Clock::time_point deadline) {
    auto left = duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    int rc = poll(&p, 1, static_cast<int>(left));
    return rc == 1;
}

int Conn::on_header_field(llhttp_t* p, const char* at, std::size_t n) {
    Conn& c = self(p);
    if (c.cur_.headers.empty() || c.in_value_) c.cur_.headers.emplace_back();
    c.in_value_ = false;
    for (std::size_t i = 0; i < n; ++i)
        c.cur_.headers.back().first += static_cast<char>(std::tolower(static_cast<unsigned char>(at[i])));
    return 0;
}

int Conn::on_header_value(llhttp_t* p, const char* at, std::size_t n) {
    Conn& c = self(p);
    c.in_value_ = true;
    c.cur_.headers.back().second.append(at, n);
    return 0;
}

int Conn::on_body(llhttp_t* p, const char* at, std::size_t n) {
    self(p).cur_.body.append(at, n);
    return 0;
}

int Conn::on_message_complete(llhttp_t* p) {
    Conn& c = self(p);
    c.cur_.status = p->status_code;
    c.cur_.keep_alive = llhttp_should_keep_alive(p);
    c.done_msg_ = std::move(c.cur_);
    c.cur_ = Response{};
    c.in_value_ = false;
    c.done_ = true;
    return HPE_PAUSED;
}

// ------------------------------------------------------------------------------------- helpers

std::string get(std::string_view path) {
    return fmt::format("GET {} HTTP/1.1\r\nHost: verify\r\n\r\n", path);
}

void expect_hello(const Response& r, std::string_view what) {
    need(r.status == 200, "{}: status {} (expected 200)", what, r.status);
    need(r.body == kHelloBody, "{}: body '{}' (expected 'Hello, World!')", what, r.body.substr(0, 40));
}

void expect_bytes(const Response& r, std::size_t n, std::string_view what) {
    need(r.status == 200, "{}: status {} (expected 200)", what, r.status);
    need(r.body.size() == n, "{}: {} body bytes (expected {})", what, r.body.size(), n);
    for (std::size_t i = 0; i < n; ++i)
        need(r.body[i] == pattern_byte(i), "{}: body byte {} is wrong", what, i);
}

std::string payload(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7) >> 3);
    return s;
}

std::string echo_roundtrip(Conn& c, const std::string& msg, milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::size_t sent = 0;
    while (c.in().size() < msg.size()) {
        if (sent < msg.size()) {
            ssize_t n = ::send(c.fd(), msg.data() + sent, msg.size() - sent, MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<std::size_t>(n);
            else need(errno == EAGAIN, "echo: send failed after {} bytes: {}", sent, strerror(errno));
        }
        pollfd p{c.fd(), static_cast<short>(POLLIN | (sent < msg.size() ? POLLOUT : 0)), 0};
        auto left = duration_cast<milliseconds>(deadline - Clock::now()).count();
        need(left > 0, "echo: {} of {} bytes back within the timeout ({} sent)", c.in().size(),
             msg.size(), sent);
        poll(&p, 1, static_cast<int>(std::min<long>(left, 100)));
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int rc = c.read_some(Clock::now());
            need(rc != 0 && rc != -2, "echo: the server closed after {} of {} bytes", c.in().size(),
                 msg.size());
        }
    }
    std::string back = c.in().substr(0, msg.size());
    c.in().erase(0, msg.size());
    return back;
}

void expect_status_and_close(uint16_t port, const std::string& req, int status, std::string_view what) {
    Conn c(port);
    c.send(req);
    Response r;
    std::string why;
    need(c.next(r, Clock::now() + kIoTimeout, why), "{}: {}", what, why);
    need(r.status == status, "{}: status {} (expected {})", what, r.status, status);
    why = c.expect_closed();
    need(why.empty(), "{}: after the {}: {}", what, status, why);
}

}  // namespace concbench::verify_detail
