// `concbench micro`: the micro suite's runner. bin/concbench-micro (Google Benchmark) runs once
// per group (create, switch, ring, wait, memory, latency): a group that crashes or is
// interrupted loses only itself, and micro.json (the groups merged, Google Benchmark's context
// block kept) is rewritten after each group. Then Dahl's latency table is printed from it.
#include "concbench/micro.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <cstring>

#include <fmt/format.h>

#include "concbench/registry.hpp"
#include "concbench/results.hpp"
#include "concbench/runner.hpp"

extern char** environ;

namespace concbench {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

volatile sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

// Runs argv; its stdout into `out` when out != nullptr (else inherited; stderr then goes to
// /dev/null: a listing's "Failed to match" is ours to say). The wait status.
int run_child(const std::vector<std::string>& args, std::string* out) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int pipefd[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out) {
        if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    }
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (out) close(pipefd[1]);
    if (rc != 0) {
        if (out) close(pipefd[0]);
        errno = rc;
        return -1;
    }
    if (out) {
        char buf[4096];
        ssize_t n;
        while ((n = read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
            if (n > 0) out->append(buf, static_cast<size_t>(n));
        close(pipefd[0]);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return "ended oddly";
}

std::string regex_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (std::strchr("\\^$.|?*+()[]{}", c)) out += '\\';
        out += c;
    }
    return out;
}

// Google Benchmark's JSON writes NaN and Infinity (the cv of a constant counter), which JSON has
// not: they are read as null.
json parse_gbench(std::istream& in) {
    std::stringstream ss;
    ss << in.rdbuf();
    static const std::regex bad(R"((:\s*)-?(NaN|Infinity)(\s*[,}\]\n]))");
    return json::parse(std::regex_replace(ss.str(), bad, "$1null$3"), nullptr, false);
}

// A run id, run dir or micro.json path -> the micro.json path.
fs::path micro_json_path(const std::string& what, const std::string& root) {
    fs::path p(what);
    if (fs::is_regular_file(p)) return p;
    if (fs::is_directory(p)) return p / "micro.json";
    return fs::path(root) / what / "micro.json";
}

bool load_micro(const std::string& what, const std::string& root, json& out) {
    fs::path p = micro_json_path(what, root);
    std::ifstream in(p);
    if (!in) {
        fmt::print(stderr, "concbench micro: no micro results at {} (give a run id, a run directory or a micro.json)\n",
                   p.string());
        return false;
    }
    out = parse_gbench(in);
    if (out.is_discarded() || !out.contains("benchmarks")) {
        fmt::print(stderr, "concbench micro: {} is not a micro suite's JSON\n", p.string());
        return false;
    }
    return true;
}

double to_ns(double v, const std::string& unit) {
    if (unit == "us") return v * 1e3;
    if (unit == "ms") return v * 1e6;
    if (unit == "s") return v * 1e9;
    return v;
}

// A run's figure in ns per operation: the per_op counter (seconds) where there is one.
double run_ns(const json& b) {
    if (b.contains("per_op") && b["per_op"].is_number()) return b["per_op"].get<double>() * 1e9;
    return to_ns(b.value("real_time", 0.0), b.value("time_unit", "ns"));
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fmt_ns(double ns) {
    if (ns <= 0) return "-";
    if (ns < 10) return fmt::format("{:.2f} ns", ns);
    if (ns < 1e3) return fmt::format("{:.0f} ns", ns);
    if (ns < 1e6) return fmt::format("{:.1f} µs", ns / 1e3);
    if (ns < 1e9) return fmt::format("{:.2f} ms", ns / 1e6);
    return fmt::format("{:.2f} s", ns / 1e9);
}

std::string fmt_bytes(long b) {
    if (b >= 1L << 30 && b % (1L << 30) == 0) return fmt::format("{} GiB", b >> 30);
    if (b >= 1L << 20 && b % (1L << 20) == 0) return fmt::format("{} MiB", b >> 20);
    return fmt::format("{} KiB", b >> 10);
}

std::string fmt_count(double v) {
    if (v >= 1e6) return fmt::format("{:.1f} M", v / 1e6);
    if (v >= 1e4) return fmt::format("{:.0f} K", v / 1e3);
    if (v >= 100) return fmt::format("{:.0f}", v);
    return fmt::format("{:.1f}", v);
}

// Seconds as a person says them: "4.7 s", "1.4 min", "158 days", "2.5 years".
std::string human(double s) {
    if (s < 60) return fmt::format("{:.1f} s", s);
    if (s < 3600) return fmt::format("{:.1f} min", s / 60);
    if (s < 86400) return fmt::format("{:.1f} h", s / 3600);
    if (s < 365.25 * 86400) return fmt::format("{:.0f} days", s / 86400);
    return fmt::format("{:.1f} years", s / (365.25 * 86400));
}

}  // namespace

// Two-sided Mann-Whitney U test p-value: exact for small samples without ties, else the normal
// approximation with tie and continuity correction (scipy.stats.mannwhitneyu's defaults, which
// Google Benchmark's compare.py calls).
double mann_whitney_p(const std::vector<double>& x, const std::vector<double>& y) {
    const size_t n1 = x.size(), n2 = y.size();
    if (n1 < 2 || n2 < 2) return NAN;
    std::vector<std::pair<double, int>> all;
    for (double v : x) all.push_back({v, 0});
    for (double v : y) all.push_back({v, 1});
    std::sort(all.begin(), all.end());
    const size_t n = all.size();
    std::vector<double> rank(n);
    double tie_term = 0;
    bool ties = false;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && all[j + 1].first == all[i].first) ++j;
        double t = static_cast<double>(j - i + 1);
        if (t > 1) ties = true;
        tie_term += t * t * t - t;
        for (size_t k = i; k <= j; ++k) rank[k] = (i + j) / 2.0 + 1;
        i = j + 1;
    }
    double r1 = 0;
    for (size_t i = 0; i < n; ++i)
        if (all[i].second == 0) r1 += rank[i];
    const double u1 = r1 - n1 * (n1 + 1) / 2.0;
    const double u = std::max(u1, static_cast<double>(n1 * n2) - u1);
    if (!ties && n1 <= 8 && n2 <= 8) {
        // Exact: count the arrangements whose U is at least u. c[i][j][k]: orderings of i x's
        // and j y's with U = k, built up one element at a time.
        const int maxu = static_cast<int>(n1 * n2);
        std::vector<std::vector<std::vector<double>>> c(
            n1 + 1, std::vector<std::vector<double>>(n2 + 1, std::vector<double>(maxu + 1, 0)));
        for (size_t i = 0; i <= n1; ++i)
            for (size_t j = 0; j <= n2; ++j)
                for (int k = 0; k <= maxu; ++k) {
                    if (i == 0 || j == 0) {
                        c[i][j][k] = k == 0 ? 1 : 0;
                        continue;
                    }
                    // The largest element is an x (it beats all j y's) or a y.
                    c[i][j][k] = (k >= static_cast<int>(j) ? c[i - 1][j][k - j] : 0) + c[i][j - 1][k];
                }
        double total = 0, tail = 0;
        for (int k = 0; k <= maxu; ++k) {
            total += c[n1][n2][k];
            if (k >= u) tail += c[n1][n2][k];
        }
        return std::min(1.0, 2 * tail / total);
    }
    const double mu = n1 * n2 / 2.0;
    const double sigma = std::sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1.0))));
    if (sigma == 0) return 1.0;
    const double z = (u - mu - 0.5) / sigma;
    return std::min(1.0, std::erfc(z / std::sqrt(2.0)));
}

std::string base_name(const std::string& name) {
    static const std::regex suffix(R"(/((min_time|iterations|repeats|threads):[^/]*|manual_time|real_time|process_time)(?=/|$))");
    return std::regex_replace(name, suffix, "");
}

std::vector<MicroFigure> micro_figures(const json& micro) {
    std::vector<MicroFigure> out;
    std::map<std::string, size_t> at;
    std::map<std::string, double> medians;
    for (const auto& b : micro.value("benchmarks", json::array())) {
        const std::string name = base_name(b.value("run_name", b.value("name", "")));
        if (!at.count(name)) {
            at[name] = out.size();
            MicroFigure f;
            f.name = name;
            out.push_back(std::move(f));
        }
        MicroFigure& f = out[at[name]];
        if (b.value("error_occurred", false)) {
            f.error = b.value("error_message", "skipped");
            continue;
        }
        if (b.contains("label")) f.label = b["label"].get<std::string>();
        if (b.value("run_type", "") == "aggregate") {
            if (b.value("aggregate_name", "") == "median") medians[name] = run_ns(b);
            continue;
        }
        f.samples_ns.push_back(run_ns(b));
    }
    for (auto& f : out) f.ns = medians.count(f.name) ? medians[f.name] : median(f.samples_ns);
    return out;
}

json latency_rows(const json& micro) {
    auto figs = micro_figures(micro);
    std::map<std::string, const MicroFigure*> by;
    std::vector<std::pair<long, const MicroFigure*>> chase;   // working set, figure
    static const std::regex chase_re(R"(^latency/chase/bytes:(\d+))");
    for (const auto& f : figs) {
        by[f.name] = &f;
        std::smatch m;
        if (std::regex_search(f.name, m, chase_re) && f.error.empty() && f.ns > 0)
            chase.push_back({std::stol(m[1]), &f});
    }
    std::sort(chase.begin(), chase.end(), [](auto& a, auto& b) { return a.first < b.first; });
    const json& ctx = micro.value("context", json::object());
    auto ctx_num = [&](const char* k, double dflt) {
        if (!ctx.contains(k)) return dflt;
        const json& v = ctx[k];
        if (v.is_number()) return v.get<double>();
        if (v.is_string()) return std::atof(v.get<std::string>().c_str());
        return dflt;
    };
    const double mhz = ctx_num("measured_mhz", ctx_num("mhz_per_cpu", 0));
    // The largest working set within half of a cache level (the other half: code, stacks, the
    // page tables the walk itself needs).
    auto within = [&](double kib, long fallback) -> const std::pair<long, const MicroFigure*>* {
        long limit = kib > 0 ? static_cast<long>(kib * 1024 / 2) : fallback;
        const std::pair<long, const MicroFigure*>* best = nullptr;
        for (const auto& c : chase)
            if (c.first <= limit) best = &c;
        return best;
    };
    json rows = json::array();
    auto row = [&](const std::string& dev, double essay, const MicroFigure* f, const std::string& what) {
        json r = {{"device", dev}, {"what", what}};
        if (essay > 0) r["essay_cycles"] = essay, r["essay_human_s"] = essay / 3;
        if (f) {
            r["benchmark"] = f->name;
            if (f->error.empty() && f->ns > 0) {
                r["ns"] = f->ns;
                if (mhz > 0) r["cycles"] = f->ns * mhz / 1e3;
            }
        }
        rows.push_back(r);
    };
    auto add_chase = [&](const char* dev, double essay, const std::pair<long, const MicroFigure*>* c) {
        if (c) row(dev, essay, c->second, fmt::format("pointer chase over {}", fmt_bytes(c->first)));
        else row(dev, essay, nullptr, "not measured");
    };
    // The essay's rows only: an L3 size a VM's CPUID reports may be the host's whole socket (here
    // 508 MiB), so an "L3" row would be RAM; the chase curve on latency-table.png shows the steps.
    add_chase("L1", 3, within(ctx_num("cache_l1d_kib", 0), 16 << 10));
    add_chase("L2", 14, within(ctx_num("cache_l2_kib", 0), 256 << 10));
    add_chase("RAM", 250, chase.empty() ? nullptr : &chase.back());
    auto add = [&](const char* dev, double essay, const char* name, const char* what) {
        auto it = by.find(name);
        std::string w = what;
        if (it != by.end() && !it->second->error.empty()) w = "skipped: " + it->second->error;
        else if (it != by.end() && !it->second->label.empty()) w += " (" + it->second->label + ")";
        else if (it == by.end()) w += " (not run)";
        row(dev, essay, it == by.end() ? nullptr : it->second, w);
    };
    add("mutex", 0, "latency/mutex", "uncontended lock + unlock");
    add("syscall", 0, "latency/syscall", "getppid");
    add("disk", 41e6, "latency/disk_read_4k", "4 KiB random read, not cached");
    add("disk write", 0, "latency/fsync_write_4k", "4 KiB write + fsync");
    add("loopback", 0, "latency/loopback_tcp_rtt", "TCP round trip on 127.0.0.1 (not a WAN)");
    row("network", 240e6, nullptr, "a WAN round trip: the essay's row, not measurable here");
    // Humanified as the essay does it, but with our own L1 as 1 s.
    const double l1 = rows[0].contains("cycles") ? rows[0]["cycles"].get<double>() : 0;
    for (auto& r : rows)
        if (l1 > 0 && r.contains("cycles")) r["human_s"] = r["cycles"].get<double>() / l1;
    return {{"measured_mhz", mhz}, {"rows", rows}};
}

std::vector<std::string> latency_table(const json& micro) {
    json t = latency_rows(micro);
    std::vector<std::string> out;
    out.push_back(fmt::format("Dahl's latency table on this machine (clock measured at {:.0f} MHz; humanified: "
                              "the essay's 3 cycles = 1 s, ours our L1 = 1 s)",
                              t["measured_mhz"].get<double>()));
    out.push_back(fmt::format("  {:<11} {:>10} {:>11}   {:>10} {:>10} {:>11}   {}", "device", "essay cyc", "essay human",
                              "ns", "cycles", "human", "what was measured"));
    for (const auto& r : t["rows"]) {
        auto num = [&](const char* k) { return r.contains(k) ? r[k].get<double>() : 0.0; };
        out.push_back(fmt::format("  {:<11} {:>10} {:>11}   {:>10} {:>10} {:>11}   {}", r["device"].get<std::string>(),
                                  num("essay_cycles") > 0 ? fmt_count(num("essay_cycles")) : "",
                                  num("essay_cycles") > 0 ? human(num("essay_human_s")) : "", fmt_ns(num("ns")),
                                  num("cycles") > 0 ? fmt_count(num("cycles")) : "-",
                                  num("human_s") > 0 ? human(num("human_s")) : "-", r["what"].get<std::string>()));
    }
    return out;
}

std::vector<std::string> compare_micro(const json& a, const json& b) {
    auto fa = micro_figures(a), fb = micro_figures(b);
    std::map<std::string, const MicroFigure*> by;
    for (const auto& f : fb) by[f.name] = &f;
    std::size_t w = 24;
    for (const auto& f : fa) w = std::max(w, f.name.size() + 1);
    std::vector<std::string> out;
    out.push_back(fmt::format("{:<{}} {:>11} {:>11} {:>8} {:>7}  {}", "benchmark", w, "A", "B", "change", "p", "note"));
    for (const auto& f : fa) {
        auto it = by.find(f.name);
        if (it == by.end()) {
            out.push_back(fmt::format("{:<{}} {:>11} {:>11}", f.name, w, fmt_ns(f.ns), "(not in B)"));
            continue;
        }
        const MicroFigure& g = *it->second;
        if (!f.error.empty() || !g.error.empty()) {
            out.push_back(fmt::format("{:<{}} {:>11} {:>11} {:>8} {:>7}  skipped: {}", f.name, w, fmt_ns(f.ns),
                                      fmt_ns(g.ns), "", "", f.error.empty() ? g.error : f.error));
            continue;
        }
        double change = f.ns > 0 ? (g.ns - f.ns) / f.ns : 0;
        double p = mann_whitney_p(f.samples_ns, g.samples_ns);
        std::string note = std::isnan(p) ? "one repetition: no test" : p < 0.05 ? "differs (p < 0.05)" : "";
        out.push_back(fmt::format("{:<{}} {:>11} {:>11} {:>+7.1f}% {:>7}  {}", f.name, w, fmt_ns(f.ns), fmt_ns(g.ns),
                                  change * 100, std::isnan(p) ? "" : fmt::format("{:.3f}", p), note));
    }
    for (const auto& g : fb)
        if (std::none_of(fa.begin(), fa.end(), [&](const MicroFigure& f) { return f.name == g.name; }))
            out.push_back(fmt::format("{:<{}} {:>11} {:>11}", g.name, w, "(not in A)", fmt_ns(g.ns)));
    return out;
}

int run_micro(const MicroOptions& o) {
    if (!o.compare.empty()) {
        if (o.compare.size() != 2) {
            fmt::print(stderr, "concbench micro: --compare takes two runs (got {})\n", o.compare.size());
            return 2;
        }
        json a, b;
        if (!load_micro(o.compare[0], o.results_root, a) || !load_micro(o.compare[1], o.results_root, b)) return 2;
        fmt::print("A: {}\nB: {}\n", micro_json_path(o.compare[0], o.results_root).string(),
                   micro_json_path(o.compare[1], o.results_root).string());
        for (const auto& l : compare_micro(a, b)) fmt::print("{}\n", l);
        return 0;
    }
    if (!o.table.empty()) {
        json m;
        if (!load_micro(o.table, o.results_root, m)) return 2;
        for (const auto& l : latency_table(m)) fmt::print("{}\n", l);
        return 0;
    }
    const std::string bin = bin_dir() + "/concbench-micro";
    if (access(bin.c_str(), X_OK) != 0) {
        fmt::print(stderr, "concbench micro: {} is not built (make build)\n", bin);
        return 2;
    }
    if (!o.filter.empty()) {
        try {
            std::regex re(o.filter);
        } catch (const std::regex_error& e) {
            fmt::print(stderr, "concbench micro: --filter '{}' is not a regular expression: {}\n", o.filter, e.what());
            return 2;
        }
    }
    // The benchmarks the filter selects, in the binary's order, grouped by their first word.
    std::string listing;
    int st = run_child({bin, "--benchmark_list_tests=true", "--benchmark_filter=" + (o.filter.empty() ? "." : o.filter)},
                       &listing);
    if (st != 0) {
        fmt::print(stderr, "concbench micro: listing the benchmarks failed ({})\n", describe_status(st));
        return 2;
    }
    std::vector<std::pair<std::string, std::vector<std::string>>> groups;
    std::size_t total = 0;
    {
        std::istringstream in(listing);
        for (std::string line; std::getline(in, line);) {
            if (line.empty() || line.find('/') == std::string::npos) continue;
            std::string g = line.substr(0, line.find('/'));
            if (groups.empty() || groups.back().first != g) groups.push_back({g, {}});
            groups.back().second.push_back(line);
            ++total;
        }
    }
    if (o.list) {
        for (const auto& [g, names] : groups)
            for (const auto& n : names) fmt::print("{}\n", n);
        return 0;
    }
    if (total == 0) {
        fmt::print(stderr, "concbench micro: no benchmark matches '{}' (see concbench micro --list)\n", o.filter);
        return 2;
    }

    std::string run_id;
    fs::path dir;
    if (!o.run.empty()) {
        dir = fs::path(o.results_root) / o.run;
        if (!fs::is_directory(dir)) {
            fmt::print(stderr, "concbench micro: no run '{}' under {}\n", o.run, o.results_root);
            return 2;
        }
        run_id = fs::canonical(dir).filename().string();
    } else {
        fs::create_directories(o.results_root);
        run_id = make_run_id(o.results_root, "micro");
        dir = fs::path(o.results_root) / run_id;
        fs::create_directories(dir);
        point_latest(o.results_root, run_id);
    }
    fs::create_directories(dir / "micro");
    const int reps = o.short_set ? 1 : o.repetitions;
    const double min_time = o.short_set ? 0.01 : o.min_time_s;
    fmt::print("concbench micro: {} benchmarks in {} groups, {} repetition(s), min time {} s -> {}\n", total,
               groups.size(), reps, min_time, (dir / "micro.json").string());

    json merged = {{"context", json::object()},
                   {"benchmarks", json::array()},
                   {"concbench", {{"run_id", run_id},
                                  {"filter", o.filter},
                                  {"short", o.short_set},
                                  {"repetitions", reps},
                                  {"min_time_s", min_time},
                                  {"groups", json::array()}}}};
    struct sigaction sa {}, old_int {};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old_int);
    int rc = 0;
    std::size_t gi = 0;
    for (const auto& [group, names] : groups) {
        ++gi;
        std::string re;
        for (const auto& n : names) re += (re.empty() ? "" : "|") + regex_escape(n);
        const fs::path out = dir / "micro" / (group + ".json");
        fs::remove(out);
        fmt::print("\n[{}/{}] {}: {} benchmark(s)\n", gi, groups.size(), group, names.size());
        std::fflush(stdout);
        std::vector<std::string> args = {bin,
                                         "--benchmark_filter=^(" + re + ")$",
                                         fmt::format("--benchmark_repetitions={}", reps),
                                         fmt::format("--benchmark_min_time={}", min_time),
                                         "--benchmark_out=" + out.string(),
                                         "--benchmark_out_format=json"};
        if (reps > 1) args.push_back("--benchmark_display_aggregates_only=true");
        int status = run_child(args, nullptr);
        json g = {{"name", group}, {"benchmarks", names.size()}};
        std::ifstream in(out);
        json part = in ? parse_gbench(in) : json();
        if (status == 0 && !part.is_discarded() && part.contains("benchmarks")) {
            if (merged["context"].empty()) merged["context"] = part["context"];
            for (auto& b : part["benchmarks"]) merged["benchmarks"].push_back(b);
            g["status"] = "ok";
        } else {
            g["status"] = g_interrupted ? "interrupted" : "failed";
            g["error"] = status == 0 ? "its JSON is missing or cut short" : describe_status(status);
            if (!g_interrupted) {
                fmt::print(stderr, "concbench micro: group {} failed: {}\n", group, g["error"].get<std::string>());
                rc = 1;
            }
        }
        merged["concbench"]["groups"].push_back(g);
        merged["concbench"]["latency_table"] = latency_rows(merged);
        write_json_file((dir / "micro.json").string(), merged);
        if (g_interrupted) break;
    }
    sigaction(SIGINT, &old_int, nullptr);
    fmt::print("\n");
    for (const auto& l : latency_table(merged)) fmt::print("{}\n", l);
    std::size_t skipped = 0;
    for (const auto& f : micro_figures(merged))
        if (!f.error.empty()) {
            if (!skipped++) fmt::print("\nskipped rows:\n");
            fmt::print("  {}: {}\n", f.name, f.error);
        }
    fmt::print("\nconcbench micro: {} -> {}\n", g_interrupted ? "interrupted" : "done", (dir / "micro.json").string());
    if (g_interrupted) return 130;
    return rc;
}

}  // namespace concbench
