"""The run's charts, drawn by plot.py (and micro_plots.py through it) into a temporary directory
and inlined as SVG data URIs, each with its reading guide."""
import base64
import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/
import plot  # noqa: E402
import micro_plots  # noqa: E402

# (pattern on the file stem, title, reading guide) — the guides are README's "Reading the plots".
MARKS = ("Points are the median of the repetitions with min–max bars; a hollow point is client-bound "
         "(the client used ≥ 90 % of its CPU), a red × a cell where some connections got no answer, an "
         "orange diamond a repetition still disturbed after its re-runs.")
GUIDES = [
    (r"^classic-cpu$", "Classic: server CPU per request",
     "Server CPU time of the whole process tree per answered request against concurrent connections; lower "
     "is better. It stays comparable when the client is the bottleneck, so it leads. Reference servers are "
     "dashed grey; a numbered bar marks where a line stops, its reason under the chart."),
    (r"^classic-throughput$", "Classic: requests per second",
     "Answers per second against concurrent connections; higher is better, but a client-bound cell measures "
     "the client as much as the server. A line stops where most connections got no answer."),
    (r"^classic-pss$", "Classic: server memory",
     "PSS summed over the server's process tree: what holding the connections costs. Whatever gives a "
     "connection a thread or a process grows with the connections; an event loop stays flat."),
    (r"-throughput$", "throughput", "Correct answers per second; higher is better — but see client-bound. " + MARKS),
    (r"-latency$", "latency", "p50 (solid) and p99 (dashed) from send to the last byte of the answer; lower is "
     "better. The p99 shows who makes some clients wait. " + MARKS),
    (r"-cpu-per-request$", "server CPU per request", "CPU time of the server's whole process tree ÷ requests: "
     "the fairest efficiency figure, comparable when the client is the bottleneck. " + MARKS),
    (r"-pss$", "memory (PSS)", "The server's proportional set size summed over its process tree: what a "
     "connection costs; RSS would count shared pages many times. " + MARKS),
    (r"-fds$", "file descriptors", "Open fds of the server tree: one per connection plus a few (plus backend "
     "connections in fan-out). " + MARKS),
    (r"-probe-latency$", "probe latency", "work-US only: p50 (solid) and p99 (dashed) of GET / sent beside the "
     "work, from its intended send time: how long a cheap request waits behind CPU work."),
    (r"-sweep$", "rate sweep", "Open-loop steps: latency against offered load (p50 solid, p99 dashed, "
     "uncorrected p99 dotted) and achieved against offered. Where latency turns up is the knee."),
    (r"^micro-creation$", "micro: creating one unit", "Nanoseconds to create, run and finish one unit "
     "(thread, process, coroutine, …), log scale, median with min–max whiskers; skipped rows are named with "
     "their reason."),
    (r"^micro-switching$", "micro: switching", "One hand-off between two threads or processes on one CPU and on "
     "two, and a token passed round a ring of N threads vs N coroutines: whether a switch costs more as N grows."),
    (r"^micro-waiting$", "micro: waiting on many fds", "One wake-up with N fds watched and one ready: select and "
     "poll scan all N, epoll and io_uring do not; select stops at FD_SETSIZE."),
    (r"^micro-memory$", "micro: memory per unit", "Memory and fds per thread, process, coroutine, epoll "
     "registration and TCP connection, user-space PSS and kernel memory apart."),
    (r"^latency-table$", "Dahl's latency table", "The essay's cycles (grey) beside this machine's (blue), log "
     "scale, and the pointer chase the memory rows come from; the essay's network row is a WAN round trip, "
     "not loopback."),
]
ORDER = ["classic-cpu", "classic-throughput", "classic-pss"]


def guide_of(stem):
    for pattern, title, text in GUIDES:
        if re.search(pattern, stem):
            if pattern.startswith("-"):
                title = stem[:stem.rindex(re.search(pattern, stem).group(0))] + " — " + title
            return title, text
    return stem, ""


def data_uri(path):
    return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def draw(run):
    """([{stem, title, guide, src}], [problems]) for a Run; never raises."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="concbench-report-") as tmp:
        out = Path(tmp)
        log = io.StringIO()
        try:
            with contextlib.redirect_stderr(log):
                if run.cells:
                    plot.draw_run(run.dir, out, "auto")
                elif run.micro is not None:
                    micro_plots.draw_all(run.dir / "micro.json", out)
        except SystemExit:
            problems.append("plot.py found nothing to draw: " + (log.getvalue().strip().splitlines() or [""])[-1])
        except Exception as e:  # a chart that cannot be drawn is named, the page goes on
            problems.append(f"the charts could not all be drawn ({type(e).__name__}: {e})")
        svgs = sorted(out.glob("*.svg"), key=lambda p: (p.stem not in ORDER, ORDER.index(p.stem) if p.stem in ORDER
                                                        else 0, p.stem.startswith(("micro-", "latency-")), p.stem))
        figs = []
        for p in svgs:
            title, text = guide_of(p.stem)
            figs.append({"stem": p.stem, "title": title, "guide": text, "src": data_uri(p),
                         "wide": p.stem.startswith("classic-") or p.stem.endswith("-sweep") or p.stem == "latency-table"})
    return figs, problems
