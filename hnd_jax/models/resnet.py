"""ResNet-18/34/50/101/152 in torchvision's layout and module names, with the heads of HND's face models.

Module tree (what ``named_modules()`` shows in torchvision, and our layer names)::

    conv1 bn1 relu maxpool
    layer1..layer4 . <block 0..n-1> . conv1 bn1 conv2 bn2 [conv3 bn3] relu [downsample.0 downsample.1]
    <head>

Bottleneck blocks put the stride on ``conv2`` (torchvision's "ResNet v1.5"). A block's ``relu`` is
called two or three times; its captured activation is the last call (the block's output), which is
what a PyTorch forward hook that stores its output keeps.

Heads (``head=``):

- ``"fc"``: ``avgpool`` (global average) then ``fc = Linear(512*expansion, num_outputs)`` --
  torchvision's own head.
- ``"mlp"``: the age/gender models of the HND paper: flatten of layer4 (no pooling), then
  ``fc = nn.Sequential(Linear(C*H*W, 2048), ReLU, Linear(2048, 512), ReLU, Linear(512, 64), ReLU,
  Linear(64, num_outputs))``; the PyTorch names are therefore ``fc.0 / fc.2 / fc.4 / fc.6``
  (ReLUs at ``fc.1 / fc.3 / fc.5``), which is what ``model.fc = nn.Sequential(...)`` on a
  torchvision ResNet whose ``avgpool`` is ``nn.Identity()`` produces.
- ``"embedding"``: flatten of layer4, ``fc = Linear(C*H*W, 128)``, L2-normalised and multiplied
  by 10, then ``classifier = Linear(128, num_outputs)``; with ``num_outputs=0`` there is no
  classifier and the model returns the scaled embedding.

Flattening heads need the input size at build time (``image_size``); the first Linear is marked
with PyTorch's C,H,W flatten order so the weight mapper permutes it.
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
    mark_flattened_input,
    pool_output_size,
)

RESNET_HEADS: tuple[str, ...] = ("fc", "mlp", "embedding")
EMBEDDING_DIM = 128
EMBEDDING_SCALE = 10.0
MLP_WIDTHS = (2048, 512, 64)


class BasicBlock(nnx.Module):
    """torchvision ``BasicBlock`` (ResNet-18/34): two 3x3 convs and the identity shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.relu = ReLU()
        self.conv2 = conv2d(planes, planes, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nnx.Module):
    """torchvision ``Bottleneck`` (ResNet-50/101/152): 1x1, 3x3 (strided), 1x1 x4 and the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = conv2d(in_planes, planes, 1, bias=False, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.conv3 = conv2d(planes, planes * self.expansion, 1, bias=False, rngs=rngs)
        self.bn3 = batch_norm(planes * self.expansion, rngs=rngs)
        self.relu = ReLU()
        self.downsample = _downsample(in_planes, planes * self.expansion, stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_planes: int, out_planes: int, stride: int, *, rngs: nnx.Rngs) -> Sequential | None:
    """``downsample = Sequential(conv1x1(stride), BatchNorm2d)`` when the shape changes, else None."""
    if stride == 1 and in_planes == out_planes:
        return None
    return Sequential(
        conv2d(in_planes, out_planes, 1, stride=stride, bias=False, rngs=rngs),
        batch_norm(out_planes, rngs=rngs),
    )


def layer4_spatial(image_size: int) -> int:
    """Side of layer4's feature map for a square input: conv1 /2, maxpool /2, layer2..4 /2 each."""
    s = (image_size + 2 * 3 - 7) // 2 + 1  # conv1: 7x7, stride 2, padding 3
    s = pool_output_size(s, 3, 2, 1, False)  # maxpool: 3x3, stride 2, padding 1
    for _ in range(3):
        s = (s + 2 * 1 - 3) // 2 + 1  # the strided 3x3 conv of layer2, layer3, layer4
    return s


class ResNet(nnx.Module):
    """A torchvision-layout ResNet with one of the heads described in the module docstring.

    Input: NHWC float32 images (whatever preprocessing the checkpoint expects). Output: the head's
    output ([N, num_outputs], or [N, 128] for an embedding head without classifier).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_layer: tuple[int, int, int, int],
        *,
        head: str = "fc",
        num_outputs: int = 1000,
        image_size: int | None = None,
        name: str = "resnet",
        rngs: nnx.Rngs,
    ):
        if head not in RESNET_HEADS:
            raise HndError(f"unknown head {head!r} for {name}; expected one of {', '.join(RESNET_HEADS)}")
        if head != "embedding" and int(num_outputs) < 1:
            raise HndError(f"{name} with head {head!r} needs num_outputs >= 1, got {num_outputs}")
        self.arch_name = name
        self.head = head
        self.conv1 = conv2d(3, 64, 7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = batch_norm(64, rngs=rngs)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks_per_layer)):
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(count):
                blocks.append(block(in_planes, planes, stride if b == 0 else 1, rngs=rngs))
                in_planes = planes * block.expansion
            setattr(self, f"layer{index + 1}", Sequential(*blocks))
        features = in_planes

        self.image_size = None if image_size is None else int(image_size)
        if head == "fc":
            self.avgpool = AdaptiveAvgPool2d()
            self.fc = linear(features, int(num_outputs), rngs=rngs)
            return
        if self.image_size is None:
            raise HndError(f"{name} with head {head!r} flattens layer4, so it needs image_size (e.g. 128)")
        side = layer4_spatial(self.image_size)
        if side < 1:
            raise HndError(f"image_size {self.image_size} is too small for {name}")
        flat = side * side * features
        if head == "mlp":
            w1, w2, w3 = MLP_WIDTHS
            first = mark_flattened_input(linear(flat, w1, rngs=rngs), "CHW", (side, side, features))
            self.fc = Sequential(
                first, ReLU(), linear(w1, w2, rngs=rngs), ReLU(), linear(w2, w3, rngs=rngs), ReLU(),
                linear(w3, int(num_outputs), rngs=rngs),
            )
        else:  # embedding
            self.fc = mark_flattened_input(linear(flat, EMBEDDING_DIM, rngs=rngs), "CHW", (side, side, features))
            self.classifier = linear(EMBEDDING_DIM, int(num_outputs), rngs=rngs) if num_outputs else None

    def features(self, x: jax.Array) -> jax.Array:
        """The trunk: stem and layer1..layer4 ([N, h, w, 512*expansion])."""
        size = None if self.head == "fc" else (self.image_size, self.image_size)
        check_image_batch(x, self.arch_name, size=size)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def embed(self, x: jax.Array) -> jax.Array:
        """Embedding head only: ``normalize(fc(flatten(layer4))) * 10`` ([N, 128])."""
        e = self.fc(flatten_nhwc(self.features(x)))
        norm = jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True))
        return e / jnp.maximum(norm, 1e-12) * EMBEDDING_SCALE  # F.normalize's eps

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.head == "embedding":
            e = self.embed(x)
            return e if self.classifier is None else self.classifier(e)
        f = self.features(x)
        if self.head == "fc":
            return self.fc(flatten_nhwc(self.avgpool(f)))
        return self.fc(flatten_nhwc(f))


RESNET_DEPTHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def build_resnet(
    arch: str,
    *,
    head: str = "fc",
    num_outputs: int = 1000,
    image_size: int | None = None,
    rngs: nnx.Rngs,
) -> ResNet:
    """``resnet18|34|50|101|152`` with the chosen head (see the module docstring)."""
    block, counts = RESNET_DEPTHS[arch]
    return ResNet(block, counts, head=head, num_outputs=num_outputs, image_size=image_size, name=arch, rngs=rngs)
