// Session: the sans-IO protocol state of one connection. A model feeds it the bytes it read and
// writes out what it left in the outbox; the session never touches a socket, a thread or a clock
// of its own, so every model sends byte-identical answers and differs only in how it does IO.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "concbench/outbox.hpp"

namespace concbench {

enum class Proto { http, echo };
const char* proto_name(Proto p);
bool parse_proto(std::string_view s, Proto& out);

// What every response of a server carries, fixed at start-up.
struct ServerIdentity {
    std::string server_header;  // "concbench-<model>"
};

class Session {
public:
    virtual ~Session() = default;
    // Consumes `n` bytes read from the peer. Responses are appended to out().
    virtual void feed(const char* data, std::size_t n) = 0;
    // The peer closed its sending side (read returned 0). Pending answers still go out.
    virtual void peer_closed() {}
    Outbox& out() { return out_; }
    // True once the connection must be closed after out() is written (Connection: close,
    // HTTP/1.0, a 400/431 answer). Bytes fed after that are ignored.
    bool close_after_write() const { return close_; }

protected:
    Outbox out_;
    bool close_ = false;
};

std::unique_ptr<Session> make_session(Proto proto, const ServerIdentity& id);

// HTTP limits of the contract (DESIGN.md).
inline constexpr std::size_t kMaxHeaderBytes = 8 * 1024;       // past this: 431 and close
inline constexpr std::size_t kMaxBytesRoute = 64 * 1024 * 1024; // /bytes/N above this: 400

// The Date header value for now, e.g. "Sun, 22 Nov 2026 09:46:52 GMT". Refreshed at most once a
// second per thread; each thread keeps its own copy so no lock is taken on the request path.
std::string_view http_date();

}  // namespace concbench
