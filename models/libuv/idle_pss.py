# PSS per idle keep-alive connection (issue 7's idle target): starts a server, opens N connections
# that each make one GET / and then idle, and reads the server's /proc/PID/smaps_rollup Pss before
# and after. Works for any server-<model>. Usage (Debian's python3, RLIMIT_NOFILE raised to hard):
#   /usr/bin/python3 models/libuv/idle_pss.py build/bin/server-libuv 10000 [server flags...]
import resource, socket, subprocess, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
binary, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10000
p = subprocess.Popen([binary, "--proto", "http", "--host", "127.0.0.1", "--port", "0"] + sys.argv[3:],
                     stdout=subprocess.PIPE, text=True)
port = int(p.stdout.readline().split(":")[-1])
def pss():
    for line in open(f"/proc/{p.pid}/smaps_rollup"):
        if line.startswith("Pss:"): return int(line.split()[1]) * 1024
def once(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"Hello, World!" not in got: got += s.recv(4096)
# warm up: a few requests so lazily-initialised state (Date cache, buffers) exists before the baseline
w = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
for s in w: once(s)
time.sleep(0.3)
before = pss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); once(s); socks.append(s)
time.sleep(1.0)
after = pss()
print(f"{binary}: {n} idle connections: PSS before {before} after {after} -> {(after-before)/n:.0f} bytes/connection")
for s in socks + w: s.close()
p.terminate(); rc = p.wait(10); print("exit", rc)
