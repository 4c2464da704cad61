"""Row runs of masks: they must describe the masks exactly (the run-length tally trusts them)."""

from __future__ import annotations

import numpy as np
import pytest

from hnd_jax.scoring.runs import mask_runs


def paint(runs, shape) -> np.ndarray:
    out = np.zeros(shape, bool)
    for i, c, y, s, e in zip(runs.image, runs.concept, runs.row, runs.start, runs.end):
        assert s < e
        assert not out[i, c, y, s:e].any(), "runs overlap"
        out[i, c, y, s:e] = True
    return out


def adversarial_masks(S: int = 9) -> np.ndarray:
    m = np.zeros((2, 6, S, S), bool)
    m[0, 1] = True  # full
    m[0, 2, 0, 0] = m[0, 2, -1, -1] = m[0, 2, 4, 4] = True  # single pixels, corners
    m[0, 3, :, ::2] = True  # alternating columns: many 1-pixel runs
    m[1, 0, :, 0] = m[1, 0, :, -1] = True  # left and right borders
    m[1, 4, 2:5, 1:8] = True  # a blob
    m[1, 5, 3, :] = True  # one full row
    return m  # m[0, 0], m[0, 4], m[0, 5], m[1, 1..3] stay empty


@pytest.mark.parametrize("seed", [0, 1])
def test_runs_paint_back_to_the_masks(seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 4, 11, 11)) < rng.uniform(0.1, 0.9)
    runs = mask_runs(masks)
    np.testing.assert_array_equal(paint(runs, masks.shape), masks)
    np.testing.assert_array_equal(runs.area, masks.sum(axis=(2, 3)))


def test_adversarial_masks_and_maximal_runs():
    masks = adversarial_masks()
    runs = mask_runs(masks)
    np.testing.assert_array_equal(paint(runs, masks.shape), masks)
    np.testing.assert_array_equal(runs.area, masks.sum(axis=(2, 3)))
    # Maximal: a full mask is one run per row, alternating columns one run per pixel.
    full = (runs.image == 0) & (runs.concept == 1)
    assert full.sum() == 9 and (runs.start[full] == 0).all() and (runs.end[full] == 9).all()
    assert ((runs.image == 0) & (runs.concept == 3)).sum() == 9 * 5
    assert not ((runs.image == 1) & (runs.concept == 1)).any()


def test_order_and_non_bool_masks():
    masks = (np.random.default_rng(2).random((2, 3, 6, 6)) < 0.5).astype(np.uint8) * 255
    runs = mask_runs(masks)
    key = np.stack([runs.image, runs.concept, runs.row, runs.start], axis=1)
    assert (np.lexsort(key.T[::-1]) == np.arange(runs.num_runs)).all()
    np.testing.assert_array_equal(paint(runs, masks.shape), masks > 0)


def test_no_masks_at_all():
    runs = mask_runs(np.zeros((2, 3, 5, 5), bool))
    assert runs.num_runs == 0 and runs.area.shape == (2, 3) and not runs.area.any()
    with pytest.raises(ValueError, match="expected"):
        mask_runs(np.zeros((2, 5, 5), bool))
