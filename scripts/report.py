#!/usr/bin/python3
"""report.py [RUN] [--baseline RUN_A] [--out FILE]: one self-contained report.html of a concbench run.

RUN is a run directory, a run id under results/, or `latest` (the default). Writes RUN/report.html (or --out):
the environment, the headline (who wins each figure at each connection count, computed), every
chart inline as SVG with its reading guide, the summary tables, the models' notes, the essays'
claims judged by stated rules, and with --baseline the comparison with an earlier run. A missing
or broken part of the run (failed cells, no micro data, a half-written results.jsonl, an empty
run) is said in its place. The page is rendered by Jinja2 from templates/report.html.j2.
Exits 0 when the report was written, 2 on a usage error.
"""
import argparse
import datetime
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import disturbance, is_disturbed, num, reruns  # noqa: E402
from report import claims, comparison, data, figures  # noqa: E402

try:
    import jinja2
except ImportError:
    print("report.py: python3-jinja2 is missing (make deps installs it)", file=sys.stderr)
    sys.exit(2)

# Libraries and servers a run uses; their versions are read from dpkg when the report is made (the
# run's meta.json records the compiler, the commit and the reference servers, not these).
PACKAGES = ["libuv1-dev", "liburing-dev", "libboost1.81-dev", "libbenchmark-dev", "node-llhttp", "libfmt-dev",
            "python3", "python3-uvloop", "python3-aiohttp", "nodejs", "nginx", "apache2", "wrk"]


def dpkg_versions():
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Status}\n", *PACKAGES],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [(p, v) for p, v, s in (line.split("\t") for line in out.splitlines() if line.count("\t") == 2)
            if s == "installed"]


def pct(v):
    return "–" if v is None else f"{v * 100:.1f} %"


def environment(run):
    m = run.meta
    mach = m.get("machine") if isinstance(m.get("machine"), dict) else {}
    prof = m.get("profile") if isinstance(m.get("profile"), dict) else {}
    os_name = str(mach.get("os", "")).removeprefix("PRETTY_NAME=").strip('"')
    mem = mach.get("memory_kib")
    rows = [("CPU", mach.get("cpu_model")), ("cores", mach.get("cpus")), ("kernel", mach.get("kernel")),
            ("OS", os_name), ("memory", f"{mem / 1048576:.1f} GiB" if isinstance(mem, (int, float)) else None),
            ("compiler", m.get("compiler")), ("commit", m.get("commit")),
            ("profile", f"{prof.get('name', '?')} — {prof.get('description', '')}" if prof else None),
            ("repetitions", prof.get("repetitions")),
            ("measured window", f"{prof['duration_s']} s after {prof.get('warmup_s', '?')} s warm-up"
             if "duration_s" in prof else None),
            ("server / client CPUs", f"{prof.get('server_cpus')} / {prof.get('client_cpus')}" if prof else None),
            ("started", m.get("started_at")), ("run id", run.id)]
    refs = m.get("reference_servers") if isinstance(m.get("reference_servers"), dict) else {}
    for name, r in sorted(refs.items()):
        if isinstance(r, dict):
            rows.append((f"reference server {name}", f"{r.get('version', '?')} ({r.get('package', '')})"))
    if run.micro:
        ctx = run.micro.get("context", {})
        rows.append(("micro suite", f"clock measured at {ctx.get('measured_mhz', '?')} MHz, {ctx.get('date', '')}, "
                     f"Google Benchmark {'release' if ctx.get('library_build_type') == 'release' else 'library built as ' + str(ctx.get('library_build_type', '?'))}"))
    rows = [(k, "unknown" if v in (None, "") else str(v)) for k, v in rows]
    # how quiet the machine was: the readings at rest, and the cells still disturbed or re-run
    rest = []
    for reading in m.get("at_rest") or []:
        if isinstance(reading, dict):
            rest.append(", ".join(f"{side}: {pct(num(reading, side, 'foreign'))} of a core to other processes, "
                                  f"slowdown {pct(num(reading, side, 'slowdown'))}" for side in ("server", "client")
                                  if isinstance(reading.get(side), dict)) + f" (at {reading.get('at', '?')})")
    rows_all = run.rows
    disturbed = [r for r in rows_all if is_disturbed(r)]
    quiet = {"at_rest": rest, "cells": len(rows_all), "disturbed": len(disturbed),
             "reruns": sum(reruns(r) for r in rows_all),
             "examples": [f"{r.get('cell')}: {disturbance(r) or 'disturbed'}" for r in disturbed[:5]]}
    return rows, quiet, dpkg_versions()


def failures(run):
    return [{"cell": r.get("cell", "?"), "error": str(r.get("error") or "no reason given")} for r in run.failed_rows]


def render(run, baseline=None):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "report" / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env_rows, quiet, versions = environment(run)
    head, head_metrics = data.headline(run)
    figs, fig_problems = figures.draw(run) if (run.cells or run.micro) else ([], [])
    ctx = {"run": run, "environment": env_rows, "quiet": quiet, "versions": versions,
           "headline": head, "headline_metrics": head_metrics, "figures": figs, "figure_problems": fig_problems,
           "tables": data.summary_tables(run), "models": data.model_notes(run), "failures": failures(run),
           "claims": claims.judge_all(run), "verdicts": claims.VERDICTS,
           "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "baseline": baseline, "comparison": comparison.compare(baseline, run) if baseline else None}
    return env.get_template("report.html.j2").render(**ctx)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="latest", help="run directory, run id under results/, or latest (default)")
    ap.add_argument("--baseline", help="an earlier run to compare with (directory or id)")
    ap.add_argument("--out", type=Path, help="output file (default RUN/report.html)")
    a = ap.parse_args()
    run = data.load_run(data.resolve(a.run))
    baseline = data.load_run(data.resolve(a.baseline)) if a.baseline else None
    out = a.out or run.dir / "report.html"
    if not out.parent.is_dir():
        print(f"report.py: {out.parent} is not a directory", file=sys.stderr)
        return 2
    out.write_text(render(run, baseline))
    for p in run.problems + ([run.micro_problem] if run.micro_problem else []):
        print(f"report.py: note: {p}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
