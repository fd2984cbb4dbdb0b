#!/usr/bin/env bash
# Reference servers wherever the checkout lives (issue 20): with the results under a directory
# others cannot enter (mode 700, like /root), a real nginx and a real Apache cell (hello and a
# docroot file) run ok, `verify nginx` passes with its logs kept there too, the cells' configuration
# and error.log are kept in results/<run>/servers/<cell>/, and no runtime directory is left in
# TMPDIR afterwards, nor after Ctrl-C during an Apache cell.
# Usage: reference_home_test.sh [BUILD_DIR]   (default: ../build next to this script)
set -u
BUILD="${1:-$(dirname "$0")/../build}"
BUILD="$(cd "$BUILD" && pwd)" || { echo "no build dir: ${1:-}"; exit 1; }
CB="$BUILD/bin/concbench"
pass=0
fail=0
check() {   # check DESCRIPTION COMMAND...
    if "${@:2}"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}
[ -x "$CB" ] || { echo "FAIL: $CB is not built"; echo "0 passed, 1 failed"; exit 1; }
for b in /usr/sbin/nginx /usr/sbin/apache2; do
    [ -x "$b" ] || { echo "SKIP: $b is not installed (make deps)"; exit 77; }
done

tmp="$(mktemp -d)"
bg_pid=""
cleanup() {
    if [ -n "$bg_pid" ] && kill -0 "$bg_pid" 2>/dev/null; then
        kill -TERM "$bg_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$bg_pid" 2>/dev/null
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# $tmp/home: the checkout's home, closed to others. $tmp/tmp: this test's TMPDIR, open (as /tmp
# is), so that what is left there can be seen.
chmod 755 "$tmp"
mkdir -p "$tmp/home" "$tmp/tmp"
chmod 700 "$tmp/home"
export TMPDIR="$tmp/tmp"
res="$tmp/home/results"
left() { find "$TMPDIR" -mindepth 1 -maxdepth 1 -name 'concbench-ref-*' | wc -l; }

cat >"$tmp/home/ref.toml" <<'TOML'
name = "home"
models = ["nginx", "apache-event"]
workloads = ["hello", "file-64k"]
connections = [10]
repetitions = 1
warmup_s = 0.2
duration_s = 1
rest_check_s = 0.5
disturbed_reruns = 0
TOML
timeout -k 5 240 "$CB" run --profile "$tmp/home/ref.toml" --results "$res" >"$tmp/out1" 2>"$tmp/err1"
rc=$?
check "run under a mode-700 directory exits 0 (got $rc: $(tail -c 400 "$tmp/err1"))" test "$rc" -eq 0
d="$res/latest"
for cell in nginx/hello/c10/r1 nginx/file-64k/c10/r1 apache-event/hello/c10/r1 apache-event/file-64k/c10/r1; do
    line="$(grep -F "\"cell\":\"$cell\"" "$d/results.jsonl" 2>/dev/null | head -1)"
    check "$cell is ok ($(echo "$line" | grep -o '"error":"[^"]*"'))" grep -qF '"status":"ok"' <<<"$line"
done
check "nginx.conf kept in servers/" test -s "$d/servers/nginx_hello_c10_r1/nginx.conf"
check "nginx's error.log kept in servers/" test -e "$d/servers/nginx_file-64k_c10_r1/error.log"
check "apache2.conf kept in servers/" test -s "$d/servers/apache-event_file-64k_c10_r1/apache2.conf"
check "the kept nginx.conf served the docroot from the runtime directory" \
    grep -qE "alias $TMPDIR/concbench-ref-[0-9]+-nginx_file-64k_c10_r1-[A-Za-z0-9]+/docroot/;" \
    "$d/servers/nginx_file-64k_c10_r1/nginx.conf"
check "no runtime directory left in TMPDIR after the run ($(left))" test "$(left)" -eq 0

timeout -k 5 120 "$CB" verify nginx --logs "$tmp/home/verify-logs" >"$tmp/out2" 2>&1
rc=$?
check "verify nginx with its logs under the mode-700 directory exits 0 (got $rc: $(grep -v ' PASS\| N/A' "$tmp/out2" | tail -5))" \
    test "$rc" -eq 0
check "verify left nothing in TMPDIR ($(ls "$TMPDIR" | head -3))" test -z "$(ls -A "$TMPDIR")"

# Ctrl-C in the middle of an Apache cell: its runtime directory goes with it.
cat >"$tmp/home/long.toml" <<'TOML'
name = "long"
models = ["apache-prefork"]
workloads = ["hello"]
connections = [10]
repetitions = 1
warmup_s = 0.2
duration_s = 20
rest_check_s = 0.5
disturbed_reruns = 0
TOML
"$CB" run --profile "$tmp/home/long.toml" --results "$res" --no-verify >"$tmp/out3" 2>"$tmp/err3" &
bg_pid=$!
deadline=$((SECONDS + 60))
until grep -q "concbench-ref-$bg_pid-apache-prefork_hello" <<<"$(ls "$TMPDIR")" || [ "$SECONDS" -ge "$deadline" ] ||
    ! kill -0 "$bg_pid" 2>/dev/null; do sleep 0.1; done
check "the Apache cell's runtime directory was made in TMPDIR" test "$(left)" -eq 1
sleep 1.5
kill -INT "$bg_pid" 2>/dev/null
deadline=$((SECONDS + 30))
while kill -0 "$bg_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
wait "$bg_pid"
rc=$?
bg_pid=""
check "interrupted run exits 130 (got $rc: $(tail -c 300 "$tmp/err3"))" test "$rc" -eq 130
check "no runtime directory left after Ctrl-C ($(left))" test "$(left)" -eq 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
