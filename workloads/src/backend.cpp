// The backend side of a fan-out: the calls a model makes and the reading of their answers.
#include <llhttp.h>

#include <string>

#include "concbench/session.hpp"

namespace concbench {

std::string backend_request(int ms, int id) {
    return "GET /delay/" + std::to_string(ms) + "?id=" + std::to_string(id) +
           " HTTP/1.1\r\nHost: backend\r\n\r\n";
}

std::string delay_body(int ms, int id) {
    std::string b = "delayed " + std::to_string(ms) + " ms";
    if (id >= 0) b += " id " + std::to_string(id);
    b += '\n';
    return b;
}

struct BackendReader::Impl {
    llhttp_t parser;
    llhttp_settings_t settings;
    BackendReader* owner;
};

namespace {
BackendReader::Impl& impl_of(llhttp_t* p) { return *static_cast<BackendReader::Impl*>(p->data); }
}  // namespace

BackendReader::BackendReader() : impl_(new Impl) {
    llhttp_settings_init(&impl_->settings);
    impl_->owner = this;
    // llhttp's callbacks find the reader through the Impl's back pointer.
    impl_->settings.on_body = [](llhttp_t* p, const char* at, std::size_t n) {
        BackendReader& r = *impl_of(p).owner;
        if (r.body_.size() + n > 1024 * 1024) return -1;  // a fan-out body is small: refuse floods
        r.body_.append(at, n);
        return 0;
    };
    impl_->settings.on_message_complete = [](llhttp_t* p) {
        BackendReader& r = *impl_of(p).owner;
        r.status_ = p->status_code;
        r.keep_alive_ = llhttp_should_keep_alive(p);
        r.done_ = true;
        return static_cast<int>(HPE_PAUSED);
    };
    reset();
}

BackendReader::~BackendReader() { delete impl_; }

void BackendReader::reset() {
    llhttp_init(&impl_->parser, HTTP_RESPONSE, &impl_->settings);
    impl_->parser.data = impl_;
    status_ = 0;
    body_.clear();
    keep_alive_ = true;
    done_ = false;
}

BackendReader::State BackendReader::feed(const char* data, std::size_t n) {
    if (done_) return n ? State::error : State::done;  // an answer nobody asked for
    llhttp_errno_t err = llhttp_execute(&impl_->parser, data, n);
    if (err == HPE_PAUSED) {
        const char* stop = llhttp_get_error_pos(&impl_->parser);
        return stop == data + n ? State::done : State::error;  // bytes past the answer
    }
    return err == HPE_OK ? State::more : State::error;
}

}  // namespace concbench
