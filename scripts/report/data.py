"""One run read for the report: its cells (as summary.py groups them), meta.json, micro.json and
the models' model.toml, tolerant of every bad input — each problem is a sentence in `problems`,
never a traceback."""
import json
import statistics
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
import summary  # noqa: E402
from cells import cv, num, stop_reason  # noqa: E402


def resolve(arg, root=ROOT / "results"):
    """A run directory from a path, a run id under results/, or 'latest'."""
    p = Path(arg)
    return p if p.is_dir() or p.parent != Path(".") else root / arg


@dataclass
class Run:
    dir: Path
    id: str = ""
    meta: dict = field(default_factory=dict)
    cells: dict = field(default_factory=dict)      # (group, connections, series) -> [ok lines]
    failed: dict = field(default_factory=dict)     # same key -> [failed lines]
    micro: dict | None = None
    problems: list = field(default_factory=list)   # what is missing or broken, in words
    micro_problem: str = ""
    truncated: bool = False
    bad_lines: int = 0

    @property
    def rows(self):
        return [r for rs in self.cells.values() for r in rs]

    @property
    def failed_rows(self):
        return [r for rs in self.failed.values() for r in rs]

    @property
    def profile(self):
        p = self.meta.get("profile")
        return p.get("name", "?") if isinstance(p, dict) else str(p or "?")


def load_run(path):
    run = Run(dir=Path(path), id=Path(path).resolve().name)
    if not run.dir.is_dir():
        run.problems.append(f"{run.dir} is not a run directory: nothing to report.")
        return run
    try:
        meta = json.loads((run.dir / "meta.json").read_text())
        run.meta = meta if isinstance(meta, dict) else {}
        run.id = str(run.meta.get("run_id") or run.id)
    except FileNotFoundError:
        run.problems.append("meta.json is missing: the machine, commit and profile of this run are unknown.")
    except (OSError, ValueError) as e:
        run.problems.append(f"meta.json could not be read ({e}).")
    results = run.dir / "results.jsonl"
    if results.is_file():
        text = results.read_text(errors="replace")
        lines = text.splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError
            except ValueError:
                run.bad_lines += 1
                if n == len(lines) and not text.endswith("\n"):
                    run.truncated = True
        run.cells, run.failed = summary.read_cells(results)
        if run.truncated:
            run.problems.append("results.jsonl ends in a half-written line: the run was interrupted while a cell "
                                "was being written. The cells before it are reported; `concbench run --resume "
                                f"{run.id}` would finish the rest.")
        if run.bad_lines - run.truncated > 0:
            run.problems.append(f"{run.bad_lines - run.truncated} line(s) of results.jsonl are not JSON objects "
                                "and were skipped.")
        if not run.cells and not run.failed:
            run.problems.append("results.jsonl holds no finished cell.")
        elif not run.cells:
            run.problems.append(f"every cell failed ({len(run.failed_rows)}): there is no measurement to show, only "
                                "the reasons below.")
    else:
        run.problems.append("results.jsonl is missing: no cell of this run finished"
                            + (" (a run of the micro suite alone)." if (run.dir / "micro.json").is_file() else "."))
    micro = run.dir / "micro.json"
    if micro.is_file():
        try:
            m = json.loads(micro.read_text())
            run.micro = m if isinstance(m, dict) and isinstance(m.get("benchmarks"), list) else None
            if run.micro is None:
                run.micro_problem = "micro.json has no benchmarks array."
        except (OSError, ValueError) as e:
            run.micro_problem = f"micro.json could not be read ({e})."
    else:
        run.micro_problem = ("no micro data in this run (micro.json is missing): `concbench micro --short --run "
                             f"{run.id}` adds it; `make bench` runs it.")
    return run


def stat(rows, getter):
    """{median, lo, hi, n, cv} of a figure over a cell's repetitions, or None."""
    vs = [v for v in (getter(r) for r in rows) if v is not None]
    if not vs:
        return None
    return {"median": statistics.median(vs), "lo": min(vs), "hi": max(vs), "n": len(vs), "cv": cv(vs),
            "values": vs}


def ctx_per_request(r):
    req, vol, inv = num(r, "requests"), num(r, "server", "ctx_voluntary"), num(r, "server", "ctx_involuntary")
    return (vol + (inv or 0)) / req if req and vol is not None else None


# name, getter, unit, format, better ("low"/"high")
METRICS = [
    ("server CPU per request", lambda r: num(r, "server", "cpu_us_per_req"), "µs", "{:.1f}", "low"),
    ("throughput", lambda r: num(r, "throughput_rps"), "req/s", "{:,.0f}", "high"),
    ("p99 latency", lambda r: num(r, "latency_us", "p99"), "µs", "{:,.0f}", "low"),
    ("memory (PSS peak)", lambda r: num(r, "server", "pss_kib_peak"), "KiB", "{:,.0f}", "low"),
    ("fds (peak)", lambda r: num(r, "server", "fds_peak"), "", "{:,.0f}", "low"),
]


def fmt(v, f="{:,.3g}", unit=""):
    if v is None:
        return "–"
    return f.format(v) + (f" {unit}" if unit else "")


def held_idle(r):
    """An idle-workload line (its `connections` are the idle ones; a few busy ones carry the load):
    every idle connection established and none dropped."""
    req, est = num(r, "idle", "requested"), num(r, "idle", "established")
    return bool(req) and est is not None and est >= 0.95 * req and not num(r, "idle", "dropped")


def reached(rows):
    """A cell counts for a ranking when none of its repetitions has a stop reason (idle workload:
    held all its idle connections)."""
    return rows and all(held_idle(r) if isinstance(r.get("idle"), dict) and r.get("workload") == "idle"
                        else not stop_reason(r) for r in rows)


def headline(run):
    """Per closed-loop workload and connection count, who is best at each metric, and whether the
    margin exceeds the repetitions' spread (winner's and runner-up's min–max do not overlap)."""
    out = []
    groups = sorted({k[0] for k in run.cells if "open loop" not in k[0]})
    for g in groups:
        counts = sorted({k[1] for k in run.cells if k[0] == g and isinstance(k[1], int)})
        table = []
        for c in counts:
            keys = [k for k in run.cells if k[0] == g and k[1] == c and reached(run.cells[k])]
            row = {"connections": c, "models": len(keys), "cells": []}
            for name, getter, unit, f, better in METRICS:
                ranked = [(k[2], s) for k in keys if (s := stat(run.cells[k], getter))]
                ranked.sort(key=lambda t: t[1]["median"], reverse=better == "high")
                if not ranked:
                    row["cells"].append(None)
                    continue
                w, ws = ranked[0]
                entry = {"winner": w, "value": fmt(ws["median"], f, unit), "clear": None, "runner": "", "ratio": ""}
                if len(ranked) > 1:
                    r2, rs = ranked[1]
                    entry["runner"] = r2
                    if ws["median"] and rs["median"]:
                        ratio = rs["median"] / ws["median"] if better == "low" else ws["median"] / rs["median"]
                        entry["ratio"] = f"×{ratio:.2f}"
                    entry["clear"] = ws["hi"] < rs["lo"] if better == "low" else ws["lo"] > rs["hi"]
                row["cells"].append(entry)
            table.append(row)
        if table:
            out.append({"group": g, "rows": table})
    return out, [m[0] for m in METRICS]


def summary_tables(run):
    """summary.py's tables as data: per group, a row per (connections, series)."""
    tables = []
    for g in sorted({k[0] for k in run.cells} | {k[0] for k in run.failed}):
        has_probe = any("probe" in r for k, rs in run.cells.items() if k[0] == g for r in rs)
        columns = summary.COLUMNS + (summary.PROBE_COLUMNS if has_probe else [])
        headers = ["connections", "model"] + [c[0] for c in columns] + [c[0] for c in summary.CV_COLUMNS]
        rows = []
        keys = sorted({k for k in list(run.cells) + list(run.failed) if k[0] == g},
                      key=lambda k: (k[1] if isinstance(k[1], int) else -1, str(k[2])))
        for key in keys:
            ok = run.cells.get(key, [])
            failed = run.failed.get(key, [])
            if not ok:
                why = "; ".join(dict.fromkeys(str(r.get("error") or "no reason given") for r in failed))
                rows.append({"cells": [key[1], key[2]] + ["–"] * (len(headers) - 2), "notes": [],
                             "failed": f"failed ({len(failed)} of {len(failed)} repetitions): {why}"})
                continue
            vals = [key[1], key[2]]
            for _, getter, f in columns:
                vs = summary.numbers(ok, getter)
                vals.append(summary.fmt(f, statistics.median(vs) if vs else None))
            notes, cvs = summary.notes_of(key, ok, failed)
            vals += [summary.pct(c) for c in cvs]
            for r in failed:
                notes.append(f"r{r.get('repetition', '?')} failed: {r.get('error') or 'no reason given'}")
            rows.append({"cells": vals, "notes": notes, "failed": ""})
        tables.append({"group": g, "headers": headers, "rows": rows})
    return tables


def model_notes(run):
    """model.toml of every model in the run (name, description, mechanism, structure, like, notes)."""
    names = sorted({str(r.get("model")) for r in run.rows + run.failed_rows})
    out = []
    for name in names:
        path = ROOT / "models" / name / "model.toml"
        try:
            t = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            out.append({"name": name, "description": "", "facts": [], "notes": [f"no readable {path.relative_to(ROOT)}"]})
            continue
        facts = [(k, t[k]) for k in ("mechanism", "structure", "like") if t.get(k)]
        notes = t.get("notes") if isinstance(t.get("notes"), list) else []
        out.append({"name": name, "description": t.get("description", ""), "facts": facts,
                    "notes": [str(n) for n in notes]})
    return out
