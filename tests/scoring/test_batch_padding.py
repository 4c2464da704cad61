"""Batch padding without extra copies: one aligned padded buffer, reused for the layer it came from."""

from __future__ import annotations

import numpy as np
import pytest

from hnd_jax.scoring.accumulator import HOST_ALIGNMENT, Batch, aligned_empty, pad_activations
from hnd_jax.sharding import pad_rows


@pytest.mark.parametrize("shape,dtype", [((5, 3, 2, 7), np.float32), ((1, 1), np.float64), ((0, 4), np.float32),
                                         ((3, 2, 2, 3), ">f4")])
def test_aligned_empty_is_aligned_contiguous_and_the_right_shape(shape, dtype):
    for _ in range(5):  # numpy's own allocations land on various offsets
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % HOST_ALIGNMENT == 0 or a.size == 0


@pytest.mark.parametrize("n,size", [(3, 8), (8, 8), (0, 2), (1, 1)])
def test_pad_activations_equals_pad_rows(n, size):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 2, 3, 4)).astype(np.float32)
    got = pad_activations(x, size)
    np.testing.assert_array_equal(got, pad_rows(x, size))
    assert got.ctypes.data % HOST_ALIGNMENT == 0 or got.size == 0
    with pytest.raises(ValueError, match="larger than the padded size"):
        pad_activations(x, n - 1) if n else pad_activations(np.zeros((1, 2)), 0)


def test_with_activations_reuses_the_padded_copy_of_the_same_array_only():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2, 2, 5)).astype(np.float32)
    b = a.copy()  # equal values, another array: padded on its own
    base = Batch.padded(4, a, np.arange(3))
    assert base.with_activations(a) is base
    other = base.with_activations(b)
    assert other is not base and other.activations is not base.activations
    np.testing.assert_array_equal(other.activations, base.activations)
    np.testing.assert_array_equal(base.activations[3], 0)
    assert other.with_activations(a) is not other  # the reuse follows the array, not the values
    full = Batch.padded(3, a, np.arange(3))  # nothing to pad: the array itself
    assert full.activations is a and full.with_activations(a) is full
