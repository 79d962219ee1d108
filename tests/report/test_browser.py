"""The report in a real headless Chromium: loads offline, every figure draws, nothing injected runs."""

import re
from pathlib import Path

import pytest

from dora_diag import report
from dora_diag.report.browser import Browser, find_chromium

from .conftest import XSS, synthetic_analysis, with_log

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if not exe:   # .ci/run installs it; a test run never installs system packages
        pytest.skip("headless Chromium not found (Debian package 'chromium', which .ci/run installs)")
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


# Per drawn figure: its title, the boxes of every text block that must not overlap another
# (figure and panel titles, axis titles, legend, colour bar, buttons), axis ranges, and facts
# read from plotly's full layout and data.
LAYOUT_JS = """JSON.stringify(Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const parts = Array.from(p.querySelectorAll(
    '.infolayer > .g-gtitle, .infolayer > [class^="g-x"], .infolayer > [class^="g-y"], .infolayer .legend,'
    + '.infolayer .colorbar, .infolayer .annotation, .menulayer .updatemenu-container'))
    .filter(e => e.getBoundingClientRect().width > 0 && e.textContent.trim() !== '')
    .map(e => ({cls: e.getAttribute('class'), text: e.textContent.slice(0, 60), box: box(e)}));
  const L = p._fullLayout;
  const axes = Object.keys(L).filter(k => /^[xy]axis\\d*$/.test(k)).sort();
  const bar = p.querySelector('.legend .scrollbar');
  return {title: L.title.text, parts, width: p.getBoundingClientRect().width,
          legend_scrolls: !!bar && bar.getBoundingClientRect().height > 0,
          ranges: Object.fromEntries(axes.map(k => [k, L[k].range])),
          heat: p._fullData.filter(t => t.type === 'heatmap').map(t => [t.zmin, t.zmax]),
          svg: Array.from(p.querySelectorAll('svg text')).map(t => t.textContent)};
}))"""


def _overlaps(fig: dict) -> list[tuple[str, str]]:
    out, parts = [], fig["parts"]
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            (l1, t1, r1, b1), (l2, t2, r2, b2) = a["box"], b["box"]
            if min(r1, r2) - max(l1, l2) > 1 and min(b1, b2) - max(t1, t2) > 1:
                out.append((a["text"], b["text"]))
    return out


def _report(tmp_path, **kwargs):
    a = with_log(synthetic_analysis(**kwargs), -1, [{"step": 300, "eval_loss": 0.5, "eval_accuracy": 0.75}])
    path = tmp_path / "report.html"
    a.to_html(path)
    return a, path


@pytest.mark.parametrize("width", [1400, 900])
def test_figures_are_legible(tmp_path, width):
    """What a reader sees: per-panel axes, layer and step without hovering, equal heatmap scales,
    loss and accuracy on their own axes, runs and modules in order, and no text on top of text."""
    runs = ("LoRA", "FT", "DoRA")
    _, path = _report(tmp_path, runs=runs, modules=("down_proj", "q_proj", "v_proj"), layers=6)
    with Browser(find_chromium() or _install_chromium() or pytest.skip("no chromium"), width=width) as b:
        page = b.open(path, probe=LAYOUT_JS)
    assert page.errors == [] and page.status["drawn"] == page.status["figures"] == len(page.probe)
    figs = page.probe
    for fig in figs:
        assert _overlaps(fig) == [] and not fig["legend_scrolls"], fig["title"]
        assert fig["width"] <= width
    scatters = [f for f in figs if "Figure 2" in f["title"]]
    assert [f["title"].split(":")[0] for f in scatters] == ["q_proj", "v_proj", "down_proj"]   # model order
    for f in scatters:
        assert len({tuple(f["ranges"][k]) for k in ("xaxis", "xaxis2", "xaxis3")}) == 3   # own axes per panel
        panel_titles = [p["text"] for p in f["parts"] if p["cls"] == "annotation"]
        assert [t.split(":")[0] for t in panel_titles] == list(runs)   # runs in the order given
        svg = " ".join(f["svg"])
        assert "colour:layer" in svg.replace(" ", "") and "size: step 100" in svg and "OLS fit" in svg
    heat = [f["heat"][0] for f in figs if f["heat"]]
    assert len(heat) == 6 and len({tuple(h) for h in heat[:3]}) == 1 and len({tuple(h) for h in heat[3:]}) == 1
    training = next(f for f in figs if f["title"] == "Training log")
    assert "yaxis2" in training["ranges"] and training["ranges"]["yaxis2"] == [0, 1.02]


def test_section_link_lands_on_its_heading(browser, tmp_path):
    _, path = _report(tmp_path, runs=("FT", "LoRA", "DoRA"))
    probe = """JSON.stringify({top: document.getElementById(location.hash.slice(1)).getBoundingClientRect().top,
                               nav: document.querySelector('nav.toc').getBoundingClientRect().bottom,
                               scrolled: window.scrollY})"""
    page = browser.open(path, fragment=_heading_id(path, "Trajectories"), probe=probe)
    got = page.probe
    assert got["scrolled"] > 1000 and got["nav"] <= got["top"] <= got["nav"] + 40, got


def test_colour_buttons_swap_layer_and_step(browser, tmp_path):
    path = tmp_path / "report.html"
    synthetic_analysis().to_html(path)
    click = """(() => { const p = document.querySelector('.js-plotly-plot');
      p.querySelectorAll('.updatemenu-button')[1].dispatchEvent(new MouseEvent('click', {bubbles: true}));
      return JSON.stringify({color: Array.from(p.data[0].marker.color),
                             bar: p._fullLayout.coloraxis.colorbar.title.text,
                             legend: Array.from(p.querySelectorAll('.legend .traces')).map(t => t.textContent)}); })()"""
    got = browser.open(path, probe=click).probe
    assert sorted(set(got["color"])) == [100, 200, 300] and got["bar"].endswith("step")
    assert got["legend"][1:] == ["size: layer 0", "1", "2", "3"]


def test_printing_keeps_a_layout_wide_enough_for_the_panels(browser, tmp_path):
    """Printed, every figure is laid out at the print stylesheet's page width (not the paper's
    narrower one, where three panel titles collide), and back to the window's width after."""
    path = tmp_path / "report.html"
    synthetic_analysis(runs=("FT", "LoRA", "DoRA")).to_html(path)
    css = (Path(report.__file__).parent / "assets" / "report.css").read_text()
    page_width = int(re.search(r"main \{ width: (\d+)px", css.split("@media print")[1]).group(1))
    probe = """(() => { const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
      const widths = () => plots.map(p => p._fullLayout.width);
      const screen = widths(); window.dispatchEvent(new Event('beforeprint')); const printed = widths();
      window.dispatchEvent(new Event('afterprint'));
      return JSON.stringify({screen, printed, after: widths()}); })()"""
    got = browser.open(path, probe=probe).probe
    assert set(got["printed"]) == {page_width} and got["after"] == got["screen"] != got["printed"]


def _heading_id(path, title: str) -> str:
    return re.search(rf'<h2 id="(s\d+)">{title}', path.read_text(encoding="utf-8")).group(1)


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
