"""Planted-bias training sets: the planted statistics match ``bias``, the control is unbiased, and the
rendered images really show the planted concept and group."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hnd_jax.dictionary.synthetic.bias import biased_training_set, plan_biased_training_set, render_plan
from hnd_jax.dictionary.synthetic.face import SKIN_TONE_RANGES, render_face
from hnd_jax.dictionary.synthetic.png import write_png
from hnd_jax.errors import HndError


def _rates(plan):
    pos, neg = plan.labels == 1, plan.labels == 0
    return plan.planted[pos].mean(), plan.planted[neg].mean()


@pytest.mark.parametrize("bias", [0.9, 0.75, 0.3])
def test_planted_rates_match_bias(bias):
    plan = plan_biased_training_set(401, seed=0, bias=bias)
    n_pos = int((plan.labels == 1).sum())
    assert n_pos == 201 and int((plan.labels == 0).sum()) == 200  # balanced classes
    pos_rate, neg_rate = _rates(plan)
    assert abs(pos_rate - bias) <= 1 / n_pos
    assert abs(neg_rate - (1 - bias)) <= 1 / 200
    s = plan.summary()
    assert s["planted_rate_positive"] == pytest.approx(pos_rate) and s["bias"] == bias


def test_every_face_matches_its_flags():
    plan = plan_biased_training_set(300, seed=1, task="Smiling", planted_concept="Eyeglasses",
                                    planted_group=("skin_tone", "dark"), bias=0.8)
    lo, hi = SKIN_TONE_RANGES["dark"]
    for spec, label, planted, group in zip(plan.specs, plan.labels, plan.planted, plan.groups):
        assert ("Smiling" in spec.concepts) == bool(label)
        assert ("Eyeglasses" in spec.concepts) == bool(planted)
        in_dark = lo <= spec.skin_tone <= hi
        assert in_dark == bool(planted) and group == ("dark" if planted else "bright")
    # the planted concept and group are what predicts the label; distractors are independent
    others = [c for spec in plan.specs for c in spec.concepts if c not in ("Smiling", "Eyeglasses")]
    assert len(set(others)) >= 8


def test_control_is_unbiased_and_keeps_the_same_faces():
    biased = plan_biased_training_set(400, seed=2, bias=0.9)
    control = plan_biased_training_set(400, seed=2, bias=None)
    pos_rate, neg_rate = _rates(control)
    assert pos_rate == pytest.approx(0.5, abs=0.01) and neg_rate == pytest.approx(0.5, abs=0.01)
    assert control.negative_rate == 0.5
    corr = np.corrcoef(control.labels, control.planted)[0, 1]
    assert abs(corr) < 0.05
    assert np.corrcoef(biased.labels, biased.planted)[0, 1] > 0.75
    assert np.array_equal(biased.labels, control.labels)
    same = [a.jitter == b.jitter for a, b in zip(biased.specs, control.specs)]
    assert all(same), "only the planted cues should differ between biased and control sets"


def test_separate_group_bias_draws_its_own_flag():
    joint = plan_biased_training_set(400, seed=5, bias=0.95)
    plan = plan_biased_training_set(400, seed=5, bias=0.95, group_bias=0.8, planted_group=("skin_tone", "bright"))
    pos, neg = plan.labels == 1, plan.labels == 0
    assert plan.planted[pos].mean() == pytest.approx(0.95, abs=0.005)
    assert plan.in_group[pos].mean() == pytest.approx(0.8, abs=0.005)
    assert plan.in_group[neg].mean() == pytest.approx(0.2, abs=0.005)
    assert not np.array_equal(plan.planted, plan.in_group)
    assert np.array_equal(plan.planted, joint.planted)  # the concept flags do not move
    assert np.array_equal(plan.groups == "bright", plan.in_group)
    for spec, flag in zip(plan.specs, plan.planted):
        assert ("Eyeglasses" in spec.concepts) == bool(flag)
    summary = plan.summary()
    assert summary["group_bias"] == 0.8 and summary["group_rate_negative"] == pytest.approx(0.2, abs=0.005)
    # default: one flag plants both; the control ignores group_bias
    assert np.array_equal(joint.in_group, joint.planted) and joint.group_bias is None
    control = plan_biased_training_set(400, seed=5, bias=None, group_bias=0.8)
    assert control.in_group[pos].mean() == pytest.approx(0.5, abs=0.01) and control.group_bias is None
    with pytest.raises(HndError, match="group_bias"):
        plan_biased_training_set(10, 0, group_bias=1.5)


def test_multi_group_family_and_group_only_plant():
    plan = plan_biased_training_set(200, seed=3, task="AU_12", planted_concept=None,
                                    planted_group=("Ethnicity", "asian"), bias=1.0, negative_rate=0.0)
    assert np.array_equal(plan.planted, plan.labels == 1)
    for spec, planted in zip(plan.specs, plan.planted):
        assert (spec.ethnicity == "asian") == bool(planted)
        assert "AU_15" not in spec.concepts or "AU_12" not in spec.concepts  # never conflicting cues
    assert set(plan.groups[~plan.planted]) == {"white", "black", "indian"}


def test_rendered_images_show_the_plant():
    plan = plan_biased_training_set(24, seed=4, bias=0.9)
    images = render_plan(plan, size=48)
    assert images.shape == (24, 48, 48, 3) and images.dtype == np.uint8
    x, y = biased_training_set(24, 4, size=48, bias=0.9)
    assert np.array_equal(x, images) and np.array_equal(y, plan.labels)
    # the planted concept is visible: removing it from the planted faces changes their eye band
    no_glasses = dataclasses.replace(
        plan, specs=tuple(sp.with_concepts(sp.concepts - {"Eyeglasses"}) for sp in plan.specs)
    )
    changed = (render_plan(no_glasses, size=48) != images).any(axis=-1)  # [N, 48, 48]
    has = np.array(["Eyeglasses" in sp.concepts for sp in plan.specs])
    assert has.sum() >= 8 and not changed[~has].any()
    assert (changed[has].sum(axis=(1, 2)) > 30).all()
    rows = np.nonzero(changed[has].any(axis=(0, 2)))[0]
    assert 10 <= rows.min() and rows.max() <= 30, "glasses belong to the upper middle of the face"
    # the planted group is visible: the dark group's faces are darker at the centre of the face
    dark = np.array([s.skin_tone >= 0.6 for s in plan.specs])
    assert np.array_equal(dark, plan.planted)
    cheeks = [render_face(sp, (96, 96)) for sp in plan.specs]
    brightness = np.array([img[m["left_cheek"]].mean() for img, m in cheeks])
    assert brightness[dark].max() < brightness[~dark].min()


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "Tongue_Out"}, "task"),
    ({"task": "nose"}, "task"),
    ({"planted_concept": "Smiling"}, "planted_concept"),
    ({"task": "No_Beard", "planted_concept": "Goatee"}, "planted_concept"),
    ({"planted_group": ("skin_tone", "green")}, "planted_group"),
    ({"planted_group": "dark"}, "planted_group"),
    ({"planted_concept": None, "planted_group": None}, "nothing to plant"),
    ({"bias": 1.5}, "bias"),
    ({"negative_rate": -0.1}, "negative_rate"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(HndError, match=match):
        plan_biased_training_set(10, 0, **kwargs)


def test_bad_sizes():
    with pytest.raises(HndError, match="num_images"):
        biased_training_set(1, 0)
    with pytest.raises(HndError, match="size"):
        biased_training_set(4, 0, size=8)


def test_training_images_look_like_dictionary_images_at_the_analysis_size(tmp_path):
    decode = pytest.importorskip("hnd_jax.dictionary.decode", reason="the dictionary reader (H1) is not in this tree")
    plan = plan_biased_training_set(3, seed=5)
    images = render_plan(plan, size=64)
    for i, spec in enumerate(plan.specs):
        write_png(tmp_path / f"{i}.png", render_face(spec, (178, 218))[0])
        assert np.array_equal(decode.load_image(tmp_path / f"{i}.png", 64), images[i])
