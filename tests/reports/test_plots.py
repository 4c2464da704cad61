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
