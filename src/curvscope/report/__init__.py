"""Reports: figures (PNG + SVG) and a self-contained HTML page from a run directory, never recomputing."""

from curvscope.report.html import render

__all__ = ["render"]
