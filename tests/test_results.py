"""hnd_jax.results: scores.npz / units.csv / dissection.json writing and reading."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.results import load_layer_results, units_csv, write_dissection_json, write_layer_results
from scoring_fixtures import tiny_taxonomy


def fake_arrays(U=3):
    tax = tiny_taxonomy()
    C = tax.num_concepts
    iou = np.full((U, C), np.nan, np.float32)
    iou[0, 1] = 0.2
    iou[1, 0] = 0.01
    probs = np.zeros((U, C), np.float32)
    probs[0, [1, 4]] = [0.7, 0.3]
    paired = probs > 0.5
    return {
        "concepts": np.asarray(tax.concept_names),
        "concept_region": tax.concept_regions,
        "concept_type": tax.concept_types,
        "thresholds": np.array([0.5, 1.0, 2.0], np.float32),
        "iou": iou,
        "top_concept": np.array([1, 0, -1]),
        "localizable": np.array([True, False, False]),
        "region": np.array(["Eye", "", ""]),
        "local_probs": probs,
        "paired": paired,
        "global_groups_Gender": np.array(["Male", "Female"]),
        "global_probs_Gender": np.array([[0.6, 0.4], [0.5, 0.5], [0.0, 0.0]], np.float32),
        "biased_Gender": np.array([[True, False], [False, False], [False, False]]),
    }


def test_round_trip_and_dotted_layer_names(tmp_path):
    arrays = fake_arrays()
    folder = write_layer_results(tmp_path, "layer4.2.conv1", arrays, tiny_taxonomy())
    assert folder == tmp_path / "layer4.2.conv1"
    got = load_layer_results(folder)
    assert got.keys() == arrays.keys()
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
    with np.load(folder / "scores.npz", allow_pickle=False) as data:  # readable without pickles
        assert data["region"].dtype.kind == "U"
    assert [p.name for p in folder.iterdir()] and not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_units_csv_is_readable():
    rows = list(csv.DictReader(io.StringIO(units_csv(fake_arrays()))))
    assert len(rows) == 3
    assert rows[0]["top_concept"] == "Eyeglasses" and rows[0]["region"] == "Eye" and rows[0]["localizable"] == "True"
    assert rows[0]["paired"] == "Eyeglasses:0.700"
    assert rows[0]["biased_Gender"] == "Male:0.600"
    assert rows[2]["top_concept"] == "none" and rows[2]["iou"] == ""
    assert rows[0]["paired_significant"] == "" and "biased_significant_Gender" not in rows[0]  # older results


def test_units_csv_significance_columns():
    arrays = fake_arrays()
    arrays["paired_significant"] = arrays["paired"].copy()
    arrays["paired_significant"][0, 1] = False
    arrays["paired_significant"][0, 4] = True  # not possible from the engine; shows the column reads the flags
    arrays["global_pvalues_Gender"] = np.array([[0.001, 0.9], [0.5, 0.5], [1.0, 1.0]], np.float32)
    arrays["biased_significant_Gender"] = np.array([[True, False], [False, False], [False, False]])
    rows = list(csv.DictReader(io.StringIO(units_csv(arrays))))
    assert rows[0]["paired"] == "Eyeglasses:0.700"
    assert rows[0]["paired_significant"] == f"{arrays['concepts'][4]}:0.300"
    assert rows[0]["biased_significant_Gender"] == "Male:0.600:0.001"
    assert rows[1]["biased_significant_Gender"] == "" and rows[1]["paired_significant"] == ""


@pytest.mark.parametrize("name", ["", "..", "a/b", ".hidden", "x\\y",
                                  # names hnd writes beside the layers: a layer there would be overwritten
                                  # by the report or swept away with the previous run's report
                                  "plots", "report.html", "report_assets", "dissection.json", "index.html"])
def test_bad_layer_names(tmp_path, name):
    with pytest.raises(HndError, match="layer name"):
        write_layer_results(tmp_path, name, fake_arrays())


def test_load_errors(tmp_path):
    with pytest.raises(HndError, match="no scores.npz"):
        load_layer_results(tmp_path)
    (tmp_path / "scores.npz").write_bytes(b"garbage")
    with pytest.raises(HndError, match="not a readable scores.npz"):
        load_layer_results(tmp_path)
    np.savez(tmp_path / "scores.npz", something=np.zeros(2))
    with pytest.raises(HndError, match="missing concepts"):
        load_layer_results(tmp_path)


def test_taxonomy_mismatch_is_refused(tmp_path):
    arrays = fake_arrays()
    arrays["concepts"] = arrays["concepts"][::-1]
    with pytest.raises(ValueError, match="another taxonomy"):
        write_layer_results(tmp_path, "L", arrays, tiny_taxonomy())


def test_dissection_json(tmp_path):
    path = write_dissection_json(tmp_path, {"layers": ["a"], "settings": {"quantile": 0.005}})
    meta = json.loads(path.read_text())
    assert meta["layers"] == ["a"] and meta["settings"]["quantile"] == 0.005
    assert {"jax", "flax", "numpy", "hnd-jax"} <= set(meta["versions"])
    assert "not installed" not in [meta["versions"][k] for k in ("jax", "numpy")]
    assert meta["created"].endswith("+00:00")
