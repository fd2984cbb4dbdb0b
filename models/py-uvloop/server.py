"""py-uvloop: the py-asyncio Protocol server (models/common/python/protocol_server.py) on uvloop,
Debian's python3-uvloop: asyncio's loop replaced by one on libuv (Cython), the same protocol
callbacks. uvloop has no loop.sendfile: files are read and written in 64 KiB chunks.

Needs Debian's /usr/bin/python3 (3.11) with python3-uvloop, python3-httptools, python3-aiohttp.
Run: build/bin/server-py-uvloop --port 8080 [--workers N]"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "common", "python"))
from concbench_http import parse_options  # noqa: E402

try:
    import uvloop
except ImportError:
    sys.stderr.write("server-py-uvloop: not available: install Debian package python3-uvloop (make deps)\n")
    sys.exit(2)
import protocol_server  # noqa: E402

if __name__ == "__main__":
    protocol_server.main("py-uvloop", parse_options("py-uvloop", has_workers=True), uvloop.new_event_loop)
