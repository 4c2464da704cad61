"""Paper-style bar charts of one dissection, as PNGs under ``OUT/plots/<layer>/``.

Per layer (counts defined in :mod:`hnd_jax.reports.summary`):

* ``paired_per_concept.png``: units paired with each concept, grouped and coloured by region
  (the paper's "interpretable units per concept" figure);
* ``per_region.png``: localizable and interpretable units per facial region;
* ``per_concept_type.png``: localizable and interpretable units per concept type;
* ``biased_per_subgroup.png``: units biased toward each global subgroup, grouped by family.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot global state, no display
needed) and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from hnd_jax.atomic import write_bytes
from hnd_jax.reports.results_view import RunResults, load_run
from hnd_jax.reports.summary import LayerSummary, summarize_layer

PLOTS_DIR = "plots"
PLOT_NAMES = ("paired_per_concept", "per_region", "per_concept_type", "biased_per_subgroup")
SMALL_WIDTH_IN = 4.4  # two small plots side by side on a 1000 px page at 100 dpi
MAX_WIDTH_IN = 9.0  # the widest plot, in inches at 100 dpi: fits a 1000 px page unscaled
HBAR_WIDTH_IN = 7.0
HBAR_ROW_IN = 0.19  # height of one bar row: 9 pt labels stay apart
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")


def plot_path(out_dir: str | Path, layer: str, name: str) -> Path:
    """Where plot ``name`` of ``layer`` lives: ``OUT/plots/<layer>/<name>.png``."""
    return Path(out_dir) / PLOTS_DIR / layer / f"{name}.png"


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes on the Agg canvas."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def bar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    colors: Sequence[str] | None = None,
    group_of: Sequence[str] | None = None,
    rotate: bool = False,
    integer: bool = False,
    empty_text: str = "nothing to show",
    significant: Sequence[float] | None = None,
) -> Figure:
    """Grouped bars: one group per label, one bar per series.

    With a single series and ``group_of`` (e.g. the region of each concept), bars are coloured by
    group and a legend names the groups, like the paper's per-concept figure. ``significant`` (one
    value per label, single series only) draws the significant subset of each bar as a hatched
    bar over it (DESIGN.md §2c), labelled "significant (BH)".
    """
    n = len(labels)
    # At most MAX_WIDTH_IN wide: the page shows plots at their natural size (long axes use hbar_chart).
    width_in = max(SMALL_WIDTH_IN, min(MAX_WIDTH_IN, 1.2 + 0.32 * n * max(1, len(series))))
    fig = Figure(figsize=(width_in, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    if n == 0 or not series:
        _empty_note(ax, empty_text)
        return fig
    x = np.arange(n)
    k = len(series)
    bar_w = 0.8 / k
    for i, (name, values) in enumerate(series.items()):
        offs = x - 0.4 + bar_w * (i + 0.5)
        if k == 1 and group_of is not None:
            groups = list(dict.fromkeys(group_of))
            color_of = {g: PALETTE[j % len(PALETTE)] for j, g in enumerate(groups)}
            ax.bar(offs, values, bar_w, color=[color_of[g] for g in group_of])
            ax.legend(handles=[Patch(color=color_of[g], label=g) for g in groups], fontsize=8, frameon=False,
                      loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: never over a bar
        else:
            color = (colors[i] if colors else PALETTE[i % len(PALETTE)])
            ax.bar(offs, values, bar_w, label=name, color=color)
    handles = []
    if significant is not None and k == 1:
        ax.bar(x, significant, bar_w * 0.6, color="none", edgecolor="#111111", hatch="////", linewidth=0.8)
        handles = [Patch(facecolor="none", edgecolor="#111111", hatch="////", label="significant (BH)")]
        if group_of is not None:
            old = ax.get_legend()
            handles = list(old.legend_handles if old is not None else []) + handles
        else:
            handles = [Patch(color=(colors[0] if colors else PALETTE[0]), label=next(iter(series)))] + handles
        ax.legend(handles=handles, fontsize=8, frameon=False)
    if k > 1:
        ax.legend(fontsize=8, frameon=False)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.6, n - 0.4)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def hbar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    group_of: Sequence[str] | None = None,
    integer: bool = False,
    empty_text: str = "nothing to show",
    significant: Sequence[float] | None = None,
) -> Figure:
    """Horizontal grouped bars for long axes (38 concepts, several models): one row per label, top to bottom.

    The figure is :data:`HBAR_WIDTH_IN` wide and grows in height with the number of bars, so every
    tick label is 9 pt at the page's 100% zoom however many labels there are. With a single series and
    ``group_of``, bars are coloured by group (the region of each concept) with a legend, as in
    :func:`bar_chart`; ``significant`` (single series) hatches the significant subset of each bar.
    """
    n = len(labels)
    k = max(1, len(series))
    height_in = 1.3 + HBAR_ROW_IN * max(n, 1) * (1 + 0.6 * (k - 1))
    fig = Figure(figsize=(HBAR_WIDTH_IN, height_in), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    if n == 0 or not series:
        _empty_note(ax, empty_text)
        return fig
    y = np.arange(n)
    bar_h = 0.8 / k
    for i, (name, values) in enumerate(series.items()):
        offs = y - 0.4 + bar_h * (i + 0.5)
        if k == 1 and group_of is not None:
            groups = list(dict.fromkeys(group_of))
            color_of = {g: PALETTE[j % len(PALETTE)] for j, g in enumerate(groups)}
            ax.barh(offs, values, bar_h, color=[color_of[g] for g in group_of])
            handles = [Patch(color=color_of[g], label=g) for g in groups]
            if significant is not None:
                ax.barh(offs, significant, bar_h * 0.6, color="none", edgecolor="#111111", hatch="////",
                        linewidth=0.8)
                handles.append(Patch(facecolor="none", edgecolor="#111111", hatch="////", label="significant (BH)"))
            ax.legend(handles=handles, fontsize=9, frameon=False, loc="best")
        else:
            ax.barh(offs, values, bar_h, label=name, color=PALETTE[i % len(PALETTE)])
    if k > 1:
        ax.legend(fontsize=9, frameon=False, loc="best")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_ylim(n - 0.4, -0.6)  # first label on top, like a table
    ax.set_xlabel(xlabel)
    if integer:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def layer_figures(summary: LayerSummary, concept_region: Sequence[str], concepts: Sequence[str]) -> dict[str, Figure]:
    """The four figures of one layer, keyed by :data:`PLOT_NAMES`."""
    head = f"{summary.layer} ({summary.num_units} units)"
    # Concepts grouped by region in the display order of the regions, keeping axis order inside.
    order = [i for r in summary.regions for i, cr in enumerate(concept_region) if cr == r]
    figs = {
        "paired_per_concept": hbar_chart(
            [concepts[i] for i in order],
            {"paired units": [summary.paired_per_concept[concepts[i]] for i in order]},
            title=f"{head}: units paired with each concept",
            xlabel="units",
            integer=True,
            group_of=[concept_region[i] for i in order],
            significant=None if summary.paired_significant_per_concept is None
            else [summary.paired_significant_per_concept[concepts[i]] for i in order],
        ),
        "per_region": bar_chart(
            list(summary.regions),
            {
                "localizable": [summary.localizable_per_region[r] for r in summary.regions],
                "interpretable (paired)": [summary.interpretable_per_region[r] for r in summary.regions],
            },
            title=f"{head}: units per facial region",
            ylabel="units",
            integer=True,
        ),
        "per_concept_type": bar_chart(
            list(summary.concept_types),
            {
                "localizable (top concept)": [summary.localizable_per_type[t] for t in summary.concept_types],
                "interpretable (paired)": [summary.interpretable_per_type[t] for t in summary.concept_types],
            },
            title=f"{head}: units per concept type",
            ylabel="units",
            integer=True,
        ),
    }
    labels, values, fams, sig = [], [], [], []
    for fam, counts in summary.biased_per_group.items():
        for g, n in counts.items():
            labels.append(g)
            values.append(n)
            fams.append(fam)
            if summary.biased_significant_per_group is not None:
                sig.append(summary.biased_significant_per_group[fam][g])
    figs["biased_per_subgroup"] = bar_chart(
        labels,
        {"biased units": values},
        title=f"{head}: units biased toward each global subgroup",
        ylabel="units",
        integer=True,
        group_of=fams,
        rotate=True,
        empty_text="no global families in these results",
        significant=sig if summary.biased_significant_per_group is not None else None,
    )
    return figs


def write_plots(out_dir: str | Path, run: RunResults | None = None) -> list[Path]:
    """Write every layer's figures under ``OUT/plots/``; returns the written paths."""
    run = load_run(out_dir) if run is None else run
    written = []
    for layer in run.layers:
        figs = layer_figures(summarize_layer(layer), layer.concept_region, layer.concepts)
        for name in PLOT_NAMES:
            path = plot_path(run.out_dir, layer.name, name)
            write_bytes(path, figure_png(figs[name]))
            written.append(path)
    return written
