#!/usr/bin/python3
"""Coordinated omission, demonstrated: an open-loop run during which the server freezes for 1 s.

usage: /usr/bin/python3 scripts/co_demo.py [--model epoll] [--connections 50] [--duration 10]
                                           [--fraction 0.5] [--freeze 1.0]

Starts build/bin/server-<model> pinned to CPU 0, measures its closed-loop maximum for 3 s
(`concbench load`, client on CPU 1), then runs an open loop at `fraction` of that rate for
`duration` s and freezes the server (SIGSTOP ... SIGCONT, by its pid) for `freeze` s in the middle.
Latency measured from the intended send time (corrected) shows the freeze: every request due
while the server was stopped waited for it. Latency from the actual send (uncorrected, what a
closed-loop client such as wrk reports) hides it: only the one request in flight per connection
saw the stall. Exit status 0 when corrected p99.9 >= 500 ms and uncorrected p99.9 stays below it.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONCBENCH = ROOT / "build/bin/concbench"


def load(port, args, json_path):
    argv = [str(CONCBENCH), "load", "--target", "127.0.0.1:%d" % port, "--cpus", "1",
            "--json", str(json_path)] + args
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit("co_demo: concbench load failed: " + r.stdout.strip())
    return r.stdout, json.loads(Path(json_path).read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="epoll")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--freeze", type=float, default=1.0)
    a = ap.parse_args()
    server = ROOT / ("build/bin/server-" + a.model)
    if not server.exists() or not CONCBENCH.exists():
        sys.exit("co_demo: build first (make build): %s" % server)
    srv = subprocess.Popen(["taskset", "-c", "0", str(server), "--proto", "http", "--host", "127.0.0.1",
                            "--port", "0"], stdout=subprocess.PIPE, text=True)
    stopped = False
    try:
        line = srv.stdout.readline().strip()
        if not line.startswith("listening "):
            sys.exit("co_demo: server did not start: %r" % line)
        port = int(line.rsplit(":", 1)[1])
        with tempfile.TemporaryDirectory() as tmp:
            _, closed = load(port, ["-c", str(a.connections), "-d", "3"], Path(tmp) / "closed.json")
            rate = a.fraction * closed["throughput_rps"]
            print("closed loop: %.0f req/s; open loop at %.0f %% of it: %.0f req/s for %.0f s, server "
                  "frozen for %.1f s in the middle" % (closed["throughput_rps"], 100 * a.fraction, rate,
                                                        a.duration, a.freeze), flush=True)
            warmup = 1.0

            def freeze():
                nonlocal stopped
                time.sleep(warmup + a.duration / 2 - a.freeze / 2 + 0.3)  # + the load's set-up
                os.kill(srv.pid, signal.SIGSTOP)
                stopped = True
                time.sleep(a.freeze)
                os.kill(srv.pid, signal.SIGCONT)
                stopped = False

            t = threading.Thread(target=freeze)
            t.start()
            out, j = load(port, ["-c", str(a.connections), "-d", str(a.duration), "--warmup", str(warmup),
                                 "--rate", "%.0f" % rate], Path(tmp) / "open.json")
            t.join()
            print(out, end="")
        cor, unc = j["latency_us"], j["latency_uncorrected_us"]
        print("p99.9: corrected %.1f ms, uncorrected %.1f ms; p99: corrected %.1f ms, uncorrected %.1f ms"
              % (cor["p999"] / 1000, unc["p999"] / 1000, cor["p99"] / 1000, unc["p99"] / 1000))
        ok = cor["p999"] >= 500_000 and unc["p999"] < 500_000
        print("coordinated omission shown: %s" % ("yes" if ok else "NO"))
        return 0 if ok else 1
    finally:
        if stopped:
            os.kill(srv.pid, signal.SIGCONT)
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


if __name__ == "__main__":
    sys.exit(main())
