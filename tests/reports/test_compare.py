"""`hnd compare`: fractions of units per region / type / subgroup, plots, json, html; bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from html_check import parse_report
from PIL import Image
from reports_fixture import small_taxonomy, write_fixture_run
from test_summary import reference_counts

from hnd_jax.cli import main as cli_main
from hnd_jax.errors import HndError
from hnd_jax.reports.compare import FIGURES


def two_runs(tmp_path):
    a = write_fixture_run(tmp_path / "modelA", {"layer4": 10}, seed=1, top=False)
    b = write_fixture_run(tmp_path / "modelB", {"l3": 6, "l4": 20}, seed=2, top=False)
    return a, b


def test_compare_cli_happy_path(tmp_path):
    a, b = two_runs(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "hnd_jax.cli.main", "compare", str(a.out), str(b.out), "--out", str(tmp_path / "cmp"),
         "--labels", "biased,control"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    cmp = tmp_path / "cmp"
    for name in FIGURES:
        with Image.open(cmp / f"compare_{name}.png") as im:
            im.verify()
    table = json.loads((cmp / "compare.json").read_text())
    assert [s["label"] for s in table["series"]] == ["biased", "control:l3", "control:l4"]
    expected = [(a.layers[0], 10), (b.layers[0], 6), (b.layers[1], 20)]
    for row, (layer, units) in zip(table["series"], expected):
        ref = reference_counts(layer.arrays)
        f = row["fractions"]
        assert row["num_units"] == units
        assert f["interpretable"] == pytest.approx(ref["interpretable"] / units)
        assert f["interpretable_per_region"] == pytest.approx(
            {r: ref["int_region"].get(r, 0) / units for r in table["regions"]})
        assert f["interpretable_per_type"] == pytest.approx(
            {t: ref["int_type"].get(t, 0) / units for t in table["concept_types"]})
        for fam, groups in ref["biased"].items():
            assert f["biased_per_group"][fam] == pytest.approx({g: n / units for g, n in groups.items()})
    parsed = parse_report((cmp / "compare.html").read_text())
    assert parsed.errors == [] and parsed.stack == []
    imgs = [v for t, k, v in parsed.urls if t == "img"]
    assert len(imgs) == len(FIGURES) and all(v.startswith("data:image/png;base64,") for v in imgs)


def run_main(argv, capsys):
    code = cli_main.main(argv)
    err = capsys.readouterr().err
    return code, err


def test_compare_rejects_a_folder_without_results(tmp_path, capsys):
    a, _ = two_runs(tmp_path)
    (tmp_path / "empty").mkdir()
    code, err = run_main(["compare", str(a.out), str(tmp_path / "empty"), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and err.startswith("hnd: error: ") and err.strip().count("\n") == 0
    assert "empty" in err and "dissection.json" in err
    assert not (tmp_path / "c").exists()


def test_compare_rejects_mismatched_taxonomies(tmp_path, capsys):
    a, _ = two_runs(tmp_path)
    c = write_fixture_run(tmp_path / "user", {"l": 5}, taxonomy=small_taxonomy(), top=False)
    code, err = run_main(["compare", str(a.out), str(c.out), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "user" in err and "differ" in err


def test_compare_rejects_bad_labels_and_single_run(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    code, err = run_main(["compare", str(a.out), str(b.out), "--out", str(tmp_path / "c"), "--labels", "x"], capsys)
    assert code == 2 and "--labels" in err and err.strip().count("\n") == 0
    code, err = run_main(["compare", str(a.out), str(b.out), "--out", str(tmp_path / "c"), "--labels", "x,x"], capsys)
    assert code == 2 and "distinct" in err
    code, err = run_main(["compare", str(a.out), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "at least two" in err


def test_families_scored_in_some_runs_only_are_left_out(tmp_path):
    import numpy as np

    from hnd_jax.reports.compare import compare_runs

    a, b = two_runs(tmp_path)
    path = b.out / "l3" / "scores.npz"
    arrays = {k: v for k, v in np.load(path).items() if not k.endswith("_Age")}
    np.savez(path, **arrays)
    path = b.out / "l4" / "scores.npz"
    arrays = {k: v for k, v in np.load(path).items() if not k.endswith("_Age")}
    np.savez(path, **arrays)
    table = json.loads((compare_runs([a.out, b.out], tmp_path / "cmp") / "compare.json").read_text())
    assert table["global_families_left_out"] == ["Age"]
    assert {f for f, _ in table["global_subgroups"]} == {"Gender", "Ethnicity", "skin_tone"}
    assert "Age" in (tmp_path / "cmp" / "compare.html").read_text()


def test_same_family_with_other_groups_is_rejected(tmp_path, capsys):
    import numpy as np

    a, b = two_runs(tmp_path)
    for layer in ("l3", "l4"):
        path = b.out / layer / "scores.npz"
        arrays = dict(np.load(path).items())
        arrays["global_groups_Gender"] = np.array(["F", "M"])
        np.savez(path, **arrays)
    code, err = run_main(["compare", str(a.out), str(b.out), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "'Gender'" in err and err.strip().count("\n") == 0


def test_every_shown_difference_has_a_fisher_test(tmp_path):
    import scipy.stats as st

    from hnd_jax.reports.compare import compare_runs

    a, b = two_runs(tmp_path)
    table = json.loads((compare_runs([a.out, b.out], tmp_path / "cmp", labels=["A", "B"]) / "compare.json").read_text())
    tests = table["tests"]
    by = {(t["series"], t["measure"], t["key"]): t for t in tests}
    # every bar of every figure and every significant count has its test against the baseline
    for row in table["series"][1:]:
        f = row["fractions"]
        for measure in ("interpretable_per_region", "interpretable_per_type", "paired_per_concept",
                        "paired_significant_per_concept"):
            for key in f[measure]:
                assert (row["label"], measure, key) in by
        for measure in ("biased_per_group", "biased_significant_per_group"):
            for fam, groups in f[measure].items():
                for g in groups:
                    assert (row["label"], measure, f"{fam}: {g}") in by
        for measure in ("localizable", "interpretable", "interpretable_significant"):
            assert (row["label"], measure, "") in by
    assert {t["series"] for t in tests} == {"B:l3", "B:l4"} and all(t["baseline"] == "A" for t in tests)
    # p-values: scipy's Fisher exact on the 2x2 table of counts; BH over all of them
    ref = reference_counts(b.layers[1].arrays)
    t = by[("B:l4", "interpretable", "")]
    assert (t["count"], t["units"], t["units_baseline"]) == (ref["interpretable"], 20, 10)
    for t in tests:
        want = st.fisher_exact([[t["count_baseline"], t["units_baseline"] - t["count_baseline"]],
                                [t["count"], t["units"] - t["count"]]]).pvalue
        assert t["p_value"] == pytest.approx(want, rel=1e-12)
        assert t["difference"] == pytest.approx(t["count"] / t["units"] - t["count_baseline"] / t["units_baseline"])
    adj = st.false_discovery_control([t["p_value"] for t in tests], method="bh")
    assert [t["p_value_bh"] for t in tests] == pytest.approx(list(adj))
    html_text = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Fisher" in html_text and table["mixed"] == [] and "Mixed conditions" not in html_text


@pytest.mark.parametrize(
    "change,what",
    [
        ({"image_size": 32}, "image size"),
        ({"settings": {"image_size": 16, "iou_threshold": 0.04, "pair_factor": 1.5, "quantile": 0.01}}, "settings"),
        ({"dictionary": {"kind": "published", "content_sha256": "abc", "num_local": 20}}, "dictionary"),
    ],
)
def test_mixed_runs_are_refused_unless_allowed(tmp_path, capsys, change, what):
    from hnd_jax.reports.compare import compare_runs

    a = write_fixture_run(tmp_path / "A", {"l": 10}, seed=1, top=False)
    kwargs = {"image_size": change.get("image_size", 16), "settings": change.get("settings"),
              "dictionary": change.get("dictionary")}
    b = write_fixture_run(tmp_path / "B", {"l": 10}, seed=2, top=False, **kwargs)
    verb = "differ" if what == "settings" else "differs"  # plural subject
    with pytest.raises(HndError, match=f"{what} {verb} .*--allow-mixed"):
        compare_runs([a.out, b.out], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
    table = json.loads((compare_runs([a.out, b.out], tmp_path / "cmp", allow_mixed=True) / "compare.json").read_text())
    assert len(table["mixed"]) >= 1 and what in table["mixed"][0]
    assert [r["mixed"] for r in table["series"]] == [False, True]
    html_text = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Mixed conditions" in html_text and "(mixed)" in html_text


def test_same_dictionary_elsewhere_and_another_seed_are_comparable(tmp_path):
    from hnd_jax.reports.compare import compare_runs

    dic = {"kind": "published", "content_sha256": "abc", "num_local": 20}
    settings = {"image_size": 16, "iou_threshold": 0.04, "pair_factor": 1.5, "quantile": 0.005, "seed": 0}
    a = write_fixture_run(tmp_path / "A", {"l": 10}, seed=1, top=False, dictionary={**dic, "path": "/x"},
                          settings=settings)
    b = write_fixture_run(tmp_path / "B", {"l": 10}, seed=2, top=False, dictionary={**dic, "path": "/y"},
                          settings={**settings, "seed": 3})
    table = json.loads((compare_runs([a.out, b.out], tmp_path / "cmp") / "compare.json").read_text())
    assert table["mixed"] == []
