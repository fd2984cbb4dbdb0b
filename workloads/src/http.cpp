// HTTP/1.1 on llhttp, sans-IO: bytes in, responses out. Keep-alive, pipelining, HTTP/1.0 and
// Connection: close; 400 + close on malformed input, 431 + close past 8 KiB of request head.
#include <llhttp.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

#include "concbench/routes.hpp"
#include "concbench/work.hpp"
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

const Effect& Session::effect() const {
    static const Effect none;
    return none;
}

std::string_view http_date() {
    thread_local time_t cached_sec = 0;
    thread_local char buf[40];
    thread_local std::size_t len = 0;
    time_t now = time(nullptr);  // vDSO: no system call
    if (now != cached_sec) {
        struct tm tm;
#ifdef _WIN32
        gmtime_s(&tm, &now);  // the CRT's thread-safe gmtime (arguments swapped)
#else
        gmtime_r(&now, &tm);
#endif
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
        if (busy()) {        // an effect is pending: hold the bytes until it completes
            pending_->held.append(data, n);
            return;
        }
        llhttp_errno_t err = llhttp_execute(&parser_, data, n);
        switch (err) {
            case HPE_OK:
                return;
            case HPE_PAUSED:  // paused by us: after a final (closing) response, or at an effect
                if (busy()) {
                    const char* stop = llhttp_get_error_pos(&parser_);
                    if (stop && stop >= data && stop < data + n) pending_->held.append(stop, data + n - stop);
                }
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

    const Effect& effect() const override { return pending_ ? pending_->effect : Session::effect(); }
    bool at_rest() const override { return !in_message_ && !pending_ && out_.empty() && !close_; }

    void peer_closed() override {
        peer_closed_ = true;
        close_ = true;  // held or pending answers still go out first (close_after_write waits)
    }

    void complete_wait() override {
        if (effect().kind != Effect::Kind::wait) return;
        std::string body = delay_body(pending_->effect.ms, pending_->effect.id);
        Response r;
        r.body = body;
        finish(r);
    }

    void complete_fanout(const std::vector<std::string>& bodies, bool ok) override {
        if (effect().kind != Effect::Kind::fanout) return;
        const Effect& e = pending_->effect;
        // Each call's body must be the one its id asks for: a model that lost or swapped calls
        // answers 502 rather than a body the client would take for correct.
        ok = ok && bodies.size() == static_cast<std::size_t>(e.calls);
        std::string body;
        for (int i = 0; ok && i < e.calls; ++i) {
            if (bodies[i] != delay_body(e.ms, i)) ok = false;
            body += bodies[i];
        }
        if (!ok) return finish(error_response(502));
        Response r;
        r.body = body;
        finish(r);
    }

    std::size_t complete_file(long long size) override {
        if (effect().kind != Effect::Kind::file || pending_->file_pending) return 0;
        if (size < 0) {
            finish(error_response(404));
            return 0;
        }
        Response r;
        r.content_type = "application/octet-stream";
        r.pattern_len = 0;
        write_head(r, static_cast<std::size_t>(size), pending_->keep_alive);
        if (pending_->head_only || size == 0) {
            finish_head_only();
            return 0;
        }
        pending_->file_pending = true;  // stay busy until the model has sent the file's bytes
        return static_cast<std::size_t>(size);
    }

    void file_sent() override {
        if (!pending_ || !pending_->file_pending) return;
        pending_->file_pending = false;
        finish_head_only();
    }

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
        s.in_message_ = true;
        return 0;
    }
    // Counts the request head's content (request line and header names and values): past
    // kMaxHeaderBytes the request is refused with 431 before anything more is buffered.
    static int count_head(llhttp_t* p, const char*, std::size_t n) {
        HttpSession& s = self(p);
        s.head_bytes_ += static_cast<uint32_t>(std::min<std::size_t>(n, kMaxHeaderBytes + 1));
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
        s.in_message_ = false;
        Response r = route(method, s.target_);
        std::string().swap(s.target_);  // an idle connection keeps no request memory
        if (r.effect.kind != Effect::Kind::none) {
            // Stop parsing here: the answer waits for the model, later requests wait for it.
            s.pending_ = std::make_unique<Pending>();
            s.pending_->effect = std::move(r.effect);
            s.pending_->keep_alive = keep_alive;
            s.pending_->head_only = method == "HEAD";
            return HPE_PAUSED;
        }
        std::string work;  // CPU work happens here, on the thread serving the connection
        if (r.work_us >= 0) r.body = work = do_work(r.work_us);
        s.respond(r, keep_alive, method == "HEAD");
        return keep_alive ? 0 : HPE_PAUSED;
    }

    // The answer of the pending effect is ready: write it, then go on with the held input.
    void finish(const Response& r) {
        std::unique_ptr<Pending> done = std::move(pending_);
        respond(r, done->keep_alive, done->head_only);
        resume(done->held);
    }
    // The head (and, for a file, its body) went out already.
    void finish_head_only() {
        std::unique_ptr<Pending> done = std::move(pending_);
        resume(done->held);
    }
    void resume(const std::string& held) {
        if (answered_close_) return;  // answered with close: nothing more is read
        if (llhttp_get_errno(&parser_) == HPE_PAUSED) llhttp_resume(&parser_);
        bool was_closing = close_;
        close_ = false;  // held pipelined requests of a half-closed peer are still answered
        if (!held.empty()) feed(held.data(), held.size());
        if (was_closing) close_ = true;
    }

    // The status line and headers, then `body` (a small body goes out in the same piece).
    void write_head(const Response& r, std::size_t body_len, bool keep_alive, std::string_view body = {}) {
        char num[24];
        std::string& h = scratch();
        h.assign("HTTP/1.1 ");
        h.append(num, std::to_chars(num, num + sizeof num, r.status).ptr);
        h.append(" ").append(reason_phrase(r.status));
        h.append("\r\nServer: ").append(id_.server_header);
        h.append("\r\nDate: ").append(http_date());
        h.append("\r\nContent-Type: ").append(r.content_type);
        h.append("\r\nContent-Length: ");
        h.append(num, std::to_chars(num, num + sizeof num, body_len).ptr);
        if (!keep_alive) h.append("\r\nConnection: close");
        else if (parser_.http_major == 1 && parser_.http_minor == 0)
            h.append("\r\nConnection: keep-alive");
        h.append("\r\n\r\n").append(body);
        out_.append(h);
        if (!keep_alive) {
            close_ = true;
            answered_close_ = true;
        }
    }

    void respond(const Response& r, bool keep_alive, bool head_only) {
        std::size_t body_len = r.pattern_len ? r.pattern_len : r.body.size();
        write_head(r, body_len, keep_alive, head_only ? std::string_view() : r.body);
        if (!head_only) out_.append_pattern(r.pattern_len);
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
    uint32_t head_bytes_ = 0;
    bool in_message_ = false;  // a request has begun and is not complete
    // The request whose answer waits for an effect; made when one starts, so that an idle
    // connection's session stays small.
    struct Pending {
        Effect effect;
        std::string held;  // input that arrived meanwhile, parsed once the effect completes
        bool keep_alive = true, head_only = false, file_pending = false;
    };
    std::unique_ptr<Pending> pending_;
    bool peer_closed_ = false, answered_close_ = false;
};

}  // namespace

std::unique_ptr<Session> make_session(Proto proto, const ServerIdentity& id) {
    if (proto == Proto::echo) return make_echo_session();
    return std::make_unique<HttpSession>(id);
}

}  // namespace concbench
