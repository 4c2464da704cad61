"""Summary counts and the results reader against plain-Python loops over the fixture arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reports_fixture import small_taxonomy, write_fixture_run

from hnd_jax.errors import HndError
from hnd_jax.reports.results_view import derive_paired, load_run
from hnd_jax.reports.summary import summarize_layer


def reference_counts(a: dict) -> dict:
    """The report's definitions (hnd_jax/reports/summary.py docstring), unit by unit."""
    concepts = [str(x) for x in a["concepts"]]
    ctype = [str(x) for x in a["concept_type"]]
    u_count = len(a["thresholds"])
    out = {"localizable": 0, "interpretable": 0, "loc_region": {}, "int_region": {}, "loc_type": {},
           "int_type": {}, "per_concept": {c: 0 for c in concepts}, "biased": {}}
    for u in range(u_count):
        loc = bool(a["localizable"][u])
        paired = [c for c in range(len(concepts)) if loc and bool(a["paired"][u, c])]
        if loc:
            out["localizable"] += 1
            r = str(a["region"][u])
            out["loc_region"][r] = out["loc_region"].get(r, 0) + 1
            t = ctype[int(a["top_concept"][u])]
            out["loc_type"][t] = out["loc_type"].get(t, 0) + 1
        if paired:
            out["interpretable"] += 1
            r = str(a["region"][u])
            out["int_region"][r] = out["int_region"].get(r, 0) + 1
            for t in {ctype[c] for c in paired}:
                out["int_type"][t] = out["int_type"].get(t, 0) + 1
            for c in paired:
                out["per_concept"][concepts[c]] += 1
    for key in a:
        if key.startswith("global_groups_"):
            fam = key[len("global_groups_"):]
            groups = [str(g) for g in a[key]]
            out["biased"][fam] = {g: int(sum(bool(a[f"biased_{fam}"][u, j]) for u in range(u_count)))
                                  for j, g in enumerate(groups)}
    if "paired_significant" in a:
        sig = [[c for c in range(len(concepts)) if bool(a["localizable"][u]) and bool(a["paired"][u, c])
                and bool(a["paired_significant"][u, c])] for u in range(u_count)]
        out["interpretable_significant"] = sum(1 for x in sig if x)
        out["per_concept_significant"] = {c: sum(1 for x in sig if i in x) for i, c in enumerate(concepts)}
        out["biased_significant"] = {}
        out["biased_significant_family"] = {}
        for fam in out["biased"]:
            groups = [str(g) for g in a[f"global_groups_{fam}"]]
            flag = lambda u, j: bool(a[f"biased_{fam}"][u, j]) and bool(a[f"biased_significant_{fam}"][u, j])  # noqa: E731
            out["biased_significant"][fam] = {g: sum(flag(u, j) for u in range(u_count)) for j, g in enumerate(groups)}
            out["biased_significant_family"][fam] = sum(any(flag(u, j) for j in range(len(groups))) for u in range(u_count))
    return out


def check_summary(summary, ref) -> None:
    if "interpretable_significant" in ref:
        assert summary.interpretable_significant == ref["interpretable_significant"]
        assert summary.paired_significant_per_concept == ref["per_concept_significant"]
        assert summary.biased_significant_per_group == ref["biased_significant"]
        assert summary.biased_significant_per_family == ref["biased_significant_family"]
        assert 0 < summary.interpretable_significant < summary.interpretable  # the fixture exercises both sides
    else:
        assert not summary.has_significance and summary.to_dict()["paired_significant_per_concept"] is None
    assert summary.localizable == ref["localizable"]
    assert summary.interpretable == ref["interpretable"]
    for r in summary.regions:
        assert summary.localizable_per_region[r] == ref["loc_region"].get(r, 0)
        assert summary.interpretable_per_region[r] == ref["int_region"].get(r, 0)
    assert sum(summary.localizable_per_region.values()) == ref["localizable"]
    for t in summary.concept_types:
        assert summary.localizable_per_type[t] == ref["loc_type"].get(t, 0)
        assert summary.interpretable_per_type[t] == ref["int_type"].get(t, 0)
    assert summary.paired_per_concept == ref["per_concept"]
    assert summary.biased_per_group == ref["biased"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_match_reference_default_taxonomy(tmp_path, seed):
    run = write_fixture_run(tmp_path / "run", {"a.b": 25, "c": 7}, seed=seed, top=False)
    loaded = load_run(tmp_path / "run")
    assert [layer.name for layer in loaded.layers] == ["a.b", "c"]
    for fixture_layer, layer in zip(run.layers, loaded.layers):
        summary = summarize_layer(layer)
        check_summary(summary, reference_counts(fixture_layer.arrays))
        assert summary.regions == ("Eye", "Cheek", "Nose", "Mouth", "Chin")  # the paper's order


def test_user_taxonomy_comes_from_the_results(tmp_path):
    tax = small_taxonomy()
    run = write_fixture_run(tmp_path / "run", {"l": 40}, taxonomy=tax, seed=3, top=False)
    layer = load_run(tmp_path / "run").layers[0]
    summary = summarize_layer(layer)
    assert summary.regions == ("Top", "Bottom")
    assert summary.concept_types == ("mark", "zone")
    assert list(summary.biased_per_group) == ["Light"]
    assert list(summary.biased_per_group["Light"]) == ["dim", "mid", "bright"]
    check_summary(summary, reference_counts(run.layers[0].arrays))


def test_results_without_significance_still_summarize(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 30}, seed=5, top=False, with_significance=False)
    layer = load_run(tmp_path / "run").layers[0]
    assert not layer.has_significance and layer.auc is None
    check_summary(summarize_layer(layer), reference_counts(run.layers[0].arrays))


def test_unit_without_top_concept_is_counted_nowhere(tmp_path):
    write_fixture_run(tmp_path / "run", {"l": 12}, seed=6, top=False)
    layer = load_run(tmp_path / "run").layers[0]
    assert layer.top_concept[3] == -1 and not layer.localizable[3] and layer.region[3] == ""
    s = summarize_layer(layer)
    assert sum(s.localizable_per_type.values()) == s.localizable  # -1 never indexes the last concept's type


def test_paired_is_derived_when_absent(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 30}, seed=4, with_paired=False, pair_factor=1.2, top=False)
    layer = load_run(tmp_path / "run").layers[0]
    a = run.layers[0].arrays
    creg = [str(x) for x in a["concept_region"]]
    for u in range(30):
        members = [c for c, r in enumerate(creg) if r == str(a["region"][u])]
        for c in range(len(creg)):
            want = c in members and float(a["local_probs"][u, c]) > 1.2 / len(members)
            assert bool(layer.paired[u, c]) == want, (u, c)
    # the factor recorded in the run's settings (1.2) is the one used, not the default 1.5
    default = derive_paired(layer.local_probs, layer.region, layer.concept_region, 1.5)
    assert layer.paired.sum() > default.sum()


def test_bad_results_are_one_line_errors(tmp_path):
    with pytest.raises(HndError, match="no dissection.json"):
        load_run(tmp_path)
    run = write_fixture_run(tmp_path / "run", {"l": 5}, top=False)
    (run.out / "l" / "scores.npz").write_bytes(b"not a zip")
    with pytest.raises(HndError, match=r"scores\.npz: not a readable \.npz archive"):
        load_run(run.out)
    arrays = dict(run.layers[0].arrays)
    np.savez(run.out / "l" / "scores.npz", **{**arrays, "iou": arrays["iou"].astype(np.complex64)})
    with pytest.raises(HndError, match=r"'iou' has dtype complex64, expected real numbers"):
        load_run(run.out)  # not accepted with a ComplexWarning, as it once was
    arrays["iou"] = arrays["iou"][:, :3]
    np.savez(run.out / "l" / "scores.npz", **arrays)
    with pytest.raises(HndError, match=r"'iou' has shape \(5, 3\)"):
        load_run(run.out)
    del arrays["iou"]
    np.savez(run.out / "l" / "scores.npz", **arrays)
    with pytest.raises(HndError, match="missing key"):
        load_run(run.out)
    (run.out / "dissection.json").write_text("{not json")
    with pytest.raises(HndError, match="not valid JSON"):
        load_run(run.out)
    (run.out / "dissection.json").write_text(json.dumps({"layers": ["missing_layer"]}))
    with pytest.raises(HndError, match="missing_layer"):
        load_run(run.out)
