// Results files: meta.json (where the numbers came from) and results.jsonl (one line per cell).
#include "concbench/results.hpp"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "concbench/host.hpp"
#include "concbench/registry.hpp"

namespace concbench {
namespace {

std::string first_match(const char* path, const char* key) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) {
            auto colon = line.find(':');
            auto v = line.substr(colon + 1);
            v.erase(0, v.find_first_not_of(" \t"));
            return v;
        }
    return "";
}

std::string command_output(const std::string& cmd) {
    std::string out;
    if (FILE* f = popen(cmd.c_str(), "r")) {
        char buf[256];
        while (fgets(buf, sizeof buf, f)) out += buf;
        pclose(f);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
}

}  // namespace

nlohmann::json machine_context() {
    utsname u{};
    uname(&u);
    nlohmann::json m;
    m["hostname"] = u.nodename;
    m["kernel"] = u.release;
    m["arch"] = u.machine;
    m["cpu_model"] = first_match("/proc/cpuinfo", "model name");
    m["cpus"] = std::thread::hardware_concurrency();
    m["cpus_allowed"] = allowed_cpus();
    std::string mem = first_match("/proc/meminfo", "MemTotal");
    m["memory_kib"] = std::atoll(mem.c_str());
    std::string os = first_match("/etc/os-release", "PRETTY_NAME");
    if (os.empty()) {
        std::ifstream in("/etc/os-release");
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("PRETTY_NAME=", 0) == 0) os = line.substr(12);
    }
    if (os.size() >= 2 && os.front() == '"') os = os.substr(1, os.size() - 2);
    m["os"] = os;
    return m;
}

nlohmann::json make_meta(const std::string& run_id, const Profile& p) {
    nlohmann::json j;
    j["schema"] = kResultsSchema;
    j["run_id"] = run_id;
    j["machine"] = machine_context();
    j["compiler"] = fmt::format("g++ {}", __VERSION__);
    std::string commit = command_output("git -C '" + source_dir() +
                                        "' describe --always --dirty --abbrev=12 2>/dev/null");
    j["commit"] = commit.empty() ? "unknown" : commit;
    j["profile"] = {{"name", p.name},
                    {"description", p.description},
                    {"path", p.path},
                    {"models", p.models},
                    {"workloads", p.workloads},
                    {"connections", p.connections},
                    {"repetitions", p.repetitions},
                    {"warmup_s", p.warmup_s},
                    {"duration_s", p.duration_s},
                    {"server_cpus", p.server_cpus},
                    {"client_cpus", p.client_cpus},
                    {"client_threads", p.client_threads},
                    {"workers", p.workers},
                    {"text", p.text}};
    char ts[32];
    time_t now = time(nullptr);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    j["started_at"] = ts;
    return j;
}

void append_jsonl(const std::string& path, const nlohmann::json& line) {
    std::string s = line.dump() + "\n";
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(fmt::format("{}: {}", path, strerror(errno)));
    ssize_t w = write(fd, s.data(), s.size());  // one write: a line is whole or absent
    fsync(fd);
    close(fd);
    if (w != static_cast<ssize_t>(s.size()))
        throw std::runtime_error(fmt::format("{}: short write", path));
}

void write_json_file(const std::string& path, const nlohmann::json& value) {
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp);
        out << value.dump(2) << "\n";
        if (!out) throw std::runtime_error(fmt::format("{}: cannot write", tmp));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        throw std::runtime_error(fmt::format("{}: cannot write", path));
}

}  // namespace concbench
