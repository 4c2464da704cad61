"""The shared upsampling formula: against the per-pixel reference, jax.image.resize, and itself in XLA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnd_jax.scoring.upsample import axis_weights, upsample_nhwc_jax, upsample_np
import reference_tally as ref

SHAPES = [(4, 4, 16), (3, 5, 11), (1, 1, 5), (7, 7, 7), (2, 3, 9), (4, 4, 4), (5, 2, 13)]


@pytest.mark.parametrize("h,w,S", SHAPES)
def test_numpy_formula_equals_the_per_pixel_reference(h, w, S):
    rng = np.random.default_rng(h * 100 + w * 10 + S)
    a = (rng.standard_normal((h, w)) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
    np.testing.assert_array_equal(upsample_np(a, S), ref.upsample(a, S))


@pytest.mark.parametrize("h,w,S", SHAPES)
def test_xla_formula_is_bit_identical_to_numpy(h, w, S):
    """The float64 formula survives XLA's fused multiply-adds (float32 a + f*d would not)."""
    rng = np.random.default_rng(S)
    acts = rng.standard_normal((3, h, w, 4)).astype(np.float32)
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(lambda a: upsample_nhwc_jax(a, S))(jnp.asarray(acts)))
    want = np.moveaxis(upsample_np(np.moveaxis(acts, 3, 1), S), 1, 3)
    assert got.dtype == np.float64  # the decision value: never rounded to float32
    np.testing.assert_array_equal(got, want)


def test_xla_formula_refuses_to_run_without_x64():
    with jax.enable_x64(False):
        with pytest.raises(RuntimeError, match="enable_x64"):
            upsample_nhwc_jax(jnp.zeros((1, 2, 2, 1), jnp.float32), 4)


@pytest.mark.parametrize("h,w,S", [(4, 4, 128), (7, 7, 224), (3, 5, 17), (2, 3, 7), (1, 1, 9)])
def test_agrees_with_jax_image_resize_when_enlarging_within_a_few_ulps(h, w, S):
    """jax.image.resize('linear') uses normalised float32 triangle weights: same function, other
    rounding. Measured: at most ~2 ulps of the map's largest magnitude apart; about half the pixels
    are bit-identical (this is why the engine has its own formula)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((h, w)).astype(np.float32)
    mine = upsample_np(a, S)
    theirs = np.asarray(jax.image.resize(a, (S, S), method="linear"))
    tol = 8 * np.spacing(np.abs(a).max())
    assert np.abs(mine.astype(np.float64) - theirs).max() <= tol


def test_identity_constant_and_clamped_borders_are_exact():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 6)).astype(np.float32)
    np.testing.assert_array_equal(upsample_np(a, 6), a)  # h == S
    c = np.full((3, 4), np.float32(0.1), np.float32)
    assert (upsample_np(c, 17) == np.float32(0.1)).all()  # no 1-ulp drift on constant maps
    b = rng.standard_normal((4, 4)).astype(np.float32)
    up = upsample_np(b, 32)
    # 32/4 = 8 pixels per input: the first and last 4 output rows/columns are clamped.
    assert (up[:4, :4] == b[0, 0]).all() and (up[-4:, -4:] == b[-1, -1]).all()


def test_monotone_between_column_centres():
    """Fact 2 of the run-length kernel: between two input columns the row values never turn back."""
    rng = np.random.default_rng(4)
    for S in (13, 37, 64):
        a = (rng.standard_normal((5, 5)) * 1e3).astype(np.float32)
        up = upsample_np(a, S)
        ax = axis_weights(5, S)
        for j in range(4):
            cols = np.flatnonzero((ax.i0 == j) & (ax.i1 == j + 1))
            d = np.diff(up[:, cols].astype(np.float64), axis=1)
            ok = (d >= 0).all(axis=1) | (d <= 0).all(axis=1)
            assert ok.all()


def test_weights_are_exact_in_24_bits():
    for n, S in [(3, 10), (7, 224), (5, 13)]:
        ax = axis_weights(n, S)
        assert np.array_equal(ax.w0 + ax.w1, np.ones(S))
        for wgt in (ax.w0, ax.w1):
            assert np.array_equal(wgt * 2**24, np.round(wgt * 2**24))
            assert np.array_equal(wgt.astype(np.float32).astype(np.float64), wgt)


def test_subnormals_count_as_zero_on_every_path():
    """XLA flushes float32 subnormals (FTZ/DAZ), NumPy does not: the formula flushes explicitly."""
    rng = np.random.default_rng(9)
    acts = (rng.standard_normal((2, 3, 3, 4)) * 3e-38).astype(np.float32)
    acts[0, 0, 0, 0] = np.float32(1e-45)
    want = np.moveaxis(upsample_np(np.moveaxis(acts, 3, 1), 10), 1, 3)
    assert (want == 0).any() and not ((np.abs(want) < np.finfo(np.float32).tiny) & (want != 0)).any()
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(lambda a: upsample_nhwc_jax(a, 10))(jnp.asarray(acts)))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(upsample_np(acts[0, :, :, 0], 10), ref.upsample(acts[0, :, :, 0], 10))
