"""InceptionResnetV1 in facenet-pytorch's layout and module names (the HND paper's "facenet").

Mirrors ``facenet_pytorch/models/inception_resnet_v1.py`` module for module::

    conv2d_1a conv2d_2a conv2d_2b maxpool_3a conv2d_3b conv2d_4a conv2d_4b
    repeat_1 (5 x Block35, scale 0.17)  mixed_6a  repeat_2 (10 x Block17, scale 0.10)
    mixed_7a  repeat_3 (5 x Block8, scale 0.20)  block8 (Block8, no ReLU)
    avgpool_1a  last_linear (no bias)  last_bn (BatchNorm1d, eps 0.001)  [logits]

``BasicConv2d`` is ``conv`` (no bias) + ``bn`` (eps 0.001) + ``relu``; branches are ``branch0..3``
(``nn.Sequential`` where the original has one), the 1x1 projection is ``conv2d``. So
``block8.branch1`` is the output of block8's second branch, ``repeat_3.4`` the last Block8 of
repeat_3. Dropout (identity at inference) has no parameters and is left out.

Like the original, ``logits`` exists whenever ``num_classes`` is given (the VGGFace2 checkpoint
carries it even for the embedding model) and is applied only with ``classify=True``; otherwise the
output is the L2-normalised 512-d embedding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.layers import (
    AdaptiveAvgPool2d,
    MaxPool2d,
    ReLU,
    Sequential,
    batch_norm,
    check_image_batch,
    conv2d,
    flatten_nhwc,
    linear,
)

BN_EPS = 0.001  # facenet-pytorch: "value found in tensorflow"
MIN_IMAGE_SIZE = 75  # smallest input whose mixed_7a output is still 1x1


class BasicConv2d(nnx.Module):
    """conv (no bias) -> bn (eps 0.001) -> relu."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size, stride: int = 1, padding=0, *, rngs: nnx.Rngs):
        self.conv = conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=False, rngs=rngs)
        self.bn = batch_norm(out_planes, eps=BN_EPS, rngs=rngs)
        self.relu = ReLU()

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.relu(self.bn(self.conv(x)))


class Block35(nnx.Module):
    """35x35 residual block (256 channels): three branches, 1x1 up-projection, scaled residual."""

    def __init__(self, scale: float = 1.0, *, rngs: nnx.Rngs):
        self.scale = float(scale)
        self.branch0 = BasicConv2d(256, 32, 1, rngs=rngs)
        self.branch1 = Sequential(BasicConv2d(256, 32, 1, rngs=rngs), BasicConv2d(32, 32, 3, padding=1, rngs=rngs))
        self.branch2 = Sequential(
            BasicConv2d(256, 32, 1, rngs=rngs),
            BasicConv2d(32, 32, 3, padding=1, rngs=rngs),
            BasicConv2d(32, 32, 3, padding=1, rngs=rngs),
        )
        self.conv2d = conv2d(96, 256, 1, rngs=rngs)
        self.relu = ReLU()

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jnp.concatenate([self.branch0(x), self.branch1(x), self.branch2(x)], axis=-1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Block17(nnx.Module):
    """17x17 residual block (896 channels) with factorised 1x7 / 7x1 convolutions."""

    def __init__(self, scale: float = 1.0, *, rngs: nnx.Rngs):
        self.scale = float(scale)
        self.branch0 = BasicConv2d(896, 128, 1, rngs=rngs)
        self.branch1 = Sequential(
            BasicConv2d(896, 128, 1, rngs=rngs),
            BasicConv2d(128, 128, (1, 7), padding=(0, 3), rngs=rngs),
            BasicConv2d(128, 128, (7, 1), padding=(3, 0), rngs=rngs),
        )
        self.conv2d = conv2d(256, 896, 1, rngs=rngs)
        self.relu = ReLU()

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jnp.concatenate([self.branch0(x), self.branch1(x)], axis=-1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Block8(nnx.Module):
    """8x8 residual block (1792 channels) with 1x3 / 3x1 convolutions; ``no_relu`` for the last."""

    def __init__(self, scale: float = 1.0, no_relu: bool = False, *, rngs: nnx.Rngs):
        self.scale = float(scale)
        self.no_relu = bool(no_relu)
        self.branch0 = BasicConv2d(1792, 192, 1, rngs=rngs)
        self.branch1 = Sequential(
            BasicConv2d(1792, 192, 1, rngs=rngs),
            BasicConv2d(192, 192, (1, 3), padding=(0, 1), rngs=rngs),
            BasicConv2d(192, 192, (3, 1), padding=(1, 0), rngs=rngs),
        )
        self.conv2d = conv2d(384, 1792, 1, rngs=rngs)
        self.relu = None if self.no_relu else ReLU()

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jnp.concatenate([self.branch0(x), self.branch1(x)], axis=-1)
        out = self.conv2d(out) * self.scale + x
        return out if self.relu is None else self.relu(out)


class Mixed6a(nnx.Module):
    """Reduction 35 -> 17: strided conv, conv tower, max pool; 256 -> 896 channels."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.branch0 = BasicConv2d(256, 384, 3, stride=2, rngs=rngs)
        self.branch1 = Sequential(
            BasicConv2d(256, 192, 1, rngs=rngs),
            BasicConv2d(192, 192, 3, padding=1, rngs=rngs),
            BasicConv2d(192, 256, 3, stride=2, rngs=rngs),
        )
        self.branch2 = MaxPool2d(3, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([self.branch0(x), self.branch1(x), self.branch2(x)], axis=-1)


class Mixed7a(nnx.Module):
    """Reduction 17 -> 8: three conv towers and a max pool; 896 -> 1792 channels."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.branch0 = Sequential(BasicConv2d(896, 256, 1, rngs=rngs), BasicConv2d(256, 384, 3, stride=2, rngs=rngs))
        self.branch1 = Sequential(BasicConv2d(896, 256, 1, rngs=rngs), BasicConv2d(256, 256, 3, stride=2, rngs=rngs))
        self.branch2 = Sequential(
            BasicConv2d(896, 256, 1, rngs=rngs),
            BasicConv2d(256, 256, 3, padding=1, rngs=rngs),
            BasicConv2d(256, 256, 3, stride=2, rngs=rngs),
        )
        self.branch3 = MaxPool2d(3, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        parts = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return jnp.concatenate(parts, axis=-1)


class InceptionResnetV1(nnx.Module):
    """facenet-pytorch's InceptionResnetV1 (inference). Input NHWC, >= 75 px; 160 is the usual size.

    ``classify=False``: returns the L2-normalised 512-d embedding; ``classify=True``: the logits
    (needs ``num_classes``).
    """

    def __init__(self, *, classify: bool = False, num_classes: int | None = None, rngs: nnx.Rngs):
        if classify and not num_classes:
            raise HndError("inception_resnet_v1 with head 'logits' needs num_outputs (e.g. 8631 for VGGFace2)")
        self.classify = bool(classify)
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.conv2d_2a = BasicConv2d(32, 32, 3, rngs=rngs)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.maxpool_3a = MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, rngs=rngs)
        self.conv2d_4a = BasicConv2d(80, 192, 3, rngs=rngs)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2, rngs=rngs)
        self.repeat_1 = Sequential(*(Block35(0.17, rngs=rngs) for _ in range(5)))
        self.mixed_6a = Mixed6a(rngs=rngs)
        self.repeat_2 = Sequential(*(Block17(0.10, rngs=rngs) for _ in range(10)))
        self.mixed_7a = Mixed7a(rngs=rngs)
        self.repeat_3 = Sequential(*(Block8(0.20, rngs=rngs) for _ in range(5)))
        self.block8 = Block8(no_relu=True, rngs=rngs)
        self.avgpool_1a = AdaptiveAvgPool2d()
        self.last_linear = linear(1792, 512, bias=False, rngs=rngs)
        self.last_bn = batch_norm(512, eps=BN_EPS, rngs=rngs)
        self.logits = linear(512, int(num_classes), rngs=rngs) if num_classes else None

    def __call__(self, x: jax.Array) -> jax.Array:
        check_image_batch(x, "inception_resnet_v1")
        if min(x.shape[1:3]) < MIN_IMAGE_SIZE:
            raise HndError(f"inception_resnet_v1 needs inputs of at least {MIN_IMAGE_SIZE} px, got {tuple(x.shape[1:3])}")
        for stem in (self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
                     self.conv2d_4a, self.conv2d_4b):
            x = stem(x)
        x = self.mixed_6a(self.repeat_1(x))
        x = self.mixed_7a(self.repeat_2(x))
        x = self.block8(self.repeat_3(x))
        x = self.last_bn(self.last_linear(flatten_nhwc(self.avgpool_1a(x))))
        if self.classify:
            return self.logits(x)
        norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
        return x / jnp.maximum(norm, 1e-12)  # F.normalize(p=2, dim=1)
