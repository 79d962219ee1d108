"""The HTML report (``Analysis.to_html``), its figures (``Analysis.figure``) and the Jupyter summary."""

from .figures import FIGURES, make_figure
from .html import render_report, render_summary

__all__ = ["FIGURES", "make_figure", "render_report", "render_summary"]
