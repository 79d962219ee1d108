"""The report in a real headless Chromium: loads offline, every figure draws, nothing injected runs."""

import os
import shutil
import subprocess

import pytest

from dora_diag.report.browser import Browser, find_chromium

from .conftest import XSS, synthetic_analysis

pytestmark = pytest.mark.browser


def _install_chromium() -> str | None:
    """Debian's chromium, installed when missing and we may (root, apt-get); None otherwise."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
        except (OSError, subprocess.SubprocessError):
            return None
    return find_chromium()


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium() or _install_chromium()
    if not exe:
        pytest.skip("headless Chromium not found and could not be installed (Debian package 'chromium')")
    with Browser(exe) as b:
        yield b


def test_report_draws_offline_with_no_console_errors(browser, tmp_path):
    path = tmp_path / "report.html"
    synthetic_analysis(xss=True, verdicts=True).to_html(path)
    page = browser.open(path, screenshot=True)
    s = page.status
    assert s["error"] is None and page.errors == [] and page.dialogs == []
    assert page.screenshot.startswith(b"\x89PNG")   # what examples/make_example_report.py saves for the README
    # 3 scatters (q_proj, k_proj and the hostile module) + 2 profiles + 4 heatmaps + trajectory + training
    assert int(s["rendered"]) == s["figures"] == s["plots"] == s["drawn"] == 11
    assert XSS in s["text"]   # shown as text in the tables and ran nothing
    assert XSS in s["svg_text"]   # and literally inside the figures (titles, axis ticks)


def test_browser_check_can_fail(browser, tmp_path):
    """The harness sees console errors and dialogs: an injected script would not go unnoticed."""
    path = tmp_path / "bad.html"
    path.write_text("<html><body><script>alert('x'); console.error('boom');"
                    "document.body.setAttribute('data-rendered', '0')</script></body></html>")
    page = browser.open(path)
    assert page.dialogs == ["alert: x"] and page.errors == ["console: boom"]


@pytest.mark.slow
def test_full_size_report_draws(browser, tmp_path):
    """32 layers × 7 modules × 5 checkpoints × 3 runs; the render time goes to the test log, it is not asserted."""
    path = tmp_path / "big.html"
    synthetic_analysis(layers=32, modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"), steps=(100, 200, 300, 400, 500),
                       runs=("FT", "LoRA", "DoRA"), verdicts=True).to_html(path)
    assert path.stat().st_size < 10 * 1024 * 1024
    page = browser.open(path)
    s = page.status
    assert page.errors == [] and s["error"] is None
    assert int(s["rendered"]) == s["drawn"] == s["figures"] == 7 + 3 + 6 + 2
    print(f"full-size report: {path.stat().st_size / 1e6:.1f} MB, first figure {s['first_ms']} ms, "
          f"all drawn {s['render_ms']} ms")
