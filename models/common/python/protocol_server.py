"""The asyncio Protocol server (the fast path: callbacks on the loop, no task per connection),
shared by py-asyncio (asyncio's own selector loop, epoll) and py-uvloop (uvloop: libuv).

One protocol object per connection: data_received feeds the request reader and answers what it
can at once (pipelined answers joined into one write); an effect pauses the connection (reading
paused, later requests queued) until it completes: a wait is loop.call_later, a fan-out a task
gathering aiohttp calls, a file loop.sendfile (os.sendfile on asyncio's loop; uvloop reads and
writes). Large answers are written a 64 KiB chunk at a time under the transport's flow control
(pause_writing/resume_writing), and reading stays paused while output waits, so a client that
never reads cannot make the server buffer without bound."""
import asyncio
import collections
import socket
import time

from concbench_aio import Backend, on_stop, run_workers
from concbench_http import CHUNK, PATTERN, RequestReader, delay_body, error_answer, head, \
    open_docroot_file, route


class Ctx:
    """What every connection of one loop shares."""

    def __init__(self, name, o):
        self.server = ("concbench-" + name).encode()
        self.o = o
        self.backend = Backend(o.backend)
        self.conns = set()
        # asyncio's loop sends files with os.sendfile; uvloop's has no loop.sendfile at all
        # (AbstractEventLoop's raises NotImplementedError).
        loop = asyncio.get_running_loop()
        self.native_sendfile = type(loop).sendfile is not asyncio.AbstractEventLoop.sendfile


class HttpConn(asyncio.Protocol):
    __slots__ = ("ctx", "t", "reader", "queue", "busy", "write_paused", "closing", "left",
                 "timer", "task", "drained")

    def __init__(self, ctx):
        self.ctx = ctx
        self.t = None
        self.reader = RequestReader()
        self.queue = collections.deque()
        self.busy = None  # the request whose effect or large body is in progress
        self.write_paused = False
        self.closing = False  # answered with close: close once the output is written
        self.left = 0  # pattern bytes of a /bytes answer still to write
        self.timer = self.task = self.drained = None

    def connection_made(self, transport):
        self.t = transport
        self.ctx.conns.add(self)

    def connection_lost(self, exc):
        self.ctx.conns.discard(self)
        if self.timer:
            self.timer.cancel()
        if self.task:
            self.task.cancel()
        self.busy = None
        self.queue.clear()

    def data_received(self, data):
        self.queue.extend(self.reader.feed(data))
        self.run()

    def eof_received(self):
        if not self.queue and not self.busy:
            return False  # nothing left to answer: the transport closes
        self.closing = True  # answer what was asked, then close
        return True

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        if self.drained:
            self.drained.set_result(None)
            self.drained = None
            return
        if self.left:
            self.pump()
        self.run()

    # Answers queued requests in order until one needs an effect or the output is full.
    def run(self):
        out = []
        server = self.ctx.server
        q = self.queue
        while q and not self.busy and not self.write_paused:
            r = q.popleft()
            if r.__class__ is int:  # 400 or 431: the last answer
                out.append(error_answer(server, r))
                self.closing = True
                break
            a = route(r.method, r.target)
            head_only = r.method == b"HEAD"
            if not r.keep_alive:
                self.closing = True
            if a.effect:
                self.busy = (r, a)
                self.start_effect(r, a)
                break
            if a.pattern_len:
                out.append(head(server, 200, a.pattern_len, r.keep_alive, r.http10, a.ctype))
                if not head_only:
                    self.t.write(b"".join(out))
                    out = []
                    self.busy = (r, a)
                    self.left = a.pattern_len
                    self.pump()
                    continue
            else:
                out.append(head(server, a.status, len(a.body), r.keep_alive, r.http10, a.ctype))
                if not head_only:
                    out.append(a.body)
        if out:
            self.t.write(b"".join(out) if len(out) > 1 else out[0])
        self.settle()

    def settle(self):
        """Close once all is answered after a final request; read only while nothing waits."""
        if self.t.is_closing():
            return
        if self.closing and not self.busy and not self.queue:
            self.t.close()  # after the buffered output is written
        elif self.busy or self.queue or self.write_paused:
            self.t.pause_reading()
        else:
            self.t.resume_reading()

    def pump(self):
        """Writes the rest of a /bytes answer, a chunk at a time, while the transport takes it."""
        while self.left and not self.write_paused:
            k = min(self.left, CHUNK)
            self.t.write(PATTERN[:k])
            self.left -= k
        if not self.left:
            self.busy = None

    def finish(self, data):
        self.busy = self.timer = self.task = None
        if data:
            self.t.write(data)
        self.run()

    # ---- effects
    def start_effect(self, r, a):
        loop = asyncio.get_running_loop()
        if a.effect == "wait":
            self.timer = loop.call_later(a.ms / 1000, self.waited, time.monotonic() + a.ms / 1000)
        elif a.effect == "fanout":
            self.task = loop.create_task(self.fanout(r, a))
        else:
            self.task = loop.create_task(self.send_file(r, a))

    def waited(self, deadline):
        # On the real clock: uvloop's loop.time() is libuv's, cached at the start of a loop turn,
        # and its timers count whole milliseconds of it, so one can fire early (verify saw 6.65 ms
        # for a 7 ms wait when the deadline was taken from loop.time()).
        left = deadline - time.monotonic()
        if left > 0:  # fired early: wait out the rest
            self.timer = asyncio.get_running_loop().call_later(left, self.waited, deadline)
            return
        r, a = self.busy
        body = delay_body(a.ms, a.id)
        data = head(self.ctx.server, 200, len(body), r.keep_alive, r.http10)
        self.finish(data if r.method == b"HEAD" else data + body)

    async def fanout(self, r, a):
        body = await self.ctx.backend.fanout(a.calls, a.ms)
        if body is None:
            return self.finish(error_answer(self.ctx.server, 502, r.http10, r.keep_alive))
        data = head(self.ctx.server, 200, len(body), r.keep_alive, r.http10)
        self.finish(data if r.method == b"HEAD" else data + body)

    async def send_file(self, r, a):
        f = open_docroot_file(self.ctx.o.docroot, a.file)
        if f is None:
            return self.finish(error_answer(self.ctx.server, 404, r.http10, r.keep_alive))
        fd, size = f
        with open(fd, "rb") as file:
            self.t.write(head(self.ctx.server, 200, size, r.keep_alive, r.http10, a.ctype))
            if size and r.method != b"HEAD":
                try:
                    if self.ctx.native_sendfile:
                        await asyncio.get_running_loop().sendfile(self.t, file, 0, size)
                    else:
                        await self.write_chunks(file, size)
                except (ConnectionError, RuntimeError):  # the client went away meanwhile
                    self.t.abort()
                    return
        self.finish(None)

    async def write_chunks(self, file, size):
        """A loop without sendfile (uvloop): 64 KiB reads (from the page cache, on the loop) each
        written under flow control, waiting for resume_writing when the transport is full."""
        while size:
            data = file.read(min(size, CHUNK))
            if not data:
                raise ConnectionError("the file shrank")
            self.t.write(data)
            size -= len(data)
            if self.write_paused:
                self.drained = asyncio.get_running_loop().create_future()
                await self.drained


class EchoConn(asyncio.Protocol):
    """Every byte back, in order; reading paused while the transport's buffer is full."""
    __slots__ = ("ctx", "t")

    def __init__(self, ctx):
        self.ctx = ctx

    def connection_made(self, transport):
        self.t = transport
        self.ctx.conns.add(self)

    def connection_lost(self, exc):
        self.ctx.conns.discard(self)

    def data_received(self, data):
        self.t.write(data)

    def eof_received(self):
        return False  # all written (or buffered, and close flushes it): close

    def pause_writing(self):
        self.t.pause_reading()

    def resume_writing(self):
        self.t.resume_reading()


async def serve_loop(name, o, sock):
    loop = asyncio.get_running_loop()
    ctx = Ctx(name, o)
    stopped = loop.create_future()
    on_stop(loop, lambda: stopped.done() or stopped.set_result(None))
    proto = HttpConn if o.proto == "http" else EchoConn
    server = await loop.create_server(lambda: proto(ctx), sock=sock, backlog=socket.SOMAXCONN)
    await stopped
    server.close()
    for c in list(ctx.conns):
        c.t.abort()
    await ctx.backend.close()


def main(name, o, loop_factory=None):
    def serve(sock):
        if loop_factory is None:
            asyncio.run(serve_loop(name, o, sock))
        else:  # Python 3.11's asyncio.run takes no loop factory
            loop = loop_factory()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve_loop(name, o, sock))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
    run_workers(o, serve)
