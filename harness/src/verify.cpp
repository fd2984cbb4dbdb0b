// verify: the conformance and hostile-input table, run against real server processes.
// Each case starts its own server(s), drives them over loopback with a small poll-based client
// (llhttp parses every answer), and ends with the same postcondition: the server did not die,
// still answers a fresh client, stops on SIGTERM cleanly within 5 s, and its stderr holds no
// sanitizer report. This file holds the table and the run loop; the client and the Ctx are in
// verify_client.cpp and verify_ctx.cpp, the cases one file per group (verify_framing.cpp,
// verify_effects.cpp, verify_hostile.cpp, verify_resources.cpp), shared through verify_case.hpp.
#include "concbench/verify.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include "concbench/workloads.hpp"
#include "verify_case.hpp"

using namespace std::chrono;

namespace concbench {
namespace verify_detail {
namespace {

struct CaseDef {
    VerifyCaseInfo info;
    std::string (*run)(Ctx&);
};

const std::vector<CaseDef>& table() {
    static const std::vector<CaseDef> t = {
        {{"split-at-every-byte", "framing", "http",
          "a request split at every byte boundary, and sent a byte per write, is answered"}, case_split},
        {{"pipelined-16", "framing", "http", "16 requests in one write: 16 answers, in order"},
         [](Ctx& x) { return pipelined(x, 16); }},
        {{"pipelined-128", "framing", "http", "128 requests in one write: 128 answers, in order"},
         [](Ctx& x) { return pipelined(x, 128); }},
        {{"http-1.0", "framing", "http",
          "HTTP/1.0: answered then closed; with Connection: keep-alive, kept"}, case_http10},
        {{"connection-close", "framing", "http",
          "Connection: close: one answer saying close, then the server closes"}, case_connection_close},
        {{"keep-alive-10000", "framing", "http", "10,000 requests on one keep-alive connection"},
         case_keepalive},
        {{"bodies", "framing", "http", "/bytes/N from 0 B to 4 MiB, every byte right"}, case_bodies},
        {{"echo-sizes", "framing", "echo", "echo payloads of 1 B to 4 MiB come back intact"},
         case_echo_sizes},
        {{"headers", "headers", "http",
          "one Server: concbench-<model>, Date (IMF-fixdate, now), Content-Type, right Content-Length"},
         case_headers},
        {{"date-changes", "headers", "http", "two answers 1.5 s apart carry different Dates", true},
         case_date_changes},
        {{"bad-request", "bad-input", "http", "malformed request line or header: 400, then close"},
         case_bad_request},
        {{"header-431", "bad-input", "http", "a request head over 8 KiB: 431, then close"}, case_431},
        {{"unknown-404", "bad-input", "http", "unknown path: 404, connection kept"}, case_404},
        {{"bytes-bad-number", "bad-input", "http",
          "/bytes/ with a bad or huge number: 400, no crash, no large allocation", false, "bytes"},
         case_bytes_bad},
        {{"binary-garbage", "bad-input", "http", "binary garbage: 400, then close"}, case_garbage},
        {{"body-not-accepted", "bad-input", "http",
          "a body the route does not take: answered, and the next pipelined request stays in step"},
         case_body_not_accepted},
        {{"delay", "effects", "http",
          "/delay/MS: answered after MS ms, never early; other connections answered meanwhile; 40 waits "
          "overlap; SIGTERM with waits pending stops cleanly", false, "delay"}, case_delay},
        {{"fanout", "effects", "http",
          "/fanout/K/MS: the K backend bodies in order; /fanout/10/300 well under 10 x 300 ms (the calls "
          "overlap); backend gone: 502, the server lives on", false, "fanout"}, case_fanout},
        {{"file", "effects", "http",
          "/file/NAME: 0 B, 1 KiB and 1 MiB byte-exact, pipelined in order; missing: 404, connection kept",
          false, "file"}, case_file},
        {{"work", "effects", "http",
          "/work/US: the FNV-1a digest right for the rounds the server ran; 10 x /work/20000 cost the "
          "server 0.1-0.5 s of CPU (200 ms asked); bad numbers: 400", false, "work"}, case_work},
        {{"reset-500", "hostile", "http",
          "500 connections reset mid-request: the server goes on, its fds return to where they were"},
         case_reset},
        {{"half-closed", "hostile", "http", "shutdown(SHUT_WR) after the requests: the answers still arrive"},
         case_half_closed},
        {{"half-closed-echo", "hostile", "echo", "echo: shutdown(SHUT_WR) after sending: every byte comes back"},
         case_half_closed_echo},
        {{"slowloris", "hostile", "http",
          "200 connections dribbling a header byte a second: another client is answered, p99 under "
          "100 ms on event loops (blocking models: reported)",
          true}, case_slowloris},
        {{"never-reading", "hostile", "http",
          "a client that never reads 16 x 4 MiB answers: other clients are answered within 2 s"},
         case_never_reading},
        {{"fd-limit", "exhaustion", "http",
          "at RLIMIT_NOFILE 64 with 200 clients: no death, no spinning, serves again afterwards"},
         case_fd_limit},
        {{"connections-1100", "exhaustion", "http", "1,100 connections open at once, each answered", true},
         case_many_connections},
        {{"leaks", "leaks", "http",
          "after 20,000 (quick: 2,000) connect/request/close cycles: fds, threads, processes back to "
          "the baseline, PSS within 10 %"}, case_leaks},
        {{"shutdown", "shutdown", "http",
          "SIGTERM under load: exit 0 within 5 s, no process left, port free for an immediate restart"},
         case_shutdown},
    };
    return t;
}

bool serves_proto(const ModelInfo& m, const std::string& proto) {
    for (const auto& w : m.workloads)
        if (const Workload* wl = find_workload(w); wl && proto_name(wl->proto) == proto) return true;
    return false;
}

}  // namespace
}  // namespace verify_detail

using verify_detail::CaseFailure;
using verify_detail::Clock;
using verify_detail::Ctx;
using verify_detail::serves_proto;
using verify_detail::table;
namespace fs = std::filesystem;


const std::vector<VerifyCaseInfo>& verify_cases() {
    static const std::vector<VerifyCaseInfo> v = [] {
        std::vector<VerifyCaseInfo> out;
        for (const auto& c : table()) out.push_back(c.info);
        return out;
    }();
    return v;
}

const VerifyCaseInfo* find_verify_case(const std::string& name) {
    for (const auto& c : verify_cases())
        if (c.name == name) return &c;
    return nullptr;
}

const char* status_name(CaseStatus s) {
    switch (s) {
        case CaseStatus::pass: return "PASS";
        case CaseStatus::fail: return "FAIL";
        case CaseStatus::deviates: return "DEVIATES";
        case CaseStatus::declared_pass: return "PASS*";
        case CaseStatus::not_applicable: return "N/A";
        case CaseStatus::interrupted: return "STOPPED";
    }
    return "?";
}

bool ModelVerdict::ok() const { return first_failure() == nullptr; }

const CaseResult* ModelVerdict::first_failure() const {
    for (const auto& c : cases)
        if (c.status == CaseStatus::fail || c.status == CaseStatus::interrupted) return &c;
    return nullptr;
}

std::string format_case_line(const CaseResult& r) {
    const VerifyCaseInfo* info = find_verify_case(r.name);
    std::string line = fmt::format("  {:<8} {:<10} {:<20} {:>6.2f} s", status_name(r.status),
                                   info ? info->group : "", r.name, r.seconds);
    if (!r.detail.empty()) line += "  " + r.detail;
    if (r.status == CaseStatus::deviates) line += fmt::format("  [declared: {}]", r.declared);
    if (r.status == CaseStatus::declared_pass)
        line += fmt::format("  [declared to deviate ({}), but passed]", r.declared);
    if (!r.log_path.empty()) line += fmt::format("  (server log: {})", r.log_path);
    return line;
}

void raise_fd_limit() {
    rlimit l{};
    if (getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < l.rlim_max) {
        l.rlim_cur = l.rlim_max;
        setrlimit(RLIMIT_NOFILE, &l);
    }
}

ModelVerdict verify_model(const ModelInfo& model, const VerifyOptions& opts,
                          const std::function<void(const CaseResult&)>& on_case) {
    ModelVerdict v;
    v.model = model.name;
    signal(SIGPIPE, SIG_IGN);
    std::string log_dir = opts.log_dir;
    if (log_dir.empty()) log_dir = (fs::temp_directory_path() / fmt::format("concbench-verify-{}", getpid())).string();
    std::error_code ec;
    fs::create_directories(log_dir, ec);
    // Reference servers' directories and the docroot: under a temp dir their workers (www-data
    // when we are root) can enter.
    const fs::path work_root = fs::temp_directory_path() / fmt::format("concbench-verify-{}-{}", getpid(), model.name);
    const std::string docroot = (work_root / "docroot").string();
    fs::create_directories(docroot, ec);
    for (const fs::path& d : {work_root, fs::path(docroot)})
        fs::permissions(d, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec, ec);
    for (const auto& def : table()) {
        const VerifyCaseInfo& info = def.info;
        if (!opts.only.empty()) {
            if (std::find(opts.only.begin(), opts.only.end(), info.name) == opts.only.end()) continue;
        } else if (info.full_only && opts.set != VerifySet::full) {
            continue;
        }
        CaseResult r;
        r.name = info.name;
        if (auto it = model.verify_expect.find(info.name); it != model.verify_expect.end()) r.declared = it->second;
        if (!model.skips(info.name).empty()) {
            r.status = CaseStatus::not_applicable;
            r.detail = model.skips(info.name);
        } else if (!serves_proto(model, info.proto)) {
            r.status = CaseStatus::not_applicable;
            r.detail = fmt::format("serves no {} workload", info.proto);
        } else if (!info.family.empty() && !model.serves(info.family)) {
            r.status = CaseStatus::not_applicable;
            r.detail = fmt::format("serves no {} workload (model.toml workloads)", info.family);
        } else if (info.family == "fanout" && (!opts.backend || !opts.backend->built)) {
            r.status = CaseStatus::not_applicable;
            r.detail = "no built backend model to call";
        } else if (opts.interrupted && *opts.interrupted) {
            r.status = CaseStatus::interrupted;
        } else {
            std::string log = (fs::path(log_dir) / fmt::format("verify-{}-{}.log", model.name, info.name)).string();
            auto t0 = Clock::now();
            Ctx ctx(model, opts, log, work_root / info.name, docroot);
            std::string fail;
            try {
                r.detail = def.run(ctx);
            } catch (const CaseFailure& e) {
                fail = e.what();
            } catch (const std::exception& e) {
                fail = std::string("harness error: ") + e.what();
            }
            std::string post = ctx.finish();
            if (fail.empty()) fail = post;
            r.seconds = duration<double>(Clock::now() - t0).count();
            if (fail.empty() && ctx.bodies_from_files())
                r.detail += std::string(r.detail.empty() ? "" : "; ") + "bodies from /file/N (no /bytes route)";
            if (opts.interrupted && *opts.interrupted) r.status = CaseStatus::interrupted;
            else if (fail.empty()) r.status = r.declared.empty() ? CaseStatus::pass : CaseStatus::declared_pass;
            else {
                r.status = r.declared.empty() ? CaseStatus::fail : CaseStatus::deviates;
                r.detail = fail;
            }
            if (r.status == CaseStatus::pass && !opts.keep_passing_logs) {
                for (const auto& l : ctx.logs()) fs::remove(l, ec);
            } else {
                r.log_path = log;
            }
        }
        v.cases.push_back(r);
        if (on_case) on_case(v.cases.back());
        if (opts.stop_at_first_failure && r.status == CaseStatus::fail) break;
    }
    fs::remove_all(work_root, ec);
    if (opts.log_dir.empty()) fs::remove(log_dir, ec);  // only if empty: failing logs stay
    return v;
}

}  // namespace concbench
