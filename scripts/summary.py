#!/usr/bin/python3
"""summary.py RESULTS_DIR [--connections N ...] [--workload W]

Prints a Markdown table per workload: one row per model and connection count, the median over
repetitions of throughput, p50/p99 latency, server CPU per request, PSS, threads, processes and
fds, with flags for client-bound cells and starved connections. Reads results.jsonl only.
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def get(row, *keys):
    for k in keys:
        if not isinstance(row, dict) or k not in row:
            return None
        row = row[k]
    return row


COLUMNS = [  # header, getter, format
    ("req/s", lambda r: r.get("throughput_rps"), "{:,.0f}"),
    ("p50 ms", lambda r: get(r, "latency_us", "p50"), lambda v: f"{v / 1000:.2f}"),
    ("p99 ms", lambda r: get(r, "latency_us", "p99"), lambda v: f"{v / 1000:.2f}"),
    ("server µs/req", lambda r: get(r, "server", "cpu_us_per_req"), "{:.1f}"),
    ("PSS MiB", lambda r: get(r, "server", "pss_kib_peak"), lambda v: f"{v / 1024:.1f}"),
    ("threads", lambda r: get(r, "server", "threads_peak"), "{:.0f}"),
    ("processes", lambda r: get(r, "server", "processes_peak"), "{:.0f}"),
    ("fds", lambda r: get(r, "server", "fds_peak"), "{:.0f}"),
]


def fmt(f, v):
    if v is None:
        return "–"
    return f(v) if callable(f) else f.format(v)


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
    cells = defaultdict(list)
    failed = defaultdict(list)
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if a.workload and r.get("workload") != a.workload:
            continue
        if a.connections and r.get("connections") not in a.connections:
            continue
        # Cells with idle connections held, and open-loop (rate sweep) steps, get tables of their own.
        group = str(r.get("workload"))
        if r.get("idle_connections"):
            group += f" (+{r['idle_connections']} idle connections)"
        load = r.get("load") if isinstance(r.get("load"), dict) else {}
        if load.get("shape") == "open":
            frac = load.get("rate_fraction")
            group += (f" — open loop at {frac * 100:g} % of the closed-loop maximum" if isinstance(frac, (int, float))
                      else " — open loop")
        key = (group, r.get("connections"), r.get("model"))
        (cells if r.get("status") == "ok" else failed)[key].append(r)
    if not cells and not failed:
        print("summary.py: no matching cells", file=sys.stderr)
        return 2
    for workload in sorted({k[0] for k in cells} | {k[0] for k in failed}):
        print(f"\n### {workload}\n")
        print("| connections | model | " + " | ".join(c[0] for c in COLUMNS) + " | notes |")
        print("|---" * (len(COLUMNS) + 3) + "|")
        keys = sorted({k for k in list(cells) + list(failed) if k[0] == workload}, key=lambda k: (k[1], k[2]))
        for key in keys:
            rows = cells.get(key, [])
            notes = []
            if not rows:
                notes.append("FAILED: " + str(failed[key][0].get("error", ""))[:100])
                print(f"| {key[1]} | {key[2]} | " + " | ".join("–" for _ in COLUMNS) + f" | {'; '.join(notes)} |")
                continue
            vals = []
            for _, getter, f in COLUMNS:
                vs = [v for v in (getter(r) for r in rows) if v is not None]
                vals.append(fmt(f, statistics.median(vs) if vs else None))
            if any(r.get("client_bound") for r in rows):
                notes.append("client-bound")
            starved = max((get(r, "fairness", "starved_connections") or 0) for r in rows)
            if starved:
                notes.append(f"{starved} of {key[1]} connections got no answer")
            dropped = max((get(r, "idle", "dropped") or 0) for r in rows)
            if dropped:
                notes.append(f"{dropped:.0f} idle connections dropped")
            errors = sum(r.get("errors_total", 0) for r in rows)
            if errors:
                notes.append(f"{errors} errors")
            if failed.get(key):
                notes.append(f"{len(failed[key])} repetition(s) failed")
            print(f"| {key[1]} | {key[2]} | " + " | ".join(vals) + f" | {'; '.join(notes)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
