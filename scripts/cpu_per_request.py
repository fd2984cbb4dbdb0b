#!/usr/bin/python3
"""Server CPU per request of several servers, measured alike and alternately in one run.

Each server runs pinned to CPU 0; `concbench load` (no warm-up) runs on CPU 1. The CPU of a
server is the sum of /proc/<pid>/task/<tid>/schedstat run time over every task of its process
tree, read before and after the load, so nothing but the measured window counts. `nginx` is the
real nginx (one worker, `return 200 "Hello, World!"`, no access log) with a configuration made
in a temporary directory. Beside server CPU per request and req/s it prints the server's CPU
use (server CPU over wall time: near 100 % means the server's one core bounds the cell), the
median latency, and the client's CPU per request and use, so a cell bounded by the client shows.

  /usr/bin/python3 scripts/cpu_per_request.py epoll,uring,nginx 100,1000 3 [hello|echo]
"""
import json, os, socket, statistics, subprocess, sys, tempfile, time

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin")
NGINX_CONF = """worker_processes 1; daemon off; master_process on;
pid {dir}/nginx.pid; error_log {dir}/error.log; events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{ listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "Hello, World!"; }} }} }}
"""


def tree(pid):
    pids, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                for c in open(f"/proc/{p}/task/{t}/children").read().split():
                    pids.append(int(c))
                    todo.append(int(c))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def cpu_ns(pid):
    total = 0
    for p in tree(pid):
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                total += int(open(f"/proc/{p}/task/{t}/schedstat").read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, proto, tmp):
    if name == "nginx":
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        open(conf, "w").write(NGINX_CONF.format(dir=tmp, port=port))
        p = subprocess.Popen(["taskset", "-c", "0", "/usr/sbin/nginx", "-c", conf, "-p", tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return p, port
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start (see %s/error.log)" % tmp)
    p = subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "server-" + name), "--port", "0",
                          "--proto", proto], stdout=subprocess.PIPE, start_new_session=True)
    return p, int(p.stdout.readline().decode().rsplit(":", 1)[1])


def measure(name, conns, workload, tmp):
    p, port = start(name, "echo" if workload == "echo" else "http", tmp)
    out = os.path.join(tmp, "load.json")
    try:
        c0, t0 = cpu_ns(p.pid), time.monotonic()
        subprocess.run([os.path.join(BIN, "concbench"), "load", "--target", f"127.0.0.1:{port}",
                        "--workload", workload, "--connections", str(conns), "--duration", "3",
                        "--warmup", "0", "--cpus", "1", "--json", out], capture_output=True, check=True)
        c1, t1 = cpu_ns(p.pid), time.monotonic()
        j = json.load(open(out))
        return ((c1 - c0) / 1000 / max(1, j["requests"]), j["throughput_rps"], (c1 - c0) / 1e9 / (t1 - t0),
                j["latency_us"]["p50"], j["client"]["cpu_us_per_req"], j["client"]["cpu_util"])
    finally:
        os.killpg(p.pid, 15)
        p.wait(timeout=10)


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    servers, conns = sys.argv[1].split(","), [int(c) for c in sys.argv[2].split(",")]
    reps, workload = int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "hello"
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            for c in conns:
                for s in servers:
                    res.setdefault((s, c), []).append(measure(s, c, workload, tmp))
    print(f"{workload}: median of {reps}; server CPU µs per request (whole tree), req/s, ratio to the "
          f"first server; server CPU use; p50; client CPU µs per request and use")
    for c in conns:
        base = statistics.median(x[0] for x in res[(servers[0], c)])
        for s in servers:
            med = [statistics.median(x[k] for x in res[(s, c)]) for k in range(6)]
            us, rps, busy, p50, cus, cbusy = med
            print(f"  c={c:<5} {s:<10} {us:6.2f} µs/req  {rps:9.0f} req/s  {us / base:5.2f}x  "
                  f"server {busy * 100:4.0f} %  p50 {p50 / 1000:7.2f} ms  "
                  f"client {cus:5.2f} µs/req {cbusy * 100:4.0f} %")


if __name__ == "__main__":
    main()
