// Routes: the handlers of the HTTP contract. Pure functions of the request: no IO of their own —
// an IO-bound route returns the effect it needs (Response::effect) and the session writes the
// answer when the model completes it.
#pragma once
#include <cstddef>
#include <string_view>

#include "concbench/session.hpp"

namespace concbench {

struct Response {
    int status = 200;
    std::string_view content_type = "text/plain";
    std::string_view body;        // static bytes, or
    std::size_t pattern_len = 0;  // this many bytes of the /bytes pattern
    Effect effect;                // kind != none: the answer comes once the model has done this
    int work_us = -1;             // >= 0: GET /work/US — the session spends US µs of CPU on the
                                  //   thread that feeds it, then answers do_work()'s body (work.hpp)
};

// `method` is llhttp's method name ("GET", "HEAD", ...), `target` the request target as sent.
Response route(std::string_view method, std::string_view target);

// The text of a status code used by the contract ("OK", "Not Found", ...).
std::string_view reason_phrase(int status);
// A plain-text answer for an error status ("Not Found\n", ...).
Response error_response(int status);

}  // namespace concbench
