"""PyTorch originals for the model-zoo tests (CPU torch, float32).

- ResNets: torchvision does not import here, so its ResNet is rewritten below with torchvision's
  exact module structure and names (BasicBlock / Bottleneck with the stride on conv2, downsample
  = Sequential(conv1x1, BatchNorm2d)). The HND heads are attached the way a user would attach them
  to a torchvision model (``model.avgpool = nn.Identity(); model.fc = nn.Sequential(...)``).
- IResNet (insightface arcface_torch) and the CLIP image tower: faithful twins below (see there).
- timm ViTs: timm itself, see ``timm_ref.py``.
- InceptionResnetV1 and MTCNN: the REAL facenet-pytorch source files, loaded one by one from the
  installed wheel (its package ``__init__`` imports torchvision, so it cannot be imported). Their
  relative imports of download / face-detection helpers (unused by the nets) are stubbed.

Also: helpers to randomise every BatchNorm's running statistics (so BN is really exercised), to
record layer outputs with forward hooks, and the relative-error measure the tests use.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------- torchvision-layout ResNet


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class TorchBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TorchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


TORCH_RESNETS = {
    "resnet18": (TorchBasicBlock, [2, 2, 2, 2]),
    "resnet34": (TorchBasicBlock, [3, 4, 6, 3]),
    "resnet50": (TorchBottleneck, [3, 4, 6, 3]),
    "resnet101": (TorchBottleneck, [3, 4, 23, 3]),
    "resnet152": (TorchBottleneck, [3, 8, 36, 3]),
}


class TorchEmbeddingResNet(TorchResNet):
    """flatten(layer4) -> fc (128) -> L2 normalise x 10 -> classifier (names: fc, classifier)."""

    def __init__(self, block, layers, flat_features: int, num_classes: int):
        super().__init__(block, layers)
        self.avgpool = nn.Identity()
        self.fc = nn.Linear(flat_features, 128)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        e = torch.nn.functional.normalize(self.fc(torch.flatten(x, 1)), p=2, dim=1) * 10
        return self.classifier(e)


def torch_resnet(arch: str, head: str = "fc", num_outputs: int = 1000, layer4_side: int | None = None) -> nn.Module:
    block, layers = TORCH_RESNETS[arch]
    features = 512 * block.expansion
    if head == "fc":
        return TorchResNet(block, layers, num_outputs)
    flat = features * layer4_side * layer4_side
    if head == "mlp":
        model = TorchResNet(block, layers)
        model.avgpool = nn.Identity()
        model.fc = nn.Sequential(
            nn.Linear(flat, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 64), nn.ReLU(),
            nn.Linear(64, num_outputs),
        )
        return model
    if head == "embedding":
        return TorchEmbeddingResNet(block, layers, flat, num_outputs)
    raise ValueError(head)


# ---------------------------------------------------------------- arcface_torch IResNet twin
# insightface's PyPI package does not ship recognition/arcface_torch, so its backbones/iresnet.py is
# rewritten here with the same module names, order and forward (IBasicBlock: bn1, conv1, bn2, prelu,
# conv2 (strided), bn3, downsample; IResNet: conv1, bn1, prelu, layer1-4 (all stride 2), bn2,
# dropout, fc = Linear(512*7*7, num_features), features = BatchNorm1d). fp16 autocast is left out.


class TorchIBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return out


class TorchIResNet(nn.Module):
    fc_scale = 7 * 7

    def __init__(self, layers, dropout=0.0, num_features=512):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes, eps=1e-05))
        layers = [TorchIBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(TorchIBasicBlock(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.fc(x)
        return self.features(x)


TORCH_IRESNETS = {"iresnet18": [2, 2, 2, 2], "iresnet34": [3, 4, 6, 3], "iresnet50": [3, 4, 14, 3],
                  "iresnet100": [3, 13, 30, 3]}


def torch_iresnet(arch: str, num_features: int = 512) -> nn.Module:
    return TorchIResNet(TORCH_IRESNETS[arch], num_features=num_features)


# ---------------------------------------------------------------- OpenAI CLIP image tower twin
# OpenAI's clip/model.py (VisionTransformer, Transformer, ResidualAttentionBlock, QuickGELU,
# LayerNorm) with the same module names; torch's own nn.MultiheadAttention does the attention.
# Batch-first (as open_clip): the original permutes to [tokens, N, D] around the transformer,
# which changes no value; hooks then see [N, tokens, D].


class TorchQuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class TorchResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, quick_gelu=True):
        super().__init__()
        from collections import OrderedDict

        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", TorchQuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TorchClipTransformer(nn.Module):
    def __init__(self, width, layers, heads, quick_gelu=True):
        super().__init__()
        self.resblocks = nn.Sequential(*[TorchResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class TorchClipVisionTransformer(nn.Module):
    def __init__(self, input_resolution=224, patch_size=16, width=768, layers=12, heads=12, output_dim=512,
                 quick_gelu=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = TorchClipTransformer(width, layers, heads, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


# ---------------------------------------------------------------- facenet-pytorch originals


def facenet_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("facenet-pytorch is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def load_facenet_source(module: str) -> types.ModuleType:
    """Import ``facenet_pytorch/models/<module>.py`` alone, with its helper imports stubbed."""
    pkg = "_hnd_facenet_originals"
    if pkg not in sys.modules:
        root = types.ModuleType(pkg)
        root.__path__ = []  # a package, but nothing is imported from disk through it
        utils = types.ModuleType(f"{pkg}.utils")
        utils.__path__ = []
        download = types.ModuleType(f"{pkg}.utils.download")
        download.download_url_to_file = None  # never called: no pretrained download in tests
        detect = types.ModuleType(f"{pkg}.utils.detect_face")
        detect.detect_face = detect.extract_face = None  # MTCNN's detector is not under test
        for m in (root, utils, download, detect):
            sys.modules[m.__name__] = m
    name = f"{pkg}.{module}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, facenet_dir() / "models" / f"{module}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def mtcnn_weights(net: str) -> dict[str, np.ndarray]:
    """The real PNet/RNet/ONet state dict shipped in the facenet-pytorch wheel (tests may torch.load)."""
    state = torch.load(facenet_dir() / "data" / f"{net}.pt", map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


# ---------------------------------------------------------------- helpers


def randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Random affine parameters and running statistics for every BatchNorm (eval mode uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def numpy_state_dict(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def torch_forward_with_hooks(model: nn.Module, x_nhwc: np.ndarray, layers: list[str]):
    """Run the torch model on NHWC numpy input; return (outputs as numpy, {layer: NHWC numpy}).

    A hook stores the output of each call, so a module called several times keeps its last output.
    """
    modules = dict(model.named_modules())
    captured: dict[str, np.ndarray] = {}
    handles = []
    for name in layers:
        def hook(_mod, _inp, out, name=name):
            out = out[0] if isinstance(out, tuple) else out  # nn.MultiheadAttention: (output, weights)
            captured[name] = out.detach().clone().numpy()
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    finally:
        for h in handles:
            h.remove()
    outs = tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()
    acts = {k: (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in captured.items()}
    return outs, acts


def relative_error(ours, reference) -> float:
    """max |ours - reference| / max |reference|: the error relative to the tensor's own scale."""
    ours = np.asarray(ours, np.float64)
    reference = np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    scale = np.max(np.abs(reference))
    assert np.isfinite(ours).all() and np.isfinite(reference).all()
    assert scale > 0, "reference is all zeros: the comparison would prove nothing"
    return float(np.max(np.abs(ours - reference)) / scale)
