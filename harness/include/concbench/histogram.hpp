// Histogram: log-linear latency recording in the HdrHistogram style — 1 µs to 60 s at three
// significant digits, constant-time record(), mergeable, no locks (one per thread, merged after).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace concbench {

class Histogram {
public:
    static constexpr uint64_t kLowestNs = 1'000;            // 1 µs
    static constexpr uint64_t kHighestNs = 60'000'000'000;  // 60 s

    Histogram();
    // Values below 1 µs land in the 1 µs bucket; above 60 s they are clamped and counted in
    // overflow(). Relative error of any reported value is below 0.1 %.
    void record(uint64_t value_ns, uint64_t count = 1);
    void merge(const Histogram& other);
    void reset();

    uint64_t count() const { return total_; }
    uint64_t overflow() const { return overflow_; }
    uint64_t min_ns() const;
    uint64_t max_ns() const;
    double mean_ns() const;
    // Smallest recorded-bucket value v such that at least p % of values are <= v (p in 0..100),
    // reported as the bucket's highest equivalent value (as HdrHistogram does). 0 when empty.
    uint64_t percentile_ns(double p) const;

    // {"count","min_us","max_us","mean_us","percentiles":[[p, us], ...]} at the usual HdrHistogram
    // spectrum points (0, 50, 75, 87.5, ... 99.9999, 100).
    nlohmann::json spectrum_json() const;

    // The non-empty slots as (slot, count): a compact copy of a sparse histogram (one second of
    // a time series holds a few hundred slots, not 27,000), added back with add_slots(). The
    // exact min/max/mean are not carried: a histogram rebuilt from slots reports slot values.
    using Slots = std::vector<std::pair<uint32_t, uint64_t>>;
    Slots slots() const;
    void add_slots(const Slots& slots);

private:
    std::size_t index_of(uint64_t v) const;
    uint64_t value_at(std::size_t index) const;  // highest value equivalent to the bucket

    std::vector<uint64_t> counts_;
    uint64_t total_ = 0;
    uint64_t overflow_ = 0;
    uint64_t min_ = UINT64_MAX;
    uint64_t max_ = 0;
    long double sum_ = 0;
};

}  // namespace concbench
