// Session: the sans-IO protocol state of one connection. A model feeds it the bytes it read and
// writes out what it left in the outbox; the session never touches a socket, a thread or a clock
// of its own, so every model sends byte-identical answers and differs only in how it does IO.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "concbench/outbox.hpp"

namespace concbench {

enum class Proto { http, echo };
const char* proto_name(Proto p);
bool parse_proto(std::string_view s, Proto& out);

// What every response of a server carries, fixed at start-up.
struct ServerIdentity {
    std::string server_header;  // "concbench-<model>"
};

// IO a route needs before it can answer (DESIGN.md, "IO-bound routes are effects"). A handler
// does no IO: it names the effect, the model carries it out in its own idiom (a thread sleeps, a
// reactor arms a timer, a coroutine co_awaits) and hands the outcome back with one of the
// Session::complete_* calls, which writes the answer.
struct Effect {
    enum class Kind { none, wait, fanout, file };
    Kind kind = Kind::none;
    int ms = 0;         // wait: hold the answer this long; fanout: the delay each backend call asks for
    int calls = 0;      // fanout: this many concurrent backend calls (GET /delay/MS?id=i, i < calls)
    int id = -1;        // wait: the request's ?id=N, echoed in the answer (-1: none)
    std::string file;   // file: a plain name (no '/', no leading '.') under the server's docroot
};

class Session {
public:
    virtual ~Session() = default;
    // Consumes `n` bytes read from the peer. Responses are appended to out(). While an effect is
    // pending (busy()), bytes fed are held and parsed once it completes; a model normally stops
    // reading a busy connection, as it stops reading one with output pending.
    virtual void feed(const char* data, std::size_t n) = 0;
    // The peer closed its sending side (read returned 0). Pending answers still go out.
    virtual void peer_closed() {}
    Outbox& out() { return out_; }
    // True once the connection must be closed after out() is written (Connection: close,
    // HTTP/1.0, a 400/431 answer). Bytes fed after that are ignored. Never true while busy().
    bool close_after_write() const { return close_ && !busy(); }

    // The effect the model must carry out now (kind none: nothing). Responses to requests before
    // it are already in out(); the ones after it come once it completes, in order.
    virtual const Effect& effect() const;
    bool busy() const { return effect().kind != Effect::Kind::none; }

    // True between requests: no partial request read, no effect pending, no output, not closing.
    // A session at rest holds nothing a fresh one would not, so a model may free it and make a
    // new one when the connection next has bytes (as Beast makes a parser per request): idle
    // keep-alive connections then cost no session memory at all.
    virtual bool at_rest() const { return out_.empty() && !close_; }

    // Completions. Each writes the effect's answer to out() and goes on with held input, which
    // may yield the next effect: check effect() again afterwards.
    virtual void complete_wait() {}
    // fanout: bodies[i] is the body of backend call i (an answer of status 200), or `ok` false if
    // any call failed (connect refused, reset, bad answer): the client then gets 502.
    virtual void complete_fanout(const std::vector<std::string>& /*bodies*/, bool /*ok*/) {}
    // file: `size` is the file's length, or -1 if it cannot be opened as a regular file (404).
    // Returns the number of bytes of the file the model must send right after out() — 0 for
    // HEAD or an error; when it is not 0 the session stays busy (kind file) until file_sent().
    virtual std::size_t complete_file(long long /*size*/) { return 0; }
    virtual void file_sent() {}

protected:
    Outbox out_;
    bool close_ = false;
};

std::unique_ptr<Session> make_session(Proto proto, const ServerIdentity& id);

// HTTP limits of the contract (DESIGN.md).
inline constexpr std::size_t kMaxHeaderBytes = 8 * 1024;       // past this: 431 and close
inline constexpr std::size_t kMaxBytesRoute = 64 * 1024 * 1024; // /bytes/N above this: 400
inline constexpr int kMaxDelayMs = 60 * 1000;                  // /delay/MS above this: 400
inline constexpr int kMaxFanoutCalls = 100;                    // /fanout/K/MS: K above this: 400

// The backend side of a fan-out (models/ carry the calls out, workloads/ says what they are).
// The request of backend call `id`: "GET /delay/<ms>?id=<id> HTTP/1.1" with keep-alive.
std::string backend_request(int ms, int id);
// The body of GET /delay/MS (with ?id=N: the id too); a fan-out's answer is the K backend bodies
// of ids 0..K-1 in order, so the client can check that all K calls were made.
std::string delay_body(int ms, int id);

// Reads one backend answer at a time from a keep-alive connection, sans-IO.
class BackendReader {
public:
    BackendReader();
    ~BackendReader();
    BackendReader(const BackendReader&) = delete;
    BackendReader& operator=(const BackendReader&) = delete;
    enum class State { more, done, error };
    // Feeds bytes read from the backend; `done` once a whole answer is in (its status and body
    // are then available until reset()). Bytes past the answer are an error: calls do not pipeline.
    State feed(const char* data, std::size_t n);
    int status() const { return status_; }
    const std::string& body() const { return body_; }
    bool keep_alive() const { return keep_alive_; }
    void reset();  // before the next call on the same connection

    struct Impl;  // llhttp's state (opaque: llhttp.h stays out of this header)

private:
    Impl* impl_;
    int status_ = 0;
    std::string body_;
    bool keep_alive_ = true, done_ = false;
};

// The Date header value for now, e.g. "Sun, 22 Nov 2026 09:46:52 GMT". Refreshed at most once a
// second per thread; each thread keeps its own copy so no lock is taken on the request path.
std::string_view http_date();

}  // namespace concbench
