"""Static figure export: PNG/SVG/PDF through kaleido and a system Chromium, skipped where none is."""

import struct

import pytest

from dora_diag.errors import InputError
from dora_diag.report import export, figures

from .conftest import synthetic_analysis


def _renderer():
    try:
        export.check_renderer()
    except InputError as e:
        pytest.skip(str(e))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


def test_file_stems_are_safe_and_distinct():
    assert export.file_stem("figure2 ../../etc/passwd", 1) == "01-figure2_.._.._etc_passwd"
    assert export.file_stem("<script>", 2) == "02-script"
    assert export.file_stem("...", 3) == "03-figure"


def test_unknown_format_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown image format 'gif'"):
        export.write_figures([], tmp_path, formats=("gif",))


def test_missing_kaleido_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__",
                        lambda name, *a, **k: (_ for _ in ()).throw(ImportError()) if name == "kaleido" else real(name, *a, **k))
    with pytest.raises(InputError, match=r'pip install "dora-diag\[export\]"'):
        export.check_renderer()


def test_missing_browser_is_one_clear_line(monkeypatch):
    pytest.importorskip("kaleido")
    monkeypatch.setattr(export, "_browser", lambda: None)
    with pytest.raises(InputError, match="needs Chrome or Chromium"):
        export.check_renderer()


@pytest.mark.slow
def test_every_report_figure_exports(tmp_path):
    _renderer()
    a = synthetic_analysis()
    written = figures.export_report_figures(a, tmp_path / "figs", formats=("png", "svg", "pdf"))
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == sorted(p.name for p in written) and len(written) == 3 * 10   # 10 report figures
    scatter_png = next(p for p in written if p.name == "01-figure2_q_proj.png")
    height = int(a.figure("scatter").layout.height)
    assert _png_size(scatter_png.read_bytes()) == (export.WIDTH * export.PNG_SCALE, height * export.PNG_SCALE)
    svg = next(p for p in written if p.name == "01-figure2_q_proj.svg").read_text()
    assert svg.startswith("<svg") and "layer" in svg and "OLS fit" in svg   # colour bar and legend in the image
    assert next(p for p in written if p.suffix == ".pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
def test_figure_writes_image_and_notebook_gets_static_svg(tmp_path, monkeypatch):
    import plotly.io as pio

    _renderer()
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")   # what Jupyter uses
    fig = synthetic_analysis().figure("heatmap")
    assert export.to_image(fig, "svg").startswith(b"<svg")
    import kaleido

    try:
        bundle = fig._repr_mimebundle_()
        assert "application/vnd.plotly.v1+json" in bundle and bundle["image/svg+xml"].startswith("<svg")
        again = fig._repr_mimebundle_()["image/svg+xml"]   # from the kept browser (ids inside are random)
        assert again.startswith("<svg") and len(again) == len(bundle["image/svg+xml"])
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


@pytest.mark.slow
def test_compare_cli_writes_figures(make_pair, tmp_path):
    from click.testing import CliRunner

    from dora_diag.cli import cli

    _renderer()
    b, f, _, _ = make_pair(layers=4)
    out = tmp_path / "figs"
    result = CliRunner().invoke(cli, ["compare", str(b), f"FT={f}", "--figures", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    # q/v scatters, profile, 2 heatmaps, trajectory; PNG and SVG each; no temporary folder left
    assert len(files) == 12 and all(p.stat().st_size > 1000 for p in out.iterdir())
    assert "01-figure2_q_proj.png" in files and "02-figure2_v_proj.svg" in files
    assert f"12 figure files written to {out}" in result.output


def test_compare_cli_without_renderer_fails_before_comparing(make_pair, tmp_path, monkeypatch, capsys):
    from cli_helpers import assert_one_line_error, call

    monkeypatch.setattr(export, "_browser", lambda: None)
    b, f, _, _ = make_pair(layers=2)
    code, _, err = call(capsys, "compare", str(b), f"FT={f}", "--figures", str(tmp_path / "figs"), "-q")
    if "kaleido" in err:
        assert_one_line_error(code, err, export.NO_KALEIDO)
    else:
        assert_one_line_error(code, err, export.NO_BROWSER)
    assert not (tmp_path / "figs").exists()
