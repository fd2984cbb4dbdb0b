"""The micro suite's charts, from a run's micro.json (Google Benchmark's JSON, merged by
`concbench micro`). plot.py calls draw_all(); every figure is the median of the repetitions
(ns per operation: the `per_op` counter where one iteration holds several operations), with
min-max whiskers; a skipped row is named on its chart with its reason.

  micro-creation.png   what creating and finishing one unit costs (thread, process, coroutine, ...)
  micro-switching.png  one hand-off between two parties (pinned to one CPU and to two), and a
                       token passed round a ring of N threads vs N coroutines
  micro-waiting.png    one wake-up with N fds watched and one ready: select, poll, epoll, io_uring
  micro-memory.png     memory and fds per unit: thread, process, coroutine, epoll registration,
                       TCP connection (user-space PSS and kernel memory)
  latency-table.png    Dahl's table: the essay's cycles beside ours, log scale
"""
import json
import re
from collections import OrderedDict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def run_ns(b):
    if isinstance(b.get("per_op"), (int, float)):
        return b["per_op"] * 1e9
    return b.get("real_time", 0) * UNIT_NS.get(b.get("time_unit", "ns"), 1.0)


def figures(micro):
    """name -> {"ns": median, "lo", "hi", "samples": [...], "error", "label", "counters": {...}}"""
    out = OrderedDict()
    for b in micro.get("benchmarks", []):
        name = b.get("run_name", b.get("name", ""))
        f = out.setdefault(name, {"samples": [], "error": "", "label": "", "counters": {}, "median": None})
        if b.get("error_occurred"):
            f["error"] = b.get("error_message", "skipped")
            continue
        if b.get("label"):
            f["label"] = b["label"]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                f["median"] = run_ns(b)
            continue
        f["samples"].append(run_ns(b))
        for k, v in b.items():
            if isinstance(v, (int, float)) and k not in (
                    "family_index", "per_family_instance_index", "repetitions", "repetition_index", "threads",
                    "iterations", "real_time", "cpu_time"):
                f["counters"].setdefault(k, []).append(v)
    for f in out.values():
        s = sorted(f["samples"])
        if f["median"] is None and s:
            n = len(s)
            f["median"] = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        f["ns"] = f["median"] or 0
        f["lo"], f["hi"] = (s[0], s[-1]) if s else (0, 0)
        f["counters"] = {k: sorted(v)[len(v) // 2] for k, v in f["counters"].items()}
    return out


def base_name(name):
    """'wait/epoll/fds:100/min_time:0.200' -> 'wait/epoll/fds:100' (Google Benchmark's suffixes off)."""
    return re.sub(r"/((min_time|iterations|repeats|threads):[^/]*|manual_time|real_time|process_time)(?=/|$)", "", name)


def arg(name, key):
    m = re.search(rf"/{key}:(\d+)", name)
    return int(m.group(1)) if m else None


def fmt_ns(ns):
    if ns < 1e3:
        return f"{ns:.3g} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.3g} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e9:.3g} s"


def skipped_note(fig, skipped, y=0.005):
    if skipped:
        text = "skipped: " + "; ".join(f"{n} ({e})" for n, e in skipped[:6])
        if len(skipped) > 6:
            text += f"; and {len(skipped) - 6} more"
        fig.text(0.01, y, text, fontsize=7, color="firebrick", ha="left", va="bottom", wrap=True)


def whiskers(f):
    return [[max(f["ns"] - f["lo"], 0)], [max(f["hi"] - f["ns"], 0)]]


def hbars(ax, items, xlabel):
    """items: [(label, fig)] drawn as horizontal bars on a log axis, value printed at the bar's end."""
    items = [(lab, f) for lab, f in items if f["ns"] > 0]
    for i, (lab, f) in enumerate(items):
        ax.barh(i, f["ns"], color="tab:blue", alpha=0.8, xerr=whiskers(f), capsize=3)
        ax.text(f["hi"] * 1.15, i, fmt_ns(f["ns"]), va="center", fontsize=8)
    ax.set_yticks(range(len(items)), [lab for lab, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    if items:
        ax.set_xlim(min(f["lo"] or f["ns"] for _, f in items) / 3, max(f["hi"] for _, f in items) * 20)
    ax.grid(axis="x", which="both", alpha=0.25)


def creation(figs, sub, out):
    rows = [(base_name(n)[len("create/"):], f) for n, f in figs.items() if n.startswith("create/")]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.8))
    hbars(ax, rows, "ns to create, run and finish one (log scale)")
    fig.suptitle("What creating one unit costs", fontsize=12)
    ax.set_title(sub, fontsize=8, color="dimgrey")
    skipped_note(fig, [(lab, f["error"]) for lab, f in rows if f["error"]])
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, out, "micro-creation")


def switching(figs, sub, out):
    pp = [(base_name(n)[len("switch/"):], f) for n, f in figs.items() if n.startswith("switch/")]
    ring = {}
    for n, f in figs.items():
        if n.startswith("ring/"):
            kind = n.split("/")[1]
            ring.setdefault(kind, []).append((arg(n, "n"), f, n))
    if not pp and not ring:
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, max(4.8, 0.42 * len(pp) + 1.8)))
    hbars(a1, pp, "ns per hand-off (log scale)")
    a1.set_title("one hand-off between two parties (cpus:1 both on one CPU, cpus:2 on two)", fontsize=9)
    skipped = [(lab, f["error"]) for lab, f in pp if f["error"]]
    colours = {"threads": "tab:red", "coroutines": "tab:green"}
    for kind, pts in sorted(ring.items()):
        pts = sorted((p for p in pts if p[0] is not None), key=lambda p: p[0])
        skipped += [(n, f["error"]) for _, f, n in pts if f["error"]]
        pts = [p for p in pts if not p[1]["error"] and p[1]["ns"] > 0]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1]["ns"] for p in pts]
        err = [[y - p[1]["lo"] for y, p in zip(ys, pts)], [p[1]["hi"] - y for y, p in zip(ys, pts)]]
        a2.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{kind} (N of them, one token)",
                    color=colours.get(kind))
        a2.annotate(fmt_ns(ys[-1]), (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("N parties in the ring")
    a2.set_ylabel("ns per hand-off")
    a2.set_title("the essays' case: a token passed round N threads vs N coroutines", fontsize=9)
    a2.grid(which="both", alpha=0.25)
    if ring:
        a2.legend(fontsize=8)
    fig.suptitle(f"What one switch costs\n{sub}", fontsize=11)
    skipped_note(fig, skipped)
    fig.tight_layout(rect=(0, 0.04 if skipped else 0, 1, 1))
    return save(fig, out, "micro-switching")


def waiting(figs, sub, out):
    lines = {}
    for n, f in figs.items():
        if n.startswith("wait/"):
            lines.setdefault(n.split("/")[1], []).append((arg(n, "fds"), f, n))
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(8.5, 5.4))
    skipped = []
    colours = {"select": "tab:purple", "poll": "tab:orange", "epoll": "tab:blue", "uring_poll": "tab:green"}
    for kind, pts in sorted(lines.items()):
        pts = sorted((p for p in pts if p[0] is not None), key=lambda p: p[0])
        stopped = [p for p in pts if p[1]["error"]]
        skipped += [(base_name(n), f["error"]) for _, f, n in stopped[:1]]
        pts = [p for p in pts if not p[1]["error"] and p[1]["ns"] > 0]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1]["ns"] for p in pts]
        err = [[y - p[1]["lo"] for y, p in zip(ys, pts)], [p[1]["hi"] - y for y, p in zip(ys, pts)]]
        growth = f" — ×{ys[-1] / ys[0]:.1f} from {xs[0]:,} to {xs[-1]:,} fds" if len(ys) > 1 and ys[0] > 0 else ""
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=kind + growth, color=colours.get(kind))
        if stopped:
            ax.annotate(f"stops: {stopped[0][1]['error'][:60]}", (xs[-1], ys[-1]), textcoords="offset points",
                        xytext=(6, -12), fontsize=7, color=colours.get(kind, "black"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fds watched (one of them ready)")
    ax.set_ylabel("ns per wake-up (log scale)")
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.suptitle("One wake-up with N fds watched: why an epoll loop scales and select's does not", fontsize=11)
    ax.set_title(sub, fontsize=8, color="dimgrey")
    skipped_note(fig, skipped)
    fig.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 1))
    return save(fig, out, "micro-waiting")


def memory(figs, sub, out):
    rows = [(base_name(n)[len("memory/"):], f) for n, f in figs.items() if n.startswith("memory/")]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 2))
    labels = []
    skipped = []
    for i, (lab, f) in enumerate(rows):
        c = f["counters"]
        if f["error"]:
            skipped.append((lab, f["error"]))
        user = c.get("pss_kib_per_unit", 0)
        kern = c.get("kernel_kib_per_unit", 0)
        ax.barh(i, max(user, 1e-3), color="tab:blue", alpha=0.8, label="user-space PSS" if i == 0 else None)
        ax.barh(i, max(kern, 1e-3), left=max(user, 1e-3), color="tab:grey", alpha=0.8,
                label="kernel (stacks, page tables, slab)" if i == 0 else None)
        fds = c.get("fds_per_unit")
        note = f"{user + kern:.3g} KiB" + (f", {fds:.3g} fd" if fds is not None else "")
        ax.text((user + kern) * 1.15 if user + kern > 0 else 1e-3, i, note, va="center", fontsize=8)
        labels.append(lab + (f" (×{c['units']:,.0f})" if "units" in c else ""))
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("KiB per unit (log scale); fds per unit beside each bar")
    ax.set_xlim(1e-3, max([c["counters"].get("pss_kib_per_unit", 0) + c["counters"].get("kernel_kib_per_unit", 0)
                            for _, c in rows] + [1]) * 60)
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("What one unit holds: memory and file descriptors", fontsize=12)
    ax.set_title(sub, fontsize=8, color="dimgrey")
    skipped_note(fig, skipped)
    fig.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 1))
    return save(fig, out, "micro-memory")


def chase_curve(ax, micro, figs):
    """ns per dependent load against the working set: the cache levels as steps."""
    pts = sorted((arg(n, "bytes"), f) for n, f in figs.items()
                 if n.startswith("latency/chase/") and not f["error"] and f["ns"] > 0)
    if not pts:
        ax.axis("off")
        return
    xs = [p[0] / 1024 for p in pts]
    ys = [p[1]["ns"] for p in pts]
    err = [[y - p[1]["lo"] for y, p in zip(ys, pts)], [p[1]["hi"] - y for y, p in zip(ys, pts)]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color="tab:blue")
    ctx = micro.get("context", {})
    for key, name in (("cache_l1d_kib", "L1d"), ("cache_l2_kib", "L2")):
        try:
            kib = float(ctx.get(key, 0))
        except (TypeError, ValueError):
            kib = 0
        if kib > 0:
            ax.axvline(kib, color="grey", ls=":", lw=1)
            ax.text(kib, max(ys), f" {name} {kib:,.0f} KiB", fontsize=7, color="dimgrey", va="top")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([16, 256, 4096, 65536, 1048576], ["16 KiB", "256 KiB", "4 MiB", "64 MiB", "1 GiB"])
    ax.set_xlabel("working set (random pointer chase over 64-byte lines)")
    ax.set_ylabel("ns per dependent load")
    ax.set_title("where the table's memory rows come from", fontsize=9)
    ax.grid(which="both", alpha=0.25)


def latency_table(micro, figs, sub, out):
    t = micro.get("concbench", {}).get("latency_table", {})
    rows = t.get("rows", [])
    if not rows:
        return []
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 5.6), gridspec_kw={"width_ratios": [3, 2]})
    chase_curve(ax2, micro, figs)
    ys = range(len(rows))
    for i, r in enumerate(rows):
        if r.get("essay_cycles"):
            ax.barh(i - 0.2, r["essay_cycles"], height=0.38, color="lightgrey", edgecolor="grey",
                    label="the essay (2009)" if "essay" not in ax.get_legend_handles_labels()[1][-1:] else None)
        if r.get("cycles"):
            ax.barh(i + 0.2, r["cycles"], height=0.38, color="tab:blue",
                    label="measured here" if i == 0 else None)
            cyc = f"{r['cycles']:,.0f}" if r["cycles"] >= 10 else f"{r['cycles']:.2g}"
            ax.text(r["cycles"] * 1.2, i + 0.2, f"{cyc} cycles ({fmt_ns(r['ns'])})", va="center", fontsize=7)
        elif not r.get("essay_cycles") or r["device"] == "network":
            ax.text(1.2, i + 0.2, r.get("what", ""), va="center", fontsize=7, color="dimgrey")
    ax.set_yticks(list(ys), [r["device"] for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(1, 1e10)
    ax.set_xlabel(f"CPU cycles (log scale; clock measured at {t.get('measured_mhz', 0):.0f} MHz)")
    handles, labels = ax.get_legend_handles_labels()
    seen = OrderedDict((lab, h) for h, lab in zip(handles, labels) if lab)
    ax.legend(seen.values(), seen.keys(), fontsize=8, loc="upper right")
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.suptitle("Dahl's latency table: the essay's cycles beside this machine's\n"
                 "(the essay's network row is a WAN round trip; loopback is not that)", fontsize=11)
    ax.set_title(sub, fontsize=8, color="dimgrey")
    fig.tight_layout()
    return save(fig, out, "latency-table")


def save(fig, out, stem):
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=120)
        paths.append(p)
    plt.close(fig)
    return paths


def subtitle(micro):
    c = micro.get("context", {})
    cc = micro.get("concbench", {})
    parts = [c.get("host_name", ""), f"{c.get('num_cpus', '?')} CPUs", c.get("kernel", ""),
             f"clock {c.get('measured_mhz', '?')} MHz", c.get("date", "")[:16],
             f"{cc.get('repetitions', '?')} repetition(s), min-max whiskers"]
    return " · ".join(p for p in parts if p)


def draw_all(path, out):
    micro = json.loads(path.read_text())
    figs = OrderedDict((base_name(n), f) for n, f in figures(micro).items())
    sub = subtitle(micro)
    written = []
    for draw in (creation, switching, waiting, memory):
        written += draw(figs, sub, out)
    written += latency_table(micro, figs, sub, out)
    return written
