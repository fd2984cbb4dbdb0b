// Histogram: reported percentiles against the exact order statistics of random samples, plus the
// edges (empty, reset, merge, clamping, sub-microsecond values).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "concbench/histogram.hpp"

using concbench::Histogram;

namespace {

// Percentiles every distribution is checked at (the spectrum points are checked as well).
const std::vector<double> kPercentiles = {0,  0.1, 1,  5,    10,    25,     50,      75,   90,
                                          95, 99,  99.5, 99.9, 99.99, 99.999, 99.9999, 100};

// The exact order statistic the histogram approximates: the smallest sample such that at least
// p % of the samples are at or below it.
uint64_t exact_percentile(const std::vector<uint64_t>& sorted, double p) {
    if (p <= 0) return sorted.front();
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * double(sorted.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

// A reported value is never below the real one, and above it by less than 0.1 % -- or, for
// values under 1 us, by no more than the 1 us bucket.
void expect_close(uint64_t reported, uint64_t exact, double p) {
    EXPECT_GE(reported, exact) << "p=" << p;
    const double limit = std::max(double(exact) * 1.001, double(Histogram::kLowestNs));
    EXPECT_LE(double(reported), limit) << "p=" << p << " exact=" << exact;
}

void check_against_samples(std::vector<uint64_t> samples) {
    Histogram h;
    for (uint64_t v : samples) h.record(v);
    std::sort(samples.begin(), samples.end());

    ASSERT_EQ(h.count(), samples.size());
    EXPECT_EQ(h.min_ns(), samples.front());
    EXPECT_EQ(h.max_ns(), samples.back());
    long double sum = 0;
    for (uint64_t v : samples) sum += v;
    EXPECT_NEAR(h.mean_ns(), double(sum / samples.size()), 1e-6 * double(sum / samples.size()));

    for (double p : kPercentiles) expect_close(h.percentile_ns(p), exact_percentile(samples, p), p);
    uint64_t previous = 0;
    const auto spectrum = h.spectrum_json();  // not a temporary: the loop borrows from it
    for (const auto& point : spectrum["percentiles"]) {
        const double p = point[0].get<double>();
        const auto reported = static_cast<uint64_t>(std::llround(point[1].get<double>() * 1000));
        expect_close(reported, exact_percentile(samples, p), p);
        EXPECT_GE(reported, previous) << "percentiles must not decrease, p=" << p;
        previous = reported;
    }
}

template <class Dist>
std::vector<uint64_t> draw(Dist dist, std::size_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> out(n);
    for (auto& v : out) v = static_cast<uint64_t>(std::max(1.0, double(dist(rng))));
    return out;
}

}  // namespace

TEST(Histogram, UniformOneMicrosecondToHundredMilliseconds) {
    check_against_samples(draw(std::uniform_int_distribution<uint64_t>(1'000, 100'000'000), 200'000, 1));
}

TEST(Histogram, Lognormal) {
    // Median ~200 us, a long tail into seconds.
    check_against_samples(draw(std::lognormal_distribution<double>(std::log(200'000.0), 1.5), 200'000, 2));
}

TEST(Histogram, Bimodal) {
    std::mt19937_64 rng(3);
    std::normal_distribution<double> fast(100'000, 10'000), slow(50'000'000, 5'000'000);
    std::bernoulli_distribution is_slow(0.1);
    std::vector<uint64_t> samples(200'000);
    for (auto& v : samples)
        v = static_cast<uint64_t>(std::max(1'000.0, is_slow(rng) ? slow(rng) : fast(rng)));
    check_against_samples(samples);
}

TEST(Histogram, Constant) {
    check_against_samples(std::vector<uint64_t>(10'000, 12'345'678));
}

TEST(Histogram, EveryMagnitudeWithinRelativeError) {
    // One value per 0.07 % step over the whole range: the slot arithmetic must hold everywhere.
    for (double x = 1'000; x <= double(Histogram::kHighestNs); x *= 1.0007) {
        const auto v = static_cast<uint64_t>(x);
        Histogram h;
        h.record(v);
        h.record(Histogram::kHighestNs);  // keeps the max cap out of the way
        const uint64_t r = h.percentile_ns(50);
        ASSERT_GE(r, v);
        ASSERT_LT(double(r - v), double(v) * 0.001) << "v=" << v;
    }
}

TEST(Histogram, SmallValuesAreExact) {
    Histogram h;
    h.record(1'500);
    h.record(1'501);
    h.record(2'047);
    h.record(1'000'000);
    EXPECT_EQ(h.percentile_ns(25), 1'500u);
    EXPECT_EQ(h.percentile_ns(50), 1'501u);
    EXPECT_EQ(h.percentile_ns(75), 2'047u);
}

TEST(Histogram, WeightedRecordEqualsRepeated) {
    Histogram a, b;
    a.record(5'000, 3);
    a.record(70'000, 2);
    for (int i = 0; i < 3; ++i) b.record(5'000);
    for (int i = 0; i < 2; ++i) b.record(70'000);
    EXPECT_EQ(a.spectrum_json(), b.spectrum_json());
    EXPECT_EQ(a.count(), 5u);
}

TEST(Histogram, MergeOfHalvesEqualsAll) {
    auto samples = draw(std::lognormal_distribution<double>(std::log(1'000'000.0), 2.0), 100'000, 4);
    samples.push_back(Histogram::kHighestNs * 2);  // overflow must merge too
    Histogram all, first, second;
    for (std::size_t i = 0; i < samples.size(); ++i) {
        all.record(samples[i]);
        (i < samples.size() / 2 ? first : second).record(samples[i]);
    }
    first.merge(second);
    EXPECT_EQ(first.count(), all.count());
    EXPECT_EQ(first.overflow(), 1u);
    EXPECT_EQ(first.min_ns(), all.min_ns());
    EXPECT_EQ(first.max_ns(), all.max_ns());
    EXPECT_DOUBLE_EQ(first.mean_ns(), all.mean_ns());
    for (double p = 0; p <= 100; p += 0.5) EXPECT_EQ(first.percentile_ns(p), all.percentile_ns(p)) << p;
    EXPECT_EQ(first.spectrum_json(), all.spectrum_json());
}

TEST(Histogram, MergeIntoEmpty) {
    Histogram empty, h;
    h.record(42'000);
    empty.merge(h);
    EXPECT_EQ(empty.count(), 1u);
    EXPECT_EQ(empty.min_ns(), 42'000u);
    EXPECT_EQ(empty.percentile_ns(50), 42'000u);
}

TEST(Histogram, Reset) {
    Histogram h;
    h.record(3'000'000);
    h.record(Histogram::kHighestNs + 1);
    h.reset();
    EXPECT_EQ(h.count(), 0u);
    EXPECT_EQ(h.overflow(), 0u);
    EXPECT_EQ(h.percentile_ns(50), 0u);
    h.record(7'000);  // min and max start afresh
    EXPECT_EQ(h.min_ns(), 7'000u);
    EXPECT_EQ(h.max_ns(), 7'000u);
    EXPECT_EQ(h.percentile_ns(100), 7'000u);
    EXPECT_DOUBLE_EQ(h.mean_ns(), 7'000.0);
}

TEST(Histogram, ClampsAboveSixtySeconds) {
    Histogram h;
    h.record(1'000'000);
    h.record(120'000'000'000);
    EXPECT_EQ(h.count(), 2u);
    EXPECT_EQ(h.overflow(), 1u);
    EXPECT_EQ(h.max_ns(), 120'000'000'000u);  // min/max/mean are the raw values
    const uint64_t top = h.percentile_ns(100);
    EXPECT_GE(top, Histogram::kHighestNs);
    EXPECT_LT(double(top), double(Histogram::kHighestNs) * 1.001);
    EXPECT_EQ(h.spectrum_json()["overflow"], 1);
    h.record(Histogram::kHighestNs);  // exactly 60 s is in range
    EXPECT_EQ(h.overflow(), 1u);
}

TEST(Histogram, BelowOneMicrosecondLandsInLowestBucket) {
    Histogram h;
    h.record(200);
    h.record(5'000);
    EXPECT_EQ(h.min_ns(), 200u);              // exact
    EXPECT_EQ(h.percentile_ns(0), 200u);      // p=0 is the exact minimum
    EXPECT_EQ(h.percentile_ns(50), 1'000u);   // the 1 us bucket: above, never below, the value
    EXPECT_EQ(h.percentile_ns(100), 5'000u);
}

TEST(Histogram, EmptyReturnsZero) {
    Histogram h;
    EXPECT_EQ(h.count(), 0u);
    EXPECT_EQ(h.min_ns(), 0u);
    EXPECT_EQ(h.max_ns(), 0u);
    EXPECT_EQ(h.mean_ns(), 0.0);
    for (double p : kPercentiles) EXPECT_EQ(h.percentile_ns(p), 0u);
    const auto j = h.spectrum_json();
    EXPECT_EQ(j["count"], 0);
    EXPECT_EQ(j["min_us"], 0.0);
    EXPECT_TRUE(j["percentiles"].empty());
}

TEST(Histogram, SpectrumTicks) {
    Histogram h;
    for (uint64_t v = 1'000; v <= 1'000'000; v += 1'000) h.record(v);
    const auto j = h.spectrum_json();
    EXPECT_EQ(j["count"], 1000);
    EXPECT_DOUBLE_EQ(j["min_us"].get<double>(), 1.0);
    EXPECT_DOUBLE_EQ(j["max_us"].get<double>(), 1000.0);
    EXPECT_NEAR(j["mean_us"].get<double>(), 500.5, 1e-9);
    const auto& pts = j["percentiles"];
    ASSERT_GE(pts.size(), 5u);
    EXPECT_EQ(pts[0][0], 0.0);
    EXPECT_EQ(pts[1][0], 50.0);
    EXPECT_EQ(pts[2][0], 75.0);
    EXPECT_EQ(pts[3][0], 87.5);
    EXPECT_EQ(pts[4][0], 93.75);
    EXPECT_EQ(pts.back()[0], 100.0);
    const double before_last = pts[pts.size() - 2][0].get<double>();
    EXPECT_LE(before_last, 99.9999);
    EXPECT_GT(before_last, 99.9998);
    EXPECT_DOUBLE_EQ(pts.back()[1].get<double>(), 1000.0);
    // p50 is the 500th value, 500 us, reported as the top of its 256 ns wide slot.
    EXPECT_DOUBLE_EQ(pts[1][1].get<double>(), 500.223);
}

TEST(Histogram, SlotsRoundTripKeepsEveryPercentile) {
    // The per-second series stores a second's histogram as its non-empty slots and merges them
    // across threads: the percentiles must come out as from the merged dense histograms.
    std::mt19937_64 rng(7);
    std::lognormal_distribution<double> dist(12.0, 1.5);
    Histogram a, b, dense;
    for (int i = 0; i < 20000; ++i) {
        const auto v = static_cast<uint64_t>(dist(rng));
        (i % 2 ? a : b).record(v);
        dense.record(v);
    }
    const Histogram::Slots sa = a.slots();
    EXPECT_LT(sa.size(), 20000u);
    Histogram rebuilt;
    rebuilt.add_slots(sa);
    rebuilt.add_slots(b.slots());
    EXPECT_EQ(rebuilt.count(), dense.count());
    for (double p : kPercentiles) {
        if (p == 0) continue;  // min and max are exact in `dense`, slot values here (capped at max)
        EXPECT_EQ(std::min(rebuilt.percentile_ns(p), dense.max_ns()), dense.percentile_ns(p)) << p;
    }
    EXPECT_TRUE(Histogram().slots().empty());
}
