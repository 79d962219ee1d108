"""Regenerate reports/example.html and reports/report-screenshot.png from the embedded demo.

Runs `dora-diag demo` (FT, LoRA and DoRA on the builtin model, about 1.5 minutes on 2 CPU
cores), writes its report as reports/example.html, then opens it in headless Chromium to check
that every figure draws offline without console errors and to take the screenshot for the
README. Needs playwright (in the test extra) and Debian's chromium (apt-get install chromium).

    python examples/make_example_report.py [--out-dir reports]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # the browser driver the tests use (not in the package)
from browser_helpers import Browser  # noqa: E402

from dora_diag.demo import DemoConfig, run_demo  # noqa: E402
from dora_diag.outputs.atomic import write_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    html_path = args.out_dir / "example.html"
    result = run_demo(DemoConfig(out=str(html_path)), status=print)
    for line in result.lines():
        print(line)
    started = time.perf_counter()
    with Browser(height=900) as browser:
        page = browser.open(html_path, screenshot=True, screenshot_height=4200)
    s = page.status
    if page.errors or page.requests or s.get("error") or s.get("drawn") != s.get("figures"):
        raise SystemExit(f"report did not draw cleanly offline: {page.errors or page.requests or s.get('error')}, "
                         f"{s.get('drawn')}/{s.get('figures')} figures")
    write_atomic(args.out_dir / "report-screenshot.png", page.screenshot)
    print(f"{html_path}: {html_path.stat().st_size / 1e6:.1f} MB, {s['figures']} figures; in Chromium the first "
          f"figure drew at {s['first_ms']} ms and all at {s['render_ms']} ms "
          f"({time.perf_counter() - started:.1f} s with browser start)")


if __name__ == "__main__":
    main()
