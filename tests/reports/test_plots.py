"""OUT/plots/: four valid PNGs per layer, drawn from the summary counts."""

from __future__ import annotations

import numpy as np
from PIL import Image
from reports_fixture import small_taxonomy, write_fixture_run

from hnd_jax.reports.plots import PLOT_NAMES, bar_chart, figure_png, plot_path, write_plots


def test_plots_exist_and_are_valid_pngs(tmp_path):
    write_fixture_run(tmp_path / "run", {"layer4.2.conv1": 9, "fc": 5}, top=False)
    written = write_plots(tmp_path / "run")
    assert len(written) == 2 * len(PLOT_NAMES)
    for layer in ("layer4.2.conv1", "fc"):
        for name in PLOT_NAMES:
            path = plot_path(tmp_path / "run", layer, name)
            assert path in written and path.is_file()
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150
                pixels = np.asarray(im.convert("RGB"))
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5  # something was drawn


def test_plots_for_a_user_taxonomy_without_global_families(tmp_path):
    tax = small_taxonomy()
    data = tax.to_dict()
    data["global_families"] = []
    from hnd_jax.taxonomy import taxonomy_from_dict

    write_fixture_run(tmp_path / "run", {"l": 6}, taxonomy=taxonomy_from_dict(data), top=False)
    for path in write_plots(tmp_path / "run"):
        with Image.open(path) as im:
            im.verify()


def test_bar_heights_follow_the_values():
    fig = bar_chart(["a", "b", "c"], {"x": [3, 0, 7], "y": [1, 2, 3]}, title="t", ylabel="n")
    bars = fig.axes[0].patches
    assert [round(b.get_height()) for b in bars] == [3, 0, 7, 1, 2, 3]
    assert figure_png(fig).startswith(b"\x89PNG")


def test_significant_subset_is_drawn_over_the_bars():
    fig = bar_chart(["a", "b", "c"], {"paired units": [3, 0, 7]}, title="t", ylabel="n", significant=[1, 0, 6],
                    group_of=["r1", "r1", "r2"])
    bars = fig.axes[0].patches
    assert [round(b.get_height()) for b in bars] == [3, 0, 7, 1, 0, 6]
    assert all(b.get_hatch() == "////" for b in bars[3:]) and not any(b.get_hatch() for b in bars[:3])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["r1", "r2", "significant (BH)"]
    figure_png(fig)


def test_layer_plots_mark_significant_counts(tmp_path):
    from hnd_jax.reports.plots import layer_figures
    from hnd_jax.reports.results_view import load_run
    from hnd_jax.reports.summary import summarize_layer

    write_fixture_run(tmp_path / "run", {"l": 30}, top=False)
    layer = load_run(tmp_path / "run").layers[0]
    s = summarize_layer(layer)
    figs = layer_figures(s, layer.concept_region, layer.concepts)
    hatched = [round(b.get_height()) for b in figs["biased_per_subgroup"].axes[0].patches if b.get_hatch()]
    want = [n for fam in s.biased_significant_per_group.values() for n in fam.values()]
    assert hatched == want and sum(want) > 0
    # paired_per_concept is a horizontal bar chart: a bar's length is its width
    hatched = [round(b.get_width()) for b in figs["paired_per_concept"].axes[0].patches if b.get_hatch()]
    assert sum(hatched) == sum(s.paired_significant_per_concept.values()) > 0
