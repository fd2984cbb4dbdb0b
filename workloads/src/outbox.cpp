// Outbox: pending output as segments of owned bytes or of the shared /bytes pattern.
#include "concbench/outbox.hpp"

#ifndef _WIN32
#include <sys/uio.h>
#endif

#include <algorithm>
#include <array>

namespace concbench {
namespace {

// The pattern repeated: any run of up to kPatternSpan bytes starting at a multiple of 64 is a
// plain slice of this array, so pattern segments need no copy.
constexpr std::size_t kPatternSpan = 64 * 1024;
const std::array<char, kPatternSpan + 64>& pattern_block() {
    static const auto block = [] {
        std::array<char, kPatternSpan + 64> b{};
        for (std::size_t i = 0; i < b.size(); ++i) b[i] = pattern_byte(i);
        return b;
    }();
    return block;
}

}  // namespace

void Outbox::append(std::string_view bytes) {
    if (bytes.empty()) return;
    // Coalesce with the last owned segment: pipelined small answers leave in one write.
    if (segs_.size() > head_ && segs_.back().pattern_len == 0) {
        segs_.back().bytes.append(bytes);
    } else {
        segs_.push_back(Seg{std::string(bytes), 0, 0});
    }
    pending_ += bytes.size();
}

void Outbox::append_pattern(std::size_t n) {
    if (n == 0) return;
    segs_.push_back(Seg{std::string(), n, 0});
    pending_ += n;
}

int Outbox::fill(iovec* iov, int max) const {
    int k = 0;
    for (std::size_t i = head_; i < segs_.size() && k < max; ++i) {
        const Seg& s = segs_[i];
        if (s.pattern_len == 0) {
            iov[k].iov_base = const_cast<char*>(s.bytes.data() + s.off);
            iov[k].iov_len = s.bytes.size() - s.off;
            ++k;
            continue;
        }
        // A pattern segment may span several iovecs of at most kPatternSpan bytes each.
        const char* base = pattern_block().data();
        for (std::size_t off = s.off; off < s.pattern_len && k < max;) {
            std::size_t len = std::min(kPatternSpan, s.pattern_len - off);
            iov[k].iov_base = const_cast<char*>(base + off % 64);
            iov[k].iov_len = len;
            off += len;
            ++k;
        }
    }
    return k;
}

void Outbox::consume(std::size_t n) {
    pending_ -= std::min(n, pending_);
    while (n > 0 && head_ < segs_.size()) {
        Seg& s = segs_[head_];
        std::size_t len = s.pattern_len ? s.pattern_len : s.bytes.size();
        std::size_t take = std::min(n, len - s.off);
        s.off += take;
        n -= take;
        if (s.off == len) {
            std::string().swap(s.bytes);
            ++head_;
        }
    }
    if (head_ == segs_.size()) clear();
}

void Outbox::clear() {
    // Release everything: an idle connection holds no output memory.
    std::vector<Seg>().swap(segs_);
    head_ = 0;
    pending_ = 0;
}

}  // namespace concbench
