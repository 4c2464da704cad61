"""The demo CNN trains with optax (BatchNorm in training mode via nnx.view) and stays dissectable."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hnd_jax.models.capture import forward_with_layers
from hnd_jax.models.registry import build_model


def _toy_data(n=32, size=16, seed=0):
    """Label 1 iff the left half is brighter than the right half (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    x[:, :, : size // 2] += np.where(y == 1, 1.0, -1.0)[:, None, None, None]
    return jnp.asarray(x), jnp.asarray(y)


def test_trains_with_optax_and_updates_batch_statistics():
    model = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0))
    train_model = nnx.view(model, use_running_average=False)
    optimizer = nnx.Optimizer(train_model, optax.adam(3e-3), wrt=nnx.Param)
    x, y = _toy_data()

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    mean_before = np.asarray(model.bn1.mean.get_value()).copy()
    losses = [float(step(train_model, optimizer)) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses
    # Training mode updated the running statistics of the model we keep (shared arrays) ...
    assert not np.allclose(np.asarray(model.bn1.mean.get_value()), mean_before)
    # ... and `model` itself is still in inference mode: an image's output does not depend on the
    # rest of the batch (same shapes, so one compiled forward serves both calls).
    assert model.bn1.use_running_average
    out, acts = forward_with_layers(model, np.asarray(x), ["conv4", "relu4"])
    other_batch = np.asarray(x).copy()
    other_batch[1:] = 0.0
    out_other, _ = forward_with_layers(model, other_batch, ["conv4", "relu4"])
    np.testing.assert_allclose(np.asarray(out_other)[0], np.asarray(out)[0], rtol=1e-5, atol=1e-5)
    assert float(jnp.mean(jnp.argmax(out, -1) == y)) > 0.8
    assert acts["conv4"].shape == (32, 2, 2, 128) and float(jnp.min(acts["relu4"])) >= 0
