"""Every page the reports write, in headless Chromium at 1000 and 1400 px: no horizontal overflow,
no horizontal scroll bars inside the page, no console errors, and no plot shown at less than half
its natural width (its text would be unreadable at 100% zoom).

Pages: a model's report.html (38 concepts, two layers, top-image strips, plots), one whose global
families were not scored (the note in the header), compare.html over two models, and the index page
`hnd report FOLDER` writes for a folder of runs. Needs chromium, chromium-driver and selenium
(.ci/run installs them); without them the test is skipped and says which is missing.
"""

from __future__ import annotations

import json

import pytest
from browser import measure, missing_browser, start_browser
from reports_fixture import FakeDictionary, write_fixture_run
from test_header import skip_globals

from hnd_jax.reports.compare import compare_runs
from hnd_jax.reports.html import write_report
from hnd_jax.reports.index import write_index
from hnd_jax.reports.plots import write_plots

WIDTHS = (1000, 1400)
PAGES = ("biased/report.html", "npy/report.html", "compare/compare.html", "index.html")

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=f"no browser: {missing_browser()}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages") / "demo"
    runs = {}
    for seed, name in enumerate(("biased", "control", "npy")):
        run = write_fixture_run(root / name, {"layer4.2.conv1": 24, "fc": 12}, seed=seed, image_size=24, num_images=10)
        meta = dict(run.meta)
        meta["model"] = dict(meta["model"], weights={
            "kind": "file", "format": "pt",
            "path": "/home/someone/a/rather/long/path/to/the/checkpoints/of/this/model/resnet50_face_epoch_90.pt"})
        (run.out / "dissection.json").write_text(json.dumps(meta))
        run.meta = meta
        runs[name] = run
    skip_globals(runs["npy"], lambda f: f"no '{f}/<group>' arrays in activations_of_layer4.npy")
    for run in runs.values():
        write_plots(run.out)
        write_report(run.out, dictionary=FakeDictionary(run.taxonomy, run.image_size, run.num_images))
    compare_runs([root / "biased", root / "control"], root / "compare", labels=["biased", "control"])
    write_index(root)
    return root


@pytest.fixture(scope="module")
def driver():
    d = start_browser()
    yield d
    d.quit()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", PAGES)
def test_page_fits_and_plots_are_readable(folder, driver, page, width):
    layout = measure(driver, folder / page, width)
    assert layout.inner_width == width
    assert layout.problems() == []
    plots = [i for i in layout.images if "strip" not in i["cls"].split()]
    if page != "index.html":
        assert plots, "no plot on the page: nothing was checked"


def test_the_check_catches_each_fault(tmp_path, driver):
    """A page with every fault: each is reported (so the passing tests above can fail)."""
    from PIL import Image

    Image.new("RGB", (1600, 200), "white").save(tmp_path / "wide.png")
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><div style='width:1300px'>wide</div>"
        "<div style='width:300px;overflow:auto'><table><tr><td style='white-space:nowrap'>"
        + "x" * 200 + "</td></tr></table></div>"
        "<img src='wide.png' alt='plot' style='width:700px'><script>console.error('broken')</script></body></html>"
    )
    found = "\n".join(measure(driver, page, 1000).problems())
    assert "page overflows horizontally" in found
    assert "scrolls horizontally" in found
    assert "image 'plot' shown 700 px wide, natural 1600 px" in found
    assert "console:" in found and "broken" in found
    assert measure(driver, page, 1400).problems() != []
