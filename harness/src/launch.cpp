// Launch: our models by the server contract, reference servers from their model.toml's [reference].
#include "concbench/launch.hpp"

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace fs = std::filesystem;

namespace concbench {
namespace {

bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("{}: cannot read", path));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error(fmt::format("{}: cannot write", path.string()));
}

// The user and group a reference server's workers run as: `run_as` when we are root (nginx and
// Apache drop privileges to it), else ourselves (they cannot switch and ignore the setting).
std::pair<std::string, std::string> server_user(const ReferenceLaunch& ref) {
    if (geteuid() == 0 && !ref.run_as.empty()) {
        passwd* pw = getpwnam(ref.run_as.c_str());
        if (!pw)
            throw std::runtime_error(fmt::format("user '{}' (reference.run_as) does not exist on this machine",
                                                 ref.run_as));
        group* gr = getgrgid(pw->pw_gid);
        return {ref.run_as, gr ? gr->gr_name : std::to_string(pw->pw_gid)};
    }
    passwd* pw = getpwuid(geteuid());
    group* gr = getgrgid(getegid());
    return {pw ? pw->pw_name : std::to_string(geteuid()), gr ? gr->gr_name : std::to_string(getegid())};
}

// Workers that run as another user must reach their files: every directory up to `dir` has to
// be searchable by others. "" if it is, else why not.
std::string unreachable(const fs::path& dir, const std::string& user) {
    fs::path p = fs::absolute(dir);
    for (fs::path cur = p; !cur.empty(); cur = cur.parent_path()) {
        struct stat st{};
        if (stat(cur.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH))
            return fmt::format("{} is not reachable by user '{}', as whom the server's workers run ({} has mode {:o})",
                               p.string(), user, cur.string(), st.st_mode & 07777);
        if (cur == cur.root_path()) break;
    }
    return "";
}

constexpr const char* kRuntimePrefix = "concbench-ref-";
constexpr auto kRuntimeMode = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec;  // 0755
constexpr auto kFileMode = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                           fs::perms::others_read;  // 0644

// Runtime directories left by a concbench that was killed outright (SIGKILL, power): those of
// ours whose process is gone.
void sweep_stale_runtime_dirs(const fs::path& tmp) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(tmp, ec)) {
        std::string name = e.path().filename().string();
        if (name.rfind(kRuntimePrefix, 0) != 0) continue;
        char* end = nullptr;
        long pid = std::strtol(name.c_str() + std::strlen(kRuntimePrefix), &end, 10);
        struct stat st{};
        if (pid <= 0 || *end != '-' || lstat(e.path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
            st.st_uid != geteuid() || pid == getpid() || kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)
            continue;
        fs::remove_all(e.path(), ec);
    }
}

// A reference server's runtime directory: made for one launch under the system's temporary
// directory (TMPDIR), which the server's workers (www-data when we are root) can enter wherever
// the checkout and the results live. It holds the configuration, pid, lock, temp paths, logs and
// a copy of the docroot; it is 0755 and owned by us, its files 0644, nothing in it writable by
// the workers but the temp paths the server itself creates for them.
fs::path make_runtime_dir(const fs::path& keep) {
    fs::path tmp = fs::temp_directory_path();
    sweep_stale_runtime_dirs(tmp);
    std::string path = (tmp / fmt::format("{}{}-{}-XXXXXX", kRuntimePrefix, getpid(), keep.filename().string())).string();
    if (!mkdtemp(path.data()))
        throw std::runtime_error(fmt::format("cannot make a runtime directory under {}: {}", tmp.string(),
                                             std::strerror(errno)));
    fs::permissions(path, kRuntimeMode);
    return path;
}

// The docroot's files, copied into the runtime directory (readable by the workers): the same
// bytes wherever the run's docroot lives.
void copy_docroot(const fs::path& from, const fs::path& to) {
    fs::create_directories(to);
    fs::permissions(to, kRuntimeMode);
    for (const auto& e : fs::directory_iterator(from)) {
        if (!e.is_regular_file()) continue;
        fs::path dst = to / e.path().filename();
        fs::copy_file(e.path(), dst, fs::copy_options::overwrite_existing);
        fs::permissions(dst, kFileMode);
    }
}

// What the run keeps of a runtime directory, in the cell's own directory: the rendered
// configuration, the extra files and every log.
void keep_files(const fs::path& runtime, const fs::path& keep, const ReferenceLaunch& ref) {
    std::error_code ec;
    fs::create_directories(keep, ec);
    for (const auto& e : fs::directory_iterator(runtime, ec)) {
        std::string name = e.path().filename().string();
        bool wanted = name == ref.config_name || ref.files.count(name) ||
                      (name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0);
        if (wanted && e.is_regular_file(ec))
            fs::copy_file(e.path(), keep / name, fs::copy_options::overwrite_existing, ec);
    }
}

std::unique_ptr<ServerProcess> launch_reference(const ModelInfo& m, const LaunchOptions& o,
                                                std::chrono::milliseconds ready_timeout,
                                                std::string& error, const volatile bool* interrupted) {
    const ReferenceLaunch& ref = *m.reference;
    if (o.proto != "http") {
        error = fmt::format("{} is an HTTP server; it does not speak '{}'", m.name, o.proto);
        return nullptr;
    }
    if (o.work_dir.empty()) {
        error = fmt::format("{}: a reference server needs a work directory of its own", m.name);
        return nullptr;
    }
    std::map<std::string, std::string> vars = ref.settings;
    const fs::path keep = fs::absolute(o.work_dir);
    fs::path dir;
    // Until the server runs, a failure keeps what there is and removes the runtime directory.
    auto abandon = [&] {
        std::error_code ec;
        if (dir.empty()) return;
        keep_files(dir, keep, ref);
        fs::remove_all(dir, ec);
    };
    fs::path config;
    std::string text;
    try {
        fs::create_directories(keep);
        dir = make_runtime_dir(keep);
        config = dir / ref.config_name;
        fs::create_directories(dir / "empty");
        fs::permissions(dir / "empty", kRuntimeMode);
        auto [user, group] = server_user(ref);
        const bool other_user = user != (getpwuid(geteuid()) ? getpwuid(geteuid())->pw_name : "");
        if (std::string why = other_user ? unreachable(dir, user) : ""; !why.empty())
            throw std::runtime_error(why + "; set TMPDIR to a directory others may enter");
        // The docroot is served where it is if the workers can reach it (verify's, under TMPDIR,
        // gains files while the server runs); else a copy of it (a run's is complete before its
        // first cell) in the runtime directory.
        fs::path docroot = dir / "docroot";
        if (o.docroot.empty()) {
            fs::create_directories(docroot);
            fs::permissions(docroot, kRuntimeMode);
        } else if (other_user && !unreachable(o.docroot, user).empty()) {
            copy_docroot(o.docroot, docroot);
        } else {
            docroot = fs::absolute(o.docroot);
        }
        vars["host"] = o.host;
        vars["dir"] = dir.string();
        vars["config"] = config.string();
        vars["docroot"] = docroot.string();
        vars["workers"] = std::to_string(o.workers > 0 ? o.workers : m.workers);
        vars["user"] = user;
        vars["group"] = group;
        text = read_file(ref.config_template);
    } catch (const std::exception& e) {
        error = fmt::format("{}: {}", m.name, e.what());
        abandon();
        return nullptr;
    }

    // A free port, taken again if another process binds it between our check and the server's bind.
    const std::string in_use = std::strerror(EADDRINUSE);
    for (int attempt = 1;; ++attempt) {
        uint16_t port = o.port ? o.port : pick_free_port(o.host);
        ServerCommand cmd;
        try {
            vars["port"] = std::to_string(port);
            write_file(config, render_template(text, vars, ref.config_template));
            fs::permissions(config, kFileMode);
            for (const auto& [name, content] : ref.files) {
                write_file(dir / name, render_template(content, vars, m.toml_path + " (reference.files." + name + ")"));
                fs::permissions(dir / name, kFileMode);
            }
            for (const auto& a : ref.command) cmd.args.push_back(render_template(a, vars, m.toml_path));
        } catch (const std::exception& e) {
            error = fmt::format("{}: {}", m.name, e.what());
            abandon();
            return nullptr;
        }
        cmd.binary = cmd.args.front();
        cmd.args.erase(cmd.args.begin());
        cmd.cpus = o.cpus;
        cmd.log_path = o.log_path;
        cmd.ready_host = o.host;
        cmd.ready_port = port;
        if (ref.readiness == "http") {
            cmd.ready_probe = "GET / HTTP/1.0\r\nHost: " + o.host + "\r\n\r\n";
            cmd.ready_expect = "HTTP/1.";
        }
        cmd.raise_nofile = o.raise_nofile;
        cmd.nofile = o.nofile;
        auto s = ServerProcess::start(cmd, ready_timeout, error, interrupted);
        if (s) {
            s->at_stop([dir, keep, ref] {
                keep_files(dir, keep, ref);
                std::error_code ec;
                fs::remove_all(dir, ec);
            });
            return s;
        }
        std::string log = last_line_of((dir / "error.log").string());
        bool port_taken = error.find(in_use) != std::string::npos || log.find(in_use) != std::string::npos;
        if (o.port == 0 && port_taken && attempt < 5) continue;
        if (error.find(log) == std::string::npos && !log.empty()) error += " — error.log: " + log;
        abandon();
        return nullptr;
    }
}

}  // namespace

std::string render_template(const std::string& text, const std::map<std::string, std::string>& vars,
                            const std::string& what) {
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t at = text.find('@', i);
        if (at == std::string::npos) break;
        out.append(text, i, at - i);
        std::size_t j = at + 1;
        while (j < text.size() && is_name_char(text[j])) ++j;
        std::size_t name_end = j;
        long divisor = 0;
        if (j < text.size() && text[j] == '/' && j > at + 1) {
            std::size_t k = j + 1;
            while (k < text.size() && std::isdigit(static_cast<unsigned char>(text[k]))) ++k;
            if (k > j + 1) {
                divisor = std::stol(text.substr(j + 1, k - j - 1));
                j = k;
            }
        }
        if (j == at + 1 || j >= text.size() || text[j] != '@' || divisor < 0) {  // not a placeholder
            out += '@';
            i = at + 1;
            continue;
        }
        std::string name = text.substr(at + 1, name_end - at - 1);
        auto it = vars.find(name);
        if (it == vars.end()) {
            std::vector<std::string> known;
            for (const auto& [k, _] : vars) known.push_back(k);
            throw std::runtime_error(fmt::format("{}: unknown placeholder @{}@ (known: {})", what, name,
                                                 fmt::join(known, ", ")));
        }
        if (divisor > 0) {
            char* end = nullptr;
            long long v = std::strtoll(it->second.c_str(), &end, 10);
            if (it->second.empty() || *end || v < 0)
                throw std::runtime_error(fmt::format("{}: @{}/{}@ needs a whole number, {} is '{}'", what,
                                                     name, divisor, name, it->second));
            out += std::to_string((v + divisor - 1) / divisor);
        } else {
            out += it->second;
        }
        i = j + 1;
    }
    if (i < text.size()) out.append(text, i, std::string::npos);
    return out;
}

uint16_t pick_free_port(const std::string& host) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

std::unique_ptr<ServerProcess> launch_server(const ModelInfo& m, const LaunchOptions& o,
                                             std::chrono::milliseconds ready_timeout, std::string& error,
                                             const volatile bool* interrupted) {
    if (!m.built) {
        error = m.unavailable.empty()
                    ? fmt::format("{}: {} not found; {}", m.name, m.binary_path, m.how_to_build())
                    : fmt::format("{}: {}", m.name, m.unavailable);
        return nullptr;
    }
    if (m.reference) return launch_reference(m, o, ready_timeout, error, interrupted);
    ServerCommand cmd;
    cmd.binary = m.binary_path;
    cmd.args = {"--proto", o.proto, "--host", o.host, "--port", std::to_string(o.port)};
    if (!o.backend.empty()) {
        cmd.args.push_back("--backend");
        cmd.args.push_back(o.backend);
    }
    if (!o.docroot.empty() && o.docroot_flag) {
        cmd.args.push_back("--docroot");
        cmd.args.push_back(o.docroot);
    }
    if (o.workers > 0 && m.workers > 0) {
        cmd.args.push_back("--workers");
        cmd.args.push_back(std::to_string(o.workers));
    }
    cmd.cpus = o.cpus;
    cmd.log_path = o.log_path;
    cmd.raise_nofile = o.raise_nofile;
    cmd.nofile = o.nofile;
    return ServerProcess::start(cmd, ready_timeout, error, interrupted);
}

nlohmann::json reference_meta(const ModelInfo& m, int workers) {
    if (!m.reference) return nullptr;
    const ReferenceLaunch& ref = *m.reference;
    std::string version;
    if (!ref.version_command.empty() && m.built) {
        std::string cmd;
        for (const auto& a : ref.version_command) cmd += "'" + a + "' ";
        if (FILE* f = popen((cmd + "2>&1").c_str(), "r")) {
            char buf[256];
            if (fgets(buf, sizeof buf, f)) version = buf;
            pclose(f);
            while (!version.empty() && (version.back() == '\n' || version.back() == '\r')) version.pop_back();
        }
    }
    nlohmann::json settings = ref.settings;
    settings["workers"] = workers > 0 ? workers : m.workers;
    return {{"version", version}, {"package", ref.package}, {"binary", m.binary_path},
            {"config_template", ref.config_template}, {"settings", settings}};
}

}  // namespace concbench
