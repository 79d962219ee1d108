import json
import re
from html.parser import HTMLParser

import pytest

from dora_diag.report.html import render_report, render_summary, script_json

from .conftest import XSS, synthetic_analysis, with_log


class _Collect(HTMLParser):
    """Script blocks and the text outside them, as a browser would parse the page."""

    def __init__(self):
        super().__init__()
        self.scripts, self.text, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append([self._in, ""])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self.scripts[-1][1] += data
        else:
            self.text.append(data)


def parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    return p


def test_report_sections_and_figures(small_analysis):
    page = render_report(small_analysis)
    for heading in ("Coupling of ΔM and ΔD per run", "How to read this", "Figure 2", "Per-layer profiles",
                    "Heatmaps", "Trajectories", "Training log", "Most-changed tensors", "Skipped tensors",
                    "Unmatched tensors"):
        assert heading in page
    parsed = parse(page)
    data = [s for a, s in parsed.scripts if a.get("type") == "application/json"]
    divs = re.findall(r'<div class="figure" data-fig="([^"]+)"', page)
    # 2 scatters + 2 profiles + 4 heatmaps + trajectory + training
    assert len(data) == len(divs) == 10
    assert all(json.loads(s)["data"] for s in data)
    assert page.count("* plotly.js (cartesian - minified) v") == 1   # inlined exactly once
    assert "https://" not in page.split("<script>")[0]   # no external stylesheet or script
    nav = re.search(r'<nav class="toc">(.*?)</nav>', page).group(1)
    for target in re.findall(r'href="#(s\d+)"', nav):
        assert f'<h2 id="{target}">' in page
    assert nav.count("<a ") == 11


def test_full_plotly_bundle_when_plotly_py_has_another_major(small_analysis, monkeypatch):
    from dora_diag.report import html
    monkeypatch.setattr(html, "get_plotlyjs_version", lambda: "9.0.0")
    page = render_report(small_analysis)
    assert page.count("* plotly.js v") == 1 and "plotly.js (cartesian" not in page


def test_verdict_cards_when_present():
    page = render_report(synthetic_analysis(verdicts=True))
    assert "Will DoRA help?" in page and 'class="card ' in page
    assert "Coupling of ΔM and ΔD per run" not in page


def test_checkpoint_strings_are_escaped_everywhere(xss_analysis):
    page = render_report(xss_analysis)
    parsed = parse(page)
    executable = [s for a, s in parsed.scripts if a.get("type") != "application/json"]
    assert len(executable) == 2   # plotly.js and the renderer, nothing injected
    assert all("alert(1)" not in s for s in executable)   # no injected script block
    assert XSS in "".join(parsed.text)   # shown literally as text
    assert "<script>alert" not in page.replace("&lt;script&gt;alert", "")


def test_hostile_run_label_is_text():
    label = "</script><img src=x onerror=alert(2)>"
    page = render_report(synthetic_analysis(runs=("FT", label)))
    parsed = parse(page)
    assert label in "".join(parsed.text)
    assert "<img" not in page.replace("&lt;img", "")
    assert len([s for a, s in parsed.scripts if a.get("type") != "application/json"]) == 2


def test_script_json_cannot_close_the_script_tag():
    import plotly.graph_objects as go
    fig = go.Figure(go.Scatter(x=[1], y=[2], name="</script><!--<script>&"))
    text = script_json(fig)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["data"][0]["name"] == "</script><!--<script>&"


def test_undefined_statistics_read_na_never_nan():
    page = render_report(synthetic_analysis(layers=1, steps=(100, 200)))
    text = "".join(parse(page).text)
    assert "n/a" in text and not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_summary_for_jupyter(xss_analysis):
    html = xss_analysis._repr_html_()
    assert html == render_summary(xss_analysis)
    assert "Plotly" not in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "Pearson r" in html and "LoRA" in html


def test_to_html_is_atomic(tmp_path, small_analysis, monkeypatch):
    out = tmp_path / "report.html"
    small_analysis.to_html(out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    def boom(*a, **k):
        raise KeyboardInterrupt

    out.write_text("previous report")
    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        small_analysis.to_html(out)
    assert out.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.slow
def test_full_size_report_stays_under_10_mb():
    a = synthetic_analysis(layers=32, modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"), steps=(100, 200, 300, 400, 500),
                           runs=("FT", "LoRA", "DoRA"), verdicts=True)
    page = render_report(a)
    assert len(page.encode("utf-8")) < 10 * 1024 * 1024


def test_compare_cli_writes_the_report(make_pair, tmp_path):
    from click.testing import CliRunner

    from dora_diag.cli import cli

    b, f, _, _ = make_pair(layers=4)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["compare", str(b), f"FT={f}", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "model.layers.3.self_attn.v_proj.weight" in page   # most-changed table from real checkpoints
    assert len(re.findall(r'data-fig="fig-\d+"', page)) == 2 + 1 + 2 + 1   # q/v scatters, profile, heatmaps, trajectory
    assert str(b) in page and [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


def _table_after(page: str, heading: str) -> list[list[str]]:
    section = page.split(heading, 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)[1:]]


def test_runs_in_given_order_modules_in_model_order_no_float_noise():
    a = synthetic_analysis(runs=("LoRA", "FT"), modules=("k_proj", "down_proj", "q_proj"))
    page = render_report(a)
    rows = _table_after(page, "Fits per run and module type")
    assert [(r[0], r[1]) for r in rows] == [(run, m) for run in ("LoRA", "FT")
                                            for m in ("q_proj", "k_proj", "down_proj", "(pooled)")]
    stats = a.stats("module")
    pooled = stats[stats["module"] == "(pooled)"]["intercept"]
    assert pooled.abs().max() < 1e-12 and [r[-1] for r in rows if r[1] == "(pooled)"] == ["0", "0"]
    assert all(r[-1] != "0" for r in rows if r[1] != "(pooled)")   # real intercepts stay
    figures = [json.loads(s) for a, s in parse(page).scripts if a.get("type") == "application/json"]
    titles = [f["layout"]["title"]["text"].split(":")[0] for f in figures if "Figure 2" in f["layout"]["title"]["text"]]
    assert titles == ["q_proj", "k_proj", "down_proj"]


def test_final_eval_numbers_in_text():
    a = with_log(synthetic_analysis(), 1, [{"step": 300, "eval_loss": 0.4321, "eval_accuracy": 0.875}])
    text = "".join(parse(render_report(a)).text)
    assert "Final evaluation" in text and "0.875 (step 300)" in text and "0.4321 (step 300)" in text


def test_temporary_input_paths_are_not_shown():
    a = synthetic_analysis()
    a = a.with_meta(a.meta.with_temporary_dirs("runs"))
    head = render_report(a).split("<nav")[0]
    assert "runs/FT" not in head and head.count("a temporary directory, deleted after the run") == 2
    assert "base/" in head   # outside the temporary directory: shown


def test_figure_placeholders_keep_their_height(small_analysis):
    page = render_report(small_analysis)
    heights = re.findall(r'data-fig="fig-\d+" style="height: (\d+)px"', page)
    assert len(heights) == 10 and all(int(h) >= 250 for h in heights)


def test_summary_shows_the_verdicts():
    a = synthetic_analysis(verdicts=True)
    html = render_summary(a)
    from dora_diag.report.sections import esc

    assert "Will DoRA help?" in html and all(esc(v.headline) in html for v in a.verdicts)


def test_compare_cli_says_where_the_report_went_and_refuses_pdf(make_pair, tmp_path, capsys):
    from cli_helpers import assert_one_line_error, call

    b, f, _, _ = make_pair(layers=2)
    code, out, _ = call(capsys, "compare", str(b), f"FT={f}", "--out", str(tmp_path / "r.html"))
    assert code == 0 and f"report written to {tmp_path / 'r.html'}" in out
    code, _, err = call(capsys, "compare", str(b), f"FT={f}", "--out", str(tmp_path / "r.pdf"))
    assert_one_line_error(code, err, "--out: the report is HTML: name it .html")
    assert not (tmp_path / "r.pdf").exists()
