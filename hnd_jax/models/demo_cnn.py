"""A small CNN for the demo: trains in seconds on CPU and has four dissectable conv layers.

Layout (PyTorch-style names, what ``hnd layers`` lists)::

    conv1(3->16) bn1 relu1 pool1 | conv2(->32) bn2 relu2 pool2 | conv3(->64) bn3 relu3 pool3
    | conv4(->128) bn4 relu4 | avgpool | fc(128 -> num_outputs)

3x3 convolutions with padding 1, 2x2 max pools: a 64x64 input gives 64, 32, 16 and 8 px maps for
conv1..conv4. The global average pool makes the model work at any input size >= 8.

Training with optax: BatchNorm is built in inference mode like every model here; train with
``train_model = nnx.view(model, use_running_average=False)`` (it shares the arrays with ``model``)
and, e.g., ``nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)``.
"""

from __future__ import annotations

import jax
from flax import nnx

from hnd_jax.models.layers import AdaptiveAvgPool2d, MaxPool2d, ReLU, batch_norm, check_image_batch, conv2d, flatten_nhwc, linear

DEMO_WIDTHS: tuple[int, int, int, int] = (16, 32, 64, 128)
DEMO_IMAGE_SIZE = 64


class DemoCNN(nnx.Module):
    """Four conv blocks (conv, optional BatchNorm, ReLU, max pool except after the last), pool, fc."""

    def __init__(
        self,
        num_outputs: int = 2,
        *,
        widths: tuple[int, int, int, int] = DEMO_WIDTHS,
        use_batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        if len(widths) != 4:
            raise ValueError(f"DemoCNN has 4 conv blocks, got widths {widths}")
        self.use_batch_norm = bool(use_batch_norm)
        in_ch = 3
        for i, width in enumerate(widths, start=1):
            setattr(self, f"conv{i}", conv2d(in_ch, width, 3, padding=1, bias=not use_batch_norm, rngs=rngs))
            if use_batch_norm:
                setattr(self, f"bn{i}", batch_norm(width, rngs=rngs))
            setattr(self, f"relu{i}", ReLU())
            if i < 4:
                setattr(self, f"pool{i}", MaxPool2d(2, 2))
            in_ch = width
        self.avgpool = AdaptiveAvgPool2d()
        self.fc = linear(in_ch, int(num_outputs), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_image_batch(x, "demo_cnn")
        for i in range(1, 5):
            x = getattr(self, f"conv{i}")(x)
            if self.use_batch_norm:
                x = getattr(self, f"bn{i}")(x)
            x = getattr(self, f"relu{i}")(x)
            if i < 4:
                x = getattr(self, f"pool{i}")(x)
        return self.fc(flatten_nhwc(self.avgpool(x)))
