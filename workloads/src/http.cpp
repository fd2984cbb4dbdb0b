// HTTP/1.1 on llhttp, sans-IO: bytes in, responses out. Keep-alive, pipelining, HTTP/1.0 and
// Connection: close; 400 + close on malformed input, 431 + close past 8 KiB of request head.
#include <llhttp.h>

#include <cstdio>
#include <ctime>
#include <string>

#include "concbench/routes.hpp"
#include "concbench/session.hpp"

namespace concbench {

std::unique_ptr<Session> make_echo_session();

const char* proto_name(Proto p) { return p == Proto::http ? "http" : "echo"; }

bool parse_proto(std::string_view s, Proto& out) {
    if (s == "http") out = Proto::http;
    else if (s == "echo") out = Proto::echo;
    else return false;
    return true;
}

std::string_view http_date() {
    thread_local time_t cached_sec = 0;
    thread_local char buf[40];
    thread_local std::size_t len = 0;
    time_t now = time(nullptr);  // vDSO: no system call
    if (now != cached_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        len = strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_sec = now;
    }
    return {buf, len};
}

namespace {

class HttpSession final : public Session {
public:
    explicit HttpSession(const ServerIdentity& id) : id_(id) {
        llhttp_init(&parser_, HTTP_REQUEST, &settings());
        parser_.data = this;
    }

    void feed(const char* data, std::size_t n) override {
        if (close_) return;  // answered with close: the rest is not read
        llhttp_errno_t err = llhttp_execute(&parser_, data, n);
        switch (err) {
            case HPE_OK:
            case HPE_PAUSED:  // paused by us after a final (closing) response
                return;
            case HPE_USER:  // a callback refused: the head grew past the limit
                respond(error_response(431), false, false);
                return;
            case HPE_PAUSED_UPGRADE:  // we speak no other protocol: the answer went out, close
                close_ = true;
                return;
            default:
                respond(error_response(400), false, false);
                return;
        }
    }

    void peer_closed() override { close_ = true; }

private:
    static const llhttp_settings_t& settings() {
        static const llhttp_settings_t s = [] {
            llhttp_settings_t st;
            llhttp_settings_init(&st);
            st.on_message_begin = on_message_begin;
            st.on_url = on_url;
            st.on_header_field = count_head;
            st.on_header_value = count_head;
            st.on_method = count_head;
            st.on_version = count_head;
            st.on_message_complete = on_message_complete;
            return st;
        }();
        return s;
    }
    static HttpSession& self(llhttp_t* p) { return *static_cast<HttpSession*>(p->data); }

    static int on_message_begin(llhttp_t* p) {
        HttpSession& s = self(p);
        s.target_.clear();
        s.head_bytes_ = 0;
        return 0;
    }
    // Counts the request head's content (request line and header names and values): past
    // kMaxHeaderBytes the request is refused with 431 before anything more is buffered.
    static int count_head(llhttp_t* p, const char*, std::size_t n) {
        HttpSession& s = self(p);
        s.head_bytes_ += n;
        return s.head_bytes_ > kMaxHeaderBytes ? -1 : 0;
    }
    static int on_url(llhttp_t* p, const char* at, std::size_t n) {
        if (count_head(p, at, n) != 0) return -1;
        self(p).target_.append(at, n);
        return 0;
    }
    static int on_message_complete(llhttp_t* p) {
        HttpSession& s = self(p);
        std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
        bool keep_alive = llhttp_should_keep_alive(p);
        s.respond(route(method, s.target_), keep_alive, method == "HEAD");
        std::string().swap(s.target_);  // an idle connection keeps no request memory
        return keep_alive ? 0 : HPE_PAUSED;
    }

    void respond(const Response& r, bool keep_alive, bool head_only) {
        std::size_t body_len = r.pattern_len ? r.pattern_len : r.body.size();
        char line[64];
        int n = std::snprintf(line, sizeof line, "HTTP/1.1 %d ", r.status);
        std::string& h = scratch();
        h.clear();
        h.append(line, n).append(reason_phrase(r.status));
        h.append("\r\nServer: ").append(id_.server_header);
        h.append("\r\nDate: ").append(http_date());
        h.append("\r\nContent-Type: ").append(r.content_type);
        n = std::snprintf(line, sizeof line, "\r\nContent-Length: %zu", body_len);
        h.append(line, n);
        if (!keep_alive) h.append("\r\nConnection: close");
        else if (parser_.http_major == 1 && parser_.http_minor == 0)
            h.append("\r\nConnection: keep-alive");
        h.append("\r\n\r\n");
        if (!head_only) h.append(r.body);
        out_.append(h);
        if (!head_only) out_.append_pattern(r.pattern_len);
        if (!keep_alive) close_ = true;
    }
    // One buffer per thread to build response heads in, so answering allocates nothing but the
    // outbox's own storage.
    static std::string& scratch() {
        thread_local std::string s;
        return s;
    }

    llhttp_t parser_;
    const ServerIdentity& id_;
    std::string target_;
    std::size_t head_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Session> make_session(Proto proto, const ServerIdentity& id) {
    if (proto == Proto::echo) return make_echo_session();
    return std::make_unique<HttpSession>(id);
}

}  // namespace concbench
