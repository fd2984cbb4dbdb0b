#!/usr/bin/env bash
# The runner end to end with the real binaries: a tiny run (2 models x 2 connection counts), its
# files and numbers; Ctrl-C in the middle of a longer run (exit 130, finished cells kept, no
# server left behind) and --resume to finish it; a real nginx cell and Ctrl-C during a real
# Apache cell; bad inputs exit 2 with one clear line.
# Usage: runner_test.sh [BUILD_DIR]   (default: ../build next to this script)
set -u
BUILD="${1:-$(dirname "$0")/../build}"
BUILD="$(cd "$BUILD" && pwd)" || { echo "no build dir: ${1:-}"; exit 1; }
CB="$BUILD/bin/concbench"
PY=/usr/bin/python3
pass=0
fail=0
check() {   # check DESCRIPTION COMMAND...
    if "${@:2}"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}
# pycheck DESCRIPTION ARGS... <<'EOF' (python on stdin): it prints "PASS what" / "FAIL what" lines.
pycheck() {
    local out line n=0
    out="$("$PY" - "${@:2}" 2>&1)"
    while IFS= read -r line; do
        case "$line" in
            PASS*) pass=$((pass + 1)); n=$((n + 1)) ;;
            FAIL*) fail=$((fail + 1)); n=$((n + 1)); echo "FAIL: $1: ${line#FAIL }" ;;
            *) [ -n "$line" ] && echo "  $1: $line" ;;
        esac
    done <<<"$out"
    [ "$n" -gt 0 ] || { fail=$((fail + 1)); echo "FAIL: $1: the checker reported nothing"; }
}
[ -x "$CB" ] || { echo "FAIL: $CB is not built"; echo "0 passed, 1 failed"; exit 1; }

tmp="$(mktemp -d)"
bg_pid=""
cleanup() {
    # Only what we started, by PID, if a failure left it running.
    [ -n "${hog_pid:-}" ] && kill -KILL "$hog_pid" 2>/dev/null
    if [ -n "$bg_pid" ] && kill -0 "$bg_pid" 2>/dev/null; then
        kill -TERM "$bg_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$bg_pid" 2>/dev/null
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM   # a ctest timeout: still clean up
trap 'exit 130' INT
[ -n "${KEEP:-}" ] && echo "keeping $tmp"
res="$tmp/results"

# ---------------------------------------------------------------- a tiny run, checked in full
cat >"$tmp/tiny.toml" <<'EOF'
name = "tiny"
models = ["epoll", "threads"]
workloads = ["hello"]
connections = [1, 10]
repetitions = 1
warmup_s = 0.2
duration_s = 0.5
rest_check_s = 0.5
disturbed_reruns = 0
EOF
timeout -k 5 120 "$CB" run --profile "$tmp/tiny.toml" --results "$res" >"$tmp/out1" 2>"$tmp/err1"
rc=$?
check "tiny run exits 0 (got $rc: $(tail -c 400 "$tmp/err1"; grep FAILED "$tmp/out1" | head -3))" test "$rc" -eq 0
run1="$(sed -n 's/^concbench: run \([^ ]*\) .*/\1/p' "$tmp/out1" | head -1)"
check "stdout names the run id" test -n "$run1"
dir1="$res/$run1"
check "results/latest is a symlink" test -L "$res/latest"
check "results/latest points to the run dir ($(readlink "$res/latest") vs $run1)" \
    test "$(readlink "$res/latest")" = "$run1" -a -d "$res/latest/"
check "progress line [  1/4] with ETA" grep -qE '^\[  1/4\] .*\(ETA [0-9]' "$tmp/out1"
check "progress line [  4/4]" grep -qF '[  4/4]' "$tmp/out1"
check "the machine at rest is read before the first cell ($(grep -m1 'at rest\|busy before' "$tmp/out1" "$tmp/err1"))" \
    grep -qE 'at rest for 0.5 s|the machine is busy before the first cell' "$tmp/out1" "$tmp/err1"
check "profile copied into the run dir" cmp -s "$tmp/tiny.toml" "$dir1/profile.toml"
for d in hist series; do
    n="$(find "$dir1/$d" -maxdepth 1 -name '*.json' 2>/dev/null | wc -l)"
    check "$d/ has one file per cell (got $n)" test "$n" -eq 4
    for stem in epoll_hello_c1_r1 threads_hello_c1_r1 epoll_hello_c10_r1 threads_hello_c10_r1; do
        check "$d/$stem.json exists" test -s "$dir1/$d/$stem.json"
    done
done

pycheck "meta.json" "$dir1/meta.json" "$run1" <<'EOF'
import json, sys
def t(ok, what): print(("PASS " if ok else "FAIL ") + what)
try:
    m = json.load(open(sys.argv[1]))
except Exception as e:
    t(False, f"meta.json does not parse: {e}"); sys.exit()
mach = m.get("machine", {})
t(isinstance(mach.get("kernel"), str) and mach["kernel"] != "", "machine.kernel")
has_model_name = any(l.startswith("model name") for l in open("/proc/cpuinfo"))
t(isinstance(mach.get("cpu_model"), str) and (mach["cpu_model"] != "" or not has_model_name),
  f"machine.cpu_model ({mach.get('cpu_model')!r})")
t(isinstance(m.get("compiler"), str) and m["compiler"] != "", "compiler")
t(isinstance(m.get("commit"), str) and m["commit"] != "", "commit")
t(m.get("profile", {}).get("name") == "tiny", f"profile.name is tiny ({m.get('profile', {}).get('name')!r})")
t(m.get("run_id") == sys.argv[2], "run_id matches the directory")
EOF

pycheck "results.jsonl" "$dir1/results.jsonl" <<'EOF'
import json, sys
def t(ok, what): print(("PASS " if ok else "FAIL ") + what)
lines = open(sys.argv[1]).read().splitlines()
t(len(lines) == 4, f"exactly 4 lines (got {len(lines)})")
cells = set()
for i, line in enumerate(lines, 1):
    try:
        j = json.loads(line)
    except Exception as e:
        t(False, f"line {i} does not parse: {e}"); continue
    c = j.get("cell", f"line {i}"); cells.add(c)
    def num(path):
        v = j
        for k in path.split("."):
            if not isinstance(v, dict) or k not in v: return None
            v = v[k]
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    t(j.get("status") == "ok", f"{c}: status ok (got {j.get('status')!r}: {j.get('error')!r})")
    for key in ["throughput_rps", "requests", "latency_us.p50", "server.pss_kib_peak",
                "server.fds_peak", "server.cpu_us_per_req"]:
        v = num(key)
        srv = j.get("server", {})
        t(v is not None and v > 0, f"{c}: {key} > 0 (got {v}; requests {j.get('requests')}, "
                                   f"server cpu {srv.get('cpu_user_s')}+{srv.get('cpu_sys_s')} s)")
    t(j.get("shutdown", {}).get("clean") is True, f"{c}: shutdown.clean ({j.get('shutdown')})")
    t(num("client.cpu_util") is not None, f"{c}: client.cpu_util present")
    i = j.get("interference", {})
    for role in ("server", "client"):
        r = i.get(role, {})
        t(all(isinstance(r.get(k), (int, float)) for k in ("busy", "own", "foreign", "steal")),
          f"{c}: interference.{role} has busy, own, foreign, steal ({r})")
    t(i.get("server", {}).get("cpus") == [0] and i.get("client", {}).get("cpus") == [1], f"{c}: interference CPUs")
    t(isinstance(j.get("disturbed"), bool) and j.get("attempts") == 1, f"{c}: disturbed flag, one attempt")
    t(j.get("primer", {}).get("ended") == "all", f"{c}: primer answered every connection ({j.get('primer')})")
t(cells == {f"{m}/hello/c{n}/r1" for m in ("epoll", "threads") for n in (1, 10)}, f"the 4 cells ({sorted(cells)})")
EOF

# ---------------------------------------------------------------- Ctrl-C in the middle, then --resume
sed -e 's/^name = .*/name = "longer"/' -e 's/^duration_s = .*/duration_s = 2/' \
    -e 's/^connections = .*/connections = [1, 10, 100]/' "$tmp/tiny.toml" >"$tmp/longer.toml"
"$CB" run --no-verify --profile "$tmp/longer.toml" --results "$res" >"$tmp/out2" 2>"$tmp/err2" &
bg_pid=$!
servers=()   # "pid starttime" of the server processes this concbench started
starttime() {   # field 22 of /proc/PID/stat (after the comm, which may hold spaces)
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    s="${s##*) }"
    # shellcheck disable=SC2086
    set -- $s
    echo "${20}"
}
note_servers() {
    local c st exe
    for c in $(pgrep -P "$bg_pid" 2>/dev/null); do
        exe="$(readlink "/proc/$c/exe" 2>/dev/null)" || continue
        case "$exe" in "$BUILD/bin/server-"*) ;; *) continue ;; esac
        st="$(starttime "$c")" || continue
        case " ${servers[*]:-} " in *" $c:$st "*) ;; *) servers+=("$c:$st") ;; esac
    done
}
jsonl_lines() { cat "$res"/*-longer*/results.jsonl 2>/dev/null | wc -l; }
# Wait (at most 30 s) for the first finished cell, then for the next cell's server to be up.
deadline=$((SECONDS + 30))
while [ "$(jsonl_lines)" -lt 1 ] && [ "$SECONDS" -lt "$deadline" ] && kill -0 "$bg_pid" 2>/dev/null; do
    note_servers
    sleep 0.1
done
n_before="$(jsonl_lines)"
check "interrupted run finished a cell within 30 s" test "$n_before" -ge 1
seen=${#servers[@]}
deadline=$((SECONDS + 10))
while [ "${#servers[@]}" -le "$seen" ] && [ "$SECONDS" -lt "$deadline" ] && kill -0 "$bg_pid" 2>/dev/null; do
    note_servers
    sleep 0.05
done
check "a server of the next cell was seen running" test "${#servers[@]}" -gt "$seen"
sleep 0.3   # into the cell's load
note_servers
kill -INT "$bg_pid" 2>/dev/null
deadline=$((SECONDS + 20))
while kill -0 "$bg_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
if kill -0 "$bg_pid" 2>/dev/null; then
    check "concbench exits within 20 s of SIGINT" false
    kill -KILL "$bg_pid" 2>/dev/null
fi
wait "$bg_pid"
rc=$?
bg_pid=""
check "interrupted run exits 130 (got $rc: $(tail -c 300 "$tmp/err2"))" test "$rc" -eq 130
check "stderr tells how to continue (--resume)" grep -q -- "--resume" "$tmp/err2"
run2="$(sed -n 's/^concbench: run \([^ ]*\) .*/\1/p' "$tmp/out2" | head -1)"
check "interrupted run named its id" test -n "$run2"
dir2="$res/$run2"
check "stderr names the run id to resume" grep -qF -- "--resume $run2" "$tmp/err2"
n_after="$(wc -l <"$dir2/results.jsonl" 2>/dev/null || echo 0)"
check "finished cells kept ($n_after >= $n_before, < 6)" test "$n_after" -ge "$n_before" -a "$n_after" -lt 6
pycheck "results.jsonl after SIGINT" "$dir2/results.jsonl" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
for i, line in enumerate(lines, 1):
    try:
        j = json.loads(line)
        print(("PASS" if j.get("status") == "ok" else "FAIL") + f" line {i} ({j.get('cell')}) status {j.get('status')}")
    except Exception as e:
        print(f"FAIL line {i} does not parse: {e}")
EOF
# Every server this run started must be gone (zombies aside), and so must anything in their
# process groups (each server leads its own group).
pycheck "no server left after SIGINT" "${servers[@]}" <<'EOF'
import os, sys
want = {}
for a in sys.argv[1:]:
    pid, st = a.split(":"); want[int(pid)] = st
print(("PASS" if want else "FAIL") + f" servers observed: {sorted(want)}")
def stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()
for pid in os.listdir("/proc"):
    if not pid.isdigit(): continue
    f = stat(pid)
    if not f or f[0] in "ZX": continue
    pid = int(pid); pgrp = int(f[2])
    if pid in want and f[19] == want[pid]:
        print(f"FAIL server {pid} is still running")
    elif pgrp in want and pid != pgrp:
        print(f"FAIL process {pid} of server group {pgrp} is still running")
print("PASS scan done")
EOF

timeout -k 5 60 "$CB" run --no-verify --resume "$run2" --results "$res" >"$tmp/out3" 2>"$tmp/err3"
rc=$?
check "resume exits 0 (got $rc: $(tail -c 300 "$tmp/err3"; grep FAILED "$tmp/out3" | head -3))" test "$rc" -eq 0
check "resume reports 6 cells" grep -qE "6 cells \($((6 - n_after)) to run\)" "$tmp/out3"
pycheck "results.jsonl after resume" "$dir2/results.jsonl" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
print(("PASS" if len(lines) == 6 else "FAIL") + f" exactly 6 lines (got {len(lines)})")
cells = []
for i, line in enumerate(lines, 1):
    try:
        j = json.loads(line); cells.append(j.get("cell"))
        print(("PASS" if j.get("status") == "ok" else "FAIL") + f" {j.get('cell')} status {j.get('status')}")
    except Exception as e:
        print(f"FAIL line {i} does not parse: {e}")
want = {f"{m}/hello/c{n}/r1" for m in ("epoll", "threads") for n in (1, 10, 100)}
print(("PASS" if len(set(cells)) == 6 and set(cells) == want else "FAIL") + f" 6 distinct cells: {sorted(set(cells))}")
EOF
check "latest points to the resumed run" test "$(readlink "$res/latest")" = "$run2"

# ---------------------------------------------------------------- rate sweep and idle connections
cat >"$tmp/sweep.toml" <<'EOF'
name = "sweep"
models = ["epoll"]
workloads = ["hello"]
connections = [4]
idle_connections = [0, 50]
rate_sweep = [0.25, 0.5]
pipeline = 2
repetitions = 1
warmup_s = 0.2
duration_s = 0.5
rest_check_s = 0.5
disturbed_reruns = 0
EOF
timeout -k 5 60 "$CB" run --profile "$tmp/sweep.toml" --results "$res" >"$tmp/out8" 2>"$tmp/err8"
rc=$?
check "sweep run exits 0 (got $rc: $(tail -c 400 "$tmp/err8"; grep FAILED "$tmp/out8" | head -3))" test "$rc" -eq 0
run8="$(sed -n 's/^concbench: run \([^ ]*\) .*/\1/p' "$tmp/out8" | head -1)"
pycheck "sweep results" "$res/$run8" <<'EOF'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
def t(ok, what): print(("PASS " if ok else "FAIL ") + what)
rows = {r["cell"]: r for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())}
t(len(rows) == 6, "6 cells (2 idle levels x (closed + 2 steps)), got %s" % sorted(rows))
for idle, pre in ((0, "epoll/hello/c4"), (50, "epoll/hello/c4/i50")):
    closed = rows.get(pre + "/r1")
    t(closed is not None and closed["status"] == "ok", "closed cell %s ok" % pre)
    if not closed: continue
    t(closed["load"]["shape"] == "closed" and closed["load"]["pipeline"] == 2, "closed cell shape and pipeline")
    t(closed["checks"]["little_law_ratio"] is not None, "closed cell has Little's law")
    t(closed["idle_connections"] == idle, "idle_connections %d recorded" % idle)
    if idle:
        t(closed["idle"]["established"] == 50 and closed["idle"]["dropped"] == 0, "50 idle held, none dropped: %s" % closed.get("idle"))
    for pct, f in (("25", 0.25), ("50", 0.5)):
        s = rows.get(pre + "/r1/rate" + pct)
        t(s is not None and s["status"] == "ok", "step %s %s ok (%s)" % (pre, pct, s and s["error"]))
        if not s: continue
        t(s["load"]["shape"] == "open" and abs(s["load"]["rate_fraction"] - f) < 1e-9, "step shape and fraction")
        t(abs(s["load"]["offered_rps"] - f * closed["throughput_rps"]) < 1e-6 * closed["throughput_rps"] + 1e-9,
          "step offered = fraction x closed max")
        t("latency_uncorrected_us" in s and s["latency_uncorrected_us"]["p50"] <= s["latency_us"]["p50"],
          "step has uncorrected latency <= corrected")
        t(s["checks"]["little_law_ok"] is None, "no Little's law for open loop")
        stem = s["cell"].replace("/", "_")
        ser = json.loads((d / "series" / (stem + ".json")).read_text())
        t("load" in ser and len(ser["load"]["rows"]) >= 1, "per-second client series saved")
        h = json.loads((d / "hist" / (stem + ".json")).read_text())
        t("uncorrected" in h, "hist has the uncorrected spectrum")
EOF

# ---------------------------------------------------------------- verify first: a failing model is refused
# A registry of two models: epoll, and "fake", a Python server that answers every request with
# Hello (so /bytes/7 gets 13 bytes): the runner must measure epoll and refuse fake, naming the case.
src="$tmp/src"
mkdir -p "$src/models/epoll" "$src/models/fake"
cp "$(dirname "$0")/../models/epoll/model.toml" "$src/models/epoll/"
cat >"$src/models/fake/server.py" <<'PYEOF'
import os, signal, socket, sys, threading
a = sys.argv[1:]
host, port = a[a.index("--host") + 1], int(a[a.index("--port") + 1])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(128)
print(f"listening {host}:{s.getsockname()[1]}", flush=True)
def serve(c):
    buf = b""
    while d := c.recv(65536):
        buf += d
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            c.sendall(b"HTTP/1.1 200 OK\r\nServer: concbench-fake\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 13\r\n\r\nHello, World!")
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
PYEOF
printf '#!/bin/sh\nexec /usr/bin/python3 "%s" "$@"\n' "$src/models/fake/server.py" >"$src/models/fake/server"
chmod +x "$src/models/fake/server"
cat >"$src/models/fake/model.toml" <<TOMLEOF
name = "fake"
description = "answers Hello to everything (runner_test.sh)"
mechanism = "blocking"
structure = "python threads"
workloads = ["hello"]
binary = "$src/models/fake/server"
TOMLEOF
printf 'name = "verified"\nmodels = ["fake", "epoll"]\nworkloads = ["hello"]\nconnections = [1]\nwarmup_s = 0.2\nduration_s = 0.3\n' >"$tmp/verified.toml"
CONCBENCH_SOURCE_DIR="$src" timeout -k 5 120 "$CB" run --profile "$tmp/verified.toml" --results "$res" >"$tmp/out9" 2>"$tmp/err9"
rc=$?
check "a run with a failing model exits 1 (got $rc: $(tail -c 300 "$tmp/err9"))" test "$rc" -eq 1
check "verify of fake is reported FAILED with the case ($(grep -A1 'verify fake' "$tmp/out9" | head -2))" \
    grep -qE '^  FAIL +framing +split-at-every-byte' "$tmp/out9"
check "fake is not measured" grep -qF -- '-> fake is not measured' "$tmp/out9"
check "epoll verified OK" grep -qE '^verify epoll .* OK' "$tmp/out9"
run9="$(sed -n 's/^concbench: run \([^ ]*\) .*/\1/p' "$tmp/out9" | head -1)"
pycheck "refused cells" "$res/$run9/results.jsonl" "$res/$run9/verify.json" <<'PYEOF'
import json, sys
def t(ok, what): print(("PASS " if ok else "FAIL ") + what)
lines = [json.loads(l) for l in open(sys.argv[1])]
by = {j["model"]: j for j in lines}
t(set(by) == {"fake", "epoll"}, f"one line per model ({sorted(by)})")
f = by.get("fake", {})
t(f.get("status") == "failed" and "split-at-every-byte" in f.get("error", ""), f"fake refused naming the case ({f.get('error')!r})")
t(f.get("verify") == "failed", "fake: verify = failed")
e = by.get("epoll", {})
t(e.get("status") == "ok" and e.get("verify") == "quick", f"epoll measured after verify quick ({e.get('status')}, {e.get('verify')})")
v = json.load(open(sys.argv[2]))
t(v.get("fake", {}).get("ok") is False and v.get("epoll", {}).get("ok") is True, "verify.json: fake failed, epoll ok")
PYEOF

# ---------------------------------------------------------------- interference: a hog on the server's CPU
# A bounded busy loop pinned to CPU 0 (the server's) starts with the first cell and is stopped (by
# its PID) as soon as the runner reports that cell disturbed: the cell is re-run on quiet CPUs and
# kept clean, its disturbed attempt kept in reruns.jsonl. The threshold is well above a quiet
# machine's readings (a few %) and below a hog's share (about half of the server's core); the
# speed probe is left out (slowdown_threshold = 1): a host's contention is not this test's hog.
# The waits below poll with shell builtins only: a process per poll (grep, sleep) would itself be
# other work on the cell's CPUs (a fork here costs about a millisecond).
mkfifo "$tmp/nap" && exec 9<>"$tmp/nap"   # read -t on a pipe nobody writes: a sleep without a process
nap() { read -r -t "$1" -u 9 _ || true; }
wait_for_line() {   # wait_for_line FILE TEXT SECONDS PID: until FILE has TEXT, PID ends or time is up
    local end=$((SECONDS + $3)) line
    while [ "$SECONDS" -lt "$end" ] && kill -0 "$4" 2>/dev/null; do
        while IFS= read -r line || [ -n "$line" ]; do [[ $line == *"$2"* ]] && return 0; done <"$1"
        nap 0.02
    done
    return 1
}
hog_pid=""
start_hog() {   # start_hog SECONDS: a busy loop on CPU 0 that ends by itself; its PID is the loop's own
    taskset -c 0 bash -c "end=\$((SECONDS + $1)); while [ \$SECONDS -lt \$end ]; do :; done" &
    hog_pid=$!
}
stop_hog() { [ -n "$hog_pid" ] && kill -KILL "$hog_pid" 2>/dev/null; wait "$hog_pid" 2>/dev/null; hog_pid=""; }
cat >"$tmp/hog.toml" <<'EOF'
name = "hog"
models = ["epoll"]
workloads = ["hello"]
connections = [10, 20]
warmup_s = 0.3
duration_s = 1.5
verify = "off"
rest_check_s = 0.5
interference_threshold = 0.2
slowdown_threshold = 1.0
disturbed_reruns = 2
quiet_wait_s = 10
EOF
: >"$tmp/out10"   # before the run opens it: the wait below reads it at once
"$CB" run --profile "$tmp/hog.toml" --results "$res" >"$tmp/out10" 2>"$tmp/err10" &
bg_pid=$!
wait_for_line "$tmp/out10" '[  1/2]' 30 "$bg_pid"
start_hog 20
wait_for_line "$tmp/out10" 'disturbed:' 30 "$bg_pid"
stop_hog
deadline=$((SECONDS + 60))
while kill -0 "$bg_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do nap 0.1; done
kill -KILL "$bg_pid" 2>/dev/null
wait "$bg_pid"
rc=$?
bg_pid=""
check "hog run exits 0 (got $rc: $(tail -c 300 "$tmp/err10"))" test "$rc" -eq 0
check "the hog's cell is reported disturbed, then re-run ($(grep -A1 'disturbed:' "$tmp/out10" | head -2))" \
    grep -qE 're-run 1 of 2' "$tmp/out10"
run10="$(sed -n 's/^concbench: run \([^ ]*\) .*/\1/p' "$tmp/out10" | head -1)"
pycheck "hog cell disturbed, re-run clean" "$res/$run10" <<'PYEOF'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
def t(ok, what): print(("PASS " if ok else "FAIL ") + what)
rows = {r["cell"]: r for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())}
t(sorted(rows) == ["epoll/hello/c10/r1", "epoll/hello/c20/r1"], f"one line per cell ({sorted(rows)})")
first = rows.get("epoll/hello/c10/r1", {})
t(first.get("status") == "ok", f"the hog's cell ends ok ({first.get('error')})")
t(first.get("attempts") == 2, f"the hog's cell took 2 attempts ({first.get('attempts')}, {first.get('earlier_attempts')})")
t(first.get("disturbed") is False and first.get("disturbed_by") == "", f"its re-run is clean ({first.get('disturbed_by')!r})")
early = (first.get("earlier_attempts") or [{}])[0]
t("server CPU 0" in early.get("disturbed_by", "") and "other processes" in early.get("disturbed_by", ""),
  f"the first attempt names the server CPU's other work ({early})")
re = [json.loads(l) for l in (d / "reruns.jsonl").read_text().splitlines()] if (d / "reruns.jsonl").exists() else []
t(len(re) == 1 and re[0].get("superseded") is True and re[0]["cell"] == "epoll/hello/c10/r1", f"reruns.jsonl keeps the disturbed attempt ({len(re)})")
if re:
    f = re[0]["interference"]["server"]
    t(f["foreign"] > 0.2 and re[0]["interference"]["top"][0]["comm"] == "bash", f"the hog measured on CPU 0: {f}, top {re[0]['interference']['top'][:1]}")
    t(re[0]["interference"]["client"]["foreign"] < 0.2, "the client CPU was not the hog's")
second = rows.get("epoll/hello/c20/r1", {})
t(second.get("attempts") == 1 and second.get("disturbed") is False, f"the next cell ran once, clean ({second.get('disturbed_by')!r})")
PYEOF

# A hog through the whole run: the rest check warns (naming it), and the cell, still disturbed
# after its re-run, is kept and marked.
sed -e 's/^name = .*/name = "hog2"/' -e 's/^connections = .*/connections = [10]/' -e 's/^disturbed_reruns = .*/disturbed_reruns = 1/' \
    -e 's/^quiet_wait_s = .*/quiet_wait_s = 1/' "$tmp/hog.toml" >"$tmp/hog2.toml"
start_hog 40
nap 0.3
timeout -k 5 60 "$CB" run --profile "$tmp/hog2.toml" --results "$res" >"$tmp/out11" 2>"$tmp/err11"
rc=$?
hog_was=$hog_pid
stop_hog
check "persistent hog run exits 0 (got $rc: $(tail -c 300 "$tmp/err11"))" test "$rc" -eq 0
check "the rest check warns, naming the hog ($(head -c 400 "$tmp/err11"))" \
    grep -qE "warning: the machine is busy before the first cell .*bash\[$hog_was\]" "$tmp/err11"
check "the rest warning is one line" test "$(grep -c 'busy before the first cell' "$tmp/err11")" -eq 1
run11="$(sed -n 's/^concbench: run \([^ ]*\) .*/\1/p' "$tmp/out11" | head -1)"
pycheck "still disturbed: kept and marked" "$res/$run11" <<'PYEOF'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
def t(ok, what): print(("PASS " if ok else "FAIL ") + what)
rows = [json.loads(l) for l in (d / "results.jsonl").read_text().splitlines()]
t(len(rows) == 1, f"one line ({len(rows)})")
r = rows[0] if rows else {}
t(r.get("status") == "ok" and r.get("disturbed") is True and r.get("attempts") == 2,
  f"kept, marked disturbed after 2 attempts ({r.get('status')}, {r.get('disturbed')}, {r.get('attempts')})")
t("server CPU 0" in r.get("disturbed_by", ""), f"disturbed_by names the CPU ({r.get('disturbed_by')!r})")
m = json.loads((d / "meta.json").read_text())
t(len(m.get("at_rest", [])) == 1 and m["at_rest"][0]["server"]["foreign"] > 0.2, "meta.json records the busy machine at rest")
PYEOF

# ---------------------------------------------------------------- bad input: exit 2, one line, nothing written
bad="$tmp/bad-results"
timeout -k 5 20 "$CB" run --profile /nonexistent.toml --results "$bad" >/dev/null 2>"$tmp/err4"
rc=$?
check "missing profile file exits 2 (got $rc)" test "$rc" -eq 2
check "missing profile file: one line on stderr ($(cat "$tmp/err4"))" test "$(wc -l <"$tmp/err4")" -eq 1
check "missing profile file: names the file" grep -qF "/nonexistent.toml" "$tmp/err4"

printf 'models = ["epoll"]\nworkloads = ["hello"]\nconnections = [1]\ndurration_s = 1\n' >"$tmp/badkey.toml"
timeout -k 5 20 "$CB" run --profile "$tmp/badkey.toml" --results "$bad" >/dev/null 2>"$tmp/err5"
rc=$?
check "unknown key exits 2 (got $rc)" test "$rc" -eq 2
check "unknown key: stderr has file:line ($(cat "$tmp/err5"))" grep -qF "$tmp/badkey.toml:4:" "$tmp/err5"
check "unknown key: stderr names the key" grep -qF "durration_s" "$tmp/err5"

# A model this platform runs only emulated measures the emulation: kqueue (the test-only kevent
# emulation over epoll) is refused outright, iocp (under Wine) needs --allow-emulated.
for m in kqueue iocp; do
    "$CB" list 2>/dev/null | grep -q "^$m .*\[emulated here" || { echo "FAIL: concbench list does not mark $m as emulated here"; fail=$((fail + 1)); continue; }
    printf 'models = ["%s"]\nworkloads = ["hello"]\nconnections = [1]\nduration_s = 0.5\n' "$m" >"$tmp/emu-$m.toml"
    timeout -k 5 20 "$CB" run --profile "$tmp/emu-$m.toml" --results "$bad" >/dev/null 2>"$tmp/err-$m"
    rc=$?
    check "run of emulated $m exits 2 (got $rc)" test "$rc" -eq 2
    check "run of emulated $m: one line on stderr ($(cat "$tmp/err-$m"))" test "$(wc -l <"$tmp/err-$m")" -eq 1
done
check "kqueue: refused as verify only" grep -qF "model 'kqueue' is for verify only on linux" "$tmp/err-kqueue"
if grep -qF "not built" "$tmp/err-iocp"; then
    echo "  (iocp is not built here: its --allow-emulated run is not checked)"
else
    check "iocp: refused without --allow-emulated" grep -qF "add --allow-emulated" "$tmp/err-iocp"
    printf 'rest_check_s = 0.5\ndisturbed_reruns = 0\nwarmup_s = 0.2\nverify = "off"\n' >>"$tmp/emu-iocp.toml"
    emu_res="$tmp/emu-results"
    timeout -k 5 120 "$CB" run --allow-emulated --profile "$tmp/emu-iocp.toml" --results "$emu_res" >"$tmp/out-emu" 2>&1
    rc=$?
    check "iocp with --allow-emulated runs (got $rc: $(tail -c 300 "$tmp/out-emu"))" test "$rc" -eq 0
    pycheck "iocp cell labelled emulated" "$emu_res/latest" "$(dirname "$0")/../scripts/summary.py" <<'EOF'
import json, sys, os, subprocess
d = sys.argv[1]
lines = [json.loads(l) for l in open(os.path.join(d, "results.jsonl"))]
print(("PASS" if lines and all(j.get("emulated") == "wine" for j in lines) else "FAIL") + f" results record emulated: wine ({[j.get('emulated') for j in lines]})")
print(("PASS" if lines and all("(emulated: wine)" in j.get("series", "") for j in lines) else "FAIL") + f" series carries the label ({[j.get('series') for j in lines]})")
print(("PASS" if lines and lines[0]["status"] == "ok" and lines[0].get("requests", 0) > 0 else "FAIL") + f" the cell ran: {lines[0]['status'] if lines else None} {lines[0].get('error') if lines else ''}")
out = subprocess.run(["/usr/bin/python3", sys.argv[2], d], capture_output=True, text=True).stdout
print(("PASS" if "emulated: wine" in out else "FAIL") + " the summary shows the label")
EOF
fi

# ---------------------------------------------------------------- reference servers: nginx, Apache
# A real nginx cell runs and records the server's version; Ctrl-C during an Apache cell leaves no
# process of Apache's group behind (its children included).
cat >"$tmp/ref.toml" <<'EOF'
name = "ref"
models = ["nginx", "apache-prefork"]
workloads = ["hello"]
connections = [10]
repetitions = 1
warmup_s = 0.5
duration_s = 4
rest_check_s = 0.5
disturbed_reruns = 0
EOF
ref_res="$tmp/ref-results"
"$CB" run --profile "$tmp/ref.toml" --results "$ref_res" >"$tmp/out8" 2>"$tmp/err8" &
bg_pid=$!
apache_pgid=""
# The run first verifies both servers (quick set: Apache's takes about 20 s); the cell's Apache is
# the one whose runtime directory (under TMPDIR) is named after the cell.
deadline=$((SECONDS + 120))
while [ -z "$apache_pgid" ] && [ "$SECONDS" -lt "$deadline" ] && kill -0 "$bg_pid" 2>/dev/null; do
    for c in $(pgrep -P "$bg_pid" 2>/dev/null); do
        [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = /usr/sbin/apache2 ] &&
            tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null | grep -qF "concbench-ref-$bg_pid-apache-prefork_hello_c10_r1-" && apache_pgid=$c
    done
    sleep 0.1
done
check "an apache2 server of the run was seen" test -n "$apache_pgid"
sleep 1.5   # into the cell's load: the parent has forked its children
in_group() { ps -eo pgid=,stat= | awk -v g="${apache_pgid:--1}" '$1 == g && $2 !~ /^Z/' | wc -l; }
kids=$(in_group)
check "apache's group has its children ($kids processes)" test "$kids" -gt 1
apache_run_pid=$bg_pid
kill -INT "$bg_pid" 2>/dev/null
deadline=$((SECONDS + 30))
while kill -0 "$bg_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
wait "$bg_pid"
rc=$?
bg_pid=""
check "interrupted reference run exits 130 (got $rc: $(tail -c 300 "$tmp/err8"))" test "$rc" -eq 130
left=$(in_group)
check "no process of apache's group is left after Ctrl-C ($left)" test "$left" -eq 0
ref_pid_dirs="$(find "${TMPDIR:-/tmp}" -mindepth 1 -maxdepth 1 -name "concbench-ref-$apache_run_pid-*" | wc -l)"
check "no runtime directory of the run is left after Ctrl-C ($ref_pid_dirs)" test "$ref_pid_dirs" -eq 0
pycheck "nginx cell and meta" "$ref_res/latest" <<'EOF'
import json, sys, os
d = sys.argv[1]
lines = [json.loads(l) for l in open(os.path.join(d, "results.jsonl"))]
ng = [j for j in lines if j["model"] == "nginx"]
print(("PASS" if ng and ng[0]["status"] == "ok" else "FAIL") + f" nginx cell ok: {ng[0]['status'] if ng else None} {ng[0].get('error') if ng else ''}")
print(("PASS" if ng and ng[0]["mechanism"] == "reference" and ng[0]["requests"] > 0 else "FAIL") + " nginx answered")
m = json.load(open(os.path.join(d, "meta.json")))
v = m.get("reference_servers", {}).get("nginx", {}).get("version", "")
print(("PASS" if "nginx/" in v else "FAIL") + f" meta records nginx's version: {v!r}")
s = m.get("reference_servers", {}).get("apache-prefork", {}).get("settings", {})
print(("PASS" if s.get("workers") == 150 and s.get("StartServers") == "5" else "FAIL") + f" meta records Apache's MPM settings: {s}")
conf = open(os.path.join(d, "servers", "nginx_hello_c10_r1", "nginx.conf")).read()
print(("PASS" if "listen 127.0.0.1:" in conf and "@" not in conf.split("http {")[1] else "FAIL") + " nginx.conf rendered, loopback only")
EOF

timeout -k 5 20 "$CB" run --bogus >/dev/null 2>"$tmp/err6"
rc=$?
check "run --bogus exits 2 (got $rc)" test "$rc" -eq 2
check "run --bogus says what is wrong" grep -qF -- "--bogus" "$tmp/err6"

timeout -k 5 20 "$CB" run --resume no-such-run --results "$bad" >/dev/null 2>"$tmp/err7"
rc=$?
check "--resume of an unknown run exits 2 (got $rc)" test "$rc" -eq 2
check "refused runs wrote nothing" test ! -e "$bad"

timeout -k 5 20 "$CB" list >"$tmp/list" 2>&1
rc=$?
check "list exits 0 (got $rc)" test "$rc" -eq 0
for m in epoll threads; do
    check "list shows $m as built" grep -qE "^$m +[a-z]+ +yes( |$)" "$tmp/list"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
