// Registry: models/*/model.toml, read with toml++ and checked.
#include "concbench/registry.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <stdexcept>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "concbench/verify.hpp"
#include "concbench/workloads.hpp"
#include "platform.hpp"

namespace fs = std::filesystem;

namespace concbench {

bool ModelInfo::serves(const std::string& workload) const {
    const Workload* w = find_workload(workload);
    const std::string& family = w ? w->family : workload;
    return std::find(workloads.begin(), workloads.end(), family) != workloads.end();
}

std::string ModelInfo::skips(const std::string& verify_case) const {
    auto it = verify_skip.find(verify_case);
    return it == verify_skip.end() ? std::string() : it->second;
}

std::string ModelInfo::how_to_build() const {
    if (!unavailable.empty()) return unavailable;
    if (reference)
        return fmt::format("install Debian package {} (make deps)", reference->package);
    return "run make build";
}

std::string source_dir() {
    if (const char* env = std::getenv("CONCBENCH_SOURCE_DIR"); env && *env) return env;
    return CONCBENCH_SOURCE_DIR;
}

std::string bin_dir() {
    std::string exe = platform::self_exe();
    return exe.empty() ? std::string(".") : fs::path(exe).parent_path().string();
}

std::string models_dir() { return source_dir() + "/models"; }

namespace {

[[noreturn]] void bad(const std::string& file, const toml::source_region& where,
                      const std::string& what) {
    throw std::runtime_error(fmt::format("{}:{}: {}", file, where.begin.line, what));
}

std::string need_string(const toml::table& t, const std::string& file, const char* key) {
    const toml::node* n = t.get(key);
    if (!n) bad(file, t.source(), fmt::format("missing key '{}'", key));
    if (!n->is_string()) bad(file, n->source(), fmt::format("'{}' must be a string", key));
    return std::string(*n->value<std::string>());
}

std::vector<std::string> string_list(const toml::table& t, const std::string& file, const char* key) {
    std::vector<std::string> out;
    const toml::node* n = t.get(key);
    if (!n) return out;
    const toml::array* a = n->as_array();
    if (!a) bad(file, n->source(), fmt::format("'{}' must be an array of strings", key));
    for (const toml::node& e : *a) {
        if (!e.is_string()) bad(file, e.source(), fmt::format("'{}' must hold only strings", key));
        out.emplace_back(*e.value<std::string>());
    }
    return out;
}

std::map<std::string, std::string> string_table(const toml::table& t, const std::string& file,
                                                const char* key, bool allow_numbers) {
    std::map<std::string, std::string> out;
    const toml::node* n = t.get(key);
    if (!n) return out;
    const toml::table* tt = n->as_table();
    if (!tt) bad(file, n->source(), fmt::format("'{}' must be a table of name = value", key));
    for (auto&& [k, v] : *tt) {
        if (v.is_string()) out[std::string(k.str())] = *v.value<std::string>();
        else if (allow_numbers && v.is_integer()) out[std::string(k.str())] = std::to_string(*v.value<int64_t>());
        else
            bad(file, v.source(), fmt::format("'{}.{}' must be a {}", key, k.str(),
                                              allow_numbers ? "string or a whole number" : "string"));
    }
    return out;
}

// [reference]: how the runner launches a real server (see ReferenceLaunch).
ReferenceLaunch read_reference(const toml::table& r, const std::string& file, const fs::path& folder) {
    static const std::set<std::string> known = {"command", "config", "config_name", "files", "version",
                                                "package", "run_as", "readiness", "settings"};
    for (auto&& [k, v] : r)
        if (!known.count(std::string(k.str())))
            bad(file, v.source(), fmt::format("unknown key 'reference.{}' (valid: {})", k.str(),
                                              fmt::join(known, ", ")));
    ReferenceLaunch ref;
    ref.command = string_list(r, file, "command");
    if (ref.command.empty() || !ref.command[0].starts_with('/'))
        bad(file, r.source(), "'reference.command' must be a non-empty array whose first element is an absolute path");
    std::string config = need_string(r, file, "config");
    ref.config_template = (folder / config).string();
    if (!fs::exists(ref.config_template))
        bad(file, r["config"].node()->source(),
            fmt::format("'reference.config': template {} not found", ref.config_template));
    ref.config_name = r.contains("config_name") ? need_string(r, file, "config_name")
                                                : fs::path(config).stem().string();
    ref.files = string_table(r, file, "files", false);
    for (const auto& [name, _] : ref.files)
        if (name.empty() || name.find('/') != std::string::npos || name == ref.config_name)
            bad(file, r["files"].node()->source(),
                fmt::format("'reference.files': '{}' must be a plain file name other than the config's", name));
    ref.version_command = string_list(r, file, "version");
    ref.package = need_string(r, file, "package");
    if (r.contains("run_as")) ref.run_as = need_string(r, file, "run_as");
    if (r.contains("readiness")) {
        ref.readiness = need_string(r, file, "readiness");
        if (ref.readiness != "connect" && ref.readiness != "http")
            bad(file, r["readiness"].node()->source(),
                fmt::format("'reference.readiness' '{}' is not supported (valid: connect, http)", ref.readiness));
    }
    ref.settings = string_table(r, file, "settings", true);
    return ref;
}

// [runtime]: what an interpreted model needs (see RuntimeNeeds).
RuntimeNeeds read_runtime(const toml::table& r, const std::string& file) {
    static const std::set<std::string> known = {"needs", "package", "version"};
    for (auto&& [k, v] : r)
        if (!known.count(std::string(k.str())))
            bad(file, v.source(), fmt::format("unknown key 'runtime.{}' (valid: {})", k.str(),
                                              fmt::join(known, ", ")));
    RuntimeNeeds rt;
    rt.paths = string_list(r, file, "needs");
    for (const auto& p : rt.paths)
        if (!p.starts_with('/'))
            bad(file, r["needs"].node()->source(), fmt::format("'runtime.needs': '{}' is not an absolute path", p));
    rt.package = need_string(r, file, "package");
    rt.version_command = string_list(r, file, "version");
    return rt;
}

// [emulated.<platform>] by = "...", run = "allowed" | "refused", reason = "...": the entry for this
// platform, if any (the others are checked too, so a typo fails here, not on that platform).
std::optional<Emulation> read_emulated(const toml::node& n, const std::string& file) {
    static const std::set<std::string> platforms = {"linux", "macos", "freebsd", "windows"};
    const toml::table* t = n.as_table();
    if (!t) bad(file, n.source(), "'emulated' must be a table of platforms: [emulated.linux] by, run, reason");
    std::optional<Emulation> here;
    for (auto&& [k, v] : *t) {
        std::string platform(k.str());
        if (!platforms.count(platform))
            bad(file, v.source(), fmt::format("unknown platform 'emulated.{}' (valid: {})", platform, fmt::join(platforms, ", ")));
        const toml::table* e = v.as_table();
        if (!e) bad(file, v.source(), fmt::format("'emulated.{}' must be a table: by, run, reason", platform));
        for (auto&& [ek, ev] : *e)
            if (ek.str() != "by" && ek.str() != "run" && ek.str() != "reason")
                bad(file, ev.source(), fmt::format("unknown key 'emulated.{}.{}' (valid: by, reason, run)", platform, ek.str()));
        Emulation em;
        em.by = need_string(*e, file, "by");
        em.reason = need_string(*e, file, "reason");
        std::string run = need_string(*e, file, "run");
        if (run != "allowed" && run != "refused")
            bad(file, (*e)["run"].node()->source(),
                fmt::format("'emulated.{}.run' must be \"allowed\" (cells recorded with --allow-emulated) or \"refused\" (verify only)", platform));
        em.run = run == "allowed";
        if (platform == this_platform()) here = em;
    }
    return here;
}

ModelInfo read_model(const fs::path& toml_path, const std::string& bin) {
    const std::string file = toml_path.string();
    toml::table t;
    try {
        t = toml::parse_file(file);
    } catch (const toml::parse_error& e) {
        bad(file, e.source(), std::string(e.description()));
    }
    static const std::set<std::string> known = {"name", "description", "mechanism", "structure",
                                                "like", "platforms", "workloads", "binary", "notes",
                                                "workers", "reference", "runtime", "verify", "emulated"};
    for (auto&& [k, v] : t)
        if (!known.count(std::string(k.str())))
            bad(file, v.source(), fmt::format("unknown key '{}' (valid: {})", k.str(), fmt::join(known, ", ")));
    ModelInfo m;
    m.toml_path = file;
    m.name = need_string(t, file, "name");
    if (m.name != toml_path.parent_path().filename().string())
        bad(file, t["name"].node()->source(),
            fmt::format("name '{}' differs from its folder '{}'", m.name,
                        toml_path.parent_path().filename().string()));
    m.description = need_string(t, file, "description");
    m.mechanism = need_string(t, file, "mechanism");
    if (std::find(kMechanisms.begin(), kMechanisms.end(), m.mechanism) == kMechanisms.end())
        bad(file, t["mechanism"].node()->source(),
            fmt::format("mechanism '{}' is not one of: {}", m.mechanism, fmt::join(kMechanisms, ", ")));
    m.structure = need_string(t, file, "structure");
    if (t.contains("like")) m.like = need_string(t, file, "like");
    m.platforms = string_list(t, file, "platforms");
    m.workloads = string_list(t, file, "workloads");
    m.notes = string_list(t, file, "notes");
    const auto& families = workload_families();
    for (const auto& w : m.workloads)
        if (std::find(families.begin(), families.end(), w) == families.end())
            bad(file, t["workloads"].node()->source(),
                fmt::format("unknown workload family '{}' (valid: {})", w, fmt::join(families, ", ")));
    if (const toml::node* n = t.get("workers")) {
        std::optional<int64_t> v = n->value<int64_t>();
        if (!n->is_integer() || !v || *v < 1 || *v > 4096)
            bad(file, n->source(), "'workers' (the default of --workers N) must be a whole number from 1 to 4096");
        m.workers = static_cast<int>(*v);
    }
    if (const toml::node* v = t.get("verify")) {
        const toml::table* vt = v->as_table();
        if (!vt) bad(file, v->source(), "'verify' must be a table: case = \"why it deviates\", skip = { check = \"why\" }");
        for (auto&& [k, e] : *vt) {
            std::string name(k.str());
            if (name == "skip") continue;
            if (!find_verify_case(name)) {
                std::vector<std::string> names{"skip"};
                for (const auto& c : verify_cases()) names.push_back(c.name);
                bad(file, e.source(), fmt::format("unknown key 'verify.{}' (valid: {})", name, fmt::join(names, ", ")));
            }
            std::optional<std::string> why = e.value<std::string>();
            if (!e.is_string() || !why || why->empty())
                bad(file, e.source(), fmt::format("[verify] {}: the value must be a one-line reason (a non-empty string)", name));
            m.verify_expect[name] = *why;  // an expected deviation of a verify case
        }
        m.verify_skip = string_table(*vt, file, "skip", false);
    }
    if (const toml::node* e = t.get("emulated")) m.emulated = read_emulated(*e, file);
    const toml::node* ref = t.get("reference");
    if ((m.mechanism == "reference") != (ref != nullptr))
        bad(file, (ref ? ref : t["mechanism"].node())->source(),
            "a [reference] table is required exactly when mechanism is \"reference\"");
    if (ref) {
        if (!ref->is_table()) bad(file, ref->source(), "'reference' must be a table");
        if (t.contains("binary")) bad(file, t["binary"].node()->source(),
                                      "a reference model names its binary in reference.command");
        m.reference = read_reference(*ref->as_table(), file, toml_path.parent_path());
        m.binary_path = m.reference->command[0];
        m.binary = fs::path(m.binary_path).filename().string();
    } else {
        m.binary = t.contains("binary") ? need_string(t, file, "binary") : "server-" + m.name;
        m.binary_path = (fs::path(bin) / m.binary).string();
    }
    m.built = access(m.binary_path.c_str(), X_OK) == 0;
    if (const toml::node* rt = t.get("runtime")) {
        if (!rt->is_table()) bad(file, rt->source(), "'runtime' must be a table");
        if (m.reference) bad(file, rt->source(), "a reference model has no [runtime] table");
        m.runtime = read_runtime(*rt->as_table(), file);
        for (const auto& p : m.runtime->paths)
            if (m.built && access(p.c_str(), F_OK) != 0) {
                m.built = false;
                m.unavailable = fmt::format("not available: install Debian package {} (make deps; {} is missing)",
                                            m.runtime->package, p);
            }
    }
    return m;
}

}  // namespace

std::vector<ModelInfo> load_registry(const std::string& dir, const std::string& bin) {
    std::vector<ModelInfo> reg;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        fs::path toml_path = e.path() / "model.toml";
        if (e.is_directory() && fs::exists(toml_path)) reg.push_back(read_model(toml_path, bin));
    }
    if (ec) throw std::runtime_error(fmt::format("{}: {}", dir, ec.message()));
    std::sort(reg.begin(), reg.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return reg;
}

const char* this_platform() {
#if defined(__linux__)
    return "linux";
#elif defined(__APPLE__)
    return "macos";
#elif defined(__FreeBSD__)
    return "freebsd";
#elif defined(_WIN32)
    return "windows";
#else
    return "unknown";
#endif
}

bool ModelInfo::native() const {
    return !emulated && std::find(platforms.begin(), platforms.end(), this_platform()) != platforms.end();
}

const ModelInfo* find_model(const std::vector<ModelInfo>& reg, const std::string& name) {
    for (const auto& m : reg)
        if (m.name == name) return &m;
    return nullptr;
}

}  // namespace concbench
