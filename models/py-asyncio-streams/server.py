"""py-asyncio-streams: asyncio the way the essays' readers write it — asyncio.start_server with a
coroutine per connection over StreamReader/StreamWriter: `await reader.read()`, answer, `await
writer.drain()`; a wait is `await asyncio.sleep()`, a fan-out `await asyncio.gather()` over
aiohttp client calls, a file `await loop.sendfile()`. The same parsing, routes and answers as
py-asyncio (models/common/python/concbench_http.py); what differs is the task and the stream
objects per connection on top of the Protocol py-asyncio writes by hand.

Needs Debian's /usr/bin/python3 (3.11) with python3-httptools and python3-aiohttp.
Run: build/bin/server-py-asyncio-streams --port 8080 [--workers N]"""
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "common", "python"))
from concbench_aio import Backend, on_stop, run_workers, sleep_ms  # noqa: E402
from concbench_http import CHUNK, RequestReader, delay_body, error_answer, head, \
    open_docroot_file, parse_options, pattern_chunks, route  # noqa: E402

NAME = "py-asyncio-streams"
SERVER = ("concbench-" + NAME).encode()


async def answer(r, writer, o, backend):
    """Writes the answer to one request (its effect carried out first)."""
    a = route(r.method, r.target)
    head_only = r.method == b"HEAD"
    if a.effect == "wait":
        await sleep_ms(a.ms)
        a.body = delay_body(a.ms, a.id)
    elif a.effect == "fanout":
        a.body = await backend.fanout(a.calls, a.ms)
        if a.body is None:
            writer.write(error_answer(SERVER, 502, r.http10, r.keep_alive))
            return
    elif a.effect == "file":
        f = open_docroot_file(o.docroot, a.file)
        if f is None:
            writer.write(error_answer(SERVER, 404, r.http10, r.keep_alive))
            return
        fd, size = f
        with open(fd, "rb") as file:
            writer.write(head(SERVER, 200, size, r.keep_alive, r.http10, a.ctype))
            if size and not head_only:
                await asyncio.get_running_loop().sendfile(writer.transport, file, 0, size)
        return
    if a.pattern_len:
        writer.write(head(SERVER, 200, a.pattern_len, r.keep_alive, r.http10, a.ctype))
        if not head_only:
            for chunk in pattern_chunks(a.pattern_len):
                writer.write(chunk)
                await writer.drain()
        return
    writer.write(head(SERVER, a.status, len(a.body), r.keep_alive, r.http10, a.ctype))
    if not head_only:
        writer.write(a.body)


async def http_conn(reader, writer, o, backend):
    rr = RequestReader()
    while not rr.closed:
        data = await reader.read(CHUNK)
        if not data:
            break
        for r in rr.feed(data):
            if r.__class__ is int:  # 400 or 431, then close
                writer.write(error_answer(SERVER, r))
                break
            await answer(r, writer, o, backend)
        await writer.drain()


async def echo_conn(reader, writer):
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()


async def serve_loop(o, sock):
    loop = asyncio.get_running_loop()
    backend = Backend(o.backend)
    tasks = set()
    stopped = loop.create_future()
    on_stop(loop, lambda: stopped.done() or stopped.set_result(None))

    async def conn(reader, writer):
        tasks.add(asyncio.current_task())
        try:
            if o.proto == "http":
                await http_conn(reader, writer, o, backend)
            else:
                await echo_conn(reader, writer)
        except (ConnectionError, RuntimeError):  # a reset, or a write after the peer left
            pass
        finally:
            tasks.discard(asyncio.current_task())
            writer.close()

    server = await asyncio.start_server(conn, sock=sock, backlog=socket.SOMAXCONN)
    await stopped
    server.close()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.close()


if __name__ == "__main__":
    opts = parse_options(NAME, has_workers=True)
    run_workers(opts, lambda sock: asyncio.run(serve_loop(opts, sock)))
