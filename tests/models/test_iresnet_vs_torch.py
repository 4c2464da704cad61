"""ArcFace IResNets against a faithful twin of insightface's arcface_torch/backbones/iresnet.py.

insightface's PyPI package does not ship ``recognition/arcface_torch``, so the PyTorch side is the
twin in hnd_models_torch_refs.py (same module names, order and forward). Random weights with
randomised BatchNorm statistics and PReLU slopes; outputs and dissectable layers within 1e-4
relative at the real 112x112 input (the head flattens a fixed 7x7 map). IResNet-18 runs the
numerics; every depth is checked for tensor names/shapes and layer shapes without compiling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hnd_jax.errors import HndError
from hnd_jax.models.capture import forward_with_layers, list_layers
from hnd_jax.models.registry import build_model
from hnd_jax.models.torch_mapping import export_torch_state_dict, load_torch_state_dict

from hnd_models_torch_refs import (
    numpy_state_dict, randomize_batchnorm, relative_error, torch_forward_with_hooks, torch_iresnet,
)

TOL = 1e-4


def _random_prelu(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)


def test_iresnet18_matches_arcface_torch_layout():
    torch.manual_seed(0)
    tmodel = torch_iresnet("iresnet18", num_features=64)
    randomize_batchnorm(tmodel, 0)
    _random_prelu(tmodel, 0)
    state = numpy_state_dict(tmodel)
    model = build_model("iresnet18", num_outputs=64)
    load_torch_state_dict(model, state)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 112, 112, 3)).astype(np.float32)
    layers = ["conv1", "prelu", "layer1.0.downsample", "layer1.0.bn1", "layer2.1", "layer3.0.prelu",
              "layer4.1.conv2", "layer4.1", "bn2"]
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, layers)
    out, acts = forward_with_layers(model, x, layers)
    assert out.shape == (2, 64)
    assert relative_error(out, ref_out) < TOL
    for name in layers:
        assert acts[name].shape == ref_acts[name].shape, name
        assert relative_error(acts[name], ref_acts[name]) < TOL, name
    exported = export_torch_state_dict(model)
    assert list(exported) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


@pytest.mark.parametrize("arch", ["iresnet18", "iresnet34", "iresnet50", "iresnet100"])
def test_iresnet_names_and_shapes(arch):
    tmodel = torch_iresnet(arch)
    model = build_model(arch)
    exported = export_torch_state_dict(model)
    assert [(k, v.shape) for k, v in exported.items()] == [(k, tuple(v.shape)) for k, v in tmodel.state_dict().items()]
    layers = dict(list_layers(model, 112))
    last = f"layer4.{len(tmodel.layer4) - 1}"
    assert layers[f"{last}.conv2"] == (7, 7, 512) and layers["layer1.0.conv1"] == (112, 112, 64)
    assert layers["layer1.0.conv2"] == (56, 56, 64)  # the stride is on conv2
    torch_names = [n for n, _ in tmodel.named_modules() if n in layers]
    assert list(layers) == torch_names  # named_modules() order


def test_iresnet_refuses_other_sizes():
    with pytest.raises(HndError, match="112x112"):
        list_layers(build_model("iresnet18"), 128)
