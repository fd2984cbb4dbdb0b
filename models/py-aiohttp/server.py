"""py-aiohttp: an aiohttp.web application (Debian's python3-aiohttp 3.8.4, the framework the
essays use), written as its users write one: one coroutine handler for every path
(add_route("*", "/{tail:.*}")) that takes the contract's route (models/common/python/
concbench_http.py) and answers with web.Response; a wait is `await asyncio.sleep()`, a fan-out
`await asyncio.gather()` over aiohttp's own client (concbench_aio.Backend), /bytes/N a
web.StreamResponse written in 64 KiB chunks (`await resp.write()`, Content-Length set, not
chunked), a file a StreamResponse whose body goes out by loop.sendfile (os.sendfile), as
web.FileResponse sends it, without FileResponse's ETag, Last-Modified and Accept-Ranges.
Requests are parsed by aiohttp's own C parser (llhttp); a RequestHandler subclass gives the
contract's answers to requests it cannot parse (400, and 431 for a head over 8 KiB).
Started with web.AppRunner + web.SockSite on the sockets of concbench_aio.run_workers
(--workers N processes, SO_REUSEPORT); SIGTERM runs runner.cleanup(). The echo protocol is not
HTTP: it is served by the asyncio Protocol of models/common/python/protocol_server.py.

Needs Debian's /usr/bin/python3 (3.11) with python3-aiohttp and python3-httptools.
Run: build/bin/server-py-aiohttp --port 8080 [--workers N] [--backend H:P] [--docroot DIR]"""
import asyncio
import logging
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "common", "python"))
from concbench_aio import Backend, on_stop, run_workers, sleep_ms  # noqa: E402
from concbench_http import ERROR_BODIES, MAX_HEAD_BYTES, delay_body, open_docroot_file, \
    parse_options, pattern_chunks, route  # noqa: E402
import protocol_server  # noqa: E402

from aiohttp import web, web_protocol  # noqa: E402
from aiohttp.http import HttpVersion11  # noqa: E402
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong  # noqa: E402

NAME = "py-aiohttp"
SERVER = "concbench-" + NAME
TEXT = "text/plain"
OCTET = "application/octet-stream"
STOP_TIMEOUT_S = 0.5  # SIGTERM: how long requests under way may take before they are cancelled

# RequestHandler's settings (AppRunner passes them on to every connection's handler).
HANDLER_ARGS = dict(
    access_log=None,  # no access log
    keepalive_timeout=3600.0,  # aiohttp closes idle keep-alive connections after 75 s by default
    # A header block over 8 KiB is a 431. aiohttp's parser refuses a line or field past 8190
    # bytes (LineTooLong) and more than max_headers headers; both limits sit where any request
    # they refuse is also over 8 KiB by the contract's count, and the handler counts the rest.
    max_line_size=8190,
    max_field_size=8190,
    max_headers=MAX_HEAD_BYTES,
    logger=logging.getLogger("concbench.aiohttp"),  # tracebacks of failing handlers only
)


def answer(status, body, ctype=TEXT):
    return web.Response(body=body, status=status, headers={"Server": SERVER, "Content-Type": ctype})


def error(status):
    return answer(status, ERROR_BODIES[status])


# An RFC 9110 token: what a header name may hold.
TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def check_head(request, target):
    """What aiohttp's parser lets through but the contract refuses: 0 (fine), 400 (a header
    name that is no token: aiohttp 3.8.4's parser takes 'Bad Name: x') or 431 (a head over
    8 KiB as the contract counts it, concbench_http.RequestReader: method and version (11),
    the target, every header name and value)."""
    size = 11 + len(target)
    for k, v in request.raw_headers:
        if not TOKEN.issuperset(k):
            return 400
        size += len(k) + len(v)
    return 431 if size > MAX_HEAD_BYTES else 0


async def handle(request):
    """Every path: the contract's route, then its effect."""
    target = request.raw_path.encode("utf-8", "surrogateescape")
    bad = check_head(request, target)
    if bad:  # then close, as after any request that cannot be read
        resp = error(bad)
        resp.force_close()
        return resp
    a = route(request.method.encode(), target)
    body_too = request.method != "HEAD"
    if a.effect == "wait":
        await sleep_ms(a.ms)
        return answer(200, delay_body(a.ms, a.id))
    if a.effect == "fanout":
        body = await request.app["backend"].fanout(a.calls, a.ms)
        return error(502) if body is None else answer(200, body)
    if a.effect == "file":
        return await send_file(request, a.file, body_too)
    if a.pattern_len:
        resp = web.StreamResponse(headers={"Server": SERVER, "Content-Type": OCTET})
        resp.content_length = a.pattern_len
        await resp.prepare(request)
        if body_too:
            for chunk in pattern_chunks(a.pattern_len):
                await resp.write(chunk)  # drains once more than 64 KiB waits
        await resp.write_eof()
        return resp
    return answer(a.status, a.body, a.ctype.decode())


async def send_file(request, name, body_too):
    """web.FileResponse's way (prepare, then loop.sendfile on the transport, then write_eof),
    with the contract's headers only."""
    f = open_docroot_file(request.app["docroot"], name)
    if f is None:
        return error(404)
    fd, size = f
    with open(fd, "rb") as file:
        resp = web.StreamResponse(headers={"Server": SERVER, "Content-Type": OCTET})
        resp.content_length = size
        await resp.prepare(request)
        if size and body_too:
            await asyncio.get_running_loop().sendfile(request.transport, file, 0, size)
        await resp.write_eof()
    return resp


class Handler(web_protocol.RequestHandler):
    """aiohttp's per-connection protocol with two changes: the answers to requests it cannot
    parse, and a half-closed connection is answered (stock aiohttp 3.8 lets the transport
    close at EOF, and the requests read before it are never answered)."""

    peer_eof = False

    def eof_received(self):
        self.peer_eof = True
        if not self._messages:  # nothing read waits: close once the request under way is answered
            self.close()
        return True  # keep the transport open for the answers still to come

    async def finish_response(self, request, resp, start_time):
        reset = await super().finish_response(request, resp, start_time)
        if self.peer_eof and not self._messages:
            self.close()  # the last request before the EOF is answered: close
        return reset

    def handle_error(self, request, status=500, exc=None, message=None):
        if status != 400:  # a failing handler (500) or a timeout (504): aiohttp's own answer
            resp = super().handle_error(request, status, exc, message)
            resp.headers["Server"] = SERVER
            return resp
        if isinstance(exc, LineTooLong) or (
                isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)):
            status = 431  # past max_line_size / max_field_size / max_headers: over 8 KiB
        # aiohttp answers what it could not parse as HTTP/1.0; the contract says HTTP/1.1 (and
        # then aiohttp adds Connection: close, as the contract's error answers have).
        request._version = HttpVersion11
        resp = error(status)
        resp.force_close()
        return resp


class Server(web.Server):
    def __call__(self):
        return Handler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """web.AppRunner whose low-level server makes Handler (aiohttp 3.8 has no setting for
    RequestHandler's class)."""

    async def _make_server(self):
        s = await super()._make_server()
        return Server(s.request_handler, request_factory=s.request_factory, **s._kwargs)


async def close_backend(app):
    await app["backend"].close()


def make_app(o):
    app = web.Application()
    app["backend"] = Backend(o.backend)
    app["docroot"] = o.docroot
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_cleanup.append(close_backend)
    return app


async def serve_http(o, sock, stopped):
    runner = Runner(make_app(o), **HANDLER_ARGS)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=STOP_TIMEOUT_S, backlog=socket.SOMAXCONN)
    await site.start()
    await stopped
    await runner.cleanup()  # stop accepting, close idle connections, cancel the rest


async def serve_echo(o, sock, stopped):
    ctx = protocol_server.Ctx(NAME, o)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: protocol_server.EchoConn(ctx), sock=sock,
                                      backlog=socket.SOMAXCONN)
    await stopped
    server.close()
    for c in list(ctx.conns):
        c.t.abort()


async def serve_loop(o, sock):
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    on_stop(loop, lambda: stopped.done() or stopped.set_result(None))
    await (serve_http if o.proto == "http" else serve_echo)(o, sock, stopped)


def main():
    o = parse_options(NAME, has_workers=True)
    run_workers(o, lambda sock: asyncio.run(serve_loop(o, sock)))


if __name__ == "__main__":
    main()
