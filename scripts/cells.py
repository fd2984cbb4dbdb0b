"""What plot.py and summary.py read alike from a concbench result line (one cell's JSON object).

  num(row, *keys)            row[k1][k2]... as a float, or None
  is_client_bound(row)       the client used >= 90 % of its CPU
  is_starved(row)            some connections got no answer in the whole window
  is_disturbed(row)          the kept attempt was still disturbed after its re-runs ("disturbed")
  disturbance(row)           why, in a few words ("disturbed_by", else from "interference")
  reruns(row)                how many times the cell was re-run ("attempts" - 1)
  cv(values)                 coefficient of variation: population stdev / mean (None for n < 2)
  stop_reason(row, ...)      why a cell does not count as reaching its connection count
  starved_note(row)          why some connections of a cell that did got no answer

Every key is optional: lines written before a key existed read as they always did.
"""
import statistics

REACHED = 0.95       # a count is reached when at least this share of its connections was established
STARVED_STOP = 0.5   # ... and at most this share of those got no answer at all in the window
WORKERS_SLACK = 3    # answers stopped "at the server's workers": within this many (or 5 %) of them

DISTURBED_NOTE = "◇ disturbed: other work or a slowed CPU during the cell (see summary)"


def num(row, *keys):
    """row[k1][k2]... as a float, or None if absent or not a number."""
    for k in keys:
        if not isinstance(row, dict) or k not in row:
            return None
        row = row[k]
    return float(row) if isinstance(row, (int, float)) and not isinstance(row, bool) else None


def is_client_bound(row):
    if isinstance(row.get("client_bound"), bool):
        return row["client_bound"]
    util = num(row, "client", "cpu_util")
    return util is not None and util >= 0.9


def is_starved(row):
    return (num(row, "fairness", "starved_connections") or 0) > 0


def is_disturbed(row):
    return row.get("disturbed") is True


def _pct(x):
    return f"{x * 100:.0f} %"


def disturbance(row):
    """The harness's own words (disturbed_by), else what its interference figures show; '' if none."""
    by = row.get("disturbed_by")
    if isinstance(by, str) and by.strip():
        return by.strip()
    inter = row.get("interference")
    if not isinstance(inter, dict):
        return ""
    limit = num(inter, "threshold") or 0.05
    slow_limit = num(inter, "slowdown_threshold") or 0.35
    found = []
    for side in ("server", "client"):
        cpus = (inter.get(side) or {}).get("cpus") if isinstance(inter.get(side), dict) else None
        where = f"{side} CPU {','.join(str(c) for c in cpus)}" if isinstance(cpus, list) and cpus else f"{side} CPUs"
        for key, words, lim in (("foreign", "to other processes", limit), ("steal", "stolen by the host", limit),
                                ("slowdown", "slower than at rest", slow_limit)):
            v = num(inter, side, key)
            if v is not None and v > lim:
                found.append(f"{where}: {_pct(v)} {words}")
    return "; ".join(found)


def reruns(row):
    n = num(row, "attempts")
    return max(0, int(n) - 1) if n is not None else 0


def cv(values):
    """Population stdev / mean of 2 or more values (None for fewer, or a mean of 0)."""
    vs = [float(v) for v in values if v is not None]
    if len(vs) < 2:
        return None
    mean = statistics.fmean(vs)
    return statistics.pstdev(vs) / mean if mean else None


def _n(x):
    return f"{int(round(x)):,}"


def _seconds(s):
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _near(answered, peak):
    """Answers stopped at the server's workers: one fewer than its threads (or processes) peak."""
    return peak is not None and peak >= 2 and abs(answered - (peak - 1)) <= max(WORKERS_SLACK, 0.05 * answered)


def _closed(row):
    return sum(num(row, "errors", k) or 0 for k in ("closed", "reset"))


def _server_said(row):
    t, p = num(row, "server", "threads_peak"), num(row, "server", "processes_peak")
    if t is not None and p is not None and p > 1:
        return f"server: {_n(t)} threads in {_n(p)} processes"
    if t is not None:
        return f"server: {_n(t)} threads"
    return ""


def _why_unanswered(row, served, want):
    """What the primer and the server's figures show about connections that got no answer ('' if none)."""
    primer = row.get("primer") if isinstance(row.get("primer"), dict) else {}
    ended, answered, secs = primer.get("ended"), num(primer, "answered"), num(primer, "seconds")
    threads, procs = num(row, "server", "threads_peak"), num(row, "server", "processes_peak")
    if ended == "stalled" and answered is not None:
        if _near(answered, procs):  # a pool of processes (prefork): one each, beside the parent
            return f": answers stopped at {_n(answered)} connections (server: {_n(procs)} processes)"
        if _near(answered, threads):  # a pool of threads beside the main one
            return f": answers stopped at {_n(answered)} connections (server: {_n(threads)} threads)"
    closed = _closed(row)
    if closed > 0 and closed >= STARVED_STOP * (want - served):
        return f": the server closed {_n(closed)}" if closed <= want else \
            f": the server closed connections {_n(closed)} times"
    if ended == "timeout" and answered is not None:
        after = f"after {_seconds(secs)} of primer" if secs is not None else "when the primer timed out"
        if secs and answered > 0:  # how long the server took to take one connection up
            after += f", {secs / answered * 1000:.1f} ms a connection"
        return f" {after}" if int(answered) == served else f" ({_n(answered)} {after})"
    if ended == "stalled" and answered is not None:
        said = _server_said(row)
        return f": answers stopped at {_n(answered)} connections ({said or 'primer stalled'})"
    if ended == "all" and answered is not None and answered > served:
        return f" in the window (all {_n(answered)} answered in the primer)"
    return ""


def starved_note(row):
    """Why some connections of a cell that reached its count got no answer in the window, from its
    figures ('' if all were answered): the primer's end, or thousands of runnable threads or
    processes the scheduler did not get round to in the window."""
    starved = num(row, "fairness", "starved_connections") or 0
    est = num(row, "connections_established")
    if not starved or not est:
        return ""
    head = f"{_n(starved)} of {_n(est)} got no answer in the window"
    why = _why_unanswered(row, int(est - starved), int(row.get("connections") or est))
    if why.startswith(": ") or why.startswith(" ("):
        return head + why
    threads, procs = num(row, "server", "threads_peak"), num(row, "server", "processes_peak")
    queue = num(row, "server", "run_queue_peak")
    tasks = max(threads or 0, procs or 0)
    if tasks >= 100 and queue is not None:
        kind = "processes" if (procs or 0) >= (threads or 0) else "threads"
        return f"{head} ({_n(tasks)} {kind}, up to {_n(queue)} runnable at once)"
    return head


def stop_reason(row, stop_on_starved=True):
    """Why a cell does not count as reaching its connection count, from its figures ('' if it does).

    Lines without primer, server or error figures get the short forms ('only 64 of 1,000 answered')."""
    if row.get("status", "ok") != "ok":
        err = str(row.get("error") or "failed")
        for key, short in (("did not start", "server did not start"), ("died", "server died"),
                           ("shutdown contract", "unclean stop"), ("no request was answered", "no answer"),
                           ("set-up did not finish", "connections not set up in time"),
                           ("interrupted", "interrupted")):
            if key in err:
                return short
        return err[:40]
    est, want = num(row, "connections_established"), int(row.get("connections") or 0)
    if est is not None and est < REACHED * want:
        head = f"only {_n(est)} of {want:,} connected"
        closed = _closed(row)
        if closed > 0 and closed >= STARVED_STOP * (want - est):
            return f"{head}: the server closed {_n(closed)}"
        primer = row.get("primer") if isinstance(row.get("primer"), dict) else {}
        not_opened, answered = num(primer, "not_opened") or 0, num(primer, "answered")
        if not_opened > 0 and answered is not None:
            said = _server_said(row)
            failed = num(row, "errors", "connect") or 0
            return (f"{head}: answers stopped at {_n(answered)}{f' ({said})' if said else ''}, so "
                    f"{_n(not_opened)} were not tried" + (f" and {_n(failed)} connects timed out" if failed else ""))
        if (num(row, "errors", "connect") or 0) > 0:
            return f"{head} ({_n(num(row, 'errors', 'connect'))} connects failed or timed out)"
        return head
    starved = num(row, "fairness", "starved_connections") or 0
    if stop_on_starved and est and starved > STARVED_STOP * est:  # connected, but most never answered: not served
        served = int(est - starved)
        return f"only {served:,} of {want:,} answered" + _why_unanswered(row, served, want)
    return ""
