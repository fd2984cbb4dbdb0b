// Host: local server processes — fork/exec in their own process group, pinned, stopped by group.
#include "concbench/host.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include <fmt/format.h>

namespace concbench {

using namespace std::chrono;

std::string StopReport::describe() const {
    if (clean()) return fmt::format("exited 0 in {:.2f} s", stop_s);
    std::string s;
    if (killed) s = "did not exit within the grace period after SIGTERM: killed";
    else if (signal) s = fmt::format("ended by signal {} ({})", signal, strsignal(signal));
    else s = fmt::format("exited with code {}", exit_code);
    if (leftover) s += fmt::format("; {} process(es) of its group were left and killed", leftover);
    return s;
}

std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) cpus.push_back(i);
    return cpus;
}

bool pin_thread(const std::vector<int>& cpus) {
    if (cpus.empty()) return true;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus) CPU_SET(c, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;  // 0: the calling thread
}

std::string last_line_of(const std::string& path) {
    std::ifstream in(path);
    std::string line, last;
    while (std::getline(in, line))
        if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
    return last;
}

std::unique_ptr<ServerProcess> ServerProcess::start(const ServerCommand& cmd,
                                                    milliseconds ready_timeout, std::string& error,
                                                    const volatile bool* interrupted) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        error = fmt::format("pipe: {}", strerror(errno));
        return nullptr;
    }
    std::vector<std::string> argv_s{cmd.binary};
    argv_s.insert(argv_s.end(), cmd.args.begin(), cmd.args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string log = cmd.log_path.empty() ? "/dev/null" : cmd.log_path;

    const pid_t runner = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        error = fmt::format("fork: {}", strerror(errno));
        close(out[0]);
        close(out[1]);
        return nullptr;
    }
    if (pid == 0) {
        // Child: own process group (Ctrl-C at the terminal reaches only the runner, which then
        // stops this group itself), pinned, plain signal state, stdout to the pipe.
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        // If the runner dies without stopping it (SIGKILL, a crash), the server gets SIGTERM.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != runner) _exit(126);
        if (cmd.raise_nofile) {
            rlimit rl{};
            if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
            }
        }
        if (!cmd.cpus.empty()) {
            cpu_set_t set;
            CPU_ZERO(&set);
            for (int c : cmd.cpus) CPU_SET(c, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        if (cmd.nofile > 0) {
            rlimit lim{};
            getrlimit(RLIMIT_NOFILE, &lim);
            // The hard limit too: Node.js raises its soft limit to the hard one at start, which
            // would take it out of the out-of-fds case.
            lim.rlim_cur = lim.rlim_max = std::min<rlim_t>(cmd.nofile, lim.rlim_max);
            setrlimit(RLIMIT_NOFILE, &lim);
        }
        int in = open("/dev/null", O_RDONLY);
        int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(in, 0);
        dup2(cmd.ready_port && err >= 0 ? err : out[1], 1);
        if (err >= 0) dup2(err, 2);
        // Only stdin, stdout and stderr: fds the runner inherited from its own parent (a shell,
        // make) would otherwise be counted as the server's, once per forked child.
        close_range(3, ~0U, 0);
        execv(argv[0], argv.data());
        dprintf(2, "cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);  // also here, so the group exists before we ever signal it
    close(out[1]);

    std::unique_ptr<ServerProcess> sp(new ServerProcess);
    sp->pid_ = pid;
    sp->log_path_ = cmd.log_path;
    std::string got;
    auto deadline = steady_clock::now() + ready_timeout;
    bool ready = false;
    if (cmd.ready_port) {
        close(out[0]);
        ready = sp->wait_connectable(cmd, deadline, ready_timeout, error, interrupted);
        if (!ready) return nullptr;  // the destructor stops what was started
        return sp;
    }
    while (!ready) {
        if (interrupted && *interrupted) {
            error = "interrupted";
            break;
        }
        auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
        if (left <= 0) {
            error = fmt::format("no 'listening <host>:<port>' line within {:.1f} s",
                                ready_timeout.count() / 1000.0);
            break;
        }
        pollfd p{out[0], POLLIN, 0};
        int rc = poll(&p, 1, static_cast<int>(std::min<long>(left, 100)));
        if (rc <= 0) continue;
        char buf[256];
        ssize_t n = read(out[0], buf, sizeof buf);
        if (n <= 0) {
            // Its stdout closed: it is exiting. Give it a moment to be reaped, to say how.
            std::string why;
            for (int i = 0; i < 200 && (why = sp->died()).empty(); ++i)
                std::this_thread::sleep_for(milliseconds(5));
            std::string last = last_line_of(cmd.log_path);
            error = fmt::format("server exited before it was ready ({}){}{}",
                                why.empty() ? "closed its stdout" : why,
                                last.empty() ? "" : ": ", last);
            break;
        }
        got.append(buf, n);
        auto nl = got.find('\n');
        if (nl == std::string::npos) continue;
        std::string line = got.substr(0, nl);
        auto colon = line.rfind(':');
        if (!line.starts_with("listening ") || colon == std::string::npos) {
            error = fmt::format("unexpected readiness line '{}'", line);
            break;
        }
        std::string host = line.substr(10, colon - 10);
        if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
        sp->host_ = host;
        sp->port_ = static_cast<uint16_t>(std::atoi(line.c_str() + colon + 1));
        ready = sp->port_ != 0;
        if (!ready) error = fmt::format("bad port in readiness line '{}'", line);
    }
    close(out[0]);
    if (!ready) return nullptr;  // the destructor stops what was started
    return sp;
}

namespace {
// One blocking connect to loopback (refused at once, or accepted into the backlog); with a
// probe, the probe is sent and the reply must begin with `expect` within a second.
bool can_connect(const std::string& host, uint16_t port, const std::string& probe, const std::string& expect) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    bool ok = inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1 &&
              connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    if (ok && !probe.empty()) {
        timeval tv{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        ok = send(fd, probe.data(), probe.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(probe.size());
        std::string got;
        char buf[256];
        while (ok && got.size() < expect.size()) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) ok = false;
            else got.append(buf, n);
        }
        ok = ok && got.compare(0, expect.size(), expect) == 0;
    }
    close(fd);
    return ok;
}
}  // namespace

bool ServerProcess::wait_connectable(const ServerCommand& cmd, steady_clock::time_point deadline,
                                     milliseconds ready_timeout, std::string& error,
                                     const volatile bool* interrupted) {
    for (;;) {
        if (interrupted && *interrupted) {
            error = "interrupted";
            return false;
        }
        // Died first: a port taken by someone else must not look like our server being ready.
        if (std::string why = died(); !why.empty()) {
            std::string last = last_line_of(cmd.log_path);
            error = fmt::format("server exited before it was ready ({}){}{}", why, last.empty() ? "" : ": ", last);
            return false;
        }
        if (can_connect(cmd.ready_host, cmd.ready_port, cmd.ready_probe, cmd.ready_expect)) {
            host_ = cmd.ready_host;
            port_ = cmd.ready_port;
            return true;
        }
        if (steady_clock::now() >= deadline) {
            error = fmt::format("nothing {} on {}:{} within {:.1f} s",
                                cmd.ready_probe.empty() ? "accepted connections" : "answered a request",
                                cmd.ready_host, cmd.ready_port, ready_timeout.count() / 1000.0);
            return false;
        }
        std::this_thread::sleep_for(milliseconds(20));
    }
}

std::string ServerProcess::died() {
    if (!reaped_) {
        pid_t r = waitpid(pid_, &status_, WNOHANG);
        if (r != pid_) return "";
        reaped_ = true;
    }
    if (WIFSIGNALED(status_))
        return fmt::format("killed by signal {} ({})", WTERMSIG(status_), strsignal(WTERMSIG(status_)));
    return fmt::format("exit code {}", WEXITSTATUS(status_));
}

StopReport ServerProcess::stop(milliseconds grace) {
    StopReport r;
    if (pid_ <= 1) return r;  // never signal group 0 (ourselves) or 1
    auto t0 = steady_clock::now();
    bool was_dead = !died().empty();
    kill(-pid_, SIGTERM);
    while (!reaped_ && steady_clock::now() - t0 < grace) {
        if (!died().empty()) break;
        std::this_thread::sleep_for(milliseconds(5));
    }
    r.stop_s = duration<double>(steady_clock::now() - t0).count();
    if (!reaped_) {
        r.killed = true;
        kill(-pid_, SIGKILL);
        waitpid(pid_, &status_, 0);
        reaped_ = true;
    } else {
        r.exited = !was_dead;
    }
    if (WIFEXITED(status_)) r.exit_code = WEXITSTATUS(status_);
    if (WIFSIGNALED(status_) && !r.killed) r.signal = WTERMSIG(status_);
    // Anything of the group still alive now was left behind by the server: count it, kill it.
    r.leftover = live_processes_in_group(pid_);
    if (r.leftover > 0) {
        kill(-pid_, SIGKILL);
        for (int i = 0; i < 100 && live_processes_in_group(pid_) > 0; ++i)
            std::this_thread::sleep_for(milliseconds(10));
    }
    pid_ = -1;
    if (auto f = std::move(at_stop_)) {
        at_stop_ = nullptr;
        f();
    }
    return r;
}

ServerProcess::~ServerProcess() {
    if (pid_ >= 0) stop(milliseconds(2000));
}

}  // namespace concbench
