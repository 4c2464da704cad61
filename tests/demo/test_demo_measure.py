"""The demo's unit counts against counts done by hand on a results file, and its settings checks."""

from __future__ import annotations

import numpy as np
import pytest

from hnd_jax.demo.measure import clearly_more, difference_z, planted_unit_counts
from hnd_jax.demo.settings import DemoSettings
from hnd_jax.errors import HndError


def _scores(path, rng, significance=True):
    concepts = np.array(["Eyeglasses", "AU_1", "nose"])
    u = 40
    top = rng.integers(-1, 3, size=u)
    localizable = (top >= 0) & (rng.random(u) < 0.8)
    paired = rng.random((u, 3)) < 0.3
    biased = rng.random((u, 2)) < 0.4
    extra = {}
    if significance:
        extra = {"paired_significant": rng.random((u, 3)) < 0.5, "biased_significant_skin_tone": rng.random((u, 2)) < 0.5}
    np.savez(path, concepts=concepts, top_concept=top, localizable=localizable, paired=paired,
             global_groups_skin_tone=np.array(["bright", "dark"]), biased_skin_tone=biased, **extra)
    return top, localizable, paired, biased, extra


def test_counts_match_a_hand_count(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "scores.npz"
    top, localizable, paired, biased, extra = _scores(path, rng)
    got = planted_unit_counts(path, "Eyeglasses", "skin_tone", "bright")
    assert got["units"] == 40
    assert got["localizable"] == sum(bool(x) for x in localizable)
    assert got["paired_with_planted_concept"] == sum(bool(row[0]) for row in paired)
    assert got["top_concept_is_planted"] == sum(1 for t, l in zip(top, localizable) if t == 0 and l)
    assert got["biased_toward_planted_group"] == sum(bool(row[0]) for row in biased)
    assert got["biased_toward"] == {"bright": int(biased[:, 0].sum()), "dark": int(biased[:, 1].sum())}
    assert got["paired_significant_with_planted_concept"] == sum(
        bool(p[0] and q[0]) for p, q in zip(paired, extra["paired_significant"]))
    assert got["biased_significant_toward_planted_group"] == sum(
        bool(b[0] and q[0]) for b, q in zip(biased, extra["biased_significant_skin_tone"]))
    assert 0 < got["paired_significant_with_planted_concept"] < got["paired_with_planted_concept"]
    _scores(tmp_path / "old.npz", np.random.default_rng(1), significance=False)
    old = planted_unit_counts(tmp_path / "old.npz", "Eyeglasses", "skin_tone", "bright")
    assert old["paired_significant_with_planted_concept"] is None and old["biased_significant_toward_planted_group"] is None
    other = planted_unit_counts(path, "nose", "skin_tone", "dark")
    assert other["paired_with_planted_concept"] == int(paired[:, 2].sum())
    assert other["biased_toward_planted_group"] == int(biased[:, 1].sum())


@pytest.mark.parametrize(
    "concept, family, group, message",
    [("Goatee", "skin_tone", "bright", "concept 'Goatee'"), ("nose", "Age", "x", "'Age' was not scored"),
     ("nose", "skin_tone", "olive", "no subgroup 'olive'")],
)
def test_unknown_names_are_one_line_errors(tmp_path, concept, family, group, message):
    path = tmp_path / "scores.npz"
    _scores(path, np.random.default_rng(1))
    with pytest.raises(HndError, match=message):
        planted_unit_counts(path, concept, family, group)


def test_difference_z_matches_the_textbook_formula():
    # 58 of 192 vs 37 of 192: pooled p = 95/384
    p = 95 / 384
    expected = (58 - 37) / 192 / (p * (1 - p) * 2 / 192) ** 0.5
    assert difference_z(58, 37, 192) == pytest.approx(expected, rel=1e-12)
    assert difference_z(37, 58, 192) == pytest.approx(-expected, rel=1e-12)
    assert difference_z(0, 0, 10) == 0.0 and difference_z(10, 10, 10) == 0.0
    assert difference_z(5, 0, 192) > 0


def test_clearly_more_needs_three_units_and_significance():
    assert clearly_more(95, 2, 192) and clearly_more(60, 30, 192)
    assert not clearly_more(2, 0, 192)          # too few units, whatever the z
    assert not clearly_more(82, 91, 192)        # fewer
    assert not clearly_more(100, 90, 192)       # within chance (z ~ 1.0)
    assert clearly_more(10, 0, 192) and not clearly_more(4, 1, 192)


@pytest.mark.parametrize(
    "change, message",
    [({"train_images": 0}, "train_images"), ({"concept_bias": 0.5}, "concept_bias"), ({"group_bias": 1.5}, "group_bias"),
     ({"layers": ()}, "layers"), ({"batch_size": 64, "train_images": 10}, "batch_size"), ({"image_size": 8}, "image_size"),
     ({"replicates": 0}, "replicates"), ({"replicates": 1.5}, "replicates")],
)
def test_bad_settings_are_refused(change, message):
    with pytest.raises(HndError, match=message):
        DemoSettings(**change)


def test_replicate_seeds_follow_the_seed():
    assert DemoSettings(seed=3, replicates=3).replicate_seeds == (3, 4, 5)
    assert DemoSettings().replicate_seeds == (0,) and DemoSettings().to_dict()["replicates"] == 1
