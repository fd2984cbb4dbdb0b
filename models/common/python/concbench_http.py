"""The server contract in Python, shared by the Python models (py-asyncio, py-asyncio-streams,
py-uvloop, py-threads; py-aiohttp takes its command line and routes from here too).

It holds what workloads/ and models/common/ hold for the C++ models, so that the bytes on the wire
are the same: the command line (one-line errors, exit 2), the listening socket and line, the
routes (GET /, /bytes/N, /delay/MS, /fanout/K/MS, /file/NAME, /work/US), the response head (Server, Date
refreshed each second, Content-Type, Content-Length, Connection), and a sans-IO request reader
on httptools (Debian's python3-httptools: the http-parser binding uvicorn parses with) that turns
bytes into requests in order, with 400 on malformed input and 431 past 8 KiB of request head.
A model's own file holds only its concurrency mechanism.
"""
import argparse
import ipaddress
import os
import socket
import sys
import time

try:
    import httptools
except ImportError:  # reported as the contract asks: one line, exit 2
    sys.stderr.write("not available: install Debian package python3-httptools (make deps)\n")
    sys.exit(2)

MAX_HEAD_BYTES = 8 * 1024  # past this much request line + header names and values: 431, close
MAX_BYTES_ROUTE = 64 * 1024 * 1024
MAX_DELAY_MS = 60 * 1000
MAX_FANOUT_CALLS = 100
MAX_WORK_US = 1_000_000
HELLO = b"Hello, World!"
CHUNK = 64 * 1024  # /bytes/N and files go out in pieces of this size

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway"}
ERROR_BODIES = {400: b"Bad Request\n", 404: b"Not Found\n", 405: b"Method Not Allowed\n",
                431: b"Request Header Fields Too Large\n", 502: b"Bad Gateway\n"}


# ---------------------------------------------------------------------------------- command line

class Options:
    proto = "http"
    host = "127.0.0.1"
    port = 0
    workers = 1
    backend = None  # (host, port) or None: fan-outs answer 502
    docroot = None


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_options(name, has_workers=False, argv=None):
    """The contract's flags; anything bad is one line on stderr and exit 2."""
    prog = "server-" + name
    p = _OneLineParser(prog=prog, description=f"concbench server, model '{name}'")
    p.add_argument("--proto", default="http", help="protocol: http or echo")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (an IP literal)")
    p.add_argument("--port", default="0", help="port to listen on; 0 picks a free one")
    p.add_argument("--backend", help="HOST:PORT of the server fan-out calls go to")
    p.add_argument("--docroot", help="directory /file/NAME is served from")
    if has_workers:
        p.add_argument("--workers", default="1", help="worker processes")
    a = p.parse_args(argv)
    o = Options()

    def fail(msg):
        p.exit(2, f"{prog}: {msg}\n")

    if a.proto not in ("http", "echo"):
        fail(f"--proto: '{a.proto}' is not http or echo")
    o.proto = a.proto
    try:
        ipaddress.ip_address(a.host)
    except ValueError:
        fail(f"--host: '{a.host}' is not an IPv4 or IPv6 address")
    o.host = a.host
    if not a.port.isdigit() or int(a.port) > 65535:
        fail(f"--port: '{a.port}' is not a port number (0 to 65535)")
    o.port = int(a.port)
    if a.backend is not None:
        host, _, port = a.backend.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
            ok = port.isdigit() and 0 < int(port) <= 65535
        except ValueError:
            ok = False
        if not ok:
            fail(f"--backend: '{a.backend}' is not IPv4-ADDRESS:PORT")
        o.backend = (host, int(port))
    if a.docroot is not None:
        if not os.path.isdir(a.docroot):
            fail(f"--docroot: directory '{a.docroot}' does not exist")
        o.docroot = a.docroot
    if has_workers:
        if not a.workers.isdigit() or not 1 <= int(a.workers) <= 4096:
            fail(f"--workers: '{a.workers}' is not a whole number from 1 to 4096")
        o.workers = int(a.workers)
    if o.proto == "http":
        calibrate_work()  # before the server listens (and before worker processes fork)
    return o


# ----------------------------------------------------------------------------- listening socket

def listen_socket(o, reuseport=False):
    """A non-blocking listening socket; port 0 is replaced in `o` by the one the kernel chose."""
    family = socket.AF_INET6 if ":" in o.host else socket.AF_INET
    # proto IPPROTO_TCP, as asyncio's own sockets: accepted sockets inherit it, and asyncio sets
    # TCP_NODELAY only on sockets whose proto says TCP (with proto 0, a head and a body written
    # apart wait 40 ms for a delayed ACK).
    s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((o.host, o.port))
    except OSError as e:
        sys.stderr.write(f"bind {o.host}:{o.port}: {e.strerror}\n")
        sys.exit(1)
    s.listen(socket.SOMAXCONN)
    s.setblocking(False)
    o.port = s.getsockname()[1]
    return s


def announce_listening(o):
    host = f"[{o.host}]" if ":" in o.host else o.host
    sys.stdout.write(f"listening {host}:{o.port}\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ response heads

_date = (0, b"")  # (second, its Date value), replaced whole so threads never see half of it


def http_date():
    """The Date value, formatted at most once a second."""
    global _date
    now = int(time.time())
    d = _date
    if now != d[0]:
        d = _date = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return d[1]


def head(server, status, length, keep_alive, http10, ctype=b"text/plain"):
    """The status line and headers of an answer, byte for byte those of the C++ models."""
    h = b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d" % (
        status, REASONS.get(status, "Unknown").encode(), server, http_date(), ctype, length)
    if not keep_alive:
        h += b"\r\nConnection: close"
    elif http10:
        h += b"\r\nConnection: keep-alive"
    return h + b"\r\n\r\n"


def error_answer(server, status, http10=False, keep_alive=False):
    """A complete error answer. Malformed input (400, 431) closes the connection; a route's
    error (404, 405, a fan-out's 502) keeps it as the request asked."""
    body = ERROR_BODIES.get(status, b"Error\n")
    return head(server, status, len(body), keep_alive, http10) + body


# The /bytes/N body: "A..Za..z0..9-_" repeated; a slice of this block at offset 0 serves any chunk.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PATTERN = memoryview(_ALPHABET * (CHUNK // 64))


def pattern_chunks(n):
    """The first n bytes of the pattern, as views of at most CHUNK bytes (nothing copied)."""
    while n > 0:
        k = min(n, CHUNK)
        yield PATTERN[:k]
        n -= k


# --------------------------------------------------------------------------------------- routes

class Answer:
    """What a request asks for: an immediate answer (status, body or a pattern length), or an
    effect the model carries out: 'wait' (ms), 'fanout' (calls, ms) or 'file' (name)."""
    __slots__ = ("status", "body", "ctype", "pattern_len", "effect", "ms", "id", "calls", "file")

    def __init__(self, status=200, body=b"", ctype=b"text/plain"):
        self.status, self.body, self.ctype = status, body, ctype
        self.pattern_len = 0
        self.effect = None
        self.ms = self.id = self.calls = 0
        self.file = None


def _number(s, limit, digits=9):
    if not s or len(s) > digits or not s.isdigit():
        return None
    v = int(s)
    return v if v <= limit else None


def _error(status):
    return Answer(status, ERROR_BODIES[status])


def _query_id(query):
    for kv in query.split(b"&"):
        if kv.startswith(b"id="):
            v = _number(kv[3:], 1_000_000_000)
            if v is not None:
                return v
    return -1


_FILE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_")


def route(method, target):
    """The HTTP contract's routes (workloads/src/routes.cpp): method and target are bytes."""
    path, _, query = target.partition(b"?")
    known = path == b"/" or path.startswith((b"/bytes/", b"/delay/", b"/fanout/", b"/file/", b"/work/"))
    if not known:
        return _error(404)
    if method not in (b"GET", b"HEAD"):
        return _error(405)
    if path == b"/":
        return Answer(200, HELLO)
    if path.startswith(b"/bytes/"):
        n = _number(path[7:], MAX_BYTES_ROUTE)
        if n is None:
            return _error(400)
        a = Answer(200, b"", b"application/octet-stream")
        a.pattern_len = n
        return a
    if path.startswith(b"/delay/"):
        ms = _number(path[7:], MAX_DELAY_MS)
        if ms is None:
            return _error(400)
        a = Answer()
        a.effect, a.ms, a.id = "wait", ms, _query_id(query)
        return a
    if path.startswith(b"/fanout/"):
        k, _, ms = path[8:].partition(b"/")
        k, ms = _number(k, MAX_FANOUT_CALLS), _number(ms, MAX_DELAY_MS)
        if not k or ms is None:
            return _error(400)
        a = Answer()
        a.effect, a.calls, a.ms = "fanout", k, ms
        return a
    if path.startswith(b"/work/"):
        us = _number(path[6:], MAX_WORK_US)
        if us is None:
            return _error(400)
        return Answer(200, do_work(us))  # the CPU work, here, on the serving thread
    name = path[6:]
    if not name or len(name) > 255 or name[0:1] == b"." or not _FILE_CHARS.issuperset(name):
        return _error(404)
    a = Answer(200, b"", b"application/octet-stream")
    a.effect, a.file = "file", name.decode()
    return a


# ------------------------------------------------------------------------------ GET /work/US
# The computation of workloads/include/concbench/work.hpp, in Python: 32-bit FNV-1a over the bytes
# i & 0xff, run in chunks until this thread has spent US µs of CPU (time.thread_time(): time
# waiting for the GIL does not count); the chunks sized by this interpreter's rounds per µs,
# measured at start-up.

WORK_BASIS = 2166136261
WORK_CHUNK_US = 20


def _digest_from(x, start, stop):
    for i in range(start, stop):
        x = ((x ^ (i & 255)) * 16777619) & 0xFFFFFFFF
    return x


def work_digest(rounds):
    return _digest_from(WORK_BASIS, 0, rounds)


def _calibrate():
    # Three runs of at least 5 ms of CPU, the rounds growing until a run takes that long; the
    # fastest run counts (as work.cpp and server.js do).
    rounds, best = 1000, 0.0
    for _ in range(3):
        while True:
            t0 = time.thread_time()
            work_digest(rounds)
            took = (time.thread_time() - t0) * 1e6
            if took >= 5000:
                best = max(best, rounds / took)
                break
            rounds *= 2
    return best


WORK_ROUNDS_PER_US = None


def calibrate_work():
    """Measures rounds per µs once per process, before the server listens."""
    global WORK_ROUNDS_PER_US
    if WORK_ROUNDS_PER_US is None:
        WORK_ROUNDS_PER_US = _calibrate()
    return WORK_ROUNDS_PER_US


def do_work(us):
    """US µs of this thread's CPU (the loop's, or the connection's); the answer's body."""
    rounds, x = 0, WORK_BASIS
    if us:
        rate, clock = calibrate_work(), time.thread_time
        end = clock() + us / 1e6
        left = us
        while left > 0:  # chunks of at most WORK_CHUNK_US, the last one what is left
            n = max(1, int(min(left, WORK_CHUNK_US) * rate))
            x = _digest_from(x, rounds, rounds + n)
            rounds += n
            left = (end - clock()) * 1e6
    return b"work %d us: %010d rounds, fnv1a %08x\n" % (us, rounds % 10_000_000_000, x)


def delay_body(ms, id_=-1):
    return (b"delayed %d ms id %d\n" % (ms, id_)) if id_ >= 0 else (b"delayed %d ms\n" % ms)


def backend_request(ms, id_):
    return b"GET /delay/%d?id=%d HTTP/1.1\r\nHost: backend\r\n\r\n" % (ms, id_)


def fanout_body(bodies, ms):
    """The fan-out's answer from its calls' bodies (None for a failed call): each must be the
    one its id asks for, else the whole fan-out is a 502."""
    for i, b in enumerate(bodies):
        if b != delay_body(ms, i):
            return None
    return b"".join(bodies)


def open_docroot_file(docroot, name):
    """(fd, size) of a regular file under the docroot, or None (404)."""
    if docroot is None:
        return None
    try:
        fd = os.open(os.path.join(docroot, name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if not (st.st_mode & 0o170000 == 0o100000):
        os.close(fd)
        return None
    return fd, st.st_size


# ------------------------------------------------------------------------------ request reader

class Request:
    __slots__ = ("method", "target", "keep_alive", "http10")


class RequestReader:
    """Bytes in, complete requests out, in order (sans-IO, as workloads/src/http.cpp).

    feed(data) returns the requests completed by these bytes; a request whose head is malformed
    or too large ends the list with the int 400 or 431, after which the reader takes no more.
    A request that asks to close (HTTP/1.0, Connection: close) also ends it: what follows is
    not read. Bodies are consumed by the parser (and ignored), so pipelining stays in step."""
    __slots__ = ("_parser", "_target", "_head", "_out", "closed")

    def __init__(self):
        self._parser = httptools.HttpRequestParser(self)
        self._target = b""
        self._head = 0
        self._out = []
        self.closed = False  # a final request or an error was read: nothing more is

    # httptools callbacks
    def on_message_begin(self):
        self._target = b""
        self._head = 11  # the method and version count too, as with llhttp's callbacks

    def on_url(self, url):
        self._count(len(url))
        self._target += url

    def on_header(self, name, value):
        self._count(len(name) + len(value))
        if not _TOKEN.issuperset(name):  # http-parser, unlike llhttp, lets a space through
            raise _Malformed()

    def on_message_complete(self):
        p = self._parser
        r = Request()
        r.method = p.get_method()
        r.target = self._target
        r.keep_alive = p.should_keep_alive()
        r.http10 = p.get_http_version() == "1.0"
        self._target = b""
        self._head = 0
        self._out.append(r)
        if not r.keep_alive:
            self.closed = True

    def _count(self, n):
        self._head += n
        if self._head > MAX_HEAD_BYTES:
            raise _TooLarge()

    def feed(self, data):
        out = self._out = []
        if self.closed:
            return out
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # we speak no other protocol: answer, then close
            self.closed = True
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _TooLarge):
                out.append(431)
            elif isinstance(e.__context__, _Malformed):
                out.append(400)
            else:
                raise
            self.closed = True
        except httptools.HttpParserError:
            out.append(400)
            self.closed = True
        if self.closed:  # requests after a final one are not answered
            for i, r in enumerate(out):
                if isinstance(r, int) or not r.keep_alive:
                    del out[i + 1:]
                    break
        return out

    def in_message(self):
        """A request has begun and is not complete (a peer that leaves now sent half of one)."""
        return self._head > 0 and not self.closed


class _TooLarge(Exception):
    pass


class _Malformed(Exception):
    pass


# A header name is an RFC 9110 token.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
