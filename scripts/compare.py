#!/usr/bin/python3
"""compare.py RUN_A RUN_B: two concbench runs side by side, cell by cell.

For every cell the two runs share (workload, connections, model), the medians of server CPU per
request, throughput, p99, PSS and fds in A and B, their ratio B ÷ A, and whether the difference
exceeds the repetitions' spread (their min–max ranges do not overlap: marked '*'), with the
two-sided exact Mann-Whitney U p-value beside it, as Google Benchmark's compare.py gives. Runs of
different profiles are compared on the cells they share; the others are listed. RUN is a run
directory, a run id under results/, or latest. Exits 0, or 2 when a run has no results.
"""
import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import comparison, data  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    a = ap.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends it quietly
    runs = [data.load_run(data.resolve(x)) for x in (a.run_a, a.run_b)]
    for name, run in zip((a.run_a, a.run_b), runs):
        for p in run.problems:
            print(f"compare.py: {name}: {p}", file=sys.stderr)
        if not run.cells:
            print(f"compare.py: {name}: no finished cell to compare", file=sys.stderr)
            return 2
    print("\n".join(comparison.text(comparison.compare(*runs), runs[0].id, runs[1].id)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
