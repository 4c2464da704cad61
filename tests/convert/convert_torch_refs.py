"""PyTorch originals for the conversion tests (torch is a test-only dependency).

* MTCNN's PNet/RNet/ONet: the real classes from facenet-pytorch's ``models/mtcnn.py``. Importing the
  package pulls torchvision (broken here), so the single file is executed under a private package
  name with a stub for its ``detect_face`` helpers (which the network classes never use).
* ``TorchDemoCNN``: the demo CNN written the way a PyTorch user would, with the same module names.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is needed to compare against the PyTorch originals")
nn = torch.nn

_PKG = "hnd_test_facenet_pytorch"


def facenet_pytorch_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("facenet-pytorch is not installed: the real MTCNN weights and classes come from its wheel")
    return Path(list(spec.submodule_search_locations)[0])


def mtcnn_weights(name: str) -> Path:
    path = facenet_pytorch_dir() / "data" / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the facenet-pytorch install")
    return path


def _facenet_pytorch_file(stem: str):
    """facenet-pytorch's models/<stem>.py, executed under a private package name with stubs for its
    utils (face detection / download helpers the network classes never call), so that neither
    torchvision nor the real package is imported."""
    name = f"{_PKG}.models.{stem}"
    if name in sys.modules:
        return sys.modules[name]
    source = facenet_pytorch_dir() / "models" / f"{stem}.py"
    for pkg in (_PKG, f"{_PKG}.models", f"{_PKG}.models.utils"):
        mod = types.ModuleType(pkg)
        mod.__path__ = []  # mark as package
        sys.modules.setdefault(pkg, mod)
    stub = types.ModuleType(f"{_PKG}.models.utils.detect_face")
    stub.detect_face = stub.extract_face = None
    sys.modules.setdefault(stub.__name__, stub)
    stub = types.ModuleType(f"{_PKG}.models.utils.download")
    stub.download_url_to_file = None
    sys.modules.setdefault(stub.__name__, stub)
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def torch_mtcnn(net: str):
    """A real facenet-pytorch PNet/RNet/ONet in eval mode with the wheel's weights (torch.load)."""
    cls = {"pnet": "PNet", "rnet": "RNet", "onet": "ONet"}[net]
    model = getattr(_facenet_pytorch_file("mtcnn"), cls)(pretrained=False)
    model.load_state_dict(torch.load(mtcnn_weights(net), weights_only=True))
    return model.eval().requires_grad_(False)


def torch_inception_resnet_v1(seed: int = 0, num_classes: int = 8631):
    """facenet-pytorch's InceptionResnetV1 with random weights and BatchNorm statistics.

    Built with ``classify=True`` so that ``logits`` exists (as in the VGGFace2 file), then switched to
    ``classify=False``: the forward returns the normalised embedding, as in the HND facenet loader.
    """
    module = pytest.importorskip("requests") and _facenet_pytorch_file("inception_resnet_v1")
    torch.manual_seed(seed)
    model = module.InceptionResnetV1(classify=True, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.classify = False
    return model.eval().requires_grad_(False)


class TorchDemoCNN(nn.Module):
    """conv{i}/bn{i}/relu{i}/pool{i} x4 (no pool after conv4), avgpool, fc -- the demo CNN in PyTorch."""

    def __init__(self, num_outputs: int = 2, widths=(16, 32, 64, 128)):
        super().__init__()
        in_ch = 3
        for i, width in enumerate(widths, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(in_ch, width, 3, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(width))
            setattr(self, f"relu{i}", nn.ReLU())
            if i < 4:
                setattr(self, f"pool{i}", nn.MaxPool2d(2, 2))
            in_ch = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_outputs)

    def forward(self, x):
        for i in range(1, 5):
            x = getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if i < 4:
                x = getattr(self, f"pool{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def random_demo_cnn(seed: int = 0, num_outputs: int = 2) -> TorchDemoCNN:
    """A demo CNN with random weights AND random BatchNorm statistics (so BN is really exercised)."""
    torch.manual_seed(seed)
    model = TorchDemoCNN(num_outputs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval().requires_grad_(False)


def hooked(model, x_nchw: np.ndarray, layers: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run a torch model with forward hooks on ``layers``; (output, {layer: NCHW activation})."""
    seen: dict[str, np.ndarray] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach().numpy().copy()))
        for name in layers
    ]
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(x_nchw)))
    finally:
        for h in handles:
            h.remove()
    return out, seen


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> None:
    """Agreement within ``rtol`` relative to the reference's scale (float32 conv sums differ in order)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} x {scale:.3g}"
