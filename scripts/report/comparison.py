"""Two runs side by side, cell by cell: the ratio of each figure's medians (B ÷ A) and whether the
difference exceeds the repetitions' spread — their min–max ranges do not overlap — with the
two-sided exact Mann-Whitney U p-value beside it (the test Google Benchmark's compare.py uses)."""
import itertools
import math

from .data import METRICS, stat

ALPHA = 0.05


def mann_whitney_p(a, b):
    """Two-sided p of the Mann-Whitney U test: exact by enumeration for small samples, else the
    normal approximation. None when a side has no value."""
    if not a or not b:
        return None
    pooled = sorted(a + b)
    ranks = {}
    for v in set(pooled):
        idx = [i + 1 for i, x in enumerate(pooled) if x == v]
        ranks[v] = sum(idx) / len(idx)
    na, nb = len(a), len(b)
    u = sum(ranks[v] for v in a) - na * (na + 1) / 2
    mean = na * nb / 2
    allr = [ranks[v] for v in pooled]
    if math.comb(na + nb, na) <= 200000:
        dev = abs(u - mean)
        hits = total = 0
        for combo in itertools.combinations(range(na + nb), na):
            uu = sum(allr[i] for i in combo) - na * (na + 1) / 2
            hits += abs(uu - mean) >= dev - 1e-9
            total += 1
        return hits / total
    sd = math.sqrt(na * nb * (na + nb + 1) / 12)
    z = (abs(u - mean) - 0.5) / sd if sd else 0
    return math.erfc(z / math.sqrt(2))


def min_p(na, nb):
    """The smallest two-sided p the exact U test can give with these sample sizes."""
    return 2 / math.comb(na + nb, na) if na and nb else 1.0


def compare(run_a, run_b):
    """{"shared": [{key, metrics: [{name, a, b, ratio, differs, p, better}]}], "only_a": [...], "only_b": [...],
    "test": text}"""
    shared_keys = sorted(set(run_a.cells) & set(run_b.cells), key=lambda k: (str(k[0]), k[1] or 0, str(k[2])))
    out = []
    for key in shared_keys:
        ms = []
        for name, getter, unit, f, better in METRICS:
            sa, sb = stat(run_a.cells[key], getter), stat(run_b.cells[key], getter)
            if not sa or not sb:
                continue
            ratio = sb["median"] / sa["median"] if sa["median"] else None
            spread = sa["n"] > 1 or sb["n"] > 1
            differs = spread and (sb["lo"] > sa["hi"] or sb["hi"] < sa["lo"])
            p = mann_whitney_p(sa["values"], sb["values"])
            improved = None
            if differs and ratio is not None:
                improved = (ratio < 1) if better == "low" else (ratio > 1)
            ms.append({"name": name, "unit": unit, "a": f.format(sa["median"]), "b": f.format(sb["median"]),
                       "ratio": ratio, "differs": differs, "p": p, "na": sa["n"], "nb": sb["n"],
                       "spread": spread, "improved": improved,
                       "can_reach": min_p(sa["n"], sb["n"]) < ALPHA})
        out.append({"key": key, "metrics": ms})
    label = lambda k: f"{k[0]} c={k[1]} {k[2]}"  # noqa: E731
    return {"shared": out,
            "only_a": [label(k) for k in sorted(set(run_a.cells) - set(run_b.cells), key=str)],
            "only_b": [label(k) for k in sorted(set(run_b.cells) - set(run_a.cells), key=str)],
            "profiles": (run_a.profile, run_b.profile),
            "test": ("a difference exceeds the spread when the two runs' min–max ranges over their repetitions do not "
                     "overlap (with one repetition on both sides there is no spread and nothing is called different); "
                     f"p is the two-sided exact Mann-Whitney U test's (Google Benchmark's compare.py), which with "
                     f"fewer than 4 repetitions a side cannot fall below {ALPHA}.")}


def text(result, name_a, name_b):
    """The comparison as plain text lines (compare.py prints them)."""
    lines = [f"compare A = {name_a} (profile {result['profiles'][0]})  B = {name_b} (profile {result['profiles'][1]})",
             "ratio = B ÷ A of the medians; '*' = the difference exceeds the repetitions' spread", ""]
    head = f"{'cell':44} {'figure':24} {'A':>12} {'B':>12} {'B/A':>7}  {'p (U)':>6}"
    lines.append(head)
    lines.append("-" * len(head))
    for c in result["shared"]:
        label = f"{c['key'][0]} c={c['key'][1]} {c['key'][2]}"
        for m in c["metrics"]:
            ratio = f"{m['ratio']:.3f}" if m["ratio"] is not None else "–"
            p = f"{m['p']:.3f}" if m["p"] is not None and m["spread"] else "–"
            lines.append(f"{label[:44]:44} {m['name'][:24]:24} {m['a']:>12} {m['b']:>12} {ratio:>7}{'*' if m['differs'] else ' '} {p:>6}")
            label = ""
    if not result["shared"]:
        lines.append("(no cell in common)")
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if result[key]:
            lines.append("")
            lines.append(f"only in {side} ({len(result[key])}): " + "; ".join(result[key]))
    lines += ["", "test: " + result["test"]]
    return lines
