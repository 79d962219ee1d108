"""Static figures (PNG/SVG/PDF) through plotly's kaleido and the system's Chrome/Chromium, offline.

kaleido (``pip install "dora-diag[export]"``) drives a local Chrome/Chromium (Debian:
``apt-get install chromium``; ``BROWSER_PATH`` names another one) with the plotly.js that ships
with plotly.py, so nothing is downloaded. MathJax, which kaleido would fetch from a CDN, is off:
the figures use none.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import plotly.graph_objects as go

from ..errors import InputError

FORMATS = ("png", "svg", "pdf")
WIDTH = 1200        # px of a static figure; its height is the figure's own
PNG_SCALE = 2       # PNG pixels per px: sharp in a paper or on a slide
NO_KALEIDO = 'static figure export needs kaleido: pip install "dora-diag[export]" (or pip install kaleido)'
NO_BROWSER = ("static figure export needs Chrome or Chromium (Debian: apt-get install chromium; "
              "or set BROWSER_PATH to a Chrome executable)")


class ReportFigure(go.Figure):
    """A plotly Figure whose notebook output carries a static SVG next to plotly's JSON, so that
    a saved notebook, nbconvert or GitHub shows the figure without JavaScript (when kaleido and
    a browser are available; otherwise plotly's output alone)."""

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = dict(super()._repr_mimebundle_(include, exclude, **kwargs) or {})
        try:
            bundle.setdefault("image/svg+xml", notebook_svg(self))
        except InputError:
            pass
        return bundle


def notebook_svg(fig: go.Figure) -> str:
    """The figure as SVG text from kaleido's process-wide browser, started on first use and kept
    (a fresh browser costs ~4 s per figure on 2 cores, a kept one ~0.4 s)."""
    check_renderer()
    import kaleido

    kaleido.start_sync_server(mathjax=False, silence_warnings=True)   # no-op when already running
    opts = {"format": "svg", "width": WIDTH, "height": int(fig.layout.height or 500)}
    return kaleido.calc_fig_sync(fig.to_dict(), opts=opts).decode("utf-8")


def check_renderer() -> None:
    """InputError (one line) when static export cannot work here: no kaleido, or no browser."""
    try:
        import kaleido  # noqa: F401  (import only to see that it is there)
    except ImportError as e:
        raise InputError(NO_KALEIDO) from e
    if not _browser():
        raise InputError(NO_BROWSER)


def _browser() -> str | None:
    """The Chrome/Chromium kaleido will use: ``BROWSER_PATH``, else the first one on PATH."""
    from choreographer.browsers.chromium import Chromium

    return os.environ.get("BROWSER_PATH") or Chromium.find_browser(skip_local=False)


def _kaleido_specs(items: list[tuple[go.Figure, Path, str]]) -> list[dict]:
    return [{"fig": fig.to_dict(), "path": str(path),
             "opts": {"format": fmt, "width": WIDTH, "height": int(fig.layout.height or 500),
                      "scale": PNG_SCALE if fmt == "png" else 1}} for fig, path, fmt in items]


def _render(items: list[tuple[go.Figure, Path, str]]) -> None:
    """Writes each (figure, path, format) with one browser session; InputError when none is there."""
    check_renderer()
    import kaleido
    from kaleido.errors import ChromeNotFoundError

    try:
        kaleido.write_fig_from_object_sync(_kaleido_specs(items), kopts={"mathjax": False})
    except ChromeNotFoundError as e:
        raise InputError(NO_BROWSER) from e


def to_image(fig: go.Figure, fmt: str = "png") -> bytes:
    """The figure as PNG, SVG or PDF bytes."""
    if fmt not in FORMATS:
        raise InputError(f"unknown image format {fmt!r}; choose one of {list(FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="dora-diag-figure-") as tmp:
        path = Path(tmp) / f"figure.{fmt}"
        _render([(fig, path, fmt)])
        return path.read_bytes()


def file_stem(name: str, index: int) -> str:
    """``NN-name`` with everything but letters, digits, '.', '_' and '-' replaced: names come from
    checkpoints and must not reach outside the directory or collide (the index keeps them apart)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "figure"
    return f"{index:02d}-{safe}"


def write_figures(named: list[tuple[str, go.Figure]], directory: str | os.PathLike,
                  formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Writes every (name, figure) in each of ``formats`` into ``directory`` (created); each file
    appears whole or not at all (rendered into a temporary folder there, then renamed)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"unknown image format {bad[0]!r}; choose from {list(FORMATS)}")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the figures directory {str(out)!r}: {e.strerror}") from e
    with tempfile.TemporaryDirectory(prefix=".dora-diag-figures-", dir=out) as tmp:
        items = [(fig, Path(tmp) / f"{file_stem(name, i)}.{fmt}", fmt)
                 for i, (name, fig) in enumerate(named, start=1) for fmt in formats]
        _render(items)
        written = []
        for _, path, _ in items:
            os.replace(path, out / path.name)
            written.append(out / path.name)
    return written
