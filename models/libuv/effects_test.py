# Effects under stress for server-libuv (ctest: libuv_effects): pipelined effects on one
# connection, clients that reset while a timer, a fan-out or a file read is pending, a slow
# reader of files, a backend that dies or refuses, SIGTERM with effects in flight; connections
# at rest (no session held) that come back, half-close or reset. Asserts
# behaviour only (answers, exit codes, no fd growth), never speed. Usage:
#   /usr/bin/python3 effects_test.py BUILD/bin/server-libuv
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SERVER = sys.argv[1]
ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
failed = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failed.append(what)


def start(args):
    p = subprocess.Popen([SERVER, "--proto", "http", "--host", "127.0.0.1", "--port", "0"] + args,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening"):
        p.kill()
        sys.exit(f"server did not start: {line!r}")
    return p, int(line.split(":")[-1])


def stop(p, what):
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "timeout"
    check(rc == 0, f"{what}: SIGTERM -> exit {rc}")


def conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    return s


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def read_answers(s, n):
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return out
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        status, length = int(head.split()[1]), 0
        for line in head.split(b"\r\n")[1:]:
            k, v = line.split(b":", 1)
            if k.lower() == b"content-length":
                length = int(v)
        while len(buf) < length:
            d = s.recv(1 << 20)
            if not d:
                return out
            buf += d
        out.append((status, buf[:length]))
        buf = buf[length:]
    return out


def get(port, path):
    s = conn(port)
    s.sendall(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    r = read_answers(s, 1)
    s.close()
    return r[0] if r else (0, b"")


def fds(p):
    return len(os.listdir(f"/proc/{p.pid}/fd"))


def delays(k, ms):
    return b"".join(f"delayed {ms} ms id {i}\n".encode() for i in range(k))


def pattern(n):
    return (ALPHA * (n // 64 + 1))[:n]


def at_rest(port):
    # The session is freed whenever the connection is at rest and made again when bytes come:
    # keep-alive requests after idle pauses, a request split over reads (kept while partial), an
    # effect after a rest, and peers that half-close or reset an idle connection.
    s = conn(port)
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    first = read_answers(s, 1)
    time.sleep(0.05)
    for piece in (b"GET /bytes/10 HT", b"TP/1.1\r\nHost: x\r", b"\n\r\n"):
        s.sendall(piece)
        time.sleep(0.05)
    split = read_answers(s, 1)
    time.sleep(0.05)
    s.sendall(b"GET /delay/5?id=7 HTTP/1.1\r\n\r\n")
    waited = read_answers(s, 1)
    time.sleep(0.05)
    s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    last = read_answers(s, 1)
    closed = s.recv(1) == b""
    s.close()
    check(first == [(200, b"Hello, World!")] and split == [(200, pattern(10))] and waited == [(200, b"delayed 5 ms id 7\n")]
          and last == [(200, b"Hello, World!")] and closed, "keep-alive across rests: idle pauses, a split request, an effect, close")
    idle = [conn(port) for _ in range(20)]
    for x in idle:
        x.sendall(b"GET / HTTP/1.1\r\n\r\n")
    ok = all(read_answers(x, 1) == [(200, b"Hello, World!")] for x in idle)
    time.sleep(0.05)
    for x in idle[:10]:
        x.shutdown(socket.SHUT_WR)
    ok = ok and all(x.recv(1) == b"" for x in idle[:10])
    for x in idle[10:]:
        reset(x)
    for x in idle[:10]:
        x.close()
    check(ok and get(port, "/") == (200, b"Hello, World!"), "idle connections at rest: half-close is closed, resets are dropped")


def main():
    doc = tempfile.mkdtemp(prefix="libuv-effects-")
    for name, size in (("1k", 1024), ("64k", 65536), ("1m", 1 << 20), ("empty", 0)):
        with open(f"{doc}/{name}", "wb") as f:
            f.write(pattern(size))
    be, bport = start([])
    fe, fport = start(["--backend", f"127.0.0.1:{bport}", "--docroot", doc])

    s = conn(fport)
    s.sendall(b"GET /delay/5?id=3 HTTP/1.1\r\n\r\nGET /fanout/3/5 HTTP/1.1\r\n\r\nGET /file/1k HTTP/1.1\r\n\r\n"
              b"GET /file/nope HTTP/1.1\r\n\r\nGET /delay/1 HTTP/1.1\r\n\r\nGET /delay/2 HTTP/1.1\r\n\r\n"
              b"GET /file/empty HTTP/1.1\r\n\r\nGET /file/64k HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    at_rest_socks = [conn(fport) for _ in range(5)]  # at rest when SIGTERM comes (below)
    for x in at_rest_socks:
        x.sendall(b"GET / HTTP/1.1\r\n\r\n")
        read_answers(x, 1)
    r = read_answers(s, 9)
    s.close()
    check([a for a in r] == [(200, b"delayed 5 ms id 3\n"), (200, delays(3, 5)), (200, pattern(1024)), (404, r[3][1] if len(r) > 3 else b""),
                             (200, b"delayed 1 ms\n"), (200, b"delayed 2 ms\n"), (200, b""), (200, pattern(65536)),
                             (200, b"Hello, World!")], "pipelined delay, fanout, files and hello answered in order")

    at_rest(fport)

    for path in ["/delay/300", "/fanout/10/300", "/file/1m", "/fanout/5/0"]:
        socks = [conn(fport) for _ in range(50)]
        for x in socks:
            x.sendall(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        time.sleep(0.05)
        for x in socks:
            reset(x)
        check(get(fport, "/fanout/10/300") == (200, delays(10, 300)), f"serves after 50 resets during {path}")
    # Abandoned calls drain and free their connections: a second identical round opens no more fds.
    rounds = []
    for _ in range(2):
        socks = [conn(fport) for _ in range(50)]
        for x in socks:
            x.sendall(b"GET /fanout/10/200 HTTP/1.1\r\n\r\n")
        time.sleep(0.05)
        for x in socks:
            reset(x)
        check(get(fport, "/fanout/10/250")[0] == 200, "fan-out after abandoned fan-outs")
        time.sleep(0.1)
        rounds.append(fds(fe))
    check(rounds[1] <= rounds[0] + 10, f"no fd growth across rounds of abandoned fan-outs: {rounds}")

    s = conn(fport)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /file/1m HTTP/1.1\r\n\r\nGET /file/1m HTTP/1.1\r\n\r\n")
    time.sleep(0.5)
    r = read_answers(s, 2)
    s.close()
    check(r == [(200, pattern(1 << 20))] * 2, "a slow reader gets two 1 MiB files byte-exact")

    socks = [conn(fport) for _ in range(20)]
    for x in socks:
        x.sendall(b"GET /fanout/4/500 HTTP/1.1\r\n\r\n")
    time.sleep(0.1)
    stop(be, "backend with calls in flight")
    got = {a[0] for x in socks for a in read_answers(x, 1)}
    check(got == {502}, f"backend gone mid-call -> 502 (got {got})")
    check(get(fport, "/fanout/2/1")[0] == 502, "backend refused -> 502")
    stop(fe, "front")

    fe, fport = start([])
    check(get(fport, "/fanout/2/1")[0] == 502, "no --backend -> 502")
    check(get(fport, "/file/1k")[0] == 404, "no --docroot -> 404")
    stop(fe, "server without backend and docroot")

    be, bport = start([])
    fe, fport = start(["--backend", f"127.0.0.1:{bport}", "--docroot", doc, "--workers", "2"])
    reqs = [b"GET /delay/5000 HTTP/1.1\r\n\r\n", b"GET /fanout/5/5000 HTTP/1.1\r\n\r\n", b"GET /file/1m HTTP/1.1\r\n\r\n"]
    socks = []
    for i in range(300):
        x = conn(fport)
        x.sendall(reqs[i % 3])
        socks.append(x)
    time.sleep(0.3)
    stop(fe, "front with 300 effects in flight")
    stop(be, "backend")
    for x in socks:
        x.close()
    for name in os.listdir(doc):
        os.unlink(f"{doc}/{name}")
    os.rmdir(doc)
    print("FAILED: " + "; ".join(failed) if failed else "all passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
