"""Regenerate reports/example.html and reports/report-screenshot.png from the embedded demo.

Runs `dora-diag demo` (FT, LoRA and DoRA on the builtin model, about 1.5 minutes on 2 CPU
cores), writes its report as reports/example.html, then opens it in headless Chromium to check
that every figure draws without console errors and to take the screenshot for the README.

    python examples/make_example_report.py [--out-dir reports]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dora_diag.outputs.atomic import write_atomic
from dora_diag.report.browser import Browser
from dora_diag.demo import DemoConfig, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "reports")
    args = parser.parse_args()
    html_path = args.out_dir / "example.html"
    result = run_demo(DemoConfig(out=str(html_path)), status=print)
    for line in result.lines():
        print(line)
    started = time.perf_counter()
    with Browser(height=900) as browser:
        page = browser.open(html_path, screenshot=True, screenshot_height=4200)
    s = page.status
    if page.errors or s.get("error") or s.get("drawn") != s.get("figures"):
        raise SystemExit(f"report did not draw cleanly: {page.errors or s.get('error')}, "
                         f"{s.get('drawn')}/{s.get('figures')} figures")
    write_atomic(args.out_dir / "report-screenshot.png", page.screenshot)
    print(f"{html_path}: {html_path.stat().st_size / 1e6:.1f} MB, {s['figures']} figures; in Chromium the first "
          f"figure drew at {s['first_ms']} ms and all at {s['render_ms']} ms "
          f"({time.perf_counter() - started:.1f} s with browser start)")


if __name__ == "__main__":
    main()
