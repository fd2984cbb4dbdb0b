// Outbox: the bytes a session has produced and a model has not yet written, as a short list of
// segments. Small responses coalesce into one contiguous segment (one write for many pipelined
// responses); large generated bodies are views of a shared pattern, never copied per request.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#ifdef _WIN32
// POSIX's scatter/gather element, which Windows lacks; a Windows model copies it into WSABUFs.
struct iovec {
    void* iov_base;
    std::size_t iov_len;
};
#else
struct iovec;
#endif

namespace concbench {

class Outbox {
public:
    void append(std::string_view bytes);
    // `n` bytes of the /bytes pattern, starting at pattern offset 0 (see pattern_byte()).
    void append_pattern(std::size_t n);

    bool empty() const { return segs_.empty(); }
    std::size_t size() const { return pending_; }

    // Fills up to `max` iovecs with the pending bytes, in order; returns how many it filled.
    int fill(iovec* iov, int max) const;
    // Drops the first `n` bytes (after a write wrote them). Frees memory once empty.
    void consume(std::size_t n);
    void clear();

private:
    struct Seg {
        std::string bytes;        // owned bytes, or empty for a pattern segment
        std::size_t pattern_len;  // > 0: a pattern segment of this many bytes
        std::size_t off;          // bytes of this segment already written
    };
    std::vector<Seg> segs_;
    std::size_t head_ = 0;        // index of the first unwritten segment
    std::size_t pending_ = 0;
};

// The body of GET /bytes/N is the byte sequence pattern_byte(0), pattern_byte(1), ...
inline char pattern_byte(std::size_t i) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    return kAlphabet[i % 64];
}

}  // namespace concbench
