"""What the asyncio models (py-asyncio, py-asyncio-streams, py-uvloop, py-aiohttp) share beyond
the contract in concbench_http: fan-out calls gathered over aiohttp's keep-alive client pool,
a wait that is never early, worker processes, and the SIGTERM stop."""
import asyncio
import os
import signal
import sys
import time

from concbench_http import announce_listening, fanout_body, listen_socket

try:
    import aiohttp
except ImportError:
    sys.stderr.write("not available: install Debian package python3-aiohttp (make deps)\n")
    sys.exit(2)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Backend:
    """The fan-out: K concurrent GET /delay/MS?id=i calls, asyncio.gather'ed, on one aiohttp
    ClientSession per process (its connector keeps backend connections alive and opens more on
    demand: limit=0, as the C++ models' pools)."""

    def __init__(self, addr):
        self.addr = addr
        self.session = None

    async def _call(self, url):
        async with self.session.get(url) as r:
            body = await r.read()
            return body if r.status == 200 else None

    async def fanout(self, calls, ms):
        """The answer's body, or None (a 502): no backend, a failed call, a wrong body."""
        if self.addr is None:
            return None
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                 auto_decompress=False)
        base = "http://%s:%d/delay/%d?id=" % (self.addr[0], self.addr[1], ms)
        try:
            bodies = await asyncio.gather(*[self._call(base + str(i)) for i in range(calls)])
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return None
        return fanout_body(bodies, ms)

    async def close(self):
        if self.session is not None:
            await self.session.close()


async def sleep_ms(ms):
    """asyncio.sleep, but never short of ms (a loop on libuv's millisecond timers can fire one
    early: the request is held at least ms, as in every model)."""
    deadline = time.monotonic() + ms / 1000
    await asyncio.sleep(ms / 1000)
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(left)


def block_stop_signals():
    """SIGTERM waits (blocked) until the loop's handler is installed, so a stop that comes during
    start-up is a clean stop, not death by signal."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def on_stop(loop, callback):
    for s in STOP_SIGNALS:
        loop.add_signal_handler(s, callback)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def run_workers(o, serve):
    """--workers N: N processes, each one event loop on its own SO_REUSEPORT listening socket on
    the same port (as uvicorn and gunicorn run several loops: one interpreter and GIL each).
    serve(sock) runs one loop until SIGTERM. The first process serves too; at SIGTERM it stops
    the others (SIGTERM, then SIGKILL after 4 s) and reaps them."""
    block_stop_signals()
    sock = listen_socket(o, reuseport=o.workers > 1)
    children = []
    for _ in range(1, o.workers):
        pid = os.fork()
        if pid == 0:
            own = listen_socket(o, reuseport=True)
            sock.close()
            try:
                serve(own)
            finally:
                os._exit(0)
        children.append(pid)
    announce_listening(o)
    try:
        serve(sock)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 4
        while children:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid:
                children.remove(pid)
            elif time.monotonic() > deadline:
                for p in children:
                    os.kill(p, signal.SIGKILL)
                deadline = float("inf")
            else:
                time.sleep(0.01)
