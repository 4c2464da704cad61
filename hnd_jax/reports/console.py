"""A short plain-text summary of a finished dissection, for the end of ``hnd dissect`` (and ``hnd report``).

Per layer: how many units are localizable and interpretable, the concepts and regions with the most
paired units, and the units biased toward each global family (with the significant subset when the
results carry DESIGN.md §2c's ``biased_significant_<F>`` / ``paired_significant`` arrays). Then the
note on global families that were not scored (why, and what to pass to get them) and where the
report is. Counts follow :mod:`hnd_jax.reports.summary`, so the console and the HTML agree.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from hnd_jax.reports.results_view import SCORES_NPZ, LayerResults, RunResults, load_run
from hnd_jax.reports.run_notes import global_families_note
from hnd_jax.reports.summary import LayerSummary, summarize_layer

REPORT_HTML = "report.html"


def significant_arrays(layer: LayerResults) -> dict[str, np.ndarray]:
    """The optional §2c flags of a layer (``paired_significant`` [U,C] bool, ``biased_significant_<F>``
    [U,G] bool) when its results carry them; taken from the loaded layer, the file is not read again."""
    sig: dict[str, np.ndarray] = {}
    if layer.paired_significant is not None:
        sig["paired_significant"] = layer.paired_significant
    for fam in layer.global_families:
        if fam.biased_significant is not None:
            sig[f"biased_significant_{fam.name}"] = fam.biased_significant
    return sig


def _top(counts: dict[str, int], k: int) -> str:
    ranked = sorted(((n, i, name) for i, (name, n) in enumerate(counts.items()) if n > 0), key=lambda t: (-t[0], t[1]))
    return ", ".join(f"{name} {n}" for n, _, name in ranked[:k]) or "none"


def layer_lines(layer: LayerResults, summary: LayerSummary, top: int = 3) -> list[str]:
    """The lines of one layer (see the module docstring)."""
    sig = significant_arrays(layer)
    u = max(summary.num_units, 1)
    head = (
        f"layer {layer.name}: {summary.num_units} units, {summary.localizable} localizable "
        f"({100.0 * summary.localizable / u:.0f}%), {summary.interpretable} interpretable "
        f"({100.0 * summary.interpretable / u:.0f}%)"
    )
    if "paired_significant" in sig and sig["paired_significant"].shape == layer.paired.shape:
        sig_units = int((sig["paired_significant"] & layer.paired & layer.localizable[:, None]).any(axis=1).sum())
        head += f", {sig_units} with a significant pairing"
    lines = [
        head,
        f"  top concepts (paired units): {_top(summary.paired_per_concept, top)}",
        f"  top regions (interpretable units): {_top(summary.interpretable_per_region, top)}",
    ]
    if summary.biased_per_family:
        parts = []
        for fam in layer.global_families:
            n = summary.biased_per_family[fam.name]
            groups = _top(summary.biased_per_group[fam.name], 2)
            text = f"{fam.name} {n}"
            flags = sig.get(f"biased_significant_{fam.name}")
            if flags is not None and flags.shape == fam.biased.shape:
                text += f" ({int((flags & fam.biased).any(axis=1).sum())} significant)"
            if n:
                text += f" [{groups}]"
            parts.append(text)
        lines.append("  biased units: " + "; ".join(parts))
    return lines


def console_summary(
    out: str | Path, *, top: int = 3, report: str | Path | None = None, run: RunResults | None = None
) -> str:
    """A few lines per layer of the finished dissection in ``out``, the global-families note and the report.

    ``out``: a ``hnd dissect`` output folder (``OUT/dissection.json``, ``OUT/<layer>/scores.npz``).
    ``top``: how many concepts and regions to name per layer. ``report``: the report's path to name
    (default ``OUT/report.html`` when it exists). ``run``: the results of ``out`` when the caller has
    already loaded them (:func:`~hnd_jax.reports.results_view.load_run`), so they are not read again.
    Returns text without a trailing newline.
    Raises :class:`~hnd_jax.errors.HndError` (one line naming the file) when the results are missing
    or malformed, like every reader of :mod:`hnd_jax.reports.results_view`.
    """
    run = load_run(out) if run is None else run
    lines: list[str] = []
    for layer in run.layers:
        lines.extend(layer_lines(layer, summarize_layer(layer), top))
    note = global_families_note(run.meta)
    if note:
        lines.append(textwrap.fill(f"note: {note}", width=100, subsequent_indent="  ", break_on_hyphens=False))
    page = Path(report) if report is not None else run.out_dir / REPORT_HTML
    if page.is_file():
        lines.append(f"report: {page}")
    else:
        lines.append(f"results: {run.out_dir}/<layer>/{SCORES_NPZ} (write the report with: hnd report {run.out_dir})")
    return "\n".join(lines)
