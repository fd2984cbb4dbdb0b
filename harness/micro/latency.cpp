// Group "latency": Ryan Dahl's latency table (node.js talk, 2009), measured on this machine.
// The essays argue from it: L1 3 cycles, L2 14, RAM 250, disk 41,000,000, network 240,000,000 —
// IO is so slow next to computation that a thread blocked on it wastes a fortune, so servers
// should never block. Each row here re-measures one line of that table (cycles = ns x the
// context's measured_mhz; the cache sizes land in the context too, from add_latency_context):
//   latency/chase/bytes:N      dependent loads over a random cyclic permutation of 64-byte lines
//                              filling N bytes: L1, L2, L3, then RAM (THP for N >= 4 MiB, so
//                              the figure is the memory's, not the TLB's);
//   latency/mutex, latency/syscall     the cheap things the essays set against IO;
//   latency/disk_read_4k       a 4 KiB read that really goes to the disk (O_DIRECT, not cached);
//   latency/fsync_write_4k     a durable 4 KiB write (pwrite + fsync);
//   latency/loopback_tcp_rtt   a 1-byte TCP round trip over 127.0.0.1. This is NOT the table's
//                              network row (a WAN round trip, ~80 ms): it is the floor of any
//                              network round trip, the kernel's share; the table shows both.
#include <cpuid.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "micro.hpp"

namespace {

using concbench::micro::errno_text;

constexpr int64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;

// splitmix64: a fast, good-enough generator for shuffles and random offsets.
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, bound), bound < 2^32 (Lemire's multiply-shift; the bias is < 2^-32).
    uint32_t below(uint32_t bound) { return static_cast<uint32_t>(((next() >> 32) * bound) >> 32); }
};

std::string mib_text(uint64_t bytes) {
    char b[48];
    std::snprintf(b, sizeof b, "%.0f MiB", static_cast<double>(bytes) / kMiB);
    return b;
}

uint64_t mem_available_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string k;
    uint64_t v = 0;
    while (in >> k) {
        if (k == "MemAvailable:") {
            in >> v;
            return v * 1024;
        }
        in.ignore(1 << 12, '\n');
    }
    return 0;
}

// ---------------------------------------------------------------- the pointer chase --------

struct alignas(64) Node {
    Node* next;
    char pad[64 - sizeof(Node*)];
};
static_assert(sizeof(Node) == 64);

// Anonymous memory, 2 MiB-aligned so that THP can back all of it.
struct Mapping {
    void* base = nullptr;   // what mmap returned
    size_t length = 0;      // what was mapped
    void* data = nullptr;   // the aligned start
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() {
        if (base) munmap(base, length);
    }
    bool map(size_t bytes, bool huge) {
        constexpr size_t kHuge = 2 * kMiB;
        length = bytes + kHuge;
        base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) {
            base = nullptr;
            return false;
        }
        data = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(base) + kHuge - 1) & ~(kHuge - 1));
        if (huge) madvise(data, bytes, MADV_HUGEPAGE);   // advice only: the label says what we got
        return true;
    }
};

// AnonHugePages (bytes) of the mappings of this process overlapping [addr, addr + len).
uint64_t anon_huge_bytes(const void* addr, size_t len) {
    std::ifstream in("/proc/self/smaps");
    const uintptr_t lo = reinterpret_cast<uintptr_t>(addr), hi = lo + len;
    std::string line;
    bool inside = false;
    uint64_t total = 0;
    while (std::getline(in, line)) {
        unsigned long long a = 0, b = 0;
        if (std::sscanf(line.c_str(), "%llx-%llx ", &a, &b) == 2 && line.find(':') > line.find(' ')) {
            inside = a < hi && b > lo;
        } else if (inside && line.rfind("AnonHugePages:", 0) == 0) {
            total += std::strtoull(line.c_str() + 14, nullptr, 10) * 1024;
        }
    }
    return total;
}

// One cyclic permutation of N/64 nodes, built once and kept while consecutive runs (Google
// Benchmark's estimation runs and repetitions) ask for the same N; dropped when another size or
// another row runs, so at most one buffer is held at a time.
struct ChaseSet {
    int64_t bytes = 0;
    Mapping mem;
    Node* start = nullptr;
    std::string label;
};
std::unique_ptr<ChaseSet> g_chase;

void release_chase() { g_chase.reset(); }

// Sattolo's shuffle over node indices gives one cycle through all n nodes (O(n)); the nodes'
// pointers are then written in one sequential pass (node i -> node succ[i]).
std::string build_chase(int64_t bytes) {
    release_chase();
    const uint64_t n = static_cast<uint64_t>(bytes) / sizeof(Node);
    const uint64_t avail = mem_available_bytes();
    const uint64_t need = static_cast<uint64_t>(bytes) + n * sizeof(uint32_t) + 256 * kMiB;
    if (avail < need)
        return "working set of " + mib_text(bytes) + " cannot be held: MemAvailable is " + mib_text(avail) +
               " (needs " + mib_text(need) + " with the shuffle's index and a margin)";
    const bool huge = bytes >= 4 * kMiB;
    auto set = std::make_unique<ChaseSet>();
    Mapping index;
    if (!set->mem.map(bytes, huge) || !index.map(n * sizeof(uint32_t), n * sizeof(uint32_t) >= 4 * kMiB))
        return "working set of " + mib_text(bytes) + ": " + errno_text("mmap") + " (MemAvailable " +
               mib_text(avail) + ")";
    auto* succ = static_cast<uint32_t*>(index.data);
    for (uint64_t i = 0; i < n; ++i) succ[i] = static_cast<uint32_t>(i);
    Rng rng{0x5EED0000u + static_cast<uint64_t>(bytes)};
    // Sattolo: for i = n-1 .. 1, swap succ[i] with succ[j], j uniform in [0, i). The j's are drawn
    // kAhead steps early (same sequence) so that succ[j] can be prefetched: half the build time.
    constexpr uint64_t kAhead = 16;
    uint32_t ahead[kAhead];
    for (uint64_t k = 0; k < kAhead && k + 1 < n; ++k) ahead[k] = rng.below(static_cast<uint32_t>(n - 1 - k));
    for (uint64_t i = n - 1, k = 0; i > 0; --i, ++k) {
        const uint32_t j = ahead[k % kAhead];
        if (i > kAhead) {
            const uint32_t later = rng.below(static_cast<uint32_t>(i - kAhead));
            ahead[k % kAhead] = later;
            __builtin_prefetch(&succ[later], 1);
        }
        std::swap(succ[i], succ[j]);
    }
    auto* nodes = static_cast<Node*>(set->mem.data);
    for (uint64_t i = 0; i < n; ++i) nodes[i].next = &nodes[succ[i]];
    set->start = &nodes[0];
    // Warm a lap for the sizes a lap is cheap for (caches, TLB), so the first timed batch of
    // the cache-sized rows is not a cold one. The large sizes are cold by construction.
    if (n <= (32 * kMiB) / sizeof(Node)) {
        Node* p = set->start;
        for (uint64_t i = 0; i < n; ++i) p = p->next;
        benchmark::DoNotOptimize(p);
    }
    const uint64_t thp = anon_huge_bytes(set->mem.data, static_cast<size_t>(bytes));
    if (thp >= static_cast<uint64_t>(bytes) * 9 / 10) {
        set->label = "THP";
    } else if (thp == 0) {
        set->label = huge ? "4K pages (THP requested, not granted)" : "4K pages";
    } else {
        set->label = "THP partial: " + mib_text(thp) + " of " + mib_text(bytes) + ", rest 4K pages";
    }
    set->bytes = bytes;
    g_chase = std::move(set);
    return {};
}

// One operation = one load whose address is the value of the previous load (per_op).
void BM_chase(benchmark::State& state) {
    constexpr int kBatch = 1000;
    const int64_t bytes = state.range(0);
    if (!g_chase || g_chase->bytes != bytes) {
        std::string why = build_chase(bytes);
        if (!why.empty()) {
            state.SkipWithError(why.c_str());
            return;
        }
    }
    Node* p = g_chase->start;
    for (auto _ : state) {
        for (int k = 0; k < kBatch; ++k) p = p->next;
        benchmark::DoNotOptimize(p);
    }
    g_chase->start = p;   // the next run continues the walk where this one stopped
    state.SetLabel(g_chase->label);
    state.counters["per_op"] =
        benchmark::Counter(kBatch, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_chase)->Name("latency/chase")->ArgName("bytes")->RangeMultiplier(2)->Range(16 * kKiB, 1 * kGiB);

// ---------------------------------------------------------------- mutex, syscall -----------

// One operation = lock + unlock of an uncontended std::mutex.
void BM_mutex(benchmark::State& state) {
    release_chase();
    std::mutex m;
    for (auto _ : state) {
        m.lock();
        m.unlock();
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_mutex)->Name("latency/mutex");

// One operation = one system call that does nothing (getppid, which glibc does not cache).
void BM_syscall(benchmark::State& state) {
    release_chase();
    for (auto _ : state) {
        long r = syscall(SYS_getppid);
        benchmark::DoNotOptimize(r);
    }
}
BENCHMARK(BM_syscall)->Name("latency/syscall");

// ---------------------------------------------------------------- the disk ------------------

constexpr size_t kBlock = 4096;
constexpr int64_t kReadFileBytes = 256 * kMiB;
constexpr int64_t kWriteFileBytes = 16 * kMiB;

std::string micro_dir() {
    const char* d = std::getenv("CONCBENCH_MICRO_DIR");
    return d && *d ? d : "/var/tmp";
}

std::string fs_name(const std::string& dir, bool* is_tmpfs) {
    struct statfs sf;
    *is_tmpfs = false;
    if (statfs(dir.c_str(), &sf) != 0) return "unknown fs";
    switch (static_cast<unsigned long>(sf.f_type)) {
        case EXT4_SUPER_MAGIC: return "ext4";   // also ext2/ext3: one magic
        case XFS_SUPER_MAGIC: return "xfs";
        case BTRFS_SUPER_MAGIC: return "btrfs";
        case OVERLAYFS_SUPER_MAGIC: return "overlay";
        case TMPFS_MAGIC: *is_tmpfs = true; return "tmpfs";
        default: {
            char b[40];
            std::snprintf(b, sizeof b, "fs 0x%lx", static_cast<unsigned long>(sf.f_type));
            return b;
        }
    }
}

struct AlignedBuf {
    void* p = nullptr;
    explicit AlignedBuf(size_t n) {
        if (posix_memalign(&p, kBlock, n) != 0) p = nullptr;
    }
    ~AlignedBuf() { std::free(p); }
    AlignedBuf(const AlignedBuf&) = delete;
    AlignedBuf& operator=(const AlignedBuf&) = delete;
};

// A file of real (pseudo-random) data in the micro dir, written once and fsync'ed. Its name is
// unlinked as soon as it is open, so nothing is left behind whatever happens; the space goes
// back when the fd is closed (another row runs, or the process ends).
struct DiskFile {
    int fd = -1;
    bool direct = false;
    std::string fs;   // "ext4", or "tmpfs (RAM, not disk)"
    ~DiskFile() {
        if (fd >= 0) close(fd);
    }
};
std::unique_ptr<DiskFile> g_read_file, g_write_file;

void release_all() {
    release_chase();
    g_read_file.reset();
    g_write_file.reset();
}

// Creates the file; on failure returns the one-line reason. `want_direct`: open it with
// O_DIRECT if the filesystem takes it (else buffered: the caller drops the cache per read).
std::string make_file(int64_t bytes, bool want_direct, std::unique_ptr<DiskFile>* out) {
    const std::string dir = micro_dir();
    struct statvfs sv;
    if (statvfs(dir.c_str(), &sv) != 0) return errno_text(("statvfs " + dir).c_str());
    const uint64_t free_bytes = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    if (free_bytes < static_cast<uint64_t>(bytes) + 256 * kMiB)
        return "not enough space in " + dir + " for a " + mib_text(bytes) + " file: " + mib_text(free_bytes) + " free";
    auto f = std::make_unique<DiskFile>();
    bool tmpfs = false;
    f->fs = fs_name(dir, &tmpfs);
    if (tmpfs) f->fs += " (RAM, not disk)";
    std::string path = dir + "/concbench-micro-XXXXXX";
    int wfd = mkstemp(path.data());
    if (wfd < 0) return errno_text(("mkstemp in " + dir).c_str());
    std::vector<uint64_t> chunk(kMiB / sizeof(uint64_t));
    Rng rng{static_cast<uint64_t>(bytes)};
    std::string why;
    for (int64_t done = 0; done < bytes && why.empty(); done += kMiB) {
        for (auto& w : chunk) w = rng.next();
        if (write(wfd, chunk.data(), kMiB) != kMiB) why = errno_text(("write " + path).c_str());
    }
    if (why.empty() && fsync(wfd) != 0) why = errno_text(("fsync " + path).c_str());
    if (why.empty() && want_direct) {   // EINVAL at open or at the first read: no O_DIRECT here
        f->fd = open(path.c_str(), O_RDWR | O_DIRECT);
        if (f->fd >= 0) {
            AlignedBuf buf(kBlock);
            if (buf.p && pread(f->fd, buf.p, kBlock, 0) == static_cast<ssize_t>(kBlock)) {
                f->direct = true;
            } else {
                close(f->fd);
                f->fd = -1;
            }
        }
    }
    if (why.empty() && f->fd < 0) {
        f->fd = open(path.c_str(), O_RDWR);
        if (f->fd < 0) why = errno_text(("open " + path).c_str());
    }
    unlink(path.c_str());
    close(wfd);
    if (!why.empty()) return why;
    posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED);   // the writes' pages out of the cache
    *out = std::move(f);
    return {};
}

// One operation = one 4 KiB read at a random 4 KiB-aligned offset of a 256 MiB file not in the
// page cache. The buffered fallback drops the file's pages (posix_fadvise DONTNEED) before each
// read, with the timer paused (its cost, ~1 us, is noise next to a disk read).
void BM_disk_read(benchmark::State& state) {
    release_chase();
    g_write_file.reset();
    if (!g_read_file) {
        const std::string why = make_file(kReadFileBytes, true, &g_read_file);
        if (!why.empty()) {
            state.SkipWithError(why.c_str());
            return;
        }
    }
    DiskFile& f = *g_read_file;
    AlignedBuf buf(kBlock);
    if (!buf.p) {
        state.SkipWithError("posix_memalign of a 4 KiB buffer failed");
        return;
    }
    static Rng rng{0xD15C};   // continues across runs: no run re-reads the offsets of the last
    const auto blocks = static_cast<uint32_t>(kReadFileBytes / kBlock);
    for (auto _ : state) {
        const off_t off = static_cast<off_t>(rng.below(blocks)) * kBlock;
        if (!f.direct) {
            state.PauseTiming();
            posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED);
            state.ResumeTiming();
        }
        const ssize_t r = pread(f.fd, buf.p, kBlock, off);
        if (r != static_cast<ssize_t>(kBlock)) {
            state.SkipWithError(r < 0 ? errno_text("pread").c_str() : "pread: short read");
            break;
        }
    }
    state.SetLabel(std::string(f.direct ? "O_DIRECT" : "fadvise(DONTNEED)") + " on " + f.fs);
}
BENCHMARK(BM_disk_read)->Name("latency/disk_read_4k");

// One operation = pwrite of 4 KiB at a random 4 KiB-aligned offset of a 16 MiB file (already
// written and fsync'ed, so no block allocation) + fsync: the write is on the disk on return.
void BM_fsync_write(benchmark::State& state) {
    release_chase();
    g_read_file.reset();
    if (!g_write_file) {
        std::string why = make_file(kWriteFileBytes, false, &g_write_file);
        if (!why.empty()) {
            state.SkipWithError(why.c_str());
            return;
        }
    }
    DiskFile& f = *g_write_file;
    std::vector<char> data(kBlock, 'x');
    static Rng rng{0xF5C};
    const auto blocks = static_cast<uint32_t>(kWriteFileBytes / kBlock);
    for (auto _ : state) {
        const off_t off = static_cast<off_t>(rng.below(blocks)) * kBlock;
        data[0] = static_cast<char>(off);
        if (pwrite(f.fd, data.data(), kBlock, off) != static_cast<ssize_t>(kBlock) || fsync(f.fd) != 0) {
            state.SkipWithError(errno_text("pwrite/fsync").c_str());
            break;
        }
    }
    state.SetLabel("pwrite+fsync on " + f.fs);
}
BENCHMARK(BM_fsync_write)->Name("latency/fsync_write_4k");

// ---------------------------------------------------------------- loopback TCP -------------

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    ~Fd() { reset(); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    void reset() {
        if (fd >= 0) close(fd);
        fd = -1;
    }
};

// One operation = one round trip: 1 byte written to a TCP socket on 127.0.0.1, echoed back by
// a partner thread with blocking read/write, read again (TCP_NODELAY on both ends). real_time
// is the figure (cpu_time counts only this thread).
void BM_loopback_rtt(benchmark::State& state) {
    release_all();
    Fd lst(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (lst.fd < 0) {
        state.SkipWithError(errno_text("socket").c_str());
        return;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (bind(lst.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lst.fd, 1) != 0 ||
        getsockname(lst.fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
        state.SkipWithError(errno_text("bind/listen on 127.0.0.1").c_str());
        return;
    }
    Fd cli(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (cli.fd < 0 || connect(cli.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        state.SkipWithError(errno_text("connect 127.0.0.1").c_str());
        return;
    }
    Fd srv(accept4(lst.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (srv.fd < 0) {
        state.SkipWithError(errno_text("accept").c_str());
        return;
    }
    int one = 1;
    setsockopt(cli.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(srv.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread echo([fd = srv.fd] {
        char c;
        while (read(fd, &c, 1) == 1)
            if (write(fd, &c, 1) != 1) break;
    });
    char c = 'x';
    for (auto _ : state) {
        if (write(cli.fd, &c, 1) != 1 || read(cli.fd, &c, 1) != 1) {
            state.SkipWithError(errno_text("round trip").c_str());
            break;
        }
    }
    shutdown(cli.fd, SHUT_RDWR);   // the echo thread reads EOF and returns
    echo.join();
}
BENCHMARK(BM_loopback_rtt)->Name("latency/loopback_tcp_rtt");

// ---------------------------------------------------------------- cache sizes --------------

struct CacheSizes {
    std::map<int, uint64_t> kib;   // 1 = L1d, 2 = L2, 3 = L3
};

uint64_t parse_size_kib(std::string s) {
    uint64_t v = std::strtoull(s.c_str(), nullptr, 10);
    if (s.find('M') != std::string::npos) return v * 1024;
    if (s.find('G') != std::string::npos) return v * 1024 * 1024;
    if (s.find('K') != std::string::npos) return v;
    return v / 1024;   // plain bytes
}

bool caches_from_sysfs(CacheSizes* out) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path dir = "/sys/devices/system/cpu/cpu0/cache";
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        if (it->path().filename().string().rfind("index", 0) != 0) continue;
        auto slurp = [&](const char* name) {
            std::ifstream in(it->path() / name);
            std::string s;
            in >> s;
            return s;
        };
        const int level = std::atoi(slurp("level").c_str());
        const std::string type = slurp("type"), size = slurp("size");
        if (level < 1 || level > 3 || type == "Instruction" || size.empty()) continue;
        out->kib[level] = parse_size_kib(size);
    }
    return !out->kib.empty();
}

bool caches_from_cpuid(CacheSizes* out) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    const bool intel = std::strcmp(vendor, "GenuineIntel") == 0;
    const bool amd = std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0;
    const unsigned max_basic = a;
    unsigned max_ext = __get_cpuid_max(0x80000000u, nullptr);
    // Deterministic cache parameters: Intel leaf 4, AMD leaf 0x8000001D (with TopologyExtensions).
    unsigned leaf = 0;
    if (intel && max_basic >= 4) leaf = 4;
    if (amd && max_ext >= 0x8000001Du && __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 22)))
        leaf = 0x8000001Du;
    for (unsigned sub = 0; leaf && sub < 16; ++sub) {
        if (!__get_cpuid_count(leaf, sub, &a, &b, &c, &d)) break;
        const unsigned type = a & 0x1f, level = (a >> 5) & 0x7;
        if (type == 0) break;
        if (type == 2 || level < 1 || level > 3) continue;   // instruction cache
        const uint64_t bytes = uint64_t((b >> 22) + 1) * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) * (uint64_t(c) + 1);
        out->kib[static_cast<int>(level)] = bytes / 1024;
    }
    // AMD's older leaves fill what is still missing: L1d KiB, L2 KiB, L3 in 512 KiB units.
    if (amd && max_ext >= 0x80000005u && !out->kib.count(1) && __get_cpuid(0x80000005u, &a, &b, &c, &d) && (c >> 24))
        out->kib[1] = c >> 24;
    if (amd && max_ext >= 0x80000006u && __get_cpuid(0x80000006u, &a, &b, &c, &d)) {
        if (!out->kib.count(2) && (c >> 16)) out->kib[2] = c >> 16;
        if (!out->kib.count(3) && (d >> 18)) out->kib[3] = uint64_t(d >> 18) * 512;
    }
    return !out->kib.empty();
#else
    (void)out;
    return false;
#endif
}

}  // namespace

namespace concbench::micro {

void add_latency_context() {
    CacheSizes cs;
    std::string source = "none";
    if (caches_from_sysfs(&cs)) {
        source = "sysfs";
    } else if (caches_from_cpuid(&cs)) {
        source = "cpuid";
    }
    const char* keys[] = {nullptr, "cache_l1d_kib", "cache_l2_kib", "cache_l3_kib"};
    for (const auto& [level, kib] : cs.kib) benchmark::AddCustomContext(keys[level], std::to_string(kib));
    benchmark::AddCustomContext("cache_source", source);
}

}  // namespace concbench::micro
