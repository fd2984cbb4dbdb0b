"""The essays' claims, each judged from this run's figures by a stated rule.

Every claim is a function of the Run returning a dict: title, essay (the claim in the essays'
words), tables (the measurement that tests it), verdict (one of VERDICTS), rule (the rule, as the
page states it) and reading (the figures the verdict came from). A claim whose cells are not in
the run says which profile measures it."""
import re
from collections import OrderedDict

from .data import fmt, num, stat, ctx_per_request

HOLDS, NOT, CAVEAT, UNMEASURED = "holds", "does not hold", "holds with a caveat", "not measured in this run"
VERDICTS = (HOLDS, NOT, CAVEAT, UNMEASURED)


def rows_of(run, workload, model=None, conns=None, cores=None):
    """{connections: [ok lines]} of closed-loop cells of a workload (no idle connections held)."""
    out = {}
    for (g, c, _series), rs in run.cells.items():
        if g != workload or not isinstance(c, int) or (conns is not None and c not in conns):
            continue
        rs = [r for r in rs if model is None or r.get("model") == model]
        if cores is not None:
            rs = [r for r in rs if len((r.get("server") or {}).get("cpus") or [0]) == cores]
        if rs:
            out.setdefault(c, []).extend(rs)
    return dict(sorted(out.items()))


def med(rows, getter):
    s = stat(rows, getter)
    return s["median"] if s else None


def cpu(r):
    return num(r, "server", "cpu_us_per_req")


def tput(r):
    return num(r, "throughput_rps")


def p99(r):
    return num(r, "latency_us", "p99")


def micro_figs(run):
    if not run.micro:
        return {}
    import micro_plots
    try:
        return OrderedDict((micro_plots.base_name(n), f) for n, f in micro_plots.figures(run.micro).items())
    except Exception:  # a malformed micro.json: no micro figures
        return {}


def micro_ns(figs, prefix):
    """The first row whose name starts with prefix and ran: (name, ns) or (None, None)."""
    for n, f in figs.items():
        if n.startswith(prefix) and not f["error"] and f["ns"] > 0:
            return n, f["ns"]
    return None, None


def ns(v):
    import micro_plots
    return "–" if v is None else micro_plots.fmt_ns(v)


def claim(title, essay, verdict, rule, reading, tables=(), profile=""):
    return {"title": title, "essay": essay, "verdict": verdict, "rule": rule, "reading": reading,
            "tables": list(tables), "profile": profile, "slug": re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")}


def combine(parts):
    """parts: [(measured, holds)]. All measured and holding: holds; none holding: does not hold;
    some holding, or holding with a part unmeasured: holds with a caveat."""
    measured = [h for m, h in parts if m]
    if not measured:
        return UNMEASURED
    if all(measured):
        return HOLDS if len(measured) == len(parts) else CAVEAT
    return NOT if not any(measured) else CAVEAT


def creation(run):
    figs = micro_figs(run)
    _, thread = micro_ns(figs, "create/thread")
    _, fork = micro_ns(figs, "create/fork")
    _, coro = micro_ns(figs, "create/coroutine")
    micro_ok = None not in (thread, fork, coro)
    micro_holds = micro_ok and thread >= 100 * coro and fork >= thread
    table1 = {"caption": "micro: create, run and finish one unit (median)", "headers": ["unit", "time", "× coroutine"],
              "rows": [[u, ns(v), f"×{v / coro:,.0f}" if v and coro else "–"]
                       for u, v in (("thread", thread), ("fork", fork), ("coroutine", coro))]}
    rows, ratios = [], []
    base = rows_of(run, "hello-close", "epoll")
    for model in ("threads", "fork"):
        for c, rs in rows_of(run, "hello-close", model).items():
            e, m = med(base.get(c, []), cpu), med(rs, cpu)
            ratio = m / e if e and m else None
            if ratio:
                ratios.append(ratio)
            rows.append([model, c, fmt(m, "{:.1f}", "µs"), fmt(e, "{:.1f}", "µs"), fmt(ratio, "×{:.2f}")])
    conn_ok = bool(ratios)
    conn_holds = conn_ok and min(ratios) >= 1.5
    table2 = {"caption": "hello-close (a new connection per request): server CPU per connection",
              "headers": ["model", "connections", "CPU / connection", "epoll's", "ratio"], "rows": rows}
    verdict = combine([(micro_ok, micro_holds), (conn_ok, conn_holds)])
    reading = []
    if micro_ok:
        reading.append(f"a thread costs {ns(thread)} to create and join, ×{thread / coro:,.0f} a coroutine's "
                       f"{ns(coro)}; a fork {ns(fork)}")
    else:
        reading.append("the micro creation rows are not in this run (`make micro`)")
    if conn_ok:
        reading.append(f"per new connection, threads and fork spend ×{min(ratios):.2f}–×{max(ratios):.2f} "
                       "epoll's server CPU")
    else:
        reading.append("no hello-close cells of threads or fork beside epoll (no checked-in profile runs "
                       "hello-close: add it to a profile's workloads)")
    return claim("Threads and processes are expensive to create",
                 "Creating a thread or a process per connection costs far more than an event loop's callback.",
                 verdict, "holds when (micro) a thread costs ≥ 100× a coroutine to create and a fork ≥ a thread, and "
                 "(hello-close) threads' and fork's server CPU per connection is ≥ 1.5× epoll's at every count; "
                 "one part alone holding, or the other unmeasured: holds with a caveat; neither: does not hold.",
                 "; ".join(reading) + ".", [table1, table2], "micro (`make micro`) and a profile with hello-close")


def switching(run):
    thr = rows_of(run, "hello", "threads")
    base_c = 100 if 100 in thr else (min(thr) if thr else None)
    big = [c for c in thr if c >= 1000]
    rows = [[c, fmt(med(rs, tput), "{:,.0f}"), fmt(med(rs, p99), "{:,.0f}", "µs"), fmt(med(rs, ctx_per_request), "{:.2f}"),
             fmt(med(rs, cpu), "{:.1f}", "µs")] for c, rs in thr.items()]
    t1 = {"caption": "threads model, hello (keep-alive)", "headers": ["connections (= threads)", "req/s", "p99",
                                                                      "context switches / request", "CPU / request"],
          "rows": rows}
    server_ok = base_c is not None and bool(big)
    server_holds = False
    if server_ok:
        b, top = thr[base_c], thr[max(big)]
        server_holds = (med(top, cpu) or 0) >= 1.25 * (med(b, cpu) or float("inf")) or \
            (med(top, tput) or 0) <= 0.8 * (med(b, tput) or 0)
    figs = micro_figs(run)
    ring = sorted((int(m.group(1)), f["ns"]) for n, f in figs.items()
                  if (m := re.match(r"ring/threads?/n:(\d+)", n)) and not f["error"] and f["ns"] > 0)
    t2 = {"caption": "micro: one hand-off round a ring of N threads", "headers": ["N", "per hand-off"],
          "rows": [[n, ns(v)] for n, v in ring]}
    ring_ok = len(ring) >= 2 and ring[-1][0] >= 1000
    ring_holds = ring_ok and ring[-1][1] >= 1.25 * ring[0][1]
    verdict = combine([(server_ok, server_holds), (ring_ok, ring_holds)])
    reading = []
    if server_ok:
        b, top = thr[base_c], thr[max(big)]
        reading.append(f"threads at {max(big):,} connections: {fmt(med(top, tput), '{:,.0f}')} req/s and "
                       f"{fmt(med(top, cpu), '{:.1f}')} µs/request against {fmt(med(b, tput), '{:,.0f}')} and "
                       f"{fmt(med(b, cpu), '{:.1f}')} at {base_c}")
    else:
        reading.append("no threads cells at 1,000 connections or more (profile classic)")
    if ring_ok:
        reading.append(f"a hand-off round {ring[-1][0]:,} threads costs {ns(ring[-1][1])}, ×{ring[-1][1] / ring[0][1]:.2f} "
                       f"that round {ring[0][0]}")
    else:
        reading.append("the micro ring rows up to 1,000 threads are not in this run")
    return claim("Thousands of threads make switching costly",
                 "With thousands of threads the cost of context switching dominates.", verdict,
                 "holds when the threads model at its largest count ≥ 1,000 spends ≥ 1.25× the CPU per request of 100 "
                 "connections or serves ≤ 0.8× the requests/s, and (micro) a hand-off round N ≥ 1,000 threads costs "
                 "≥ 1.25× that round 2; one part only (or one unmeasured): holds with a caveat; neither: does not hold.",
                 "; ".join(reading) + ".", [t1, t2], "classic (threads at 1,000 and 10,000) and micro")


def fds(run):
    thr, ep = rows_of(run, "hello", "threads"), rows_of(run, "hello", "epoll")
    rows, extra = [], []
    for c, rs in thr.items():
        t, f = med(rs, lambda r: num(r, "server", "threads_peak")), med(rs, lambda r: num(r, "server", "fds_peak"))
        e = med(ep.get(c, []), lambda r: num(r, "server", "fds_peak"))
        rows.append([c, fmt(t, "{:,.0f}"), fmt(f, "{:,.0f}"), fmt(e, "{:,.0f}")])
        if None not in (t, f, e) and t > 1:
            extra.append(((f - e) / (t - 1), c))
    t1 = {"caption": "hello: the threads model's threads and fds beside epoll's fds (one thread)",
          "headers": ["connections", "threads (threads model)", "fds (threads model)", "fds (epoll)"], "rows": rows}
    figs = micro_figs(run)
    unit = {k: figs.get(k, {}).get("counters", {}).get("fds_per_unit") for k in figs if k.startswith("memory/")}
    t2 = {"caption": "micro: fds per unit", "headers": ["unit", "fds each"],
          "rows": [[k[len("memory/"):], fmt(v, "{:.2f}")] for k, v in unit.items() if v is not None]}
    per_thread = next((v for k, v in unit.items() if "thread" in k and v is not None), None)
    if per_thread is not None:
        verdict = HOLDS if per_thread >= 0.9 else NOT if per_thread < 0.5 else CAVEAT
        reading = f"a blocked thread holds {per_thread:.2f} fds (micro)"
    elif extra:
        worst = max(extra)
        verdict = HOLDS if worst[0] >= 0.9 else NOT if worst[0] < 0.5 else CAVEAT
        reading = (f"per thread beyond the first, the threads model holds {worst[0]:.2f} more fds than epoll at "
                   f"{worst[1]:,} connections: the fds follow the connections, which both models hold")
    else:
        verdict, reading = UNMEASURED, "neither the micro memory rows nor threads and epoll at the same count"
    if per_thread is not None and extra:
        reading += f"; in the servers, {max(extra)[0]:.2f} extra fds per thread against epoll"
    return claim("“Each thread uses a file descriptor”",
                 "Each thread uses a file descriptor, so a thread per connection runs out of fds.", verdict,
                 "holds when a thread holds ≥ 0.9 fds (micro memory/thread, else: the threads model's fds less "
                 "epoll's at the same count, per thread); < 0.5: does not hold (connections use fds, threads do not); "
                 "between: holds with a caveat.", reading + ".", [t1, t2], "quick (threads and epoll) or micro")


def idle_limit(run):
    rows, held, largest = [], [], 0
    for (g, c, series), rs in run.cells.items():
        if not all(isinstance(r.get("idle"), dict) for r in rs):
            continue
        model = rs[0].get("model")
        if model not in ("epoll", "uring", "libuv", "asio", "asio-coro", "nginx"):
            continue
        req = med(rs, lambda r: num(r, "idle", "requested"))
        est = med(rs, lambda r: num(r, "idle", "established"))
        drop = max(num(r, "idle", "dropped") or 0 for r in rs)
        per = med(rs, lambda r: num(r, "idle", "pss_bytes_per_idle"))
        rows.append([model, fmt(req, "{:,.0f}"), fmt(est, "{:,.0f}"), f"{drop:,.0f}", fmt(per, "{:,.0f}", "B")])
        if req:
            held.append((req, model, est is not None and est >= req and drop == 0))
            largest = max(largest, req)
    t = {"caption": "event loops holding idle keep-alive connections", "headers": ["model", "idle requested",
                                                                                  "established", "dropped",
                                                                                  "PSS per idle connection"],
         "rows": sorted(rows)}
    limit = (run.meta.get("machine") or {}).get("nofile") or (run.meta.get("limits") or {}).get("nofile")
    fd_note = (f"each connection is an fd, and the server's fd limit ({limit}) binds before memory" if limit else
               "each connection is an fd: the process's fd limit (RLIMIT_NOFILE, not recorded in meta.json) binds "
               "before memory does")
    if not held:
        return claim("An event loop is limited only by memory", "An event loop's only limit on connections is memory.",
                     UNMEASURED, "holds with a caveat when every event loop measured held all its idle connections "
                     "(none dropped) at 10,000: the caveat is the fd limit; any not held: does not hold.",
                     "no event-loop cell with idle connections held.", [t], "quick (10,000 idle) or c10k")
    if not all(h for *_, h in held):
        verdict = NOT
    else:
        verdict = CAVEAT
    reading = (f"{sum(h for *_, h in held)} of {len(held)} event-loop cells held all their idle connections, up to "
               f"{largest:,.0f}; {fd_note}")
    if largest < 10000:
        reading += f"; only {largest:,.0f} idle connections were measured, not 10,000 (profile quick or c10k)"
    return claim("An event loop is limited only by memory", "An event loop's only limit on connections is memory.",
                 verdict, "holds with a caveat when every event loop measured held all its idle connections (none "
                 "dropped), the caveat being the fd limit (and fewer than 10,000 measured, if so); any not held: does "
                 "not hold.", reading + ".", [t], "quick (10,000 idle) or c10k")


def nginx_apache(run):
    ng = rows_of(run, "hello", "nginx")
    apaches = sorted({r.get("model") for r in run.rows if str(r.get("model", "")).startswith("apache")})
    pss = lambda r: num(r, "server", "pss_kib_peak")  # noqa: E731
    rows, wins, total = [], 0, 0
    for c, rs in ng.items():
        if c < 1000:
            continue
        n = med(rs, pss)
        for a in apaches:
            ar = rows_of(run, "hello", a).get(c)
            if not ar or n is None:
                continue
            v = med(ar, pss)
            total += 1
            wins += v is not None and n < v
            rows.append([c, a, fmt(n / 1024, "{:.1f}", "MiB"), fmt(v / 1024 if v else None, "{:.1f}", "MiB")])
    t = {"caption": "hello: PSS peak, nginx beside each Apache MPM", "headers": ["connections", "Apache MPM", "nginx",
                                                                                "Apache"], "rows": rows}
    rule = ("holds when nginx's median PSS is below every Apache MPM's at every count ≥ 1,000 where both ran; at "
            "some of them: holds with a caveat; at none: does not hold.")
    title, essay = "Nginx outshines Apache in memory under high load", \
        "Nginx uses far less memory than Apache under high load."
    if not total:
        return claim(title, essay, UNMEASURED, rule, "no nginx and Apache cells at 1,000 connections or more.", [t],
                     "classic (`make bench-classic`)")
    verdict = HOLDS if wins == total else NOT if wins == 0 else CAVEAT
    return claim(title, essay, verdict, rule, f"nginx used less memory in {wins} of {total} comparisons.", [t],
                 "classic")


def thousands(run):
    rows, judged = [], []
    for model in ("epoll", "nginx"):
        for c, rs in rows_of(run, "hello", model).items():
            if c < 10000:
                continue
            est = med(rs, lambda r: num(r, "connections_established"))
            starved = max(num(r, "fairness", "starved_connections") or 0 for r in rs)
            errs = max(num(r, "errors_total") or 0 for r in rs)
            rows.append([model, f"{c:,}", fmt(est, "{:,.0f}"), f"{starved:,.0f}", f"{errs:,.0f}",
                         fmt(med(rs, p99), "{:,.0f}", "µs")])
            judged.append((est is not None and est >= 0.95 * c, starved, c, med(rs, p99)))
    failed = [r for r in run.failed_rows if r.get("model") in ("epoll", "nginx") and r.get("workload") == "hello"
              and (r.get("connections") or 0) >= 10000]
    for r in failed:
        rows.append([r.get("model"), f"{r.get('connections'):,}", "failed", "–", "–", str(r.get("error") or "")[:60]])
        judged.append((False, 0, r.get("connections"), None))
    t = {"caption": "hello at 10,000 connections and more", "headers": ["model", "connections", "established",
                                                                       "got no answer", "errors", "p99"], "rows": rows}
    rule = ("holds when epoll and nginx (those run) established ≥ 95 % of 10,000+ connections and every one got an "
            "answer in the window; all connected but ≤ 5 % unanswered: holds with a caveat; otherwise does not hold.")
    title, essay = "An event loop serves thousands of requests concurrently", \
        "One event loop serves thousands of concurrent connections."
    if not judged:
        return claim(title, essay, UNMEASURED, rule, "no epoll or nginx cell at 10,000 connections.", [t],
                     "classic (10,000 connections)")
    if all(ok and s == 0 for ok, s, *_ in judged):
        verdict = HOLDS
    elif all(ok and s <= 0.05 * c for ok, s, c, _ in judged):
        verdict = CAVEAT
    else:
        verdict = NOT
    worst = max((p for *_, p in judged if p is not None), default=None)
    return claim(title, essay, verdict, rule, f"{sum(ok and s == 0 for ok, s, *_ in judged)} of {len(judged)} cells "
                 f"answered every connection; the worst p99 was {fmt(worst, '{:,.0f}', 'µs')}.", [t], "classic")


def uvloop(run):
    a, u = rows_of(run, "hello", "py-asyncio"), rows_of(run, "hello", "py-uvloop")
    rows, judged = [], []
    for c in sorted(set(a) & set(u)):
        sa, su = stat(a[c], tput), stat(u[c], tput)
        ca, cu = med(a[c], cpu), med(u[c], cpu)
        if not sa or not su:
            continue
        ratio = su["median"] / sa["median"]
        disjoint = su["lo"] > sa["hi"]
        bound = any(r.get("client_bound") for r in a[c] + u[c])
        rows.append([c, fmt(sa["median"], "{:,.0f}"), fmt(su["median"], "{:,.0f}"), f"×{ratio:.2f}",
                     fmt(ca, "{:.1f}", "µs"), fmt(cu, "{:.1f}", "µs"), "yes" if bound else "no"])
        judged.append((ratio, disjoint, bound))
    t = {"caption": "hello: Python asyncio's default loop and uvloop",
         "headers": ["connections", "asyncio req/s", "uvloop req/s", "ratio", "asyncio CPU/req", "uvloop CPU/req",
                     "client-bound"], "rows": rows}
    rule = ("holds when uvloop serves ≥ 1.1× asyncio's requests/s at every shared count with min–max ranges apart "
            "and no cell client-bound; faster but within that margin, the spread or client-bound: holds with a caveat; "
            "not faster: does not hold.")
    title, essay = "uvloop is faster than asyncio", "uvloop, a libuv-based event loop, makes asyncio servers faster than the default loop."
    if not judged:
        return claim(title, essay, UNMEASURED, rule, "py-asyncio and py-uvloop were not both run at one count.", [t],
                     "runtimes (`make bench PROFILE=runtimes`)")
    if any(r <= 1.0 for r, *_ in judged):
        verdict = NOT
    elif all(r >= 1.1 and d and not b for r, d, b in judged):
        verdict = HOLDS
    else:
        verdict = CAVEAT
    return claim(title, essay, verdict, rule, "uvloop ÷ asyncio requests/s: " +
                 ", ".join(f"×{r:.2f}" for r, *_ in judged) + ".", [t], "runtimes")


def gil(run):
    work = sorted({k[0] for k in run.cells if re.fullmatch(r"work-\d+", str(k[0]))})
    rows, gains = [], {}
    for w in work:
        for model in ("py-threads", "threads"):
            one, two = rows_of(run, w, model, cores=1), rows_of(run, w, model, cores=2)
            for c in sorted(set(one) & set(two)):
                t1, t2 = med(one[c], tput), med(two[c], tput)
                if t1 and t2:
                    rows.append([w, model, c, fmt(t1, "{:,.0f}"), fmt(t2, "{:,.0f}"), f"×{t2 / t1:.2f}"])
                    gains.setdefault(model, []).append(t2 / t1)
    t = {"caption": "CPU work per request on one core and on two", "headers": ["workload", "model", "connections",
                                                                              "1 core req/s", "2 cores req/s", "gain"],
         "rows": rows}
    rule = ("holds when Python threads gain ≤ 1.2× from a second core at their largest count while C++ threads gain "
            "≥ 1.5×; Python threads held but C++ threads not measured or not gaining: holds with a caveat; Python "
            "threads gaining more than 1.2×: does not hold.")
    title, essay = "The GIL limits Python threads", "Python threads cannot use a second core: the GIL."
    if "py-threads" not in gains:
        return claim(title, essay, UNMEASURED, rule, "no work-US cells of py-threads on one core and on two.", [t],
                     "gil (`make bench PROFILE=gil`)")
    py, cc = gains["py-threads"][-1], (gains.get("threads") or [None])[-1]
    verdict = NOT if py > 1.2 else HOLDS if cc is not None and cc >= 1.5 else CAVEAT
    return claim(title, essay, verdict, rule, f"a second core gives Python threads ×{py:.2f}" +
                 (f", C++ threads ×{cc:.2f}" if cc else "") + ".", [t], "gil")


def gather(run):
    rows, judged = [], []
    for (g, c, series), rs in sorted(run.cells.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][2]))):
        m = re.fullmatch(r"fanout-(\d+)x(\d+)", str(g))
        if not m or not isinstance(c, int):
            continue
        k, ms = int(m.group(1)), int(m.group(2))
        p50 = med(rs, lambda r: num(r, "latency_us", "p50"))
        rps, util = med(rs, tput), med(rs, lambda r: num(r, "server", "cpu_util"))
        if p50 is None or rps is None:
            continue
        serial = c / (k * ms / 1000)      # requests/s if each connection's K waits ran one after another
        saturated = util is not None and util >= 0.9
        if p50 / 1000 < 2 * ms or rps > 1.1 * serial:
            found = "overlap"
        elif not saturated and p50 / 1000 >= k * ms / 2:
            found = "serial"
        else:
            found = "undecided"
        rows.append([g, series, c, fmt(p50 / 1000, "{:.1f}", "ms"), fmt(rps, "{:,.0f}"), fmt(serial, "{:,.0f}"),
                     fmt(util, "{:.0%}"), found])
        judged.append((str(series).startswith("py-"), found, p50 / 1000, series))
    t = {"caption": "fan-out: K backend calls of MS each per request",
         "headers": ["workload", "model", "connections", "p50", "req/s", "req/s if the waits ran one after another",
                     "server CPU busy", "found"], "rows": rows}
    rule = ("per model: the waits overlap when p50 < 2×MS, or when it serves more than 1.1× the requests/s that "
            "waits one after another would allow (connections ÷ K×MS); they do not when the server's CPU is not "
            "saturated (< 90 %) and p50 ≥ K×MS/2; otherwise (CPU-bound: p50 is the CPU queue) undecided. Judged on the "
            "Python asyncio models: all overlap: holds; any serial: does not hold; some undecided: holds with a "
            "caveat; all undecided: not measured.")
    title, essay = "asyncio.gather lets many waits overlap", \
        "asyncio.gather runs 10 backend calls of 20 ms at once: the request takes about 20 ms, not 200 ms."
    py = [j for j in judged if j[0]]
    if not py:
        return claim(title, essay, UNMEASURED, rule, "no fanout-KxMS cells of a Python asyncio model" +
                     (" (the other models: " + ", ".join(f"{s} {f}" for _, f, _, s in judged) + ")" if judged else "")
                     + ".", [t], "runtimes (fanout-10x20)")
    found = [f for _, f, _, _ in py]
    if "serial" in found:
        verdict = NOT
    elif all(f == "overlap" for f in found):
        verdict = HOLDS
    elif "overlap" in found:
        verdict = CAVEAT
    else:
        verdict = UNMEASURED
    reading = "; ".join(f"{s}: {f} (p50 {p:.0f} ms)" for _, f, p, s in py)
    if "undecided" in found:
        reading += ("; an undecided cell's server was CPU-bound, so its latency is mostly the queue for the CPU — "
                    "fewer connections would show the overlap itself")
    return claim(title, essay, verdict, rule, reading + ".", [t], "runtimes (fanout-10x20, at fewer connections "
                 "than saturate asyncio's CPU)")


def dahl(run):
    rows_in = ((run.micro or {}).get("concbench") or {}).get("latency_table") or {}
    rows_in = rows_in.get("rows", []) if isinstance(rows_in, dict) else []
    rows, pairs = [], []
    for r in rows_in:
        ec, c = r.get("essay_cycles"), r.get("cycles")
        rows.append([r.get("device", "?"), fmt(ec, "{:,.0f}"), ns(r.get("ns")), fmt(c, "{:,.0f}"),
                     fmt(c / ec if ec and c else None, "×{:.2g}")])
        if ec and c:
            pairs.append((r.get("device"), ec, c))
    t = {"caption": "Dahl's table: the essay's cycles beside this machine's", "headers": ["device", "essay cycles",
                                                                                         "measured", "cycles here",
                                                                                         "here ÷ essay"], "rows": rows}
    rule = ("holds when the rows measured here rank as the essay's do (L1 < L2 < RAM < disk) and each is within 10× "
            "of the essay's cycles; ranked alike but some row off by more than 10×: holds with a caveat; ranked "
            "otherwise: does not hold.")
    title, essay = "Dahl's latency table", "L1 3 cycles, L2 14, RAM 250, disk 41,000,000, network 240,000,000."
    if len(pairs) < 2:
        return claim(title, essay, UNMEASURED, rule, run.micro_problem or "the latency table has fewer than two rows "
                     "with both the essay's and measured cycles.", [t], "micro (`make micro`; `make bench` runs it)")
    by_essay = [d for d, *_ in sorted(pairs, key=lambda p: p[1])]
    by_here = [d for d, *_ in sorted(pairs, key=lambda p: p[2])]
    off = [d for d, ec, c in pairs if not 0.1 <= c / ec <= 10]
    verdict = NOT if by_essay != by_here else CAVEAT if off else HOLDS
    return claim(title, essay, verdict, rule, f"measured order: {' < '.join(by_here)}" +
                 (f"; more than 10× from the essay: {', '.join(off)}" if off else "") + ".", [t], "micro")


CLAIMS = [creation, switching, fds, idle_limit, nginx_apache, thousands, uvloop, gil, gather, dahl]


def judge_all(run):
    out = []
    for f in CLAIMS:
        try:
            out.append(f(run))
        except Exception as e:  # a claim that cannot be judged says so; the page goes on
            out.append(claim(f.__name__, "", UNMEASURED, "", f"could not be judged: {type(e).__name__}: {e}"))
    return out
