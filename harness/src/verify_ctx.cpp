// verify's Ctx: the servers a case starts (through launch.hpp), their logs, and the postcondition
// every case ends with — alive, still answering, clean SIGTERM stop, no sanitizer report; and
// readings of a server's process tree (alive, describe_fds).
#include <algorithm>
#include <cstdlib>
#include <fstream>

#include <fmt/ranges.h>

#include "platform.hpp"
#include "concbench/docroot.hpp"
#include "concbench/launch.hpp"
#include "concbench/workloads.hpp"
#include "verify_case.hpp"

namespace concbench::verify_detail {

// ----------------------------------------------------------------------------------- servers

ServerProcess& Ctx::start(Proto proto, uint16_t port, unsigned long nofile) {
    LaunchOptions lo;
    lo.proto = proto_name(proto);
    lo.port = port;
    lo.workers = opts.workers > 0 ? opts.workers : model.workers;
    lo.nofile = nofile;
    lo.docroot = docroot_;
    lo.docroot_flag = model.serves("file");
    lo.backend = backend_;
    lo.cpus = opts.server_cpus;
    return launch(model, lo, proto, "");
}

ServerProcess& Ctx::start_backend() {
    need(opts.backend != nullptr, "no backend model to call");
    LaunchOptions lo;  // not pinned with the server: the runner gives it the client's CPUs
    ServerProcess& b = launch(*opts.backend, lo, Proto::http, ".backend");
    backend_ = fmt::format("{}:{}", b.host(), b.port());
    return b;
}

std::string Ctx::body_path(std::size_t n) {
    if (model.serves("bytes") || !model.serves("file")) return fmt::format("/bytes/{}", n);
    const Workload& w = docroot_file(fmt::format("file-{}", n));
    bodies_from_files_ = true;
    return "/file/" + w.file_name;
}

const Workload& Ctx::docroot_file(const std::string& workload) {
    const Workload* w = find_workload(workload);
    std::string err;
    need(w && write_docroot_file(docroot_, *w, err), "docroot: {}", err);
    return *w;
}

ServerProcess& Ctx::launch(const ModelInfo& m, LaunchOptions& lo, Proto proto, const std::string& suffix) {
    int n = 0;
    for (const auto& s : servers_) n += s.suffix == suffix;
    lo.log_path = log_path_ + suffix + (n > 0 ? fmt::format(".{}", n) : "");
    lo.work_dir = (work_dir_ / fmt::format("server{}", servers_.size())).string();
    std::string err;
    auto s = launch_server(m, lo, seconds(10), err, opts.interrupted);
    need(s != nullptr, "{} did not start: {}", &m == &model ? "the server" : m.name, err);
    servers_.push_back({std::move(s), proto, lo.log_path, suffix, m.reference ? lo.work_dir : "", ""});
    return *servers_.back().proc;
}

// ------------------------------------------------------------------------- stop, logs, checks

std::string Ctx::finish() {
    std::string why;
    for (auto& s : servers_) {
        if (!s.proc) continue;
        std::string w = finish_one(s);
        if (why.empty()) why = w;
    }
    for (auto& s : servers_) {
        std::string w = sanitizer_report(s.log);
        if (why.empty() && !w.empty()) why = w;
    }
    keep_error_logs();
    return why;
}

StopReport Ctx::stop(ServerProcess& p, milliseconds grace) {
    for (auto& s : servers_)
        if (s.proc.get() == &p) {
            StopReport r = s.proc->stop(grace);
            s.proc.reset();
            return r;
        }
    return {};
}

std::vector<std::string> Ctx::logs() const {
    std::vector<std::string> l;
    for (auto& s : servers_) {
        l.push_back(s.log);
        if (!s.error_log.empty()) l.push_back(s.error_log);
    }
    return l;
}

void Ctx::keep_error_logs() {
    std::error_code ec;
    for (auto& s : servers_) {
        if (s.work_dir.empty()) continue;
        fs::path e = fs::path(s.work_dir) / "error.log";
        if (fs::exists(e, ec) && fs::file_size(e, ec) > 0) {
            s.error_log = s.log + ".error.log";
            fs::copy_file(e, s.error_log, fs::copy_options::overwrite_existing, ec);
        }
        fs::remove_all(s.work_dir, ec);
    }
}

std::string Ctx::finish_one(Running& s) {
    std::string died = s.proc->died();
    if (!died.empty()) {
        s.proc.reset();
        std::string last = last_line_of(s.log);
        return fmt::format("the server died: {}{}{}", died, last.empty() ? "" : ": ", last);
    }
    // It still serves a newcomer (fds freed by the case may take a moment to close).
    std::string fail;
    for (int attempt = 0; attempt < 20; ++attempt) {
        fail.clear();
        try {
            Conn c(s.proc->port(), seconds(2));
            need(c.ok(), "connect: {}", c.error());
            if (s.proto == Proto::http) {
                c.send(get("/"));
                expect_hello(c.response(seconds(2)), "GET /");
            } else {
                std::string msg = "ping\n";
                need(echo_roundtrip(c, msg, seconds(2)) == msg, "echo answered wrongly");
            }
        } catch (const CaseFailure& e) {
            fail = e.what();
        }
        if (fail.empty()) break;
        std::this_thread::sleep_for(milliseconds(100));
    }
    if (!fail.empty()) fail = "afterwards the server no longer serves a new client: " + fail;
    // The shutdown case judges SIGTERM within 5 s. This stop only cleans up after another case, so
    // a model that declares its shutdown slower (Apache: its parent signals a straggling child
    // again at 3, 5 and 7 s and SIGKILLs it at 9 s) is given that whole schedule here; CI once
    // saw apache-worker's child outlive 5 s after the http-1.0 case.
    const bool slow_stop = s.suffix.empty() && model.verify_expect.count("shutdown") > 0;
    StopReport r = s.proc->stop(slow_stop ? seconds(12) : seconds(5));
    s.proc.reset();
    if (fail.empty() && !r.clean())
        fail = "afterwards SIGTERM did not stop it cleanly: " + r.describe();
    return fail;
}

std::string Ctx::sanitizer_report(const std::string& log) {
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line))
        for (const char* mark : {"runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                 "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer"})
            if (line.find(mark) != std::string::npos)
                return fmt::format("sanitizer report in {}: {}", log, line.substr(0, 200));
    return "";
}

// ------------------------------------------------------------------- the server's process tree

bool alive(pid_t pid) { return platform::alive(pid); }

std::string describe_fds(pid_t root) {
    std::string out;
    for (pid_t pid : process_tree(root)) {
        std::string comm = platform::comm(pid);
        std::vector<int> fds = platform::open_fds(pid);
        if (!out.empty()) out += "; ";
        out += fmt::format("pid {} ({}) {} fds: {}", pid, comm, fds.size(), fmt::join(fds, " "));
    }
    return out;
}

}  // namespace concbench::verify_detail
