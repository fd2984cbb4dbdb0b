// Histogram: HdrHistogram's log-linear bucketing, written out for our one configuration.
//
// Values are nanoseconds. The value space is cut into "buckets" that each double the range of
// the previous one; every bucket is split into 1024 equal sub-buckets (2048 in the first, which
// starts at 0). Sub-bucket width is therefore value/1024 at most, so any value is known to within
// 1/1024 < 0.1 % of itself (three significant digits), and values below 2048 ns exactly. Finding a
// value's slot is one count-leading-zeros and two shifts. Storage: ~27,400 counters (~220 KB).
//
// Reported percentiles are the highest value that shares the slot of the order statistic (never
// below the real value), capped at the exact maximum recorded; min, max and mean are exact.
#include "concbench/histogram.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <nlohmann/json.hpp>

namespace concbench {

namespace {
constexpr unsigned kSubBucketHalfMagnitude = 10;                      // 1024 = 2^10
constexpr uint64_t kSubBucketHalfCount = 1u << kSubBucketHalfMagnitude;
constexpr uint64_t kSubBucketMask = 2 * kSubBucketHalfCount - 1;      // 2047

// Slot of a value: `bucket` = how many times the value exceeds the 2048-wide first bucket's
// magnitude (each step halves the resolution), `sub` = the value's top 11 bits at that bucket.
constexpr std::size_t slot_of(uint64_t v) {
    const unsigned bucket = 63 - std::countl_zero(v | kSubBucketMask) - kSubBucketHalfMagnitude;
    const uint64_t sub = v >> bucket;  // in [1024, 2048) for bucket > 0, [0, 2048) for bucket 0
    return ((std::size_t(bucket) + 1) << kSubBucketHalfMagnitude) + sub - kSubBucketHalfCount;
}

constexpr std::size_t kSlots = slot_of(Histogram::kHighestNs) + 1;

double to_us(double ns) { return ns / 1000.0; }
}  // namespace

Histogram::Histogram() : counts_(kSlots, 0) {}

std::size_t Histogram::index_of(uint64_t v) const { return slot_of(v); }

uint64_t Histogram::value_at(std::size_t index) const {
    long bucket = long(index >> kSubBucketHalfMagnitude) - 1;
    uint64_t sub = (index & (kSubBucketHalfCount - 1)) + kSubBucketHalfCount;
    if (bucket < 0) {  // the lower half of the first bucket
        sub -= kSubBucketHalfCount;
        bucket = 0;
    }
    const uint64_t lowest = sub << bucket;
    return lowest + (uint64_t(1) << bucket) - 1;
}

void Histogram::record(uint64_t value_ns, uint64_t count) {
    if (count == 0) return;
    uint64_t v = value_ns;
    if (v > kHighestNs) {
        v = kHighestNs;
        overflow_ += count;
    }
    v = std::max(v, kLowestNs);
    counts_[slot_of(v)] += count;
    total_ += count;
    min_ = std::min(min_, value_ns);
    max_ = std::max(max_, value_ns);
    sum_ += static_cast<long double>(value_ns) * count;
}

void Histogram::merge(const Histogram& other) {
    for (std::size_t i = 0; i < kSlots; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    overflow_ += other.overflow_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
    sum_ += other.sum_;
}

void Histogram::reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    total_ = overflow_ = 0;
    min_ = UINT64_MAX;
    max_ = 0;
    sum_ = 0;
}

uint64_t Histogram::min_ns() const { return total_ ? min_ : 0; }
uint64_t Histogram::max_ns() const { return total_ ? max_ : 0; }
double Histogram::mean_ns() const { return total_ ? double(sum_ / total_) : 0.0; }

uint64_t Histogram::percentile_ns(double p) const {
    if (total_ == 0) return 0;
    if (p <= 0) return min_;
    p = std::min(p, 100.0);
    // The rank of the order statistic: at least p % of the values are at or below it.
    uint64_t rank = static_cast<uint64_t>(std::ceil(p / 100.0 * double(total_)));
    rank = std::clamp<uint64_t>(rank, 1, total_);
    uint64_t seen = 0;
    for (std::size_t i = 0; i < kSlots; ++i) {
        seen += counts_[i];
        if (seen >= rank) return std::min(value_at(i), max_);
    }
    return max_;  // unreachable: the counts sum to total_
}

Histogram::Slots Histogram::slots() const {
    Slots out;
    if (total_ == 0) return out;
    for (std::size_t i = 0; i < kSlots; ++i)
        if (counts_[i]) out.emplace_back(uint32_t(i), counts_[i]);
    return out;
}

void Histogram::add_slots(const Slots& slots) {
    for (const auto& [i, n] : slots) {
        if (i >= kSlots || n == 0) continue;
        const uint64_t v = value_at(i);
        counts_[i] += n;
        total_ += n;
        min_ = std::min(min_, v);
        max_ = std::max(max_, v);
        sum_ += static_cast<long double>(v) * n;
    }
}

nlohmann::json Histogram::spectrum_json() const {
    nlohmann::json points = nlohmann::json::array();
    if (total_ > 0) {
        // 0, 50, 75, 87.5, ...: each tick halves the distance to 100 (HdrHistogram's percentile
        // ticks with one tick per half distance), down to 99.9999, then 100 itself.
        for (double p = 0; p <= 99.9999; p = (p == 0) ? 50 : 100 - (100 - p) / 2)
            points.push_back({p, to_us(double(percentile_ns(p)))});
        points.push_back({100.0, to_us(double(percentile_ns(100)))});
    }
    return {{"count", total_},
            {"overflow", overflow_},
            {"min_us", to_us(double(min_ns()))},
            {"max_us", to_us(double(max_ns()))},
            {"mean_us", to_us(mean_ns())},
            {"percentiles", std::move(points)}};
}

}  // namespace concbench
