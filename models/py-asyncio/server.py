"""py-asyncio: Python's asyncio with asyncio.Protocol, the fast path — callbacks on the selector
event loop (epoll on Linux), no task per connection; waits by loop.call_later, fan-outs gathered
over aiohttp's client, files by loop.sendfile. The server is models/common/python/protocol_server.py
(shared with py-uvloop); this file picks asyncio's own loop.

Needs Debian's /usr/bin/python3 (3.11) with python3-httptools and python3-aiohttp.
Run: build/bin/server-py-asyncio --port 8080 [--workers N]"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "common", "python"))
import protocol_server  # noqa: E402
from concbench_http import parse_options  # noqa: E402

if __name__ == "__main__":
    protocol_server.main("py-asyncio", parse_options("py-asyncio", has_workers=True))
