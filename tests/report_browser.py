#!/usr/bin/python3
"""report_browser.py REPORT.html [--screenshot FILE.png] [--sections id,id,...]

Opens a report in Debian's headless Chromium (chromium-headless-shell, else chromium --headless),
driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no network), and
checks: no console error and no uncaught exception, every <img> decoded with a non-zero size,
every section present, no horizontal overflow at a phone's width (390 px). With --screenshot,
writes a full-page PNG at 1200 px wide. Prints one line per failure; exits 0 when all pass,
1 when one fails, 77 (skip) when no Chromium is installed.
"""
import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ["environment", "headline", "plots", "summary", "models", "claims"]
TIMEOUT_S = 60


class Browser:
    def __init__(self, exe, profile):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--remote-debugging-pipe", f"--user-data-dir={profile}"]
        # the protocol wants the pipe on fds 3 (browser reads) and 4 (browser writes)
        self.proc = subprocess.Popen(["/bin/sh", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "sh", *args],
                                     pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def _read(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed its pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None, timeout=TIMEOUT_S):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


CHECK_JS = """(async () => {
  const imgs = await Promise.all([...document.images].map(i => i.decode().then(
      () => ({ok: i.naturalWidth > 0 && i.naturalHeight > 0, w: i.naturalWidth, h: i.naturalHeight, alt: i.alt}),
      e => ({ok: false, err: String(e), alt: i.alt}))));
  const sections = [...document.querySelectorAll('section[id]')].map(s => s.id);
  return {imgs, sections, title: document.title, verdicts: document.querySelectorAll('.verdict').length};
})()"""


def errors_of(events):
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append("uncaught exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append("browser log error: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path, help="write a full-page PNG here (1200 px wide)")
    ap.add_argument("--screenshot-height", type=int, default=30000, help="at most this many px of the page's top")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="section ids that must be present")
    ap.add_argument("--min-images", type=int, default=1, help="at least this many images")
    a = ap.parse_args()
    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if not exe:
        print("report_browser: no chromium-headless-shell or chromium (make deps installs it): skipped")
        return 77
    failures = []
    with tempfile.TemporaryDirectory(prefix="concbench-chromium-") as profile:
        b = Browser(exe, profile)
        try:
            target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                b.send(f"{domain}.enable", session=s)
            b.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=s)
            b.send("Page.navigate", {"url": a.report.resolve().as_uri()}, session=s)
            b.wait_event("Page.loadEventFired")
            r = b.send("Runtime.evaluate", {"expression": CHECK_JS, "awaitPromise": True, "returnByValue": True},
                       session=s)
            if "exceptionDetails" in r:
                failures.append("the check script failed: " + json.dumps(r["exceptionDetails"])[:300])
            v = r.get("result", {}).get("value") or {}
            imgs = v.get("imgs", [])
            if len(imgs) < a.min_images:
                failures.append(f"{len(imgs)} images, expected at least {a.min_images}")
            for i in imgs:
                if not i.get("ok"):
                    failures.append(f"image not decoded or empty: {i.get('alt')} {i.get('err', '')} {i.get('w')}x{i.get('h')}")
            for sec in filter(None, a.sections.split(",")):
                if sec not in v.get("sections", []):
                    failures.append(f"section #{sec} missing")
            if a.screenshot:
                h = b.send("Page.getLayoutMetrics", session=s)["cssContentSize"]["height"]
                b.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": int(min(h, a.screenshot_height)),
                                                              "deviceScaleFactor": 1, "mobile": False}, session=s)
                shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": h <= a.screenshot_height},
                              session=s)
                a.screenshot.write_bytes(base64.b64decode(shot["data"]))
            # a phone: the page must not scroll sideways (wide tables scroll inside their own box)
            b.send("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2,
                                                          "mobile": True}, session=s)
            w = b.send("Runtime.evaluate", {"expression": "[document.documentElement.scrollWidth, window.innerWidth]",
                                            "returnByValue": True}, session=s)["result"]["value"]
            if w[0] > w[1] + 1:
                failures.append(f"at a phone's width the page is {w[0]} px wide in a {w[1]} px window")
            failures += errors_of(b.events)
            print(f"report_browser: {a.report}: {len(imgs)} images, sections {', '.join(v.get('sections', []))}, "
                  f"{v.get('verdicts', 0)} verdicts" + (f", screenshot {a.screenshot}" if a.screenshot else ""))
        except (TimeoutError, EOFError, RuntimeError, OSError, KeyError) as e:
            failures.append(f"browser: {type(e).__name__}: {e}")
        finally:
            b.close()
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
