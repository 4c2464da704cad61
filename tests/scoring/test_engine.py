"""LayerScorer end to end on tiny data against the NumPy reference, on 1 and 8 devices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import reference as ref
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.scoring.config import ScoringConfig
from hnd_jax.scoring.engine import LayerScorer
from hnd_jax.sharding import padded_size as padded_batch_size
from scoring_fixtures import FakeDictionary, ReferenceTally, all_device_mesh, one_device_mesh, tiny_taxonomy


def score(dic, acts, global_acts, config, mesh, batch=5):
    tax = dic.taxonomy
    N, h, w, U = acts.shape
    scorer = LayerScorer(tax, dic.labelled, dic.family, U, (h, w), config, mesh=mesh, tally_factory=ReferenceTally)
    size = padded_batch_size(batch, mesh)
    s1 = scorer.pass1.init()
    for s in range(0, N, batch):
        step = Batch.padded(size, acts[s : s + batch], np.arange(s, min(s + batch, N)))
        s1 = scorer.pass1.update(s1, step)
    p1 = scorer.pass1.finalize(s1)
    tally = scorer.pass2(p1["thresholds"])
    s2 = tally.init()
    for b in dic.local_batches(batch):
        step = Batch.padded(size, acts[b.index], b.index, masks=b.masks, labelled=b.labelled, family=b.family)
        s2 = tally.update(s2, step)
    p2 = tally.finalize(s2)
    g = {}
    for name, gacts in global_acts.items():
        stats = scorer.global_stats(gacts.shape[0])
        gs = stats.init()
        step = Batch.padded(padded_batch_size(gacts.shape[0], mesh), gacts, np.arange(gacts.shape[0]))
        gs = stats.update(gs, step)
        g[name] = {**stats.finalize(gs), "group": dic.global_group_of(name)}
    return scorer.finalize(p1, p2, g)


def reference_scores(dic, acts, global_acts, config):
    tax = dic.taxonomy
    T = ref.thresholds(acts, config.quantile)
    lo, hi = ref.lo_hi(acts)
    m = ref.image_max(acts)
    inter, union = ref.tally(
        acts, dic.masks, dic.labelled, dic.family, tax.concept_family_index, T, config.image_size, config.iou_mode
    )
    iou = ref.iou(inter, union)
    top, loc, region = ref.top_concept(iou, tax.concept_regions, config.iou_threshold)
    probs, paired = ref.local_probs(iou, m, lo, hi, dic.labelled, tax.concept_regions, region, config.pair_factor)
    out = dict(thresholds=T, iou=iou.astype(np.float32), top_concept=top, localizable=loc, region=region, local_probs=probs, paired=paired)
    for name, gacts in global_acts.items():
        fam = tax.global_family(name)
        glo, ghi = ref.lo_hi(gacts)
        cutoff = config.bias_cutoffs.get(name, fam.bias_cutoff)
        gp, gb = ref.global_probs(ref.image_max(gacts), dic.global_group_of(name), fam.num_groups, glo, ghi, cutoff)
        out[f"global_probs_{name}"] = gp
        out[f"biased_{name}"] = gb
    return out


def make_case(seed=0, h=3, w=2, U=5, S=6):
    tax = tiny_taxonomy()
    dic = FakeDictionary(tax, num_local=13, image_size=S, seed=seed)
    rng = np.random.default_rng(seed + 100)
    acts = rng.normal(size=(dic.num_local, h, w, U)).astype(np.float32)
    acts[..., 0] = 0.7  # dead unit
    acts[..., 1] = np.round(acts[..., 1])  # ties
    global_acts = {
        name: rng.normal(size=(groups.size, h, w, U)).astype(np.float32) for name, groups in dic._groups.items()
    }
    return dic, acts, global_acts


@pytest.mark.parametrize("mode", ["family", "labeled", "official"])
def test_engine_matches_reference(mode):
    dic, acts, global_acts = make_case(seed=1)
    config = ScoringConfig(image_size=dic.image_size, quantile=0.1, iou_mode=mode, iou_threshold=0.04,
                           bias_cutoffs={"Age": 0.37})
    got = score(dic, acts, global_acts, config, one_device_mesh())
    want = reference_scores(dic, acts, global_acts, config)
    np.testing.assert_array_equal(got["thresholds"], want["thresholds"])
    np.testing.assert_array_equal(got["iou"], want["iou"])
    for key in ("top_concept", "localizable", "region", "paired"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_allclose(got["local_probs"], want["local_probs"], rtol=1e-6, atol=1e-7)
    assert got["localizable"].any(), "the case should have localizable units"
    for fam in dic.taxonomy.global_families:
        np.testing.assert_allclose(got[f"global_probs_{fam.name}"], want[f"global_probs_{fam.name}"], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[f"biased_{fam.name}"], want[f"biased_{fam.name}"])
        assert got[f"global_groups_{fam.name}"].tolist() == list(fam.groups)


def test_one_and_eight_devices_identical():
    dic, acts, global_acts = make_case(seed=2, U=4)
    config = ScoringConfig(image_size=dic.image_size, quantile=0.05)
    a = score(dic, acts, global_acts, config, one_device_mesh(), batch=3)
    b = score(dic, acts, global_acts, config, all_device_mesh(), batch=3)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)
            np.testing.assert_array_equal(np.isnan(a[key]), np.isnan(b[key]))
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_bias_cutoff_override_and_default():
    dic, _, _ = make_case()
    config = ScoringConfig(image_size=6, bias_cutoffs={"Gender": 0.9})
    scorer = LayerScorer(dic.taxonomy, dic.labelled, dic.family, 2, (1, 1), config, mesh=one_device_mesh())
    assert scorer.bias_cutoff("Gender") == 0.9
    assert scorer.bias_cutoff("skin_tone") == 0.3
    assert scorer.bias_cutoff("Age") == pytest.approx(0.4)
    assert dataclasses.asdict(config)["bias_cutoffs"] == {"Gender": 0.9}


def test_significance_keys_shapes_and_subsets():
    """§2c keys: shapes, dtypes, significant subsets of the raw flags, p-values against their references."""
    import scipy.stats as st

    from hnd_jax.scoring.significance import auc_test, benjamini_hochberg

    dic, acts, global_acts = make_case(seed=3, U=6)
    for a in global_acts.values():
        a[..., 0] = 0.7  # dead on the global images too
    config = ScoringConfig(image_size=dic.image_size, quantile=0.1, permutations=99, alpha=0.2, seed=5)
    got = score(dic, acts, global_acts, config, one_device_mesh())
    tax = dic.taxonomy
    U, C = 6, tax.num_concepts
    assert got["auc"].shape == got["auc_pvalues"].shape == got["paired_significant"].shape == (U, C)
    assert got["auc"].dtype == got["auc_pvalues"].dtype == np.float32
    assert not (got["paired_significant"] & ~got["paired"]).any()
    assert not (got["paired_significant"] & ~(got["auc"] > 0.5)).any()
    auc, p, tested = auc_test(got["image_max"], dic.labelled, dic.family, tax.concept_family_index)
    np.testing.assert_array_equal(got["auc_pvalues"], p.astype(np.float32))
    _, sig = benjamini_hochberg(p, 0.2, tested)
    np.testing.assert_array_equal(got["paired_significant"], got["paired"] & sig & (auc > 0.5))
    all_p = []
    for fam in tax.global_families:
        G = fam.num_groups
        pv = got[f"global_pvalues_{fam.name}"]
        assert pv.shape == got[f"global_effect_{fam.name}"].shape == (U, G) and pv.dtype == np.float32
        assert ((pv >= 1 / 100 - 1e-7) & (pv <= 1)).all()
        assert not (got[f"biased_significant_{fam.name}"] & ~got[f"biased_{fam.name}"]).any()
        np.testing.assert_array_equal(pv[0], 1.0)  # the dead unit
        all_p.append(pv.astype(np.float64).ravel())
    # one BH over every (u, g) of the layer, all families together
    flat = np.concatenate(all_p)
    adj = st.false_discovery_control(flat, method="bh")
    start = 0
    for fam in tax.global_families:
        size = U * fam.num_groups
        want = got[f"biased_{fam.name}"] & (adj[start : start + size] <= 0.2).reshape(U, -1)
        np.testing.assert_array_equal(got[f"biased_significant_{fam.name}"], want)
        start += size
    again = score(dic, acts, global_acts, config, one_device_mesh())
    for key in got:
        np.testing.assert_array_equal(got[key], again[key], err_msg=key)  # seeded: same run, same p-values
    other = score(dic, acts, global_acts, dataclasses.replace(config, seed=6), one_device_mesh())
    assert any(not np.array_equal(got[f"global_pvalues_{f.name}"], other[f"global_pvalues_{f.name}"])
               for f in tax.global_families)


@pytest.mark.parametrize("field,value", [("permutations", 0), ("permutations", 2.5), ("alpha", 0.0), ("alpha", 1.0),
                                         ("seed", -1), ("permutations", 10**6 + 1), ("permutations", 10**11)])
def test_config_rejects_bad_significance_settings(field, value):
    from hnd_jax.errors import HndError
    from hnd_jax.scoring.config import MAX_PERMUTATIONS

    flag = {"seed": "permutation-seed"}.get(field, field)  # --seed is the random-init seed on the CLI
    with pytest.raises(HndError, match=f"--{flag}"):
        ScoringConfig(image_size=8, **{field: value})
    assert ScoringConfig(image_size=8).to_dict()["permutations"] == 1000
    assert MAX_PERMUTATIONS == 10**6 and ScoringConfig(image_size=8, permutations=MAX_PERMUTATIONS).permutations == 10**6
