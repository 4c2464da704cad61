"""OUT/report.html: parses, one card per unit, filter controls, offline, images present, counts right."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from html_check import parse_report, table
from PIL import Image
from reports_fixture import NASTY_MODEL_NAME, FakeDictionary, small_taxonomy, write_fixture_run
from test_summary import reference_counts

from hnd_jax.errors import HndError
from hnd_jax.reports.html import write_report
from hnd_jax.reports.plots import write_plots

LAYERS = {"layer3.1.conv2": 7, "layer4.2.conv1": 11}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "run"
    run = write_fixture_run(out, LAYERS, image_size=20, num_images=15, top={"layer3.1.conv2": False}, seed=7)
    write_plots(out)
    dic = FakeDictionary(run.taxonomy, 20, 15)
    path = write_report(out, dictionary=dic)
    text = path.read_text()
    return run, path, text, parse_report(text)


def open_image(report_path: Path, src: str) -> Image.Image:
    if src.startswith("data:"):
        head, data = src.split(",", 1)
        assert ";base64" in head
        im = Image.open(io.BytesIO(base64.b64decode(data)))
    else:
        file = report_path.parent / src
        assert file.is_file(), src
        im = Image.open(file)
    im.load()
    return im


def test_html_is_balanced_and_has_a_card_per_unit(report):
    run, path, text, parsed = report
    assert path.name == "report.html" and text.startswith("<!DOCTYPE html>")
    assert parsed.errors == [] and parsed.stack == []
    assert [s.attrs["data-layer"] for s in parsed.sections] == list(LAYERS)
    for section, units in zip(parsed.sections, LAYERS.values()):
        assert sorted(int(c["data-unit"]) for c in section.cards) == list(range(units))


def test_filter_and_sort_controls_exist(report):
    _, _, text, parsed = report
    for section in parsed.sections:
        classes = {a["class"] for _, a in section.controls}
        assert {"f-concept", "f-region", "f-iou", "f-interp", "f-sort"} <= classes
    assert parsed.scripts == 1 and "addEventListener" in text


def test_cards_carry_the_unit_data(report):
    run, _, _, parsed = report
    for section, fixture_layer in zip(parsed.sections, run.layers):
        a = fixture_layer.arrays
        for card in section.cards:
            u = int(card["data-unit"])
            top = int(a["top_concept"][u])
            assert card["data-concept"] == ("" if top < 0 else str(a["concepts"][top]))
            if top < 0:
                assert card["data-iou"] == ""
            else:
                assert float(card["data-iou"]) == pytest.approx(float(a["iou"][u, top]), abs=1e-6)
            loc = bool(a["localizable"][u])
            assert card["data-region"] == (str(a["region"][u]) if loc else "-")
            paired = [str(a["concepts"][c]) for c in np.flatnonzero(a["paired"][u])] if loc else []
            assert card["data-paired"] == "|".join(paired)
            assert card["data-interpretable"] == str(int(bool(paired)))


def test_offline_no_external_urls(report):
    _, _, text, parsed = report
    assert parsed.urls, "expected images and links"
    for tag, attr, value in parsed.urls:
        assert not re.match(r"^\s*(https?:)?//", value, re.I), (tag, attr, value)
    assert "http://" not in text and "https://" not in text


def test_images_present_and_decodable(report):
    run, path, _, parsed = report
    with_top, without_top = parsed.sections[1], parsed.sections[0]
    strips = [i for i in with_top.imgs if "strip" in (i.get("class") or "")]
    assert len(strips) == LAYERS["layer4.2.conv1"]
    for img in strips:
        im = open_image(path, img["src"])
        assert im.format in ("JPEG", "PNG") and im.size == (4 * 96 + 3 * 2, 96)
    assert not [i for i in without_top.imgs if "strip" in (i.get("class") or "")]
    plots = [i for s in parsed.sections for i in s.imgs if "strip" not in (i.get("class") or "")]
    assert len(plots) == 8
    for img in plots:
        assert open_image(path, img["src"]).format == "PNG"


def test_note_instead_of_images_when_no_top_images(report):
    _, _, text, _ = report
    assert "Top images were not stored with these results" in text


def test_text_is_escaped(report):
    _, _, text, parsed = report
    assert NASTY_MODEL_NAME not in text and parsed.scripts == 1
    assert NASTY_MODEL_NAME in parsed.title


def test_summary_tables_equal_independent_counts(report):
    run, _, _, parsed = report
    for section, fixture_layer in zip(parsed.sections, run.layers):
        ref = reference_counts(fixture_layer.arrays)
        units = len(fixture_layer.arrays["thresholds"])
        head = section.headline
        assert f"{units} units" in head
        assert f"{ref['localizable']} localizable" in head and f"{ref['interpretable']} interpretable" in head
        rows = {r[0]: (int(r[1]), int(r[2])) for r in table(section, "Per facial region").rows}
        assert rows == {r: (ref["loc_region"].get(r, 0), ref["int_region"].get(r, 0))
                        for r in ("Eye", "Cheek", "Nose", "Mouth", "Chin")}
        rows = {r[0]: (int(r[1]), int(r[2])) for r in table(section, "Per concept type").rows}
        assert rows == {t: (ref["loc_type"].get(t, 0), ref["int_type"].get(t, 0))
                        for t in ("attribute", "action_unit", "part")}
        rows = {r[0]: int(r[3]) for r in table(section, "Units paired per concept").rows}
        assert rows == ref["per_concept"]
        rows = {(r[0], r[1]): int(r[2]) for r in table(section, "Biased units per global subgroup").rows}
        assert rows == {(f, g): n for f, gs in ref["biased"].items() for g, n in gs.items()}
        # significant subsets beside the raw counts (DESIGN.md §2c)
        assert f"{ref['interpretable_significant']} significant" in head
        for f, n in ref["biased_significant_family"].items():
            assert f"biased ({f}) ({n} significant)" in head.replace("  ", " ")
        rows = {r[0]: int(r[4]) for r in table(section, "Units paired per concept").rows}
        assert rows == ref["per_concept_significant"]
        rows = {(r[0], r[1]): int(r[3]) for r in table(section, "Biased units per global subgroup").rows}
        assert rows == {(f, g): n for f, gs in ref["biased_significant"].items() for g, n in gs.items()}


def test_unit_without_top_concept_says_none(report):
    run, _, text, parsed = report
    for section, fixture_layer in zip(parsed.sections, run.layers):
        assert fixture_layer.arrays["top_concept"][3] == -1
        card = next(c for c in section.cards if c["data-unit"] == "3")
        assert card["data-concept"] == "" and card["data-region"] == "-"
    assert "top concept <b>none</b>" in text


def test_without_dictionary_says_so_and_writes_no_assets(tmp_path):
    write_fixture_run(tmp_path / "run", {"l": 4}, image_size=12, num_images=6)
    path = write_report(tmp_path / "run")
    text = path.read_text()
    assert "the Face Dictionary was not available" in text
    assert not (tmp_path / "run" / "report_assets").exists()
    assert len(parse_report(text).sections[0].cards) == 4


def test_max_units_keeps_the_best(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 12}, image_size=12, num_images=6, seed=9)
    dic = FakeDictionary(run.taxonomy, 12, 6)
    parsed = parse_report(write_report(tmp_path / "run", dictionary=dic, max_units=5).read_text())
    shown = sorted(int(c["data-unit"]) for c in parsed.sections[0].cards)
    iou = run.layers[0].arrays["iou"]
    best = np.array([np.nanmax(r) if not np.isnan(r).all() else -1.0 for r in iou])
    want = sorted(sorted(range(12), key=lambda u: (-best[u], u))[:5])
    assert shown == want
    assert len(list((tmp_path / "run" / "report_assets" / "L0").iterdir())) == 5
    # the summary still counts every unit
    assert "12 units" in parsed.sections[0].headline


def test_user_taxonomy_report(tmp_path):
    tax = small_taxonomy()
    run = write_fixture_run(tmp_path / "run", {"l": 9}, taxonomy=tax, image_size=12, num_images=6)
    parsed = parse_report(write_report(tmp_path / "run", dictionary=FakeDictionary(tax, 12, 6)).read_text())
    section = parsed.sections[0]
    assert [r[0] for r in table(section, "Per facial region").rows] == ["Top", "Bottom"]
    assert [(r[0], r[1]) for r in table(section, "Biased units per global subgroup").rows] == [
        ("Light", "dim"), ("Light", "mid"), ("Light", "bright")]
    ref = reference_counts(run.layers[0].arrays)
    assert {r[0]: int(r[3]) for r in table(section, "Units paired per concept").rows} == ref["per_concept"]


def test_bad_results_leave_the_previous_report(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 4}, image_size=12, num_images=6)
    before = write_report(run.out).read_text()
    (run.out / "l" / "scores.npz").write_bytes(b"garbage")
    with pytest.raises(HndError, match="scores.npz"):
        write_report(run.out)
    assert (run.out / "report.html").read_text() == before
