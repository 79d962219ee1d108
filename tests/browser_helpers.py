"""Open a report in headless Chromium with Playwright, offline, and report what happened.

Used by the browser tests, ``benchmarks/bench_report.py`` and ``examples/make_example_report.py``
(not part of the installed package). Playwright's Python package drives the system's Chromium
(``$BROWSER_PATH`` or ``chromium`` on PATH); no browser is ever downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Reported by the page's renderer (src/dora_diag/report/assets/render.js) and read back here.
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
FINISHED_JS = ("document.body && (document.body.hasAttribute('data-rendered')"
               " || document.body.hasAttribute('data-render-error'))")


def chromium_path() -> str | None:
    return os.environ.get("BROWSER_PATH") or shutil.which("chromium")


def unavailable() -> str | None:
    """Why no browser can be started here (a skip reason), or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (it is in the test extra: pip install -e '.[test]')"
    if not chromium_path():
        return "headless Chromium not found (Debian package 'chromium', which .ci/run installs; or set BROWSER_PATH)"
    return None


@dataclass
class PageResult:
    status: dict                                      # STATUS_JS once the figures are drawn (or at the timeout)
    errors: list[str] = field(default_factory=list)   # console errors, exceptions, failed local loads
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt messages
    requests: list[str] = field(default_factory=list)  # every non-file URL the page asked for (all blocked)
    screenshot: bytes | None = None
    probe: object = None                              # what ``open(probe=...)`` returned, from JSON


class Browser:
    """One headless Chromium; ``open(path)`` loads a local HTML file in a fresh offline context."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        from playwright.sync_api import sync_playwright

        self._size = (width, height)
        self._playwright = sync_playwright().start()
        # Playwright passes --no-sandbox unless asked for the sandbox; Chromium refuses to start
        # sandboxed as root (containers, CI), so the sandbox is kept for every other user only.
        self._browser = self._playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                                         chromium_sandbox=os.geteuid() != 0)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._browser.close()
        self._playwright.stop()

    def open(self, path: str | os.PathLike, timeout: float = 60, screenshot: bool = False,
             screenshot_height: int = 16000, fragment: str | None = None, probe: str | None = None,
             width: int | None = None) -> PageResult:
        """Load ``path`` (at ``#fragment``, ``width`` px wide), wait until its figures are drawn
        (or ``timeout`` s); optionally evaluate ``probe``, a JavaScript expression returning a
        JSON string, and take a PNG of the page's top ``screenshot_height`` pixels."""
        w, h = width or self._size[0], self._size[1]
        context = self._browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=1)
        result = PageResult(status={})
        try:
            _block_network(context, result.requests)
            page = context.new_page()
            _listen(page, result)
            url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
            page.goto(url, wait_until="commit")
            result.status = _wait_drawn(page, timeout)
            result.probe = _evaluate(page, probe) if probe else None
            if screenshot:
                page.set_viewport_size({"width": w, "height": min(int(result.status["height"]), screenshot_height)})
                page.wait_for_timeout(500)   # render.js relayouts the plots 100 ms after a resize
                result.screenshot = page.screenshot(type="png")
        finally:
            context.close()
        return result


def _block_network(context, requests: list[str]) -> None:
    """Abort every request that is not for a local file, and note its URL (WebSockets too)."""
    def route(r) -> None:
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    def socket(ws) -> None:   # never connected to a server
        requests.append(ws.url)
        ws.close()

    context.route("**/*", route)
    context.route_web_socket("**/*", socket)


def _listen(page, result: PageResult) -> None:
    def console(msg) -> None:
        if msg.type in ("error", "assert"):
            result.errors.append(f"console: {msg.text}")

    def dialog(d) -> None:   # an unanswered dialog would block the page
        result.dialogs.append(f"{d.type}: {d.message}")
        d.accept()

    def failed(request) -> None:   # blocked requests are in result.requests already
        if request.url.startswith("file:"):
            result.errors.append(f"failed: {request.url} {request.failure}")

    page.on("console", console)
    page.on("pageerror", lambda e: result.errors.append(f"exception: {e}"))
    page.on("dialog", dialog)
    page.on("requestfailed", failed)


def _evaluate(page, expression: str):
    # Wrapped in a function: Playwright would call a bare expression containing "=>" as one.
    return json.loads(page.evaluate(f"() => ({expression})"))


def _wait_drawn(page, timeout: float) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"() => {FINISHED_JS}", timeout=timeout * 1000, polling=50)
    except PlaywrightTimeout:   # the caller sees an unfinished status and says so
        pass
    return _evaluate(page, STATUS_JS)
