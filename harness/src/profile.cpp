// Profiles: profiles/<name>.toml, read with toml++ and refused whole if anything is off.
#include "concbench/profile.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "concbench/host.hpp"
#include "concbench/workloads.hpp"

namespace fs = std::filesystem;

namespace concbench {
namespace {

struct Ctx {
    std::string file;
    [[noreturn]] void fail(const toml::node& n, const std::string& what) const {
        throw std::runtime_error(fmt::format("{}:{}: {}", file, n.source().begin.line, what));
    }
};

double positive_number(const Ctx& c, const toml::node& n, const char* key, double max) {
    std::optional<double> v = n.value<double>();
    if (!v || !(*v > 0) || *v > max)
        c.fail(n, fmt::format("'{}' must be a number of seconds above 0 and at most {}", key, max));
    return *v;
}

double fraction(const Ctx& c, const toml::node& n, const char* key) {
    std::optional<double> v = n.value<double>();
    if (!v || !(*v > 0) || *v > 1)
        c.fail(n, fmt::format("'{}' must be a fraction of a core above 0 and at most 1 (0.05 = 5 %)", key));
    return *v;
}

double seconds_or_zero(const Ctx& c, const toml::node& n, const char* key, double max) {
    std::optional<double> v = n.value<double>();
    if (!v || !(*v >= 0) || *v > max)
        c.fail(n, fmt::format("'{}' must be a number of seconds from 0 to {}", key, max));
    return *v;
}

int whole_number(const Ctx& c, const toml::node& n, const char* key, int lo, int hi) {
    std::optional<int64_t> v = n.value<int64_t>();
    if (!n.is_integer() || !v || *v < lo || *v > hi)
        c.fail(n, fmt::format("'{}' must be a whole number from {} to {}", key, lo, hi));
    return static_cast<int>(*v);
}

std::vector<std::string> names(const Ctx& c, const toml::node& n, const char* key,
                               const std::vector<std::string>& valid,
                               const std::function<bool(const std::string&)>& also_valid = {}) {
    std::vector<std::string> out;
    if (n.is_string() && *n.value<std::string>() == "all") return valid;
    const toml::array* a = n.as_array();
    if (!a || a->empty())
        c.fail(n, fmt::format("'{}' must be a non-empty array of names, or \"all\"", key));
    for (const toml::node& e : *a) {
        std::optional<std::string> s = e.value<std::string>();
        if (!s || (std::find(valid.begin(), valid.end(), *s) == valid.end() && !(also_valid && also_valid(*s))))
            c.fail(e, fmt::format("unknown {} '{}' (valid: {})", std::string(key).substr(0, std::strlen(key) - 1),
                                  s ? *s : std::string("<not a string>"), fmt::join(valid, ", ")));
        if (std::find(out.begin(), out.end(), *s) != out.end())
            c.fail(e, fmt::format("'{}' is listed twice in '{}'", *s, key));
        out.push_back(*s);
    }
    return out;
}

std::vector<int> cpu_list(const Ctx& c, const toml::node& n, const char* key) {
    std::vector<int> allowed = allowed_cpus();
    const toml::array* a = n.as_array();
    if (!a) c.fail(n, fmt::format("'{}' must be an array of CPU numbers, e.g. [0]", key));
    std::vector<int> out;
    for (const toml::node& e : *a) {
        int cpu = whole_number(c, e, key, 0, 4095);
        if (std::find(allowed.begin(), allowed.end(), cpu) == allowed.end())
            c.fail(e, fmt::format("'{}': this machine has no CPU {} available (available: {})",
                                  key, cpu, fmt::join(allowed, ", ")));
        out.push_back(cpu);
    }
    return out;
}

std::string resolve(const std::string& name_or_path) {
    if (name_or_path.find('/') != std::string::npos || name_or_path.ends_with(".toml"))
        return name_or_path;
    return source_dir() + "/profiles/" + name_or_path + ".toml";
}

}  // namespace

Profile load_profile(const std::string& name_or_path, const std::vector<ModelInfo>& registry) {
    Profile p;
    p.path = resolve(name_or_path);
    if (!fs::exists(p.path)) {
        std::vector<std::string> have;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(source_dir() + "/profiles", ec))
            if (e.path().extension() == ".toml") have.push_back(e.path().stem().string());
        std::sort(have.begin(), have.end());
        throw std::runtime_error(fmt::format("{}: no such file; profiles available: {}", p.path,
                                             fmt::join(have, ", ")));
    }
    std::ifstream in(p.path);
    std::stringstream ss;
    ss << in.rdbuf();
    p.text = ss.str();
    Ctx c{p.path};
    toml::table t;
    try {
        t = toml::parse(p.text, p.path);
    } catch (const toml::parse_error& e) {
        throw std::runtime_error(fmt::format("{}:{}: {}", p.path, e.source().begin.line, e.description()));
    }

    std::vector<std::string> model_names, native_names, workload_names;
    for (const auto& m : registry) {
        model_names.push_back(m.name);
        if (m.native()) native_names.push_back(m.name);  // "all": what runs natively here
    }
    for (const auto& w : all_workloads()) workload_names.push_back(w.name);
    // Parametric workloads (delay-50, bytes-4m, fanout-4x10 ...) are valid by their grammar.
    auto is_workload = [](const std::string& s) { return find_workload(s) != nullptr; };

    std::vector<int> cpus = allowed_cpus();
    p.server_cpus = {cpus.front()};
    p.client_cpus = {cpus.size() > 1 ? cpus[1] : cpus.front()};
    p.name = fs::path(p.path).stem().string();

    static const std::vector<std::string> keys = {
        "name", "description", "models", "workloads", "connections", "repetitions", "warmup_s",
        "duration_s", "ready_timeout_s", "stop_grace_s", "server_cpus", "client_cpus", "client_threads",
        "workers", "connections_for", "cells_for", "backend", "pipeline", "idle_connections", "rate_sweep",
        "request_timeout_s", "verify", "primer_stall_s", "primer_timeout_s", "interference_threshold",
        "slowdown_threshold", "disturbed_reruns", "quiet_wait_s", "rest_check_s"};
    std::vector<std::string> required = {"models", "workloads", "connections"};
    for (auto&& [k, v] : t) {
        std::string key(k.str());
        if (key == "name") {
            if (!v.is_string()) c.fail(v, "'name' must be a string");
            p.name = *v.value<std::string>();
        } else if (key == "description") {
            if (!v.is_string()) c.fail(v, "'description' must be a string");
            p.description = *v.value<std::string>();
        } else if (key == "models") {
            p.models = v.is_string() && *v.value<std::string>() == "all" ? native_names : names(c, v, "models", model_names);
        }
        else if (key == "workloads") p.workloads = names(c, v, "workloads", workload_names, is_workload);
        else if (key == "connections") {
            const toml::array* a = v.as_array();
            if (!a || a->empty()) c.fail(v, "'connections' must be a non-empty array of counts");
            for (const toml::node& e : *a) p.connections.push_back(whole_number(c, e, "connections", 1, 100000));
        } else if (key == "idle_connections") {
            const toml::array* a = v.as_array();
            if (!a || a->empty())
                c.fail(v, "'idle_connections' must be a non-empty array of counts, e.g. [0, 1000, 10000]");
            p.idle_connections.clear();
            for (const toml::node& e : *a)
                p.idle_connections.push_back(whole_number(c, e, "idle_connections", 0, 100000));
        } else if (key == "rate_sweep") {
            const toml::array* a = v.as_array();
            if (!a) c.fail(v, "'rate_sweep' must be an array of fractions of the closed-loop maximum, e.g. [0.1, 0.5, 1.0]");
            for (const toml::node& e : *a) {
                std::optional<double> f = e.value<double>();
                if (!f || !(*f > 0) || *f > 10)
                    c.fail(e, "'rate_sweep': each step must be a fraction above 0 and at most 10 (1.0 = the closed-loop maximum)");
                if (std::find(p.rate_sweep.begin(), p.rate_sweep.end(), *f) != p.rate_sweep.end())
                    c.fail(e, fmt::format("'rate_sweep': {} is listed twice", *f));
                p.rate_sweep.push_back(*f);
            }
        } else if (key == "pipeline") p.pipeline = whole_number(c, v, "pipeline", 1, 1024);
        else if (key == "request_timeout_s") p.request_timeout_s = positive_number(c, v, "request_timeout_s", 600);
        else if (key == "repetitions") p.repetitions = whole_number(c, v, "repetitions", 1, 100);
        else if (key == "warmup_s") p.warmup_s = positive_number(c, v, "warmup_s", 3600);
        else if (key == "duration_s") p.duration_s = positive_number(c, v, "duration_s", 3600);
        else if (key == "ready_timeout_s") p.ready_timeout_s = positive_number(c, v, "ready_timeout_s", 600);
        else if (key == "stop_grace_s") p.stop_grace_s = positive_number(c, v, "stop_grace_s", 600);
        else if (key == "server_cpus") {
            const toml::array* a = v.as_array();
            if (a && !a->empty() && a->front().is_array()) {  // [[0], [0, 1]]: a set per cell
                std::vector<int> all;
                for (const toml::node& e : *a) {
                    std::vector<int> set = cpu_list(c, e, "server_cpus");
                    if (set.empty()) c.fail(e, "'server_cpus': a set of CPUs must not be empty");
                    if (std::find(p.server_cpu_sets.begin(), p.server_cpu_sets.end(), set) != p.server_cpu_sets.end())
                        c.fail(e, "'server_cpus': this set is listed twice");
                    p.server_cpu_sets.push_back(set);
                    all.insert(all.end(), set.begin(), set.end());
                }
                std::sort(all.begin(), all.end());
                all.erase(std::unique(all.begin(), all.end()), all.end());
                p.server_cpus = all;
            } else {
                p.server_cpus = cpu_list(c, v, "server_cpus");
            }
        }
        else if (key == "client_cpus") p.client_cpus = cpu_list(c, v, "client_cpus");
        else if (key == "client_threads") p.client_threads = whole_number(c, v, "client_threads", 1, 256);
        else if (key == "primer_stall_s") p.primer_stall_s = positive_number(c, v, "primer_stall_s", 600);
        else if (key == "primer_timeout_s") p.primer_timeout_s = positive_number(c, v, "primer_timeout_s", 3600);
        else if (key == "interference_threshold") p.interference_threshold = fraction(c, v, "interference_threshold");
        else if (key == "slowdown_threshold") p.slowdown_threshold = fraction(c, v, "slowdown_threshold");
        else if (key == "disturbed_reruns") p.disturbed_reruns = whole_number(c, v, "disturbed_reruns", 0, 10);
        else if (key == "quiet_wait_s") p.quiet_wait_s = seconds_or_zero(c, v, "quiet_wait_s", 600);
        else if (key == "rest_check_s") p.rest_check_s = seconds_or_zero(c, v, "rest_check_s", 60);
        else if (key == "verify") {
            std::optional<std::string> sv = v.value<std::string>();
            if (!v.is_string() || (*sv != "quick" && *sv != "full" && *sv != "off"))
                c.fail(v, "'verify' must be \"quick\" (the default), \"full\" or \"off\"");
            p.verify = *sv;
        }
        else if (key == "connections_for") {
            const toml::table* ct = v.as_table();
            if (!ct) c.fail(v, "'connections_for' must be a table of workload = [counts], e.g. [connections_for] idle = [10000]");
            for (auto&& [wk, wv] : *ct) {
                std::string wname(wk.str());
                if (!find_workload(wname))
                    c.fail(wv, fmt::format("[connections_for]: unknown workload '{}'", wname));
                const toml::array* a = wv.as_array();
                if (!a || a->empty()) c.fail(wv, "[connections_for]: each entry must be a non-empty array of counts");
                std::vector<int>& list = p.connections_for[wname];
                for (const toml::node& e : *a) list.push_back(whole_number(c, e, "connections", 1, 100000));
            }
        } else if (key == "cells_for") {
            const toml::table* ct = v.as_table();
            if (!ct) c.fail(v, "'cells_for' must be a table of model = { workload = [counts] }");
            for (auto&& [mk, mv] : *ct) {
                std::string model(mk.str());
                if (!find_model(registry, model))
                    c.fail(mv, fmt::format("[cells_for]: unknown model '{}' (valid: {})", model,
                                           fmt::join(model_names, ", ")));
                const toml::table* wt = mv.as_table();
                if (!wt || wt->empty())
                    c.fail(mv, fmt::format("[cells_for]: '{}' must be a table of workload = [counts], e.g. {{ hello = [100] }}", model));
                auto& cells = p.cells_for[model];
                for (auto&& [wk, wv] : *wt) {
                    std::string wname(wk.str());
                    if (!find_workload(wname))
                        c.fail(wv, fmt::format("[cells_for]: unknown workload '{}'", wname));
                    const toml::array* a = wv.as_array();
                    if (!a || a->empty()) c.fail(wv, "[cells_for]: each entry must be a non-empty array of counts");
                    for (const toml::node& e : *a) cells[wname].push_back(whole_number(c, e, "connections", 1, 100000));
                }
            }
        } else if (key == "backend") {
            std::optional<std::string> b = v.value<std::string>();
            if (!b || std::find(model_names.begin(), model_names.end(), *b) == model_names.end())
                c.fail(v, fmt::format("'backend' must name the model that serves fan-out calls (valid: {})",
                                      fmt::join(model_names, ", ")));
            p.backend = *b;
        }
        else if (key == "workers") {
            const toml::table* wt = v.as_table();
            if (!wt) c.fail(v, "'workers' must be a table of model = count, e.g. [workers] threadpool = 64");
            for (auto&& [mk, mv] : *wt) {
                std::string model(mk.str());
                const ModelInfo* mi = find_model(registry, model);
                if (!mi)
                    c.fail(mv, fmt::format("[workers]: unknown model '{}' (valid: {})", model,
                                           fmt::join(model_names, ", ")));
                if (mi->workers == 0)
                    c.fail(mv, fmt::format("[workers]: model '{}' takes no --workers", model));
                if (const toml::array* wa = mv.as_array()) {  // model = [1, 2]: a cell with each
                    if (wa->empty()) c.fail(mv, "[workers]: a list of counts must not be empty");
                    for (const toml::node& e : *wa) {
                        int n = whole_number(c, e, "workers", 1, 4096);
                        auto& l = p.workers[model];
                        if (std::find(l.begin(), l.end(), n) != l.end())
                            c.fail(e, fmt::format("[workers] {}: {} is listed twice", model, n));
                        l.push_back(n);
                    }
                } else {
                    p.workers[model] = {whole_number(c, mv, "workers", 1, 4096)};
                }
            }
        }
        else c.fail(v, fmt::format("unknown key '{}' (valid: {})", key, fmt::join(keys, ", ")));
        required.erase(std::remove(required.begin(), required.end(), key), required.end());
    }
    if (!required.empty())
        throw std::runtime_error(fmt::format("{}:1: missing key(s): {}", p.path, fmt::join(required, ", ")));
    for (const auto& m : p.models) {
        const ModelInfo* mi = find_model(registry, m);
        // A runtime model without its interpreter or module still runs: its cells fail with
        // "not available: install X", so the rest of the profile is measured.
        if (!mi->built && mi->unavailable.empty())
            throw std::runtime_error(fmt::format("{}: model '{}' is not built ({} missing; {})",
                                                 p.path, m, mi->binary_path, mi->how_to_build()));
    }
    for (const auto& [model, cells] : p.cells_for) {
        if (std::find(p.models.begin(), p.models.end(), model) == p.models.end())
            throw std::runtime_error(fmt::format("{}: [cells_for] names '{}', which is not in models", p.path, model));
        for (const auto& [w, counts] : cells) {
            if (std::find(p.workloads.begin(), p.workloads.end(), w) == p.workloads.end())
                throw std::runtime_error(fmt::format("{}: [cells_for] {}: workload '{}' is not in workloads",
                                                     p.path, model, w));
            const auto& of = p.connections_of(w);
            for (int n : counts)
                if (std::find(of.begin(), of.end(), n) == of.end())
                    throw std::runtime_error(fmt::format("{}: [cells_for] {}: {} connections is not among {}'s ({})",
                                                         p.path, model, n, w, fmt::join(of, ", ")));
        }
    }
    for (const auto& w : p.workloads)
        if (find_workload(w)->needs_backend && !find_model(registry, p.backend)->built)
            throw std::runtime_error(fmt::format("{}: workload '{}' needs the backend model '{}', which is not built",
                                                 p.path, w, p.backend));
    if (p.client_threads == 0) p.client_threads = static_cast<int>(p.client_cpus.size());
    return p;
}

int Profile::workers_for(const ModelInfo& model) const {
    if (model.workers == 0) return 0;
    auto it = workers.find(model.name);
    return it != workers.end() ? it->second.front() : model.workers;
}

std::vector<int> Profile::workers_list(const ModelInfo& model) const {
    if (model.workers == 0) return {0};
    auto it = workers.find(model.name);
    return it != workers.end() ? it->second : std::vector<int>{model.workers};
}

}  // namespace concbench
