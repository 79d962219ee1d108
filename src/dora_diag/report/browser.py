"""Open a report in headless Chromium over the DevTools protocol (``--remote-debugging-pipe``).

Used by the browser test and by ``examples/make_example_report.py`` to check that a report
draws offline and to take its screenshot. Standard library only: no browser is downloaded,
the system's ``chromium`` is driven directly.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe"]
# Reported by the page's renderer (assets/render.js) and read back here.
STATUS_JS = """(() => {
  if (!document.body) {   // still parsing
    return JSON.stringify({rendered: null, first_ms: null, render_ms: null, error: null, figures: 0, plots: 0,
                           drawn: 0, text: '', svg_text: '', height: 0});
  }
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  return JSON.stringify({
    rendered: document.body.getAttribute('data-rendered'),
    first_ms: document.body.getAttribute('data-first-ms'),
    render_ms: document.body.getAttribute('data-render-ms'),
    error: document.body.getAttribute('data-render-error'),
    figures: document.querySelectorAll('div.figure[data-fig]').length,
    plots: plots.length,
    drawn: plots.filter(p => p.querySelector('svg.main-svg') && p.querySelector('.scatterlayer .trace, .heatmaplayer .hm')).length,
    text: document.body.innerText,
    svg_text: plots.map(p => Array.from(p.querySelectorAll('svg text')).map(t => t.textContent).join(' | ')).join(' | '),
    height: document.documentElement.scrollHeight,
  });
})()"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    status: dict
    errors: list[str] = field(default_factory=list)   # console errors, exceptions, failed loads
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt messages
    load_s: float = 0.0                               # navigation start -> all figures drawn
    screenshot: bytes | None = None
    probe: object = None                              # what ``open(probe=...)`` returned, from JSON


class _Pipe:
    """Null-terminated JSON messages over fds 3 (to Chromium) and 4 (from Chromium)."""

    def __init__(self, executable: str, profile: str) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        to_child_r, from_child_w = _above_4(to_child_r), _above_4(from_child_w)

        def wire() -> None:   # in the child: Chromium reads fd 3 and writes fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=wire, pass_fds=(3, 4),
                                     start_new_session=True)   # its own group: close() ends every helper process
        os.close(to_child_r)
        os.close(from_child_w)
        self.messages: queue.Queue = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except OSError:   # closed by close()
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            for m in msgs:
                self.messages.put(json.loads(m))
        self.messages.put(None)

    def send(self, method: str, session: str | None = None, **params) -> int:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._next

    def close(self) -> None:
        # Killing only the main process left renderer/crashpad children writing into the
        # profile while it was being removed ("Directory not empty"): end the whole group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        os.close(self._w)
        os.close(self._r)


def _above_4(fd: int) -> int:
    """The same pipe end on a descriptor > 4, so that moving it to 3 or 4 cannot clobber the other."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium; ``open(path)`` loads a local HTML file and reports what happened."""

    def __init__(self, executable: str | None = None, width: int = 1400, height: int = 1000) -> None:
        executable = executable or find_chromium()
        if not executable:
            raise FileNotFoundError("no chromium executable on PATH (Debian: apt-get install chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="dora-diag-chromium-", ignore_cleanup_errors=True)
        self._pipe = _Pipe(executable, self._profile.name)
        self._size = (width, height)
        self._events: list[dict] = []

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pipe.close()
        self._profile.cleanup()

    def _call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        cid = self._pipe.send(method, session, **params)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._pipe.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
            if msg is None:
                raise RuntimeError(f"chromium exited during {method}")
            if msg.get("id") == cid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._events.append(msg)
            if msg.get("method") == "Page.javascriptDialogOpening":   # a dialog would block the page
                self._pipe.send("Page.handleJavaScriptDialog", msg.get("sessionId"), accept=True)

    def _drain(self) -> None:
        while True:
            try:
                msg = self._pipe.messages.get_nowait()
            except queue.Empty:
                return
            if msg is not None:
                self._events.append(msg)

    def open(self, path: str | os.PathLike, timeout: float = 60, screenshot: bool = False,
             screenshot_height: int = 16000, fragment: str | None = None, probe: str | None = None) -> PageResult:
        """Load ``path`` (at ``#fragment``), wait until its figures are drawn (or ``timeout``);
        optionally evaluate ``probe``, a JavaScript expression returning a JSON string, and take a
        PNG of the page's top ``screenshot_height`` pixels."""
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self._call(domain, session)
        w, h = self._size
        self._call("Emulation.setDeviceMetricsOverride", session, width=w, height=h, deviceScaleFactor=1, mobile=False)
        self._events.clear()
        started = time.monotonic()
        url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
        self._call("Page.navigate", session, url=url)
        status = self._wait_drawn(session, started + timeout)
        load_s = time.monotonic() - started
        probed = self._evaluate(session, probe) if probe else None
        shot = None
        if screenshot:
            self._call("Emulation.setDeviceMetricsOverride", session, width=w, height=min(int(status["height"]), screenshot_height),
                       deviceScaleFactor=1, mobile=False)
            time.sleep(0.5)   # responsive plots relayout to the new viewport
            shot = base64.b64decode(self._call("Page.captureScreenshot", session, format="png")["data"])
        self._drain()
        errors, dialogs = _problems(self._events, session)
        self._call("Target.closeTarget", targetId=target)
        return PageResult(status, errors, dialogs, load_s, shot, probed)

    def _evaluate(self, session: str, expression: str):
        res = self._call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return json.loads(res["result"]["value"])

    def _wait_drawn(self, session: str, deadline: float) -> dict:
        while True:
            status = self._evaluate(session, STATUS_JS)
            if status.get("rendered") or status.get("error") or time.monotonic() > deadline:
                return status
            time.sleep(0.05)


def _problems(events: list[dict], session: str) -> tuple[list[str], list[str]]:
    errors, dialogs = [], []
    for e in events:
        if e.get("sessionId") != session:
            continue
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Page.javascriptDialogOpening":
            dialogs.append(f"{p.get('type')}: {p.get('message')}")
    return errors, dialogs
