#!/usr/bin/python3
"""Charts of a concbench run: one chart per workload and metric, one line per model.

usage: /usr/bin/python3 scripts/plot.py RESULTS_DIR [--out DIR] [--classic WORKLOAD]

Reads RESULTS_DIR/results.jsonl (+ meta.json) and writes <workload>-<metric>.png/.svg and
<workload>-overview.png into RESULTS_DIR/plots/ (or --out); cells run with idle connections held
get their own set, <workload>-idle<K>-<metric>; a rate sweep (open-loop steps) gives
<workload>-sweep.png/.svg: latency against offered load, where the knee shows. Repetitions of a cell are shown as
their median with min-max error bars; a hollow point is a client-bound cell, whose throughput and
latency say more about the client than the server; a red × marks a cell where some connections
got no answer in the window; a large orange open diamond marks a point one of whose repetitions
was still disturbed after its re-runs (other processes, steal or a slowed CPU on the server's or
the client's CPUs: "disturbed" in results.jsonl; summary.py names the cause). Failed cells are
listed on the chart. A work-US workload also gets <workload>-probe-latency: the p50 and p99 of
GET / sent at 100/s on 10 more connections while the work runs. Where a run gives a model several
--workers or CPU sets (the gil profile), each is a line of its own: "epoll ×2 (2 cores)". Reference servers (mechanism "reference": nginx, Apache) are drawn in black
and grey with square markers, apart from our models' colours.

--classic WORKLOAD (or auto: hello, if the run has it) also writes the three classic charts of that workload, classic-throughput,
classic-cpu and classic-pss (.png and .svg): requests/s, server CPU per request (µs, lower is
better) and server PSS against concurrent connections, one line per server, reference servers
dashed, the same marks. A line stops where its server stopped reaching the connection count —
the cell failed, fewer than 95 % of the connections were established, or (requests/s only) more
than half of them got no answer in the window — with the reason, measured from the cell's
figures (cells.stop_reason: the primer, the server's threads and processes, its errors), beside
the chart. On the CPU and PSS charts a count where most connections got no answer goes on with a
red ×: CPU per answered request and memory held are still what the server costs there.

A run with micro.json (`concbench micro`; `make bench` runs its short set) also gets the micro
suite's charts (micro_plots.py): micro-creation, micro-switching, micro-waiting, micro-memory and
latency-table (.png, .svg). A run of the micro suite alone gets only those.
"""
import argparse
import json
import re
import statistics
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import (DISTURBED_NOTE, is_client_bound, is_disturbed, is_starved, num as _get,  # noqa: E402
                   starved_note, stop_reason)
import micro_plots  # noqa: E402


def _ms(us):
    return None if us is None else us / 1000


def _pss_mib(row):
    kib = _get(row, "server", "pss_kib_peak")
    return None if kib is None else kib / 1024


# slug, title, y label, [(series label, line style, value getter)]
METRICS = [
    ("throughput", "throughput", "requests / s", [("", "-", lambda r: _get(r, "throughput_rps"))]),
    ("latency", "latency p50 and p99", "latency (ms)",
     [("p50", "-", lambda r: _ms(_get(r, "latency_us", "p50"))),
      ("p99", "--", lambda r: _ms(_get(r, "latency_us", "p99")))]),
    ("cpu-per-request", "server CPU per request", "server CPU µs / request",
     [("", "-", lambda r: _get(r, "server", "cpu_us_per_req"))]),
    ("pss", "server memory (PSS peak)", "PSS (MiB)", [("", "-", _pss_mib)]),
    ("fds", "open file descriptors (peak)", "server fds", [("", "-", lambda r: _get(r, "server", "fds_peak"))]),
]
# work-US cells: the probe, GET / at 100/s on 10 more connections while the work runs
PROBE_METRIC = ("probe-latency", "GET / beside the work (probe) p50 and p99", "latency (ms)",
                [("p50", "-", lambda r: _ms(_get(r, "probe", "latency_us", "p50"))),
                 ("p99", "--", lambda r: _ms(_get(r, "probe", "latency_us", "p99")))])
HOLLOW_NOTE = "hollow: client-bound (client CPU ≥ 90 %)"
STARVED_NOTE = "red ×: some connections got no answer in the window (figures cover the others)"
DISTURBED_COLOUR = "darkorange"


def mark_disturbed(ax, x, y, size=15):
    """A large open orange diamond around the point (x, y): a repetition there was disturbed."""
    if y is not None:
        ax.plot([x], [y], marker="D", markersize=size, markerfacecolor="none", markeredgecolor=DISTURBED_COLOUR,
                markeredgewidth=1.8, linestyle="none", zorder=4)


def disturbed_handle(label=DISTURBED_NOTE):
    return Line2D([], [], marker="D", markersize=9, markerfacecolor="none", markeredgecolor=DISTURBED_COLOUR,
                  markeredgewidth=1.8, linestyle="none", label=label)


def load(results_dir):
    """Returns (ok rows, failed rows, meta); exits 2 when there is nothing to plot."""
    path = results_dir / "results.jsonl"
    if not results_dir.is_dir() or not path.is_file():
        what = path if results_dir.is_dir() else f"results directory {results_dir}"
        print(f"plot.py: error: {what} not found", file=sys.stderr)
        sys.exit(2)
    ok, failed = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            # one line per series: the model, with its --workers and core count where the run varies them
            row["workload"], row["model"] = str(row["workload"]), str(row.get("series") or row["model"])
            row["connections"] = int(row["connections"])
        except (ValueError, KeyError, TypeError) as e:
            print(f"plot.py: warning: {path}:{n}: skipped ({e})", file=sys.stderr)
            continue
        (failed if row.get("status", "ok") != "ok" else ok).append(row)
    if not ok:
        print(f"plot.py: error: no usable result lines in {path} ({len(failed)} failed cells)", file=sys.stderr)
        sys.exit(2)
    try:
        meta = json.loads((results_dir / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    return ok, failed, meta if isinstance(meta, dict) else {}


def subtitle(meta):
    m = meta.get("machine") or {}
    prof = meta.get("profile") or {}
    machine = ", ".join(x for x in (m.get("cpu_model"), f"{m['cpus']} CPUs" if m.get("cpus") else None,
                                    f"Linux {m['kernel']}" if m.get("kernel") else None) if x)
    return " · ".join([machine or "unknown machine", f"profile {prof.get('name', '?')}",
                       f"commit {meta.get('commit', '?')}"])


def aggregate(rows, getter):
    """{model: [(connections, median, min, max, client_bound, starved, disturbed)]} over repetitions."""
    cells = defaultdict(list)
    for r in rows:
        v = getter(r)
        if v is not None:
            cells[(r["model"], r["connections"])].append((v, is_client_bound(r), is_starved(r), is_disturbed(r)))
    out = defaultdict(list)
    for (model, conns), vals in sorted(cells.items()):
        vs = [v[0] for v in vals]
        out[model].append((conns, statistics.median(vs), min(vs), max(vs),
                           any(v[1] for v in vals), any(v[2] for v in vals), any(v[3] for v in vals)))
    return out


REFERENCE_COLOURS = ["black", "dimgrey", "darkgrey", "#5a5a5a", "#8c8c8c", "#2f2f2f"]
REFERENCE_MARKERS = ["s", "^", "D", "v", "P", "X"]
OUR_COLOURS = list(plt.get_cmap("tab20").colors[0::2]) + list(plt.get_cmap("tab20").colors[1::2])


def styles(rows):
    """{model: (colour, marker, is_reference)}: our models in colour with round markers, reference
    servers (nginx, Apache) in black and grey with their own markers."""
    mech = {}
    for r in rows:
        mech.setdefault(r["model"], r.get("mechanism"))
    ours = sorted(m for m in mech if mech[m] != "reference")
    refs = sorted(m for m in mech if mech[m] == "reference")
    out = {m: (OUR_COLOURS[i % len(OUR_COLOURS)], "o", False) for i, m in enumerate(ours)}
    out.update({m: (REFERENCE_COLOURS[i % len(REFERENCE_COLOURS)], REFERENCE_MARKERS[i % len(REFERENCE_MARKERS)], True)
                for i, m in enumerate(refs)})
    return out


def draw(ax, metric, rows, colours):
    """Draws one metric on ax; returns (any point client-bound, any with starved connections, any disturbed)."""
    slug, title, ylabel, series = metric
    hollow_any, starved_any, disturbed_any, values, conns = False, False, False, [], set()
    for label, style, getter in series:
        for model, pts in aggregate(rows, getter).items():
            c, marker, _ = colours[model]
            xs, med = [p[0] for p in pts], [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(xs, med, yerr=err, color=c, linestyle=style, linewidth=1.6, capsize=3, elinewidth=1)
            for x, y, _, _, cb, st, dist in pts:
                ax.plot([x], [y], marker=marker, markersize=6, color=c, markeredgewidth=1.5,
                        markerfacecolor="white" if cb else c, linestyle="none")
                if st:
                    ax.plot([x], [y], marker="x", markersize=10, color="red", markeredgewidth=2,
                            linestyle="none")
                if dist:
                    mark_disturbed(ax, x, y)
                hollow_any |= cb
                starved_any |= st
                disturbed_any |= dist
            values += [v for p in pts for v in p[1:4]]
            conns.update(xs)
    if not values:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return False, False, False
    ax.set_xscale("log")
    ax.set_xticks(sorted(conns))
    ax.set_xticklabels([str(c) for c in sorted(conns)])
    ax.xaxis.set_minor_formatter(NullFormatter())
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("connections")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    return hollow_any, starved_any, disturbed_any


def legend(ax, metric, models, colours, flags, **kw):
    hollow, starved, disturbed = flags
    handles = [Line2D([], [], color=colours[m][0], marker=colours[m][1], label=m) for m in models]
    if metric[0] == "latency":
        handles += [Line2D([], [], color="black", linestyle="-", label="p50"),
                    Line2D([], [], color="black", linestyle="--", label="p99")]
    if hollow:
        handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="white",
                              linestyle="none", label=HOLLOW_NOTE))
    if starved:
        handles.append(Line2D([], [], color="red", marker="x", markeredgewidth=2,
                              linestyle="none", label=STARVED_NOTE))
    if disturbed:
        handles.append(disturbed_handle())
    ax.legend(handles=handles, **({"fontsize": 7, "loc": "best", "framealpha": 0.8} | kw))


def failure_note(fig, failed):
    if not failed:
        return
    lines = [f"{r['model']} c{r['connections']} r{r.get('repetition', '?')}: {str(r.get('error') or 'failed')[:60]}"
             for r in failed]
    more = f"  … and {len(lines) - 4} more" if len(lines) > 4 else ""
    fig.text(0.01, 0.01, "failed: " + "; ".join(lines[:4]) + more, fontsize=7, color="firebrick",
             ha="left", va="bottom", wrap=True)


# The three classic charts: slug, title, y label, value getter, whether a count where most
# connections got no answer ends the line. Requests/s there describe the few served, not the
# count; CPU per request is still per answered request, and memory is what the server costs while
# it holds them all, answered or not: those go on, with a red ×.
CLASSIC = [
    ("throughput", "requests per second vs concurrent connections", "requests / s",
     lambda r: _get(r, "throughput_rps"), True),
    ("cpu", "server CPU per request (µs) — lower is better", "server CPU per request (µs) — lower is better",
     lambda r: _get(r, "server", "cpu_us_per_req"), False),
    ("pss", "server memory (PSS, whole process tree) vs concurrent connections", "PSS (MiB)", _pss_mib, False),
]


def classic_chart(rows, metric, colours, sub, out):
    """One classic chart; returns the paths written."""
    slug, title, ylabel, getter, stop_on_starved = metric
    fig, ax = plt.subplots(figsize=(13, 7))
    by_model = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_model[r["model"]][r["connections"]].append(r)
    conns_all = sorted({r["connections"] for r in rows})
    values, starved_any, disturbed_any, stops, crosses = [], False, False, [], []
    order = sorted(by_model, key=lambda m: (colours[m][2], m))
    for model in order:
        colour, marker, is_ref = colours[model]
        xs, ys, lo, hi, starved, disturbed = [], [], [], [], [], []
        reason, stop_at = "", None
        for c in conns_all:
            cells = by_model[model].get(c, [])
            if not cells:
                continue
            reasons = [stop_reason(r, stop_on_starved) for r in cells]
            good = [r for r, why in zip(cells, reasons) if not why]
            vals = [v for v in (getter(r) for r in good) if v is not None]
            if not vals:
                reason, stop_at = next(w for w in reasons if w) if any(reasons) else "no value", c
                if any(is_disturbed(r) for r in cells):  # a stop on a busy machine may be the machine's
                    reason += " (disturbed: see summary)"
                break
            xs.append(c)
            ys.append(statistics.median(vals))
            lo.append(ys[-1] - min(vals))
            hi.append(max(vals) - ys[-1])
            starved.append(any(is_starved(r) for r in good))
            disturbed.append(any(is_disturbed(r) for r in good))
            if starved[-1]:  # why some got no answer there, from the cell's figures
                why = next((w for w in (starved_note(r) for r in good) if w), "")
                if why and (model, c) not in {(m, at) for m, at, _ in crosses}:
                    crosses.append((model, c, why))
        ls = (0, (5, 2)) if is_ref else "-"
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], color=colour, linestyle=ls, linewidth=2.2 if is_ref else 1.6,
                        marker=marker, markersize=7 if is_ref else 5, capsize=3, elinewidth=1, label=model)
            for x, y, st, dist in zip(xs, ys, starved, disturbed):
                if st:
                    ax.plot([x], [y], marker="x", markersize=11, color="red", markeredgewidth=2, linestyle="none")
                    starved_any = True
                if dist:
                    mark_disturbed(ax, x, y, size=17)
                    disturbed_any = True
            values += ys
        else:  # not one count reached: still named in the legend, its reason below the chart
            ax.plot([], [], color=colour, linestyle=ls, marker=marker, label=f"{model} (no point)")
        if stop_at is not None:
            stops.append((model, xs[-1] if xs else None, ys[-1] if ys else None, stop_at, reason, colour))
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    # Where a line stops: an end mark and a number on its last point; the numbered reasons are
    # listed beside the chart (labels written at the points would pile up where lines end together).
    notes = []
    for i, (model, x, y, at, reason, colour) in enumerate(stops, 1):
        notes.append(textwrap.fill(f"{i}. {model}: no line at {at:,} — {reason}", 150, subsequent_indent="    "))
        if x is not None:
            ax.plot([x], [y], marker="|", markersize=16, color=colour, markeredgewidth=3, linestyle="none")
            ax.annotate(str(i), (x, y), xytext=(6, 3 + 9 * (i % 2)), textcoords="offset points",
                        fontsize=8, fontweight="bold", color=colour)
    ax.set_xscale("log")
    ax.set_xticks(conns_all)
    ax.set_xticklabels([f"{c:,}" for c in conns_all])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("concurrent connections (keep-alive, closed loop)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linestyle=(0, (5, 2)), linewidth=2.2,
                          label="dashed, grey: real nginx / Apache"))
    if starved_any:
        handles.append(Line2D([], [], color="red", marker="x", markeredgewidth=2, linestyle="none",
                              label="red ×: some connections got no answer"))
    if disturbed_any:
        handles.append(disturbed_handle())
    if stops:
        handles.append(Line2D([], [], color="black", marker="|", markersize=12, markeredgewidth=3,
                              linestyle="none", label="|n: the line stops here (reason n below)"))
    leg = ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), framealpha=0.9)
    text = ("where lines stop:\n" + "\n".join(notes)) if notes else ""
    if crosses:  # red ×: the measured reason, as for a stop
        text += ("\n" if text else "") + "red ×, some connections got no answer:\n" + "\n".join(
            textwrap.fill(f"{model} at {c:,}: {why}", 150, subsequent_indent="    ") for model, c, why in crosses)
    # The notes go below the chart, across the figure, which grows to hold them; the legend
    # hangs off the axes' right edge.
    lines = text.count("\n") + 1 if text else 0
    bottom = 0.0
    if text:
        height = 7 + 0.15 * lines
        fig.set_size_inches(13, height)
        bottom = (0.15 * lines + 0.25) / height
        fig.text(0.01, 0.01, text, fontsize=7.5, color="firebrick", ha="left", va="bottom", linespacing=1.35)
    fig.suptitle(title, fontsize=13)
    ax.set_title(sub, fontsize=8, color="dimgrey")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    # When one pass leaves the legend past the figure's edge (the axes narrowed, so it moved), a
    # second pass makes room.
    renderer = fig.canvas.get_renderer()
    if leg.get_window_extent(renderer).x1 > fig.bbox.x1:
        fig.tight_layout(rect=(0, bottom, 1, 1))
    paths = []
    for ext in ("png", "svg"):
        path = out / f"classic-{slug}.{ext}"
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


def is_open(row):
    load = row.get("load")
    return isinstance(load, dict) and load.get("shape") == "open"


def idle_of(row):
    v = row.get("idle_connections")
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def draw_sweep(rows, colours, sub, fails, title, stem, out):
    """Latency (corrected p50, p99; uncorrected p99) and achieved throughput against offered load."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 5.4), gridspec_kw={"width_ratios": [3, 2]})
    lines = defaultdict(list)
    for r in rows:
        offered = _get(r, "load", "offered_rps")
        if offered:
            lines[(r["model"], r["connections"])].append((offered, r))
    several_c = len({c for _, c in lines}) > 1
    hollow_any = disturbed_any = False
    for (model, conns), pts in sorted(lines.items()):
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        c = colours[model][0]
        label = f"{model} c={conns}" if several_c else model
        for getter, style in ((lambda r: _ms(_get(r, "latency_us", "p50")), "-"),
                              (lambda r: _ms(_get(r, "latency_us", "p99")), "--"),
                              (lambda r: _ms(_get(r, "latency_uncorrected_us", "p99")), ":")):
            ys = [getter(r) for _, r in pts]
            ax.plot(xs, ys, color=c, linestyle=style, linewidth=1.5, label=label if style == "-" else None)
        for x, r in pts:
            cb = is_client_bound(r)
            hollow_any |= cb
            ax.plot([x], [_ms(_get(r, "latency_us", "p99"))], marker="o", markersize=5, color=c,
                    markerfacecolor="white" if cb else c, linestyle="none")
            if is_disturbed(r):
                disturbed_any = True
                mark_disturbed(ax, x, _ms(_get(r, "latency_us", "p99")), size=13)
                mark_disturbed(ax2, x, _get(r, "throughput_rps"), size=12)
        ax2.plot(xs, [_get(r, "throughput_rps") for _, r in pts], color=c, marker="o", markersize=4, label=label)
    top = max((x for pts in lines.values() for x, _ in pts), default=1)
    ax2.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="achieved = offered")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests / s)")
    ax.set_ylabel("latency (ms), from the intended send time")
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="black", linestyle="-", label="p50"),
                Line2D([], [], color="black", linestyle="--", label="p99"),
                Line2D([], [], color="black", linestyle=":", label="p99 uncorrected (from actual send)")]
    if hollow_any:
        handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="none",
                              label=HOLLOW_NOTE))
    if disturbed_any:
        handles.append(disturbed_handle())
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
    ax.set_title("latency vs offered load (open loop)", fontsize=10)
    ax2.set_xlabel("offered load (requests / s)")
    ax2.set_ylabel("achieved (requests / s)")
    ax2.set_title("achieved vs offered", fontsize=10)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title} — rate sweep\n{sub}", fontsize=12)
    failure_note(fig, fails)
    fig.tight_layout(rect=(0, 0.04 if fails else 0, 1, 1))
    written = []
    for ext in ("png", "svg"):
        path = out / f"{stem}-sweep.{ext}"
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    return written


def draw_run(results_dir, out=None, classic=None):
    """Every chart of a run into out (default RESULTS_DIR/plots); returns (paths written, failed
    rows). Exits 2, as the command does, when there is nothing to plot."""
    micro = results_dir / "micro.json"
    out = out or results_dir / "plots"
    if micro.is_file() and not (results_dir / "results.jsonl").is_file():
        # a run of `concbench micro` alone: its charts only
        out.mkdir(parents=True, exist_ok=True)
        return micro_plots.draw_all(micro, out), []
    ok, failed, meta = load(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    sub = subtitle(meta)
    colours = styles(ok + failed)
    written = []
    for workload, idle in sorted({(r["workload"], idle_of(r)) for r in ok}):
        group = [r for r in ok if r["workload"] == workload and idle_of(r) == idle]
        rows = [r for r in group if not is_open(r)]
        fails = [r for r in failed if r["workload"] == workload and idle_of(r) == idle]
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", workload) + (f"-idle{idle}" if idle else "")
        title = workload + (f" (+{idle} idle connections)" if idle else "")
        sweep = [r for r in group if is_open(r)]
        if sweep:
            written += draw_sweep(sweep, colours, sub, [r for r in fails if is_open(r)], title, safe, out)
        if not rows:
            continue
        wmodels = sorted({r["model"] for r in rows})
        fails = [r for r in fails if not is_open(r)]
        metrics = METRICS + ([PROBE_METRIC] if any("probe" in r for r in rows) else [])
        for metric in metrics:
            fig, ax = plt.subplots(figsize=(8, 5.2))
            flags = draw(ax, metric, rows, colours)
            legend(ax, metric, wmodels, colours, flags)
            fig.suptitle(f"{title} — {metric[1]}", fontsize=13)
            ax.set_title(sub, fontsize=8, color="dimgrey")
            failure_note(fig, fails)
            fig.tight_layout(rect=(0, 0.04 if fails else 0, 1, 1))
            for ext in ("png", "svg"):
                path = out / f"{safe}-{metric[0]}.{ext}"
                fig.savefig(path, dpi=120)
                written.append(path)
            plt.close(fig)
        cols = 3 if len(metrics) < 6 else 4
        fig, axes = plt.subplots(2, cols, figsize=(16 * cols / 3, 9))
        flags = (False, False, False)
        for ax in axes.flat[len(metrics):]:
            ax.axis("off")
        for ax, metric in zip(axes.flat, metrics):
            flags = tuple(a or b for a, b in zip(flags, draw(ax, metric, rows, colours)))
            ax.set_title(metric[1], fontsize=10)
        legend(axes.flat[-1], METRICS[1], wmodels, colours, flags, fontsize=11, loc="center")
        axes.flat[-1].axis("off")
        fig.suptitle(f"{title} — overview\n{sub}", fontsize=12)
        failure_note(fig, fails)
        fig.tight_layout(rect=(0, 0.03 if fails else 0, 1, 1))
        path = out / f"{safe}-overview.png"
        fig.savefig(path, dpi=100)
        written.append(path)
        plt.close(fig)
    if classic:
        # closed-loop cells without idle connections held: rate-sweep steps and idle sets are other shapes
        workload = "hello" if classic == "auto" else classic
        rows = [r for r in ok + failed if r["workload"] == workload and not is_open(r) and not idle_of(r)]
        if classic == "auto" and not [r for r in rows if r.get("status", "ok") == "ok"]:
            rows = []  # a run without hello cells (make bench PROFILE=io): no classic charts, no error
        elif not [r for r in rows if r.get("status", "ok") == "ok"]:
            print(f"plot.py: error: --classic: no finished closed-loop cell of workload '{classic}'",
                  file=sys.stderr)
            sys.exit(2)
        for metric in CLASSIC if rows else []:
            written += classic_chart(rows, metric, colours, sub, out)
    if micro.is_file():
        written += micro_plots.draw_all(micro, out)
    return written, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--out", type=Path, help="output directory (default RESULTS_DIR/plots)")
    ap.add_argument("--classic", metavar="WORKLOAD",
                    help="also write classic-throughput, classic-cpu and classic-pss (.png, .svg) for this workload "
                         "('auto': hello, when the run has it)")
    args = ap.parse_args()
    written, failed = draw_run(args.results_dir, args.out, args.classic)
    for r in failed:
        print(f"failed cell {r.get('cell', '?')}: {r.get('error') or 'no error given'}", file=sys.stderr)
    for path in written:
        print(path)

if __name__ == "__main__":
    main()
