// server-iocp: the Windows proactor. Winsock2 overlapped IO on one I/O completion port:
//   - AcceptEx with kAccepts accepts outstanding on the listening socket (sockets made ahead);
//   - per connection one WSARecv or WSASend in flight on its OVERLAPPED (a recv stays posted
//     while an effect is under way, so a reset is seen at once), TransmitFile for /file/NAME;
//   - N worker threads (--workers N, default 1) in GetQueuedCompletionStatusEx on the one port:
//     any thread takes any completion, a per-connection SRWLOCK orders them;
//   - effects: Wait is a thread-pool timer (CreateTimerQueueTimer) whose callback posts to the
//     port; Fanout sends K calls on pooled keep-alive backend connections (ConnectEx);
//   - stop: SetConsoleCtrlHandler (Ctrl-C / Ctrl-Break / close) posts a stop key, which each
//     worker passes on before it returns.
// Windows (Vista+) or Wine. Build: models/iocp/cross (mingw) or natively with MSVC/mingw.
// Run: server-iocp.exe --proto http --host 127.0.0.1 --port 0 [--workers N] [--docroot DIR]
#include "iocp.hpp"

#include <CLI/CLI.hpp>
#include <cstdarg>
#include <cstdio>
#include <thread>

#include "concbench/work.hpp"

namespace iocp {

Server g;

namespace {

constexpr int kAccepts = 16;                 // AcceptEx calls kept outstanding
constexpr DWORD kAddrLen = sizeof(sockaddr_in6) + 16;

struct Accept {
    Op op;
    SOCKET s = INVALID_SOCKET;
    char addrs[2 * kAddrLen];
    Timer retry;  // out of sockets: try again in 10 ms
};
Accept g_accepts[kAccepts];
int g_family = AF_INET;

void vprint(const char* fmt, va_list ap) {
    char msg[512];
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    std::fprintf(stderr, "server-iocp: %s\n", msg);
    std::fflush(stderr);
}

// Posts one AcceptEx; on failure (no socket to accept into) retries on a 10 ms timer.
void post_accept(Accept& a) {
    if (g.stopping) return;
    a.op.reset();
    a.op.kind = OpKind::accept;
    a.op.owner = &a;
    a.s = WSASocketW(g_family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    if (a.s != INVALID_SOCKET) {
        DWORD got = 0;
        if (g.accept_ex(g.listener, a.s, a.addrs, 0, kAddrLen, kAddrLen, &got, &a.op.ov) ||
            WSAGetLastError() == ERROR_IO_PENDING)
            return;
        closesocket(a.s);
        a.s = INVALID_SOCKET;
    }
    static std::atomic<ULONGLONG> last_warn{0};
    ULONGLONG now = GetTickCount64() / 1000;
    if (last_warn.exchange(now) != now)
        warn("accept: error %d: retrying in 10 ms", WSAGetLastError());
    a.retry.op.kind = OpKind::accept;
    a.retry.op.owner = &a;
    a.retry.arm(10);
}

BOOL WINAPI on_ctrl(DWORD) {
    if (!g.stopping.exchange(true)) PostQueuedCompletionStatus(g.port, 0, kStopKey, nullptr);
    return TRUE;
}

void worker() {
    OVERLAPPED_ENTRY ev[64];
    for (;;) {
        ULONG n = 0;
        if (!GetQueuedCompletionStatusEx(g.port, ev, 64, &n, INFINITE, FALSE)) continue;
        for (ULONG i = 0; i < n; ++i) {
            if (ev[i].lpCompletionKey == kStopKey) {
                // Passed on: one dequeue may take several entries, so one key per worker posted
                // up front could all land in one worker's batch and leave another waiting.
                PostQueuedCompletionStatus(g.port, 0, kStopKey, nullptr);
                return;
            }
            Op* op = CONTAINING_RECORD(ev[i].lpOverlapped, Op, ov);
            // The status is in Internal (an NTSTATUS); 0 = success.
            DWORD err = ev[i].lpOverlapped->Internal == 0 ? 0 : static_cast<DWORD>(ev[i].lpOverlapped->Internal);
            DWORD bytes = ev[i].dwNumberOfBytesTransferred;
            switch (op->kind) {
                case OpKind::accept: on_accept(op, err); break;
                case OpKind::connect: case OpKind::bsend: case OpKind::brecv: on_backend_op(op, err, bytes); break;
                default: on_conn_op(op, err, bytes); break;
            }
        }
    }
}

Options parse(int argc, char** argv) {
    Options o;
    CLI::App app{"concbench server, model 'iocp'", "server-iocp"};
    std::string proto = "http", backend;
    app.add_option("--proto", proto, "protocol: http or echo")->check(CLI::IsMember({"http", "echo"}));
    app.add_option("--host", o.host, "address to listen on (an IP literal)");
    app.add_option("--port", o.port, "port to listen on; 0 picks a free one")->check(CLI::Range(0, 65535));
    app.add_option("--backend", backend, "HOST:PORT of the server fan-out calls go to");
    app.add_option("--docroot", o.docroot, "directory /file/NAME is served from")->check(CLI::ExistingDirectory);
    app.add_option("--workers", o.workers, "worker count")->check(CLI::Range(1, 4096));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) std::exit(app.exit(e));
        fatal("%s (see --help)", e.what());
    }
    concbench::parse_proto(proto, o.proto);
    if (!backend.empty()) {
        std::size_t colon = backend.rfind(':');
        unsigned long p = 0;
        char* end = nullptr;
        if (colon != std::string::npos) p = std::strtoul(backend.c_str() + colon + 1, &end, 10);
        o.backend.sin_family = AF_INET;
        o.backend.sin_port = htons(static_cast<u_short>(p));
        if (colon == std::string::npos || !end || *end || p == 0 || p > 65535 ||
            inet_pton(AF_INET, backend.substr(0, colon).c_str(), &o.backend.sin_addr) != 1)
            fatal("--backend: '%s' is not IPv4-ADDRESS:PORT", backend.c_str());
        o.has_backend = true;
    }
    return o;
}

template <class F>
F extension(SOCKET s, GUID guid) {
    F f = nullptr;
    DWORD n = 0;
    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, &f, sizeof f, &n, nullptr, nullptr) != 0)
        fatal("WSAIoctl(extension): error %d", WSAGetLastError());
    return f;
}

void listen_on(Options& o) {
    sockaddr_storage ss{};
    int len;
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, o.host.c_str(), &s4->sin_addr) == 1) {
        g_family = s4->sin_family = AF_INET;
        s4->sin_port = htons(static_cast<u_short>(o.port));
        len = sizeof *s4;
    } else if (inet_pton(AF_INET6, o.host.c_str(), &s6->sin6_addr) == 1) {
        g_family = s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(static_cast<u_short>(o.port));
        len = sizeof *s6;
    } else {
        fatal("--host: '%s' is not an IPv4 or IPv6 address", o.host.c_str());
    }
    g.listener = WSASocketW(g_family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    if (g.listener == INVALID_SOCKET) fatal("socket: error %d", WSAGetLastError());
    // No SO_REUSEADDR: on Windows it lets another socket steal a bound port. Exclusive instead.
    BOOL one = TRUE;
    setsockopt(g.listener, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<char*>(&one), sizeof one);
    if (bind(g.listener, reinterpret_cast<sockaddr*>(&ss), len) != 0)
        fatal("bind %s:%u: error %d", o.host.c_str(), o.port, WSAGetLastError());
    if (listen(g.listener, SOMAXCONN) != 0) fatal("listen: error %d", WSAGetLastError());
    len = sizeof ss;
    getsockname(g.listener, reinterpret_cast<sockaddr*>(&ss), &len);
    o.port = ntohs(g_family == AF_INET ? s4->sin_port : s6->sin6_port);
    if (!CreateIoCompletionPort(reinterpret_cast<HANDLE>(g.listener), g.port, 0, 0))
        fatal("CreateIoCompletionPort(listener): error %lu", GetLastError());
    g.accept_ex = extension<LPFN_ACCEPTEX>(g.listener, WSAID_ACCEPTEX);
    g.connect_ex = extension<LPFN_CONNECTEX>(g.listener, WSAID_CONNECTEX);
    g.transmit_file = extension<LPFN_TRANSMITFILE>(g.listener, WSAID_TRANSMITFILE);
}

}  // namespace

void warn(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
}

void fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint(fmt, ap);
    va_end(ap);
    std::exit(2);
}

void on_accept(Op* op, DWORD err) {
    Accept& a = *static_cast<Accept*>(op->owner);
    if (op == &a.retry.op) {  // the retry timer fired
        a.retry.cancel();
        return post_accept(a);
    }
    SOCKET s = a.s;
    a.s = INVALID_SOCKET;
    if (err != 0 || g.stopping) {
        closesocket(s);
    } else {
        setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, reinterpret_cast<char*>(&g.listener), sizeof g.listener);
        open_conn(s);
    }
    post_accept(a);
}

}  // namespace iocp

using namespace iocp;

int main(int argc, char** argv) {
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) fatal("WSAStartup failed");
    g.opts = parse(argc, argv);
    g.id = concbench::ServerIdentity{"concbench-iocp"};
    if (g.opts.proto == concbench::Proto::http) concbench::calibrate_work();
    g.port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, static_cast<DWORD>(g.opts.workers));
    if (!g.port) fatal("CreateIoCompletionPort: error %lu", GetLastError());
    listen_on(g.opts);
    SetConsoleCtrlHandler(on_ctrl, TRUE);
    std::vector<std::thread> threads;
    for (int i = 1; i < g.opts.workers; ++i) threads.emplace_back(worker);
    for (auto& a : g_accepts) post_accept(a);
    std::printf("listening %s:%u\n", g.opts.host.c_str(), g.opts.port);
    std::fflush(stdout);
    worker();
    for (auto& t : threads) t.join();
    // Every worker has returned: nothing runs a completion any more. Close the listener (its
    // AcceptEx calls are cancelled), every connection and backend connection, then exit.
    closesocket(g.listener);
    for (auto& a : g_accepts) {
        a.retry.cancel();
        if (a.s != INVALID_SOCKET) closesocket(a.s);
    }
    close_all_conns();
    close_pool();
    CloseHandle(g.port);
    WSACleanup();
    return 0;
}
