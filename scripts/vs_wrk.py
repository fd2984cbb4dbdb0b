#!/usr/bin/python3
"""loadgen against Debian's wrk on the same nginx: throughput, p50 and client CPU per request.

usage: /usr/bin/python3 scripts/vs_wrk.py [--connections 100,1000] [--rounds 3] [--duration 5]
                                          [--server-cpu 0] [--client-cpu 1] [--pipeline 1]

Starts nginx (one worker, daemon off, 127.0.0.1 on a free port, `return 200 "Hello, World!"`,
access_log off) from a config in a temporary directory, pinned to the server CPU, then measures
`concbench load` and `wrk` alternately (the first of each round alternates too), one client thread each, pinned to the client CPU. Client
CPU is the whole client process's user+system time (wait4 rusage) over its whole run, divided by
the requests it completed, for both clients alike (loadgen runs with --warmup 0 here, so both
include their connection set-up). Prints one row per run and the medians with the ratios.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
worker_rlimit_nofile 20000;
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "Hello, World!"; }}
    }}
}}
"""

# wrk's done() writes its figures as one JSON line (Debian's wrk 4.1 has the Lua API).
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50":%g,"p90":%g,"p99":%g,' ..
    '"p999":%g,"max":%g,"mean":%g,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp, cpu):
    port = free_port()
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
    p = subprocess.Popen(["taskset", "-c", str(cpu), NGINX, "-c", str(conf), "-p", tmp],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    sys.exit("vs_wrk: nginx did not start (see %s/error.log)" % tmp)


def run_child(argv, cpu):
    """Runs argv pinned to `cpu`; returns (stdout, cpu seconds from wait4)."""
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = "", ""
    # taskset execs the client, so the pid is the client's own; wait4 gives its rusage.
    import threading
    bufs = {}
    def rd(name, f):
        bufs[name] = f.read()
    ts = [threading.Thread(target=rd, args=(n, f)) for n, f in (("o", p.stdout), ("e", p.stderr))]
    for t in ts:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    for t in ts:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit("vs_wrk: %s failed (%d): %s" % (argv[0], p.returncode, bufs.get("e", "")[-500:]))
    return bufs["o"], ru.ru_utime + ru.ru_stime


def run_loadgen(port, c, dur, cpu, pipeline, tmp):
    js = Path(tmp) / "lg.json"
    argv = [str(ROOT / "build/bin/concbench"), "load", "--target", "127.0.0.1:%d" % port,
            "--connections", str(c), "--threads", "1", "--duration", str(dur), "--warmup", "0",
            "--pipeline", str(pipeline), "--json", str(js)]
    _, cpu_s = run_child(argv, cpu)
    j = json.loads(js.read_text())
    errors = sum(j.get("errors", {}).values())
    return {"rps": j["throughput_rps"], "p50_us": j["latency_us"]["p50"],
            "p99_us": j["latency_us"]["p99"], "mean_us": j["latency_us"]["mean"],
            "cpu_us_per_req": cpu_s * 1e6 / max(1, j["requests"]),
            "errors": errors}


def run_wrk(port, c, dur, cpu, pipeline, tmp):
    lua = Path(tmp) / "wrk.lua"
    script = WRK_LUA
    if pipeline > 1:
        script = ('init = function(args)\n  local r = {}\n  for i = 1, %d do r[i] = wrk.format() end\n'
                  '  req = table.concat(r)\nend\nrequest = function() return req end\n' % pipeline) + script
    lua.write_text(script)
    argv = [WRK, "-t1", "-c%d" % c, "-d%ds" % dur, "-s", str(lua), "http://127.0.0.1:%d/" % port]
    out, cpu_s = run_child(argv, cpu)
    m = re.search(r"^WRKJSON (.*)$", out, re.M)
    if not m:
        sys.exit("vs_wrk: no figures in wrk's output:\n" + out)
    j = json.loads(m.group(1))
    errors = sum(j[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {"rps": j["requests"] / (j["duration_us"] / 1e6), "p50_us": j["p50"],
            "p99_us": j["p99"], "mean_us": j["mean"],
            "cpu_us_per_req": cpu_s * 1e6 / max(1, j["requests"]), "errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", default="100,1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--pipeline", type=int, default=1)
    a = ap.parse_args()
    if not os.path.exists(NGINX) or not os.path.exists(WRK):
        sys.exit("vs_wrk: needs %s and %s (scripts/deps.sh installs them)" % (NGINX, WRK))
    with tempfile.TemporaryDirectory() as tmp:
        nginx, port = start_nginx(tmp, a.server_cpu)
        try:
            for c in [int(x) for x in a.connections.split(",")]:
                rows = {"loadgen": [], "wrk": []}
                for r in range(a.rounds):
                    order = [("loadgen", run_loadgen), ("wrk", run_wrk)]
                    for name, fn in (order if r % 2 == 0 else order[::-1]):  # who goes first alternates
                        res = fn(port, c, a.duration, a.client_cpu, a.pipeline, tmp)
                        rows[name].append(res)
                        print("c=%-5d round %d %-7s %9.0f req/s  p50 %8.1f  mean %8.1f  p99 %8.1f µs  "
                              "client %5.2f µs/req  errors %d"
                              % (c, r + 1, name, res["rps"], res["p50_us"], res["mean_us"], res["p99_us"],
                                 res["cpu_us_per_req"], res["errors"]), flush=True)
                med = {n: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50_us", "mean_us", "cpu_us_per_req")}
                       for n, v in rows.items()}
                lg, wk = med["loadgen"], med["wrk"]
                print("c=%-5d median: loadgen %.0f req/s, p50 %.1f µs, mean %.1f µs, %.2f µs/req | wrk %.0f req/s, "
                      "p50 %.1f µs, mean %.1f µs, %.2f µs/req | ratios: req/s %.2f, p50 %.2f, mean %.2f, CPU/req %.2f"
                      % (c, lg["rps"], lg["p50_us"], lg["mean_us"], lg["cpu_us_per_req"], wk["rps"], wk["p50_us"],
                         wk["mean_us"], wk["cpu_us_per_req"], lg["rps"] / wk["rps"], lg["p50_us"] / wk["p50_us"],
                         lg["mean_us"] / wk["mean_us"], lg["cpu_us_per_req"] / wk["cpu_us_per_req"]), flush=True)
                # Little's law: a closed loop of c connections has c requests in flight, so
                # throughput x mean latency = c when the latency covers the whole cycle. A client
                # whose latency leaves out its own delay before sending comes out below c.
                print("c=%-5d Little's law, requests in flight (req/s x mean latency, median of rounds): "
                      "loadgen %.0f, wrk %.0f (of %d)"
                      % (c, statistics.median(x["rps"] * x["mean_us"] / 1e6 for x in rows["loadgen"]),
                         statistics.median(x["rps"] * x["mean_us"] / 1e6 for x in rows["wrk"]), c), flush=True)
        finally:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(5)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()


if __name__ == "__main__":
    main()
