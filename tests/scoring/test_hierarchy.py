"""Finalization against the NumPy reference: IoU, top concept, local and global probabilities."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from hnd_jax.scoring.hierarchy import (
    ascending_rank_fraction,
    global_probabilities,
    iou_from_counts,
    local_probabilities,
    top_concepts,
    top_images,
)
from scoring_fixtures import random_labels, tiny_taxonomy


def random_counts(rng, U, C, empty_union_frac=0.2):
    union = rng.integers(0, 50, size=(U, C))
    union[rng.random((U, C)) < empty_union_frac] = 0
    inter = np.minimum(rng.integers(0, 30, size=(U, C)), union)
    return inter.astype(np.int64), union.astype(np.int64)


def test_iou_nan_where_no_support():
    rng = np.random.default_rng(0)
    inter, union = random_counts(rng, 7, 5)
    union[0] = 0  # a unit with no support anywhere
    got = iou_from_counts(inter, union)
    np.testing.assert_array_equal(got, ref.iou(inter, union).astype(np.float32))
    assert np.isnan(got[0]).all() and got.dtype == np.float32


def test_top_concept_ignores_nan_breaks_ties_and_flags_unsupported():
    tax = tiny_taxonomy()
    iou = np.array(
        [
            [np.nan, 0.2, 0.2, 0.0, np.nan, 0.1, 0.0],  # tie -> first
            [np.nan] * 7,  # no support -> -1, not localizable
            [0.01, 0.039, 0.0, 0.0, 0.0, 0.0, 0.0],  # below threshold
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.04],  # exactly at threshold
            [0.0] * 7,  # best IoU 0 -> no top concept (not the first concept of the axis)
            [np.nan, 0.0, np.nan, 0.0, 0.0, np.nan, 0.0],  # zeros and NaN -> -1
        ],
        np.float32,
    )
    top, loc, region = top_concepts(iou, tax.concept_region_index, tax.regions, 0.04)
    rtop, rloc, rregion = ref.top_concept(iou, tax.concept_regions, 0.04)
    np.testing.assert_array_equal(top, rtop)
    np.testing.assert_array_equal(loc, rloc)
    np.testing.assert_array_equal(region, rregion)
    assert top.tolist() == [1, -1, 1, 6, -1, -1] and region.tolist() == ["Eye", "", "", "Chin", "", ""]
    assert loc.tolist() == [True, False, False, True, False, False]


def test_localizable_is_decided_on_exact_ratios():
    tax = tiny_taxonomy()
    inter = np.zeros((2, tax.num_concepts), np.int64)
    union = np.full((2, tax.num_concepts), 10**9, np.int64)
    inter[0, 3], union[0, 3] = 1, 25  # exactly 0.04: localizable
    inter[1, 3], union[1, 3] = 399999999, 10**10  # 0.0399999999: rounds to float32(0.04), not localizable
    iou64 = iou_from_counts(inter, union, np.float64)
    assert iou_from_counts(inter, union)[1, 3] == np.float32(0.04)
    _, loc, _ = top_concepts(iou64, tax.concept_region_index, tax.regions, 0.04)
    assert loc.tolist() == [True, False]


def test_ranks_break_ties_by_dictionary_order():
    v = np.array([[2.0], [1.0], [2.0], [1.0], [3.0]])
    np.testing.assert_allclose(ascending_rank_fraction(v)[:, 0], np.array([3, 1, 4, 2, 5]) / 5)


def hierarchy_case(seed, N=40, U=9, ties=False):
    tax = tiny_taxonomy()
    rng = np.random.default_rng(seed)
    labelled, family = random_labels(rng, tax, N)
    C = tax.num_concepts
    inter, union = random_counts(rng, U, C)
    iou = iou_from_counts(inter, union)
    image_max = rng.normal(size=(N, U)).astype(np.float32)
    if ties:
        image_max = np.round(image_max).astype(np.float32)
    lo = (image_max.min(0) - rng.random(U)).astype(np.float32)
    hi = (image_max.max(0) + rng.random(U)).astype(np.float32)
    # dead unit: hi == lo; unit whose region's concepts have no support
    image_max[:, 0] = 0.5
    lo[0] = hi[0] = 0.5
    iou[0] = 0.0
    iou[0, 0] = 0.3
    iou[1] = np.nan
    iou[1, 2] = 0.5  # Goatee (Chin); chin concepts otherwise unsupported
    return tax, labelled, iou, image_max, lo, hi


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False), (3, True)])
def test_local_probabilities_match_reference(seed, ties):
    tax, labelled, iou, image_max, lo, hi = hierarchy_case(seed, ties=ties)
    top, loc, region = top_concepts(iou, tax.concept_region_index, tax.regions, 0.04)
    pos = {r: i for i, r in enumerate(tax.regions)}
    unit_region = np.array([pos.get(r, -1) for r in region.tolist()])
    got, paired = local_probabilities(iou, image_max, lo, hi, labelled, tax.region_members, unit_region, 1.5)
    want, want_paired = ref.local_probs(iou, image_max, lo, hi, labelled, tax.concept_regions, region, 1.5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(paired, want_paired)
    assert np.isfinite(got).all()
    assert (got[0] == 0).all()  # hi == lo -> probability 0, not NaN
    # 0 outside the unit's region; sums to 1 (or 0) inside it
    outside = tax.concept_regions[None, :] != region[:, None]
    assert (got[outside] == 0).all()
    sums = got.sum(1)
    assert np.all(np.isclose(sums, 1, atol=1e-5) | (sums == 0))
    assert loc.any()


def test_concepts_without_images_and_regions_without_images():
    tax = tiny_taxonomy()
    N, U, C = 12, 3, tax.num_concepts
    rng = np.random.default_rng(7)
    labelled = np.zeros((N, C), bool)
    labelled[:6, tax.concept_index["Smiling"]] = True  # Big_Lips / mouth: no images
    labelled[6:, tax.concept_index["left_eye"]] = True  # Chin region: no images at all
    iou = np.full((U, C), 0.2, np.float32)
    iou[2, tax.concept_index["Goatee"]] = 0.9  # unit 2 -> Chin
    iou[1, tax.concept_index["left_eye"]] = 0.9  # unit 1 -> Eye
    image_max = rng.normal(size=(N, U)).astype(np.float32)
    lo, hi = image_max.min(0) - 1, image_max.max(0) + 1
    top, _, region = top_concepts(iou, tax.concept_region_index, tax.regions, 0.04)
    pos = {r: i for i, r in enumerate(tax.regions)}
    unit_region = np.array([pos.get(r, -1) for r in region.tolist()])
    got, paired = local_probabilities(iou, image_max, lo, hi, labelled, tax.region_members, unit_region, 1.5)
    want, want_paired = ref.local_probs(iou, image_max, lo, hi, labelled, tax.concept_regions, region, 1.5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(paired, want_paired)
    assert region.tolist() == ["Mouth", "Eye", "Chin"]
    assert got[0, tax.concept_index["Smiling"]] == pytest.approx(1.0)  # the only mouth concept with images
    assert (got[2] == 0).all()  # Chin: no image labelled -> all 0


@pytest.mark.parametrize("G,sizes", [(2, [3, 11]), (3, [5, 1, 9]), (4, [2, 7, 4, 6]), (4, [0, 5, 5, 3])])
def test_global_probabilities_match_reference(G, sizes):
    rng = np.random.default_rng(G * 10 + sum(sizes))
    group = np.concatenate([np.full(s, g) for g, s in enumerate(sizes)]).astype(np.int32)
    n, U = group.size, 6
    image_max = np.round(rng.normal(size=(n, U)), 1).astype(np.float32)  # ties
    lo = image_max.min(0) - 0.25
    hi = image_max.max(0) + 0.25
    lo[1] = hi[1]  # dead unit
    cutoff = {2: 0.55, 4: 0.3}.get(G, 1.2 / G)
    got, biased = global_probabilities(image_max, group, G, lo, hi, cutoff)
    want, want_b = ref.global_probs(image_max, group, G, lo, hi, cutoff)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(biased, want_b)
    assert (got[1] == 0).all() and not biased[1].any()
    for g, s in enumerate(sizes):
        if s == 0:
            assert (got[:, g] == 0).all()


def test_top_images_order_and_ties():
    m = np.array([[1.0, 0.0], [3.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.5, 0.0]], np.float32)
    got = top_images(m, 4)
    assert got.tolist() == [[1, 2, 3, 0], [0, 1, 2, 3]]
    assert top_images(m[:2], 4).shape == (2, 2)


@pytest.mark.parametrize("seed", range(6))
def test_top_images_equals_a_stable_sort_on_random_and_tied_values(seed):
    """The partition-based selection against the plain definition: a stable sort of -m (ties: lower index)."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        N, U, k = int(rng.integers(1, 40)), int(rng.integers(1, 7)), int(rng.integers(1, 9))
        kind = rng.integers(0, 3)
        if kind == 0:
            m = rng.normal(size=(N, U)).astype(np.float32)
        elif kind == 1:  # many ties, including +0.0 / -0.0
            m = rng.integers(-1, 3, (N, U)).astype(np.float32)
            m[rng.random((N, U)) < 0.3] = -0.0
        else:  # constant columns
            m = np.repeat(rng.normal(size=(1, U)).astype(np.float32), N, axis=0)
        want = np.ascontiguousarray(np.argsort(-m, axis=0, kind="stable")[: min(k, N)].T)
        np.testing.assert_array_equal(top_images(m, k), want)
