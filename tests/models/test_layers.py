"""The PyTorch-mirroring building blocks against torch itself (pooling incl. ceil mode, PReLU)."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hnd_jax.errors import HndError
from hnd_jax.models.layers import MaxPool2d, PReLU, Sequential, Softmax, check_image_batch, pool_output_size


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [
    (2, 2, 0, True), (3, 2, 0, True), (3, 2, 1, False), (3, 2, 1, True), (3, 3, 1, True), (2, 1, 0, False),
])
def test_maxpool_matches_torch(kernel, stride, padding, ceil_mode):
    rng = np.random.default_rng(kernel * 10 + stride)
    pool = MaxPool2d(kernel, stride, padding, ceil_mode)
    tpool = torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    for h, w in itertools.product((5, 6, 7, 10), (4, 9)):
        # All-negative input: a window that wrongly covered padding would show 0 or -inf.
        x = -rng.uniform(1, 2, size=(2, h, w, 3)).astype(np.float32)
        ref = tpool(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
        ours = np.asarray(pool(jnp.asarray(x)))
        assert ours.shape == ref.shape, (h, w)
        np.testing.assert_array_equal(ours, ref)
        assert pool_output_size(h, kernel, stride, padding, ceil_mode) == ref.shape[1]


def test_maxpool_keeps_ties_and_infinities():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 4, 4, 0] = np.inf
    ours = np.asarray(MaxPool2d(2, 2, ceil_mode=True)(jnp.asarray(x)))
    assert ours.shape == (1, 3, 3, 1)
    assert ours[0, 2, 2, 0] == np.inf and np.all(ours.ravel()[:-1] == 0)


def test_prelu_and_softmax_match_torch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    slopes = rng.uniform(-0.5, 0.5, size=5).astype(np.float32)
    prelu = PReLU(5)
    prelu.weight.set_value(jnp.asarray(slopes))
    tprelu = torch.nn.PReLU(5)
    with torch.no_grad():
        tprelu.weight.copy_(torch.from_numpy(slopes))
        ref = tprelu(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
        ref_sm = torch.softmax(torch.from_numpy(x.transpose(0, 3, 1, 2)), dim=1).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(prelu(jnp.asarray(x))), ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(Softmax()(jnp.asarray(x))), ref_sm, rtol=1e-5, atol=1e-7)


def test_sequential_indexing_and_order():
    calls = []

    class Tag(PReLU):
        def __init__(self, tag):
            super().__init__(1)
            self.tag = tag

        def __call__(self, x):
            calls.append(self.tag)
            return x + 1

    seq = Sequential(Tag("a"), Tag("b"), Tag("c"))
    assert len(seq) == 3 and seq[-1].tag == "c" and [m.tag for m in seq] == ["a", "b", "c"]
    assert float(seq(jnp.zeros(()))) == 3.0 and calls == ["a", "b", "c"]
    with pytest.raises(IndexError):
        seq[3]


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (64, 64, 3), (1, 64, 64, 1)])
def test_check_image_batch_rejects_non_nhwc(shape):
    with pytest.raises(HndError, match="NHWC"):
        check_image_batch(jnp.zeros(shape), "demo_cnn")
