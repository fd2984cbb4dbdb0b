#!/usr/bin/env bash
# report.html end to end: a small real run (epoll and threads, hello and hello-close at 10
# connections, 2 repetitions, short windows) and the micro suite's creation rows, then
# scripts/report.py on it and on the bad inputs made from copies of it — a failed cell, no micro
# data, a half-written results.jsonl, an empty run, every cell failed — each saying so in place;
# compare.py of two runs of different profiles; and the report opened in headless Chromium
# (tests/report_browser.py: no console error, every image decoded, every section present).
# usage: report_test.sh BUILD_DIR   (SCREENSHOT=file.png keeps a full-page screenshot of the report)
set -u
BUILD=$(cd "${1:?usage: report_test.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
pass=0
fail=0
check() {   # check DESCRIPTION COMMAND...
    if "${@:2}"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}
has() { grep -q -- "$2" "$1"; }       # has FILE TEXT
lacks() { ! grep -q -- "$2" "$1"; }

tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT; [ -n "${KEEP:-}" ] && echo "keeping $tmp"
cat >"$tmp/tiny.toml" <<'TOML'
name = "tiny"
description = "report_test: epoll and threads, hello and hello-close at 10 connections"
models = ["epoll", "threads"]
workloads = ["hello", "hello-close"]
connections = [10]
repetitions = 2
warmup_s = 0.1
duration_s = 0.3
ready_timeout_s = 20.0
server_cpus = [0]
client_cpus = [1]
rest_check_s = 0
disturbed_reruns = 0
TOML
if ! (cd "$ROOT" && "$BUILD/bin/concbench" run --profile "$tmp/tiny.toml" --results "$tmp/results" --no-verify \
        >"$tmp/run.log" 2>&1); then
    echo "FAIL: the small run did not finish:"; tail -20 "$tmp/run.log"; exit 1
fi
run=$(cd "$tmp/results" && ls -d 2*-tiny | head -1)
R="$tmp/results/$run"
(cd "$ROOT" && "$BUILD/bin/concbench" micro --short --filter '^(create/(thread|fork|coroutine)$|latency/(chase|syscall))' \
    --run "$run" --results "$tmp/results" >"$tmp/micro.log" 2>&1) || echo "note: micro rows did not all run (see below)"
check "micro.json written" test -s "$R/micro.json"

# the report of the real run
check "report.py exits 0" $PY "$ROOT/scripts/report.py" "$R"
H="$R/report.html"
check "report.html written" test -s "$H"
for id in environment headline plots summary models claims; do
    check "section #$id" has "$H" "<section id=\"$id\">"
done
check "charts inline as SVG" has "$H" 'src="data:image/svg+xml;base64,'
check "no external resource" lacks "$H" 'src="http'
check "no link to a stylesheet or script" lacks "$H" '<link\|<script'
check "commit shown" has "$H" "$(cd "$R" && $PY -c 'import json;print(json.load(open("meta.json"))["commit"])')"
check "ten claims judged" test "$(grep -c 'class="claim"' "$H")" -ge 10
check "every verdict one of the four" \
    test -z "$(grep -o 'class="verdict [^"]*">[^<]*' "$H" | sed 's/.*>//' | grep -v -x -e 'holds' -e 'does not hold' -e 'holds with a caveat' -e 'not measured in this run')"
check "a rule beside every verdict" test "$(grep -c 'class="rule"' "$H")" -eq "$(grep -c 'class="claim"' "$H")"
check "creation judged from hello-close and micro" has "$H" 'per new connection, threads and fork spend'
check "unmeasured claims name their profile" has "$H" 'Measured by the profile: classic'
check "the gil claim names the gil profile" has "$H" 'Measured by the profile: gil'
check "headline computed" has "$H" 'vs threads\|vs epoll'
check "model notes from model.toml" has "$H" 'SO_REUSEPORT'
check "no traceback" lacks "$H" 'Traceback'

# bad inputs, from copies of the real run
B="$tmp/bad"; mkdir -p "$B"
cp -r "$R" "$B/failed"
$PY - "$B/failed/results.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    if r["model"] == "threads" and r["workload"] == "hello":
        r["status"], r["error"] = "failed", "server died (signal 9) during the window"
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PYEOF
cp -r "$R" "$B/nomicro"; rm -rf "$B/nomicro/micro.json" "$B/nomicro/micro"
cp -r "$R" "$B/half"; $PY - "$B/half/results.jsonl" <<'PYEOF'
import sys
lines = open(sys.argv[1]).read().splitlines(True)
open(sys.argv[1], "w").write("".join(lines[:3]) + lines[3][:150])
PYEOF
mkdir "$B/empty"
cp -r "$R" "$B/allfailed"; sed -i 's/"status":"ok"/"status":"failed"/; s/"error":""/"error":"no request was answered"/' \
    "$B/allfailed/results.jsonl"
for case in failed nomicro half empty allfailed; do
    check "$case: report.py exits 0" $PY "$ROOT/scripts/report.py" "$B/$case" 2>"$B/$case.err"
    check "$case: no traceback" lacks "$B/$case.err" 'Traceback'
    check "$case: every section present" test "$(grep -c '<section id="\(environment\|headline\|plots\|summary\|models\|claims\)">' "$B/$case/report.html")" -eq 6
done
check "failed: the reason in place" has "$B/failed/report.html" 'server died (signal 9) during the window'
check "nomicro: said in place" has "$B/nomicro/report.html" 'no micro data in this run'
check "nomicro: Dahl not measured" has "$B/nomicro/report.html" 'Measured by the profile: micro'
check "half: said in place" has "$B/half/report.html" 'half-written line'
check "half: the cells before it reported" has "$B/half/report.html" 'data:image/svg+xml'
check "empty: said in place" has "$B/empty/report.html" 'results.jsonl is missing'
check "empty: no chart, said" has "$B/empty/report.html" 'No chart: this run has no finished cell'
check "allfailed: said in place" has "$B/allfailed/report.html" 'every cell failed'
check "no such run: exit 2" test "$($PY "$ROOT/scripts/report.py" "$B/nonexistent" >/dev/null 2>&1; echo $?)" = 2

# compare: two runs of different profiles share some cells
cp -r "$R" "$B/other"
$PY - "$B/other" <<'PYEOF'
import json, sys
d = sys.argv[1]
m = json.load(open(d + "/meta.json")); m["profile"]["name"] = "other"; m["run_id"] = "other"
json.dump(m, open(d + "/meta.json", "w"))
rows = [json.loads(l) for l in open(d + "/results.jsonl")]
rows = [r for r in rows if r["workload"] == "hello"]
for r in rows:
    if r["model"] == "epoll":
        r["server"]["cpu_us_per_req"] *= 0.5
extra = dict(rows[0], model="nginx", series="nginx", mechanism="reference", cell="nginx/hello/c10/r1")
open(d + "/results.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows + [extra]))
PYEOF
$PY "$ROOT/scripts/compare.py" "$R" "$B/other" >"$B/compare.txt" 2>&1
check "compare exits 0" test $? = 0
check "compare: ratios of shared cells" has "$B/compare.txt" 'hello c=10 epoll'
check "compare: epoll's halved CPU beyond the spread" grep -q '0\.500\*' "$B/compare.txt"
check "compare: cells only in A listed" has "$B/compare.txt" 'only in A (2): hello-close c=10 epoll; hello-close c=10 threads'
check "compare: cells only in B listed" has "$B/compare.txt" 'only in B (1): hello c=10 nginx'
check "compare: the test named" has "$B/compare.txt" 'Mann-Whitney U'
check "report --baseline" $PY "$ROOT/scripts/report.py" "$B/other" --baseline "$R" --out "$B/cmp.html"
check "report --baseline: comparison section" has "$B/cmp.html" '<section id="comparison">'
check "report --baseline: beyond the spread" has "$B/cmp.html" 'yes, better'

# the claims' rules on cells this small run has not: fabricated from one of its lines
$PY - "$ROOT/scripts" "$R" >"$B/claims.txt" 2>&1 <<'PYEOF'
import copy, sys
from collections import defaultdict
sys.path.insert(0, sys.argv[1])
import summary
from report import claims, data
run = data.load_run(sys.argv[2])
base = next(r for r in run.rows if r["model"] == "epoll" and r["workload"] == "hello")
def mk(model, c, cpus=(0,), workload="hello", tput=None, cpu=None, pss=None):
    r = copy.deepcopy(base)
    r.update(model=model, series=model + (" (2 cores)" if len(cpus) == 2 else ""), connections=c, workload=workload,
             connections_established=c)
    r["server"]["cpus"] = list(cpus)
    if model == "threads":  # a thread per connection; fds as epoll's (the line it was copied from)
        r["server"]["threads_peak"] = c + 1
    for key, v in (("throughput_rps", tput),):
        if v is not None: r[key] = v
    if cpu is not None: r["server"]["cpu_us_per_req"] = cpu
    if pss is not None: r["server"]["pss_kib_peak"] = pss
    return r
rows = [mk("threads", 100, tput=80000, cpu=12)]
for c in (1000, 10000):
    rows += [mk("nginx", c, pss=15000), mk("apache-prefork", c, pss=38000), mk("epoll", c),
             mk("apache-event", c, pss=12000 if c == 10000 else 20000), mk("threads", c, tput=40000, cpu=28)]
rows += [mk("py-threads", 10, (0,), "work-200", 5000), mk("py-threads", 10, (0, 1), "work-200", 5200),
         mk("threads", 10, (0,), "work-200", 5000), mk("threads", 10, (0, 1), "work-200", 9000)]
cells = defaultdict(list)
for r in rows:
    cells[(summary.group_of(r), r["connections"], r["series"])].append(r)
run.cells = dict(cells)
for c in claims.judge_all(run):
    print(f"{c['title']} => {c['verdict']}")
PYEOF
check "claims: fabricated cells judged" test $? = 0
check "claims: switching holds at 10,000 threads" has "$B/claims.txt" 'Thousands of threads make switching costly => holds'
check "claims: nginx below Apache in 3 of 4: caveat" has "$B/claims.txt" 'Apache in memory under high load => holds with a caveat'
check "claims: 10,000 connections all answered" has "$B/claims.txt" 'thousands of requests concurrently => holds'
check "claims: the GIL" has "$B/claims.txt" 'The GIL limits Python threads => holds'
check "claims: threads use no fd" has "$B/claims.txt" 'file descriptor” => does not hold'
check "claims: no claim failed to be judged" lacks "$B/claims.txt" 'could not be judged'

# in a real browser
shot=()
[ -n "${SCREENSHOT:-}" ] && shot=(--screenshot "$SCREENSHOT")
$PY "$HERE/report_browser.py" "$H" "${shot[@]}"
rc=$?
if [ $rc = 77 ]; then echo "note: no headless Chromium: the browser check was skipped"
else check "report renders in headless Chromium" test $rc = 0; fi
$PY "$HERE/report_browser.py" "$B/empty/report.html" --min-images 0 >/dev/null
rc=$?
[ $rc = 77 ] || check "empty run's report renders in headless Chromium" test $rc = 0

echo "report_test: $pass passed, $fail failed"
[ $fail = 0 ]
