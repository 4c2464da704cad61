"""ResNet-18/34/50/101/152 and the HND heads against a torchvision-layout PyTorch twin.

Torch weights are random (PyTorch's default init) with randomised BatchNorm statistics, copied with
``load_torch_state_dict``; outputs and several dissectable layers must agree within 1e-4 relative
(max abs error / max abs value of the PyTorch tensor). Inputs are small to keep the suite fast.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from hnd_jax.models.capture import forward_with_layers, list_layers
from hnd_jax.models.registry import build_model
from hnd_jax.models.resnet import layer4_spatial
from hnd_jax.models.torch_mapping import export_torch_state_dict, load_torch_state_dict

from hnd_models_torch_refs import numpy_state_dict, randomize_batchnorm, relative_error, torch_forward_with_hooks, torch_resnet

TOL = 1e-4


def _check(arch, head, num_outputs, size, batch, layers, seed):
    torch.manual_seed(seed)
    side = layer4_spatial(size)
    tmodel = torch_resnet(arch, head, num_outputs, layer4_side=side)
    randomize_batchnorm(tmodel, seed)
    state = numpy_state_dict(tmodel)

    kw = {} if head == "fc" else {"image_size": size}
    model = build_model(arch, head=head, num_outputs=num_outputs, **kw)
    load_torch_state_dict(model, state)

    x = np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, layers)
    out, acts = forward_with_layers(model, x, layers)

    assert relative_error(out, ref_out) < TOL
    assert set(acts) == set(layers)
    for name in layers:
        assert acts[name].shape == ref_acts[name].shape, name
        assert relative_error(acts[name], ref_acts[name]) < TOL, name
    # The exported state dict is the PyTorch one, key for key and value for value.
    exported = export_torch_state_dict(model)
    assert list(exported) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_resnet50_fc_head_and_layers():
    layers = ["conv1", "bn1", "relu", "maxpool", "layer1.0.downsample.0", "layer1.0.downsample", "layer2.3.relu",
              "layer3", "layer4.2.conv1", "layer4.2.bn1", "layer4.2", "avgpool"]
    _check("resnet50", "fc", 7, 64, 2, layers, seed=0)


def test_mlp_head_flatten_order():
    # At 64 px layer4 is 2x2: PyTorch's C,H,W flatten differs from ours, so fc.0 must be permuted.
    # (The head code is shared by every depth; ResNet-18 keeps the compile short.)
    _check("resnet18", "mlp", 3, 64, 2, ["layer4.1.conv1", "fc.0", "fc.4", "fc.5"], seed=1)


def test_embedding_head():
    _check("resnet18", "embedding", 5, 64, 2, ["layer4.1.conv2", "layer4", "fc"], seed=2)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_structure_matches_torchvision(arch):
    """Same tensors (names, shapes, order) and same shape for every dissectable layer, no compile."""
    torch.manual_seed(0)
    tmodel = torch_resnet(arch, "fc", 10)
    model = build_model(arch, num_outputs=10)
    exported = export_torch_state_dict(model)
    assert [(k, v.shape) for k, v in exported.items()] == [(k, tuple(v.shape)) for k, v in tmodel.state_dict().items()]
    layers = list_layers(model, 32)
    names = [info.name for info in layers]
    _, ref = torch_forward_with_hooks(tmodel, np.zeros((1, 32, 32, 3), np.float32), names)
    for info in layers:
        assert info.shape == ref[info.name].shape[1:], info.name
    # Every 4-D module output of the torch model is listed (torch's named_modules order).
    torch_names = [n for n, m in tmodel.named_modules() if n and n in ref]
    assert names == torch_names


@pytest.mark.parametrize("arch", ["resnet34", "resnet101", "resnet152"])
def test_other_depths_numerically(arch):
    if arch in ("resnet101", "resnet152") and os.environ.get("HND_SLOW_TESTS") != "1":
        pytest.skip(f"set HND_SLOW_TESTS=1: {arch} is ResNet-50's Bottleneck repeated (its names and "
                    "shapes are checked above) and its XLA compile alone takes 15-60 s on a 2-core CPU")
    last = {"resnet34": "layer4.2.conv1", "resnet101": "layer3.22.conv3", "resnet152": "layer3.35.conv3"}[arch]
    _check(arch, "fc", 4, 32, 1, ["layer1.0", last, "layer4"], seed=3)


def test_mlp_head_refuses_other_input_size():
    from hnd_jax.errors import HndError

    model = build_model("resnet18", head="mlp", num_outputs=2, image_size=64)
    with pytest.raises(HndError, match="built for 64x64"):
        forward_with_layers(model, np.zeros((1, 96, 96, 3), np.float32), ["layer4"])
