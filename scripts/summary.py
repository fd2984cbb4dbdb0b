#!/usr/bin/python3
"""summary.py RESULTS_DIR [--connections N ...] [--workload W]

Prints a Markdown table per workload: one row per model and connection count, the median over
repetitions of throughput, p50/p99 latency, server CPU per request, PSS, threads, processes and
fds, and how much the repetitions spread: the coefficient of variation (population stdev / mean
over the ok repetitions, "–" with fewer than 2) of throughput ("req/s CV") and of server CPU per
request ("µs/req CV"). Notes flag client-bound cells, a spread above 10 % ("CV > 10 %"),
repetitions still disturbed after their re-runs ("disturbed: <cause>": other processes, steal or
a slowed CPU on the server's or client's CPUs), re-run cells ("re-run ×N": N re-runs over the
cell's repetitions), connections that got no answer or could not connect — with the reason
measured from the cell's figures (cells.stop_reason) —, idle connections dropped, errors and
failed repetitions. A header line gives the repetitions per cell; after the tables, one line per
workload: cells disturbed, cells re-run, and the largest CV among event-loop models (mechanism
readiness or completion) at 100 and 1000 connections. Reads results.jsonl (and meta.json) only.
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import cv, disturbance, is_disturbed, reruns, starved_note, stop_reason  # noqa: E402

CV_FLAG = 0.10                 # "CV > 10 %"
CV_COUNTS = (100, 1000)        # the connection counts of the closing CV line
EVENT_LOOPS = ("readiness", "completion")


def get(row, *keys):
    for k in keys:
        if not isinstance(row, dict) or k not in row:
            return None
        row = row[k]
    return row


def throughput(r):
    return r.get("throughput_rps")


def cpu_per_req(r):
    return get(r, "server", "cpu_us_per_req")


COLUMNS = [  # header, getter, format
    ("req/s", throughput, "{:,.0f}"),
    ("p50 ms", lambda r: get(r, "latency_us", "p50"), lambda v: f"{v / 1000:.2f}"),
    ("p99 ms", lambda r: get(r, "latency_us", "p99"), lambda v: f"{v / 1000:.2f}"),
    ("server µs/req", cpu_per_req, "{:.1f}"),
    ("PSS MiB", lambda r: get(r, "server", "pss_kib_peak"), lambda v: f"{v / 1024:.1f}"),
    ("threads", lambda r: get(r, "server", "threads_peak"), "{:.0f}"),
    ("processes", lambda r: get(r, "server", "processes_peak"), "{:.0f}"),
    ("fds", lambda r: get(r, "server", "fds_peak"), "{:.0f}"),
]
CV_COLUMNS = [("req/s CV", "req/s", throughput), ("µs/req CV", "µs/req", cpu_per_req)]
# work-US cells: GET / beside the load (the probe), how long it waited
PROBE_COLUMNS = [
    ("probe GET / p50 ms", lambda r: get(r, "probe", "latency_us", "p50"), lambda v: f"{v / 1000:.2f}"),
    ("probe GET / p99 ms", lambda r: get(r, "probe", "latency_us", "p99"), lambda v: f"{v / 1000:.2f}"),
]


def fmt(f, v):
    if v is None:
        return "–"
    return f(v) if callable(f) else f.format(v)


def numbers(rows, getter):
    return [v for v in (getter(r) for r in rows) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def pct(x):
    return "–" if x is None else f"{x * 100:.1f} %"


def repetitions(results_dir, per_cell):
    """The profile's repetitions (meta.json), else the most repetitions any cell has."""
    try:
        meta = json.loads((results_dir / "meta.json").read_text())
        n = meta["profile"]["repetitions"]
        if isinstance(n, int) and not isinstance(n, bool):
            return n, "profile"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return max(per_cell, default=0), "most in a cell"


def notes_of(key, rows, failed):
    """The notes of one table row (rows: its ok repetitions)."""
    notes = []
    if any(r.get("client_bound") for r in rows):
        notes.append("client-bound")
    cvs = [cv(numbers(rows, getter)) for _, _, getter in CV_COLUMNS]
    if any(c is not None and c > CV_FLAG for c in cvs):
        notes.append("CV > 10 %")
    for r in rows:
        if is_disturbed(r):
            rep = f" (r{r['repetition']})" if len(rows) > 1 and "repetition" in r else ""
            notes.append(f"disturbed: {disturbance(r) or 'yes'}{rep}")
    n = sum(reruns(r) for r in rows)
    if n:
        notes.append(f"re-run ×{n}")
    reasons = list(dict.fromkeys(w for w in (stop_reason(r) for r in rows) if w))
    notes += reasons
    if not any("answered" in w for w in reasons):
        notes += list(dict.fromkeys(w for w in (starved_note(r) for r in rows) if w))
    dropped = max((get(r, "idle", "dropped") or 0) for r in rows)
    if dropped:
        notes.append(f"{dropped:.0f} idle connections dropped")
    errors = sum(r.get("errors_total", 0) or 0 for r in rows)
    if errors:
        notes.append(f"{errors} errors")
    if failed:
        notes.append(f"{len(failed)} repetition(s) failed")
    return notes, cvs


def group_of(r):
    """The table a result line belongs to: its workload, with idle connections held and open-loop
    (rate sweep) steps apart."""
    group = str(r.get("workload"))
    if r.get("idle_connections"):
        group += f" (+{r['idle_connections']} idle connections)"
    load = r.get("load") if isinstance(r.get("load"), dict) else {}
    if load.get("shape") == "open":
        frac = load.get("rate_fraction")
        group += (f" — open loop at {frac * 100:g} % of the closed-loop maximum" if isinstance(frac, (int, float))
                  else " — open loop")
    return group


def read_cells(path, workload=None, connections=None):
    """({(group, connections, series): [ok lines]}, {same key: [failed lines]}) from a results.jsonl;
    lines that are not JSON objects (a half-written last line) are skipped."""
    cells = defaultdict(list)
    failed = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(r, dict):
            continue
        if workload and r.get("workload") != workload:
            continue
        if connections and r.get("connections") not in connections:
            continue
        key = (group_of(r), r.get("connections"), r.get("series") or r.get("model"))  # series: "threads (2 cores)"
        (cells if r.get("status") == "ok" else failed)[key].append(r)
    return cells, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--connections", type=int, nargs="*", help="only these connection counts")
    ap.add_argument("--workload", help="only this workload")
    a = ap.parse_args()
    path = a.results_dir / "results.jsonl"
    if not path.is_file():
        print(f"summary.py: {path}: no such file", file=sys.stderr)
        return 2
    cells, failed = read_cells(path, a.workload, a.connections)
    if not cells and not failed:
        print("summary.py: no matching cells", file=sys.stderr)
        return 2
    reps, source = repetitions(a.results_dir, [len(cells[k]) + len(failed[k]) for k in set(cells) | set(failed)])
    print(f"Repetitions per cell: {reps} ({source}). Figures are the median of a cell's ok repetitions; "
          "CV = population stdev / mean over them (– with fewer than 2).")
    closing = []
    for workload in sorted({k[0] for k in cells} | {k[0] for k in failed}):
        print(f"\n### {workload}\n")
        has_probe = any("probe" in r for k, rs in cells.items() if k[0] == workload for r in rs)
        columns = COLUMNS + (PROBE_COLUMNS if has_probe else [])
        headers = [c[0] for c in columns] + [c[0] for c in CV_COLUMNS]
        print("| connections | model | " + " | ".join(headers) + " | notes |")
        print("|---" * (len(headers) + 3) + "|")
        keys = sorted({k for k in list(cells) + list(failed) if k[0] == workload},
                      key=lambda k: (k[1] if isinstance(k[1], int) else -1, str(k[2])))
        disturbed, rerun, widest = 0, 0, None
        for key in keys:
            rows = cells.get(key, [])
            if not rows:
                note = "FAILED: " + str(failed[key][0].get("error", ""))[:100]
                print(f"| {key[1]} | {key[2]} | " + " | ".join("–" for _ in headers) + f" | {note} |")
                continue
            vals = []
            for _, getter, f in columns:
                vs = numbers(rows, getter)
                vals.append(fmt(f, statistics.median(vs) if vs else None))
            notes, cvs = notes_of(key, rows, failed.get(key, []))
            vals += [pct(c) for c in cvs]
            print(f"| {key[1]} | {key[2]} | " + " | ".join(vals) + f" | {'; '.join(notes)} |")
            disturbed += any(is_disturbed(r) for r in rows)
            rerun += any(reruns(r) for r in rows)
            mech = str(rows[0].get("mechanism") or "")
            if key[1] in CV_COUNTS and mech.split()[0:1] and mech.split()[0] in EVENT_LOOPS:
                for c, (_, what, _) in zip(cvs, CV_COLUMNS):
                    if c is not None and (widest is None or c > widest[0]):
                        widest = (c, f"{key[2]} at {key[1]}, {what}")
        largest = f"{pct(widest[0])} ({widest[1]})" if widest else "– (no event-loop cell with 2 or more repetitions)"
        closing.append(f"- {workload}: {disturbed} of {len(keys)} cells disturbed, {rerun} re-run; largest CV among "
                       f"event-loop models at {' and '.join(map(str, CV_COUNTS))} connections: {largest}")
    print("\n### Disturbance and spread\n")
    print("\n".join(closing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
