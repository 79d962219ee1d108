"""HTML report size and render time in headless Chromium.

    python benchmarks/bench_report.py   # needs playwright (test extra) and Debian's chromium

Renders the issue's reference size, 32 layers x 7 modules x 5 checkpoints, for one run and for
three runs side by side (FT, LoRA, DoRA), plus the committed example report of the demo, and
opens each several times in a fresh tab: time to the first figure drawn and to all figures
drawn, from navigation start (render.js writes both on <body>). Writes its section of
reports/benchmarks.md (skip with --no-write).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from browser_helpers import Browser  # noqa: E402
from report.conftest import MODULES, synthetic_analysis  # noqa: E402
from report_section import command_line, publish  # noqa: E402

from dora_diag.report.html import CARTESIAN_BUNDLE, get_plotlyjs_version  # noqa: E402

EXAMPLE = ROOT / "reports" / "example.html"
BOUND_MS = 3000


def cases(workdir: Path) -> list[tuple[str, Path]]:
    out = []
    for runs in (("FT",), ("FT", "LoRA", "DoRA")):
        path = workdir / f"report-{len(runs)}.html"
        synthetic_analysis(layers=32, modules=MODULES, steps=(100, 200, 300, 400, 500), runs=runs,
                           verdicts=True).to_html(path)
        out.append((f"32 layers x 7 modules x 5 checkpoints, {' + '.join(runs)}", path))
    if EXAMPLE.is_file():
        out.append(("reports/example.html (the demo: FT, LoRA, DoRA)", EXAMPLE))
    return out


def measure(browser: Browser, path: Path, repeat: int) -> dict:
    firsts, alls = [], []
    for _ in range(repeat):
        page = browser.open(path)
        s = page.status
        if page.errors or page.requests or s["error"] or int(s["rendered"] or 0) != s["drawn"]:
            raise SystemExit(f"{path}: did not draw cleanly offline: {page.errors or page.requests or s['error']}")
        firsts.append(int(s["first_ms"]))
        alls.append(int(s["render_ms"]))
    return {"figures": s["figures"], "first_ms": statistics.median(firsts), "all_ms": statistics.median(alls),
            "alls": alls}


def render(rows: list[tuple[str, Path, dict]], repeat: int, command: str) -> str:
    lines = ["## HTML report render time (`benchmarks/bench_report.py`)", "",
             f"Command: `{command}`; headless Debian Chromium (Playwright), 1400x1000 viewport, "
             f"{repeat} loads per report, medians; times from navigation start. "
             f"plotly.js: cartesian bundle {CARTESIAN_BUNDLE[0]} "
             f"(plotly.py ships {get_plotlyjs_version()}).", "",
             "| report | MB | figures | first figure ms | all figures drawn ms (each load) | all drawn < 3 s |",
             "|---|---|---|---|---|---|"]
    for label, path, m in rows:
        lines.append(f"| {label} | {path.stat().st_size / 1e6:.1f} | {m['figures']} | {m['first_ms']:.0f} | "
                     f"{m['all_ms']:.0f} ({', '.join(map(str, m['alls']))}) | "
                     f"{'met' if m['all_ms'] < BOUND_MS else 'MISSED'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Browser() as browser:
        rows = [(label, path, measure(browser, path, args.repeat)) for label, path in cases(Path(tmp))]
        text = render(rows, args.repeat, command_line())
    publish("bench_report", text, not args.no_write)


if __name__ == "__main__":
    main()
