"""Readable reports of dissection results: HTML per run, paper-style plots, cross-model comparison.

Public entry points (imported lazily so that ``import hnd_jax.reports`` does not load matplotlib):

* :func:`write_report` (``html.py``): ``OUT/report.html`` (+ ``OUT/report_assets/``);
* :func:`write_plots` (``plots.py``): ``OUT/plots/<layer>/*.png``;
* :func:`compare_runs` (``compare.py``): ``hnd compare`` figures, ``compare.json``, ``compare.html``;
* :func:`build_report` (``build.py``): what ``hnd report OUT`` does (reopen dictionary, plots, HTML);
  :func:`build_reports` also handles a folder of several runs (``index.py`` writes their index page);
* :func:`console_summary` (``console.py``): the few lines per layer ``hnd dissect`` prints at the end.

They read only the public results format (``hnd_jax/results.py``) through ``results_view.py``; the
counts they show are defined once in ``summary.py``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "write_report": "hnd_jax.reports.html",
    "write_plots": "hnd_jax.reports.plots",
    "compare_runs": "hnd_jax.reports.compare",
    "build_report": "hnd_jax.reports.build",
    "build_reports": "hnd_jax.reports.build",
    "console_summary": "hnd_jax.reports.console",
    "load_run": "hnd_jax.reports.results_view",
    "summarize_layer": "hnd_jax.reports.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hnd_jax.reports' has no attribute {name!r}")
