"""MTCNN's PNet, RNet and ONet in facenet-pytorch's layout and module names.

Mirrors ``facenet_pytorch/models/mtcnn.py``: ``conv1 prelu1 pool1 conv2 ...``, per-channel PReLU,
``MaxPool2d(..., ceil_mode=True)`` (emulated exactly by :class:`~hnd_jax.models.layers.MaxPool2d`),
softmax over the channel axis. Outputs are NHWC where the original's are NCHW, in the original's
order: PNet ``(box_regression [N,h,w,4], face_prob [N,h,w,2])``, RNet ``(box [N,4], prob [N,2])``,
ONet ``(box [N,4], landmarks [N,10], prob [N,2])``.

RNet and ONet call ``x.permute(0, 3, 2, 1)`` on the NCHW conv output before flattening, i.e. they
flatten in W, H, C order; our flatten is H, W, C, so ``dense4``/``dense5`` are marked ``"WHC"`` and
the weight mapper permutes their input features. Input sizes are fixed by the nets: RNet 24x24,
ONet 48x48; PNet is fully convolutional (>= 12 px).
"""

from __future__ import annotations

import jax
from flax import nnx

from hnd_jax.models.layers import (
    MaxPool2d,
    PReLU,
    Softmax,
    check_image_batch,
    conv2d,
    flatten_nhwc,
    linear,
    mark_flattened_input,
)

RNET_INPUT = 24
ONET_INPUT = 48


class PNet(nnx.Module):
    """Proposal net: fully convolutional, 12x12 receptive field per output cell."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = conv2d(3, 10, 3, rngs=rngs)
        self.prelu1 = PReLU(10)
        self.pool1 = MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = conv2d(10, 16, 3, rngs=rngs)
        self.prelu2 = PReLU(16)
        self.conv3 = conv2d(16, 32, 3, rngs=rngs)
        self.prelu3 = PReLU(32)
        self.conv4_1 = conv2d(32, 2, 1, rngs=rngs)
        self.softmax4_1 = Softmax()
        self.conv4_2 = conv2d(32, 4, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        check_image_batch(x, "mtcnn_pnet")
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nnx.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = conv2d(3, 28, 3, rngs=rngs)
        self.prelu1 = PReLU(28)
        self.pool1 = MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = conv2d(28, 48, 3, rngs=rngs)
        self.prelu2 = PReLU(48)
        self.pool2 = MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = conv2d(48, 64, 2, rngs=rngs)
        self.prelu3 = PReLU(64)
        self.dense4 = mark_flattened_input(linear(576, 128, rngs=rngs), "WHC", (3, 3, 64))
        self.prelu4 = PReLU(128)
        self.dense5_1 = linear(128, 2, rngs=rngs)
        self.softmax5_1 = Softmax()
        self.dense5_2 = linear(128, 4, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        check_image_batch(x, "mtcnn_rnet", size=(RNET_INPUT, RNET_INPUT))
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(flatten_nhwc(x)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nnx.Module):
    """Output net on 48x48 crops: box, five landmarks, face probability."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = conv2d(3, 32, 3, rngs=rngs)
        self.prelu1 = PReLU(32)
        self.pool1 = MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = conv2d(32, 64, 3, rngs=rngs)
        self.prelu2 = PReLU(64)
        self.pool2 = MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = conv2d(64, 64, 3, rngs=rngs)
        self.prelu3 = PReLU(64)
        self.pool3 = MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = conv2d(64, 128, 2, rngs=rngs)
        self.prelu4 = PReLU(128)
        self.dense5 = mark_flattened_input(linear(1152, 256, rngs=rngs), "WHC", (3, 3, 128))
        self.prelu5 = PReLU(256)
        self.dense6_1 = linear(256, 2, rngs=rngs)
        self.softmax6_1 = Softmax()
        self.dense6_2 = linear(256, 4, rngs=rngs)
        self.dense6_3 = linear(256, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        check_image_batch(x, "mtcnn_onet", size=(ONET_INPUT, ONET_INPUT))
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(flatten_nhwc(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))
