#!/usr/bin/env bash
# scripts/plot.py and summary.py on synthetic results: 2 models x 3 connection counts x 2
# repetitions in the old schema (no interference, primer or attempts keys), one failed cell and
# one garbage line; then more models in the new one: disturbed repetitions and re-runs, a spread
# above 10 %, a pool whose primer stalled at its workers, a server that closed connections, a count
# not connected, a reference server. Checks every chart file is written, the error exits, the
# measured stop reasons and the summary's CV columns and notes.
set -u
PLOT="$(cd "$(dirname "$0")/../scripts" && pwd)/plot.py"
PY=/usr/bin/python3
pass=0
fail=0
check() {   # check DESCRIPTION COMMAND...
    if "${@:2}"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}

tmp="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT; [ -n "${KEEP:-}" ] && echo "keeping $tmp"
res="$tmp/run"
mkdir -p "$res"

cat >"$res/meta.json" <<'EOF'
{"schema":1,"run_id":"20261122-101500","profile":{"name":"quick"},
 "machine":{"hostname":"box","cpu_model":"Test CPU @ 2.0GHz","cpus":2,"kernel":"6.18.0","memory_kib":4000000},
 "compiler":"g++ 12.2.0","commit":"abc1234","started_at":"2026-11-22T10:15:00Z"}
EOF

# One result line; rate and latency scale with the model and the connection count.
line() {   # line MODEL CONNS REP STATUS
    local model=$1 c=$2 rep=$3 status=$4 base=80000 lat=1000 bound=false threads=1
    [ "$model" = threads ] && base=50000 && lat=1500 && threads=$((c + 1))
    [ "$c" -ge 1000 ] && bound=true
    local rps=$((base - c * 5 + rep * 3000)) p50=$((lat + c * 2 + rep * 20))
    printf '{"schema":1,"run_id":"20261122-101500","cell":"%s/hello/c%d/r%d","model":"%s","mechanism":"x",' \
        "$model" "$c" "$rep" "$model"
    printf '"workload":"hello","connections":%d,"repetition":%d,"status":"%s","error":"%s",' \
        "$c" "$rep" "$status" "$([ "$status" = ok ] || echo 'server did not start')"
    printf '"duration_s":5.0,"requests":%d,"throughput_rps":%d,' $((rps * 5)) "$rps"
    printf '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%d},' \
        "$p50" $((p50 * 2)) $((p50 * 4)) $((p50 * 6)) $((p50 * 9)) "$p50"
    printf '"errors":{"timeout":0},"connections_established":%d,' "$c"
    printf '"server":{"pss_kib_peak":%d,"pss_kib_mean":%d,"rss_kib_peak":%d,"threads_peak":%d,' \
        $((5000 + c * 40)) $((4800 + c * 40)) $((7000 + c * 60)) "$threads"
    printf '"processes_peak":1,"fds_peak":%d,"cpu_user_s":1.2,"cpu_sys_s":2.3,"cpu_us_per_req":%s,' \
        $((c + 4)) "$([ "$model" = threads ] && echo 12.5 || echo 8.5)"
    printf '"ctx_voluntary":100,"ctx_involuntary":20},"kernel":{"tcp_mem_kib":10000},'
    printf '"client":{"cpu_util":%s,"cpu_us_per_req":6.0,"threads":1},"client_bound":%s,"future_key":[1]}\n' \
        "$($bound && echo 0.97 || echo 0.5)" "$bound"
}
{
    for model in epoll threads; do
        for c in 10 100 1000; do
            for rep in 1 2; do
                if [ "$model" = threads ] && [ "$c" = 1000 ] && [ "$rep" = 2 ]; then
                    line "$model" "$c" "$rep" failed
                else
                    line "$model" "$c" "$rep" ok
                fi
            done
        done
    done
    echo 'this is not json {'
    # A rate sweep: open-loop steps at fractions of the closed-loop maximum.
    for f in 10 50 90; do
        printf '{"schema":1,"cell":"epoll/hello/c10/r1/rate%d","model":"epoll","workload":"hello",' "$f"
        printf '"connections":10,"repetition":1,"status":"ok","throughput_rps":%d,' $((f * 800))
        printf '"load":{"shape":"open","rate_fraction":0.%02d,"offered_rps":%d},' "$f" $((f * 800))
        printf '"latency_us":{"p50":%d,"p99":%d},"latency_uncorrected_us":{"p50":100,"p99":900},' \
            $((f * 10)) $((f * 100))
        printf '"client_bound":false}\n'
    done
} >"$res/results.jsonl"
# The old-schema run alone, plotted further down: it must plot as it always did.
old="$tmp/old-run"
mkdir -p "$old" && cp "$res/meta.json" "$res/results.jsonl" "$old/"

# New-schema lines (interference, disturbed, attempts, primer, run queue), appended.
"$PY" - >>"$res/results.jsonl" <<'GEN'
import json
def row(model, mech, c, rep, rps, cpu, **kw):
    r = {"schema": 1, "cell": f"{model}/hello/c{c}/r{rep}", "model": model, "mechanism": mech,
         "workload": "hello", "connections": c, "repetition": rep, "status": "ok", "error": "",
         "throughput_rps": rps, "latency_us": {"p50": 900 + c, "p99": 4000 + 3 * c},
         "errors": {}, "errors_total": 0, "connections_established": c,
         "fairness": {"starved_connections": 0},
         "server": {"pss_kib_peak": 3000 + 10 * c, "threads_peak": 1, "processes_peak": 1, "fds_peak": c + 4,
                    "cpu_us_per_req": cpu, "run_queue_peak": 3, "run_queue_mean": 1.2},
         "client": {"cpu_util": 0.6}, "client_bound": False, "disturbed": False, "disturbed_by": "",
         "attempts": 1, "earlier_attempts": [],
         "primer": {"requested": c, "answered": c, "seconds": 0.2, "ended": "all"},
         "interference": {"threshold": 0.05, "slowdown_threshold": 0.10,
                          "server": {"cpus": [0], "busy": 0.99, "own": 0.97, "foreign": 0.01, "steal": 0.0,
                                     "slowdown": 0.02, "irq": 0.0, "softirq": 0.2},
                          "client": {"cpus": [1], "busy": 0.7, "own": 0.68, "foreign": 0.01, "steal": 0.0,
                                     "slowdown": 0.01, "irq": 0.0, "softirq": 0.1},
                          "top": []}}
    for k, v in kw.items():
        r[k] = r[k] | v if isinstance(v, dict) and isinstance(r.get(k), dict) else v
    print(json.dumps(r))
STRESS = "server CPU 0: 31 % of a core to other processes (stress 30 %)"
SLOW = "client CPU 1: ran 55 % slower than at rest (host contention)"
for rep in (1, 2):
    # uring: a spread of 20 % at 100 (its 2nd repetition disturbed after two re-runs), and a
    # disturbed client at 1000.
    row("uring", "completion", 10, rep, 70000 + rep * 500, 6.0)
    if rep == 1:
        row("uring", "completion", 100, rep, 90000, 6.0)
    else:
        row("uring", "completion", 100, rep, 60000, 6.4, disturbed=True, disturbed_by=STRESS, attempts=3,
            earlier_attempts=[{"disturbed_by": STRESS, "throughput_rps": 61000.0},
                              {"disturbed_by": STRESS, "throughput_rps": 58000.0}],
            interference={"top": [{"pid": 1234, "comm": "stress", "cpu": 0.30}]})
    row("uring", "completion", 1000, rep, 66000 + rep * 500, 6.1,
        **({"disturbed": True, "disturbed_by": SLOW, "attempts": 2,
            "earlier_attempts": [{"disturbed_by": SLOW, "throughput_rps": 40000.0}]} if rep == 1 else {}))
    # threadpool: 64 workers; at 1000 connections the primer stalls at 64 answers.
    row("threadpool", "blocking", 10, rep, 40000, 14.0, server={"threads_peak": 65})
    row("threadpool", "blocking", 100, rep, 39000, 14.5, server={"threads_peak": 65},
        fairness={"starved_connections": 36}, primer={"answered": 64, "ended": "stalled", "seconds": 3.0})
    row("threadpool", "blocking", 1000, rep, 38000, 15.0, server={"threads_peak": 65},
        fairness={"starved_connections": 936}, primer={"answered": 64, "ended": "stalled", "seconds": 3.0})
    # select: past FD_SETSIZE the server closes what it cannot watch.
    for c in (10, 100, 1000):
        row("select", "readiness", c, rep, 60000 - c, 9.0)
    row("select", "readiness", 3000, rep, 30000, 9.5, fairness={"starved_connections": 1982},
        errors={"closed": 1982}, errors_total=1982, primer={"answered": 1018, "ended": "stalled", "seconds": 2.0})
    # nginx: a reference server, its 3000 disturbed in one repetition.
    for c in (10, 100, 1000, 3000):
        row("nginx", "reference", c, rep, 75000 - c, 7.0 + c / 1000,
            server={"threads_peak": 2, "processes_peak": 2},
            **({"disturbed": True, "disturbed_by": STRESS} if c == 3000 and rep == 2 else {}))
    # threads at 10000: all connected and primed, 20 not answered in the window.
    row("threads", "x", 10000, rep, 30000, 35.0, server={"threads_peak": 10001, "run_queue_peak": 9800},
        fairness={"starved_connections": 20}, primer={"answered": 10000, "ended": "all", "seconds": 2.4})
    # threads at 3000: not all connected (the listen backlog was full).
    row("threads", "x", 3000, rep, 20000, 20.0, connections_established=2100, errors={"connect": 900},
        errors_total=900)
# uring's rate sweep: its 90 % step disturbed.
for f in (50, 90):
    row("uring", "completion", 10, 1, f * 700, 6.0, cell=f"uring/hello/c10/r1/rate{f}", primer=None,
        load={"shape": "open", "rate_fraction": f / 100, "offered_rps": f * 700},
        latency_uncorrected_us={"p50": 300, "p99": 2000}, **({"disturbed": True, "disturbed_by": SLOW} if f == 90 else {}))
GEN

"$PY" "$PLOT" "$res" >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
check "plot.py exits 0 (got $rc: $(head -c 300 "$tmp/stderr"))" test "$rc" -eq 0
check "garbage line is warned about" grep -q "warning" "$tmp/stderr"
check "failed cell is reported" grep -q "threads/hello/c1000/r2" "$tmp/stderr"
for metric in throughput latency cpu-per-request pss fds; do
    for ext in png svg; do
        f="$res/plots/hello-$metric.$ext"
        check "$f exists and is non-empty" test -s "$f"
        check "$f is listed on stdout" grep -qF "$f" "$tmp/stdout"
    done
done
check "overview png exists" test -s "$res/plots/hello-overview.png"
check "rate sweep png exists" test -s "$res/plots/hello-sweep.png"
check "rate sweep svg is listed" grep -qF "$res/plots/hello-sweep.svg" "$tmp/stdout"
check "png files are PNG" bash -c "head -c 8 '$res/plots/hello-latency.png' | grep -q PNG"

# The old-schema run: every chart still written.
"$PY" "$PLOT" "$old" --classic hello >"$tmp/ostdout" 2>"$tmp/ostderr"
rc=$?
check "old-schema run plots (got $rc: $(head -c 300 "$tmp/ostderr"))" test "$rc" -eq 0
for f in hello-throughput.png hello-cpu-per-request.svg hello-overview.png hello-sweep.png \
    classic-throughput.png classic-cpu.png classic-pss.png; do
    check "old-schema $f written" test -s "$old/plots/$f"
done

"$PY" "$PLOT" "$res" --out "$tmp/elsewhere" >/dev/null 2>&1
check "--out writes there" test -s "$tmp/elsewhere/hello-throughput.svg"

"$PY" "$PLOT" "$tmp/does-not-exist" >/dev/null 2>"$tmp/err"
rc=$?
check "missing dir exits 2 (got $rc)" test "$rc" -eq 2
check "missing dir error is one line" test "$(wc -l <"$tmp/err")" -eq 1

mkdir -p "$tmp/empty" && echo 'garbage' >"$tmp/empty/results.jsonl"
"$PY" "$PLOT" "$tmp/empty" >/dev/null 2>&1
rc=$?
check "no usable lines exits 2 (got $rc)" test "$rc" -eq 2

# --classic: the two classic charts; a reference model drawn apart; where a line stops and why.
"$PY" "$PLOT" "$res" --classic hello --out "$tmp/classic" >"$tmp/cstdout" 2>"$tmp/cstderr"
rc=$?
check "--classic exits 0 (got $rc: $(head -c 300 "$tmp/cstderr"))" test "$rc" -eq 0
for metric in throughput cpu pss; do
    check "classic-$metric.png written" test -s "$tmp/classic/classic-$metric.png"
    check "classic-$metric.svg written" test -s "$tmp/classic/classic-$metric.svg"
done
"$PY" "$PLOT" "$res" --classic no-such-workload --out "$tmp/classic2" >/dev/null 2>"$tmp/cerr"
rc=$?
check "--classic of a workload without cells exits 2 (got $rc)" test "$rc" -eq 2
check "--classic error names the workload" grep -q "no-such-workload" "$tmp/cerr"
"$PY" - "$(dirname "$PLOT")" >"$tmp/cunit" 2>&1 <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import plot
ok = lambda c, est: {"model": "m", "status": "ok", "connections": c, "connections_established": est}
assert plot.stop_reason(ok(1000, 1000)) == "", "a fully connected cell reaches its count"
assert plot.stop_reason(ok(1000, 960)) == "", "95 % connected still counts"
assert plot.stop_reason(ok(10000, 1178)) == "only 1,178 of 10,000 connected", plot.stop_reason(ok(10000, 1178))
assert plot.stop_reason({"status": "failed", "connections": 5, "error": "server did not start: x"}) == "server did not start"
pool = ok(1000, 1000) | {"fairness": {"starved_connections": 936}}
assert plot.stop_reason(pool) == "only 64 of 1,000 answered", plot.stop_reason(pool)
assert plot.stop_reason(pool, stop_on_starved=False) == "", "memory of a held count is still drawn"
some = ok(100, 100) | {"fairness": {"starved_connections": 36}}
assert plot.stop_reason(some) == "", "a minority without answer is a red x, not a stop"
assert plot.stop_reason({"status": "failed", "connections": 5,
                         "error": "connection set-up did not finish within connect_timeout_s + 5 s"}) == "connections not set up in time"
st = plot.styles([{"model": "nginx", "mechanism": "reference"}, {"model": "epoll", "mechanism": "readiness"}])
assert st["nginx"][2] and not st["epoll"][2], st
assert st["nginx"][0] in plot.REFERENCE_COLOURS and st["epoll"][0] not in plot.REFERENCE_COLOURS, st
assert st["nginx"][1] != "o" and st["epoll"][1] == "o", st
# Measured stop reasons: the primer, the server's threads and processes, its errors.
import cells
assert plot.stop_reason is cells.stop_reason
srv = lambda **k: {"server": k}
primer = lambda a, ended, want, s=2.0: {"primer": {"requested": want, "answered": a, "seconds": s, "ended": ended}}
stalled = pool | primer(64, "stalled", 1000) | srv(threads_peak=65, processes_peak=1)
want = "only 64 of 1,000 answered: answers stopped at 64 connections (server: 65 threads)"
assert plot.stop_reason(stalled) == want, plot.stop_reason(stalled)
assert plot.stop_reason(stalled, stop_on_starved=False) == "", "CPU and memory go on at a stalled count"
prefork = pool | primer(64, "stalled", 1000) | srv(threads_peak=65, processes_peak=65)
want = "only 64 of 1,000 answered: answers stopped at 64 connections (server: 65 processes)"
assert plot.stop_reason(prefork) == want, plot.stop_reason(prefork)
worker = ok(1000, 1000) | {"fairness": {"starved_connections": 850}} | primer(150, "stalled", 1000) \
    | srv(threads_peak=163, processes_peak=7)
want = "only 150 of 1,000 answered: answers stopped at 150 connections (server: 163 threads in 7 processes)"
assert plot.stop_reason(worker) == want, plot.stop_reason(worker)
closed = ok(3000, 3000) | {"fairness": {"starved_connections": 1982}, "errors": {"closed": 1982}} \
    | primer(1018, "stalled", 3000) | srv(threads_peak=1, processes_peak=1)
assert plot.stop_reason(closed) == "only 1,018 of 3,000 answered: the server closed 1,982", plot.stop_reason(closed)
stopped = ok(10000, 661) | {"errors": {"connect": 239}, "primer": {"answered": 150, "not_opened": 9100, "ended": "stalled"},
                           "server": {"threads_peak": 163, "processes_peak": 7}}
want = "only 661 of 10,000 connected: answers stopped at 150 (server: 163 threads in 7 processes), so 9,100 were not tried and 239 connects timed out"
assert plot.stop_reason(stopped) == want, plot.stop_reason(stopped)
backlog = ok(10000, 8123) | {"errors": {"connect": 1877}}
want = "only 8,123 of 10,000 connected (1,877 connects failed or timed out)"
assert plot.stop_reason(backlog) == want, plot.stop_reason(backlog)
assert plot.stop_reason(backlog, stop_on_starved=False) == want, "not connected ends every line"
slow = ok(10000, 10000) | {"fairness": {"starved_connections": 5800}} | primer(4200, "timeout", 10000, 30.0)
assert plot.stop_reason(slow) == "only 4,200 of 10,000 answered after 30 s of primer, 7.1 ms a connection", plot.stop_reason(slow)
slower = slow | {"fairness": {"starved_connections": 6000}}
assert plot.stop_reason(slower) == "only 4,000 of 10,000 answered (4,200 after 30 s of primer, 7.1 ms a connection)", plot.stop_reason(slower)
bare = pool | primer(64, "stalled", 1000)
assert plot.stop_reason(bare) == "only 64 of 1,000 answered: answers stopped at 64 connections (primer stalled)"
shut = ok(3000, 1018) | {"errors": {"connect": 1982, "closed": 1982}}
assert plot.stop_reason(shut) == "only 1,018 of 3,000 connected: the server closed 1,982", plot.stop_reason(shut)
churn = closed | {"errors": {"closed": 250000}}
want = "only 1,018 of 3,000 answered: the server closed connections 250,000 times"
assert plot.stop_reason(churn) == want, plot.stop_reason(churn)
later = ok(1000, 1000) | {"fairness": {"starved_connections": 700}} | primer(1000, "all", 1000)
want = "only 300 of 1,000 answered in the window (all 1,000 answered in the primer)"
assert plot.stop_reason(later) == want, plot.stop_reason(later)
assert abs(cells.cv([60000, 90000]) - 0.2) < 1e-9 and cells.cv([5]) is None and cells.cv([]) is None
assert cells.disturbance({"disturbed_by": "client CPU 1: ran 55 % slower"}) == "client CPU 1: ran 55 % slower"
inter = {"interference": {"threshold": 0.05, "slowdown_threshold": 0.1, "server": {"cpus": [0], "foreign": 0.31},
                          "client": {"cpus": [1], "foreign": 0.01, "slowdown": 0.02}}}
assert cells.disturbance(inter) == "server CPU 0: 31 % to other processes", cells.disturbance(inter)
assert cells.reruns({"attempts": 3}) == 2 and cells.reruns({}) == 0
print("ok")
EOF
check "stop reasons and reference styles ($(tail -c 300 "$tmp/cunit"))" grep -qx ok "$tmp/cunit"

# summary.py: the same run as a Markdown table.
SUMMARY="$(dirname "$0")/../scripts/summary.py"
"$PY" "$SUMMARY" "$res" --connections 1000 >"$tmp/summary" 2>&1
rc=$?
check "summary.py exits 0 (got $rc)" test "$rc" -eq 0
check "summary has a header row" grep -q "| connections | model | req/s" "$tmp/summary"
check "summary has an epoll row at 1000" grep -q "^| 1000 | epoll | " "$tmp/summary"
check "summary leaves out other connection counts" bash -c "! grep -q '^| 10 |' '$tmp/summary'"
check "summary has the CV columns" grep -q "| req/s CV | µs/req CV | notes |" "$tmp/summary"
check "summary gives the repetitions" grep -q "^Repetitions per cell: 2" "$tmp/summary"
check "summary names the pool's stop, measured" grep -q \
    "^| 1000 | threadpool | .*only 64 of 1,000 answered: answers stopped at 64 connections (server: 65 threads)" \
    "$tmp/summary"
check "summary shows a disturbed repetition" \
    grep -q "^| 1000 | uring | .*disturbed: client CPU 1: ran 55 % slower than at rest (host contention)" "$tmp/summary"
"$PY" "$SUMMARY" "$res" >"$tmp/summary-all" 2>&1
check "summary flags a spread above 10 %" grep -q "^| 100 | uring | .* 20.0 % | .*CV > 10 %" "$tmp/summary-all"
check "summary shows a stable cell's CV without the flag" \
    bash -c "grep '^| 10 | uring | ' '$tmp/summary-all' | grep -v 'CV > 10' | grep -q ' 0.4 % '"
check "summary gives no CV for one repetition" grep -q "^| 1000 | threads | .* – | – | " "$tmp/summary-all"
check "summary names the cause of a disturbed repetition" \
    grep -q "^| 100 | uring | .*disturbed: server CPU 0: 31 % of a core to other processes (stress 30 %)" \
    "$tmp/summary-all"
check "summary counts re-runs" grep -q "^| 100 | uring | .*re-run ×2" "$tmp/summary-all"
check "summary names a server that closed connections" \
    grep -q "^| 3000 | select | .*only 1,018 of 3,000 answered: the server closed 1,982" "$tmp/summary-all"
check "summary names a count not connected" \
    grep -q "^| 3000 | threads | .*only 2,100 of 3,000 connected (900 connects failed or timed out)" \
    "$tmp/summary-all"
check "summary says why a minority got no answer (the primer stalled at the pool)" \
    grep -q "^| 100 | threadpool | .*36 of 100 got no answer in the window: answers stopped at 64 connections (server: 65 threads)" "$tmp/summary-all"
check "summary says why a minority got no answer (thousands of runnable threads)" \
    grep -q "^| 10000 | threads | .*20 of 10,000 got no answer in the window (10,001 threads, up to 9,800 runnable at once)" "$tmp/summary-all"
check "summary closing line: disturbed, re-run, largest event-loop CV" grep -q \
    "^- hello: 3 of 22 cells disturbed, 2 re-run; largest CV among event-loop models at 100 and 1000 connections: 20.0 % (uring at 100, req/s)" \
    "$tmp/summary-all"
"$PY" "$SUMMARY" "$old" >"$tmp/summary-old" 2>&1
rc=$?
check "summary of the old-schema run exits 0 (got $rc)" test "$rc" -eq 0
check "summary of the old-schema run has no disturbed note" bash -c "! grep -q 'disturbed:' '$tmp/summary-old'"
"$PY" "$SUMMARY" "$tmp/does-not-exist" >/dev/null 2>&1
rc=$?
check "summary.py on a missing dir exits 2 (got $rc)" test "$rc" -eq 2

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
