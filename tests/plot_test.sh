#!/usr/bin/env bash
# scripts/plot.py on synthetic results: 2 models x 3 connection counts x 2 repetitions, one failed
# cell and one garbage line. Checks every chart file is written and the error exits.
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
for metric in throughput pss; do
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
"$PY" "$SUMMARY" "$tmp/does-not-exist" >/dev/null 2>&1
rc=$?
check "summary.py on a missing dir exits 2 (got $rc)" test "$rc" -eq 2

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
