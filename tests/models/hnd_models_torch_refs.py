"""PyTorch originals for the model-zoo tests (CPU torch, float32).

- ResNets: torchvision does not import here, so its ResNet is rewritten below with torchvision's
  exact module structure and names (BasicBlock / Bottleneck with the stride on conv2, downsample
  = Sequential(conv1x1, BatchNorm2d)). The HND heads are attached the way a user would attach them
  to a torchvision model (``model.avgpool = nn.Identity(); model.fc = nn.Sequential(...)``).
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
