"""ArcFace IResNet-18/34/50/100 in insightface's ``arcface_torch`` layout and module names.

Source of the layout: insightface ``recognition/arcface_torch/backbones/iresnet.py`` (Deng et al.,
"ArcFace", CVPR 2019; the "improved residual" block of Duta et al., ICPR 2020). Module tree (what
``named_modules()`` shows, and our layer names)::

    conv1 bn1 prelu
    layer1..layer4 . <block 0..n-1> . bn1 conv1 bn2 prelu conv2 bn3 [downsample.0 downsample.1]
    bn2 dropout fc features

``IBasicBlock``: ``bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, the block's stride) -> bn3``
plus the shortcut (``downsample = Sequential(conv1x1(stride), BatchNorm2d)`` when the shape
changes); no activation after the sum. Every stage starts with stride 2, so a 112x112 input gives
56, 28, 14 and 7 pixel maps; the head flattens ``bn2``'s 512x7x7 map in PyTorch's C,H,W order
(``fc = Linear(25088, num_features)``), then ``features = BatchNorm1d(num_features)``: the face
embedding ([N, 512] by default, not normalised). ``dropout`` is the identity at inference.

Input: 112x112 NHWC float32 images preprocessed as ``(x - 127.5) / 127.5`` (arcface_torch's
``transforms.Normalize(mean=[0.5]*3, std=[0.5]*3)`` after ``ToTensor``). BatchNorm eps 1e-5.
"""

from __future__ import annotations

import jax
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.layers import PReLU, Sequential, batch_norm, check_image_batch, conv2d, flatten_nhwc, linear
from hnd_jax.models.layers import mark_flattened_input

IRESNET_INPUT = 112
IRESNET_FC_SIDE = 7  # arcface_torch's fc_scale = 7 * 7
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


class Dropout(nnx.Module):
    """``nn.Dropout``: the identity at inference (a module only so that the name exists)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class IBasicBlock(nnx.Module):
    """arcface_torch ``IBasicBlock``: BN, conv3x3, BN, PReLU, conv3x3 (strided), BN, + shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.bn1 = batch_norm(inplanes, rngs=rngs)
        self.conv1 = conv2d(inplanes, planes, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.prelu = PReLU(planes)
        self.conv2 = conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn3 = batch_norm(planes, rngs=rngs)
        self.downsample = None if (stride == 1 and inplanes == planes) else Sequential(
            conv2d(inplanes, planes, 1, stride=stride, bias=False, rngs=rngs), batch_norm(planes, rngs=rngs)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nnx.Module):
    """ArcFace IResNet (module docstring). Input [N, 112, 112, 3]; output [N, num_features]."""

    def __init__(self, layers: tuple[int, int, int, int], *, num_features: int = 512, name: str = "iresnet",
                 rngs: nnx.Rngs):
        if int(num_features) < 1:
            raise HndError(f"{name} needs num_outputs (embedding size) >= 1, got {num_features}")
        self.arch_name = name
        self.conv1 = conv2d(3, 64, 3, padding=1, bias=False, rngs=rngs)
        self.bn1 = batch_norm(64, rngs=rngs)
        self.prelu = PReLU(64)
        inplanes = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = [IBasicBlock(inplanes, planes, 2, rngs=rngs)]
            blocks += [IBasicBlock(planes, planes, 1, rngs=rngs) for _ in range(1, count)]
            inplanes = planes
            setattr(self, f"layer{index + 1}", Sequential(*blocks))
        self.bn2 = batch_norm(512, rngs=rngs)
        self.dropout = Dropout()
        side = IRESNET_FC_SIDE
        self.fc = mark_flattened_input(linear(512 * side * side, int(num_features), rngs=rngs), "CHW", (side, side, 512))
        self.features = batch_norm(int(num_features), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_image_batch(x, self.arch_name, size=(IRESNET_INPUT, IRESNET_INPUT))
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(flatten_nhwc(self.bn2(x)))
        return self.features(self.fc(x))


def build_iresnet(arch: str, *, num_features: int = 512, rngs: nnx.Rngs) -> IResNet:
    """``iresnet18|34|50|100`` with an embedding of ``num_features`` (arcface_torch default 512)."""
    return IResNet(IRESNET_LAYERS[arch], num_features=num_features, name=arch, rngs=rngs)
