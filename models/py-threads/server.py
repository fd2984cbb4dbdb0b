"""py-threads: a thread per connection with blocking sockets, as a socketserver-style Python server
is written (ThreadingMixIn's shape, without http.server: requests are read by the shared
httptools RequestReader and answered with the contract's heads, models/common/python/).

The main thread waits in a selector on the listening socket and on signal.set_wakeup_fd's
socket, accepts, sets TCP_NODELAY and starts a thread (daemon=False, kept in a set) per
connection. Each thread loops recv(65536) -> reader.feed -> answers; every answer one recv
brought is written with ONE sendall (head and body joined: written apart, Nagle and the peer's
delayed ACK hold the body back ~40 ms). Effects block the connection's own thread, as the C++
blocking models do (models/common/blocking.cpp): a wait is poll() on the client socket with no
events asked (only a hang-up ends it early: a reset, or shutdown() at SIGTERM); a fan-out sends
its K requests on blocking sockets from a thread-local pool, then reads the K answers in turn
(httptools.HttpResponseParser); a file goes out by socket.sendfile (os.sendfile).
SIGTERM/SIGINT: stop accepting, shutdown(SHUT_RDWR) every open connection (under the lock its
thread closes it with), join the threads (4 s at most), exit 0. Out of fds, accept is survived
with a reserved fd (close it, accept and close, reopen it), or a 10 ms pause without one.

Needs Debian's /usr/bin/python3 (3.11) with python3-httptools.
Run: build/bin/server-py-threads --port 8080 [--backend 127.0.0.1:9000] [--docroot DIR]"""
import errno
import math
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "common", "python"))
from concbench_http import CHUNK, PATTERN, RequestReader, backend_request, delay_body, \
    error_answer, fanout_body, head, listen_socket, announce_listening, open_docroot_file, \
    parse_options, route, httptools  # noqa: E402

NAME = "py-threads"
SERVER = ("concbench-" + NAME).encode()
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
BACKEND_TIMEOUT_MS = 30 * 1000  # a stuck backend ends the call (as models/common/blocking.cpp)
ACCEPT_BATCH = 64  # connections taken per listener wake-up, so a stop signal is seen between


class Gone(Exception):
    """The client hung up (or the server shut the connection down) during an effect."""


# ------------------------------------------------------------------------------------- effects

def wait_unless_hangup(conn, ms):
    """Sleeps ms, never less; a hang-up of the client (reset, shutdown at SIGTERM) ends it."""
    deadline = time.monotonic() + ms / 1000
    p = select.poll()
    p.register(conn, 0)  # no events asked: only POLLHUP / POLLERR / POLLNVAL wake it
    while (left := deadline - time.monotonic()) > 0:
        if p.poll(math.ceil(left * 1000)):
            raise Gone()


class _Answer:
    """httptools.HttpResponseParser's callbacks for one backend answer."""
    __slots__ = ("body", "done", "extra")

    def __init__(self):
        self.body = []
        self.done = False
        self.extra = False  # bytes past the answer: the connection is not reused

    def on_message_begin(self):
        if self.done:
            self.extra = True

    def on_body(self, b):
        self.body.append(b)

    def on_message_complete(self):
        self.done = True


_pool = threading.local()  # this thread's idle keep-alive backend connections


def _take_backend(addr):
    idle = getattr(_pool, "idle", None)
    if idle is None:
        idle = _pool.idle = []
    if idle:
        return idle.pop()
    b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        b.connect(addr)
    except OSError:
        b.close()
        raise
    return b


def _read_answer(b, client_poll):
    """One blocking read of a backend answer: its body, or None (error, reset, not 200).
    Raises Gone if the client hangs up meanwhile. Returns (body, reusable)."""
    cb = _Answer()
    parser = httptools.HttpResponseParser(cb)
    client_poll.register(b, select.POLLIN)
    try:
        while not cb.done:
            ready = client_poll.poll(BACKEND_TIMEOUT_MS)
            if not ready:
                return None, False
            for fd, ev in ready:
                if fd != b.fileno():
                    raise Gone()
            data = b.recv(CHUNK)
            if not data:
                return None, False
            parser.feed_data(data)
    except httptools.HttpParserError:
        return None, False
    except OSError:
        return None, False
    finally:
        client_poll.unregister(b)
    ok = parser.get_status_code() == 200
    return (b"".join(cb.body) if ok else None), ok and not cb.extra and parser.should_keep_alive()


def fanout(conn, addr, calls, ms):
    """The K calls: every request written, then every answer read in turn (the calls overlap
    in the backend). The answer's body, or None (a 502)."""
    if addr is None:
        return None
    socks = []
    ok = True
    try:
        for i in range(calls):
            b = _take_backend(addr)
            socks.append(b)
            b.sendall(backend_request(ms, i))
    except OSError:
        ok = False
    p = select.poll()
    p.register(conn, 0)  # the client's hang-up ends the wait for the backend
    bodies = []
    try:
        for b in socks:
            body, reusable = _read_answer(b, p) if ok else (None, False)
            if reusable:
                _pool.idle.append(b)
            else:
                b.close()  # failed, or an answer left unread: never reused
            ok = ok and body is not None
            bodies.append(body)
    except Gone:
        for b in socks[len(bodies):]:
            b.close()
        raise
    return fanout_body(bodies, ms) if ok else None


# ---------------------------------------------------------------------------------- connection

def serve_http(conn, o):
    reader = RequestReader()
    while True:
        data = conn.recv(CHUNK)
        if not data:
            return  # the peer is gone (or half-closed after what it sent: all answered)
        out = []
        for r in reader.feed(data):
            if r.__class__ is int:  # 400 or 431: the last answer
                out.append(error_answer(SERVER, r))
                break
            a = route(r.method, r.target)
            body_too = r.method != b"HEAD"
            if a.effect == "wait":
                if out:  # answers before the effect go first
                    conn.sendall(b"".join(out))
                    out = []
                wait_unless_hangup(conn, a.ms)
                body = delay_body(a.ms, a.id)
                out.append(head(SERVER, 200, len(body), r.keep_alive, r.http10))
                if body_too:
                    out.append(body)
            elif a.effect == "fanout":
                if out:
                    conn.sendall(b"".join(out))
                    out = []
                body = fanout(conn, o.backend, a.calls, a.ms)
                if body is None:
                    out.append(error_answer(SERVER, 502, r.http10, r.keep_alive))
                else:
                    out.append(head(SERVER, 200, len(body), r.keep_alive, r.http10))
                    if body_too:
                        out.append(body)
            elif a.effect == "file":
                f = open_docroot_file(o.docroot, a.file)
                if f is None:
                    out.append(error_answer(SERVER, 404, r.http10, r.keep_alive))
                    continue
                fd, size = f
                with open(fd, "rb") as file:
                    out.append(head(SERVER, 200, size, r.keep_alive, r.http10, a.ctype))
                    conn.sendall(b"".join(out))
                    out = []
                    if size and body_too and conn.sendfile(file, 0, size) != size:
                        return  # the file shrank under us: the answer cannot be completed
            elif a.pattern_len:
                out.append(head(SERVER, 200, a.pattern_len, r.keep_alive, r.http10, a.ctype))
                if body_too:
                    n = a.pattern_len
                    k = min(n, CHUNK)
                    out.append(PATTERN[:k])  # the head goes with the first chunk
                    conn.sendall(b"".join(out))
                    out = []
                    n -= k
                    while n:
                        k = min(n, CHUNK)
                        conn.sendall(PATTERN[:k])
                        n -= k
            else:
                out.append(head(SERVER, a.status, len(a.body), r.keep_alive, r.http10, a.ctype))
                if body_too:
                    out.append(a.body)
        if out:
            conn.sendall(b"".join(out) if len(out) > 1 else out[0])
        if reader.closed:
            return  # a final request (close, HTTP/1.0) or bad input was answered: close


def serve_echo(conn, o):
    while data := conn.recv(CHUNK):
        conn.sendall(data)


class Connections:
    """The open connections and their threads, so that a stop can unblock and join them. A
    thread removes and closes its socket under the lock, so shutdown() never touches a reused
    fd number."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open = {}  # socket -> thread

    def run(self, conn, serve, o):
        try:
            serve(conn, o)
        except (OSError, Gone):
            pass  # reset by the peer, shut down at stop, or hung up during an effect
        finally:
            with self.lock:
                self.open.pop(conn, None)
                conn.close()

    def start(self, conn, serve, o):
        t = threading.Thread(target=self.run, args=(conn, serve, o), daemon=False)
        with self.lock:
            self.open[conn] = t
        try:
            t.start()
        except RuntimeError as e:  # can't start new thread
            sys.stderr.write(f"server-{NAME}: cannot start a thread for a new connection ({e}): closing it\n")
            with self.lock:
                self.open.pop(conn, None)
                conn.close()

    def stop(self, limit_s):
        """shutdown() every open connection, then join their threads (limit_s in all). The lock
        is taken per connection, so threads already woken finish while the rest are shut down
        (held across all of them, 10,000 threads woke at once and took 3.5 s to end, not 1.9 s)."""
        with self.lock:
            conns = list(self.open.items())
        for conn, _ in conns:
            with self.lock:
                if conn in self.open:  # not closed (and its fd number not reused) meanwhile
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        threads = [t for _, t in conns]
        deadline = time.monotonic() + limit_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


# ------------------------------------------------------------------------------------ acceptor

def _reserve():
    try:
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def main():
    o = parse_options(NAME)
    serve = serve_http if o.proto == "http" else serve_echo
    # SIGTERM waits (blocked) until its handler is in place: a stop during start-up is clean.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    lsock = listen_socket(o)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    stopping = []
    for s in STOP_SIGNALS:  # the handler only notes it; the wake-up byte ends the selector's wait
        signal.signal(s, lambda signum, frame: stopping.append(signum))
    sel = selectors.DefaultSelector()
    sel.register(wake_r, selectors.EVENT_READ)
    sel.register(lsock, selectors.EVENT_READ)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    announce_listening(o)

    conns = Connections()
    reserve = _reserve()  # an fd to give back when accept runs out of them
    paused_until = None  # out of fds without a reserve: the listener rests 10 ms
    while not stopping:
        timeout = None
        if paused_until is not None:
            timeout = paused_until - time.monotonic()
            if timeout <= 0:
                sel.register(lsock, selectors.EVENT_READ)
                paused_until = timeout = None
                if reserve is None:
                    reserve = _reserve()
        events = sel.select(timeout)
        if stopping:
            break
        for key, _ in events:
            if key.fileobj is wake_r:
                try:
                    while wake_r.recv(64):
                        pass
                except BlockingIOError:
                    pass
                continue
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, _ = lsock.accept()
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno not in (errno.EMFILE, errno.ENFILE):
                        if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                            continue
                        raise
                    if reserve is not None:  # out of fds: refuse this one and go on
                        os.close(reserve)
                        try:
                            lsock.accept()[0].close()
                        except OSError:
                            pass
                        reserve = _reserve()
                        continue
                    sel.unregister(lsock)
                    paused_until = time.monotonic() + 0.010
                    break
                conn.setblocking(True)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns.start(conn, serve, o)
    sel.close()
    lsock.close()
    if not conns.stop(4.0):
        sys.stderr.write(f"server-{NAME}: some connection threads did not finish within 4 s\n")
        sys.stderr.flush()
        os._exit(0)  # interpreter shutdown would join them without end
    sys.exit(0)


if __name__ == "__main__":
    main()
