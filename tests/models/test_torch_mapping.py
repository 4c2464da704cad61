"""load_torch_state_dict / export_torch_state_dict: layouts, flatten permutations, strictness."""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.layers import flatten_nhwc, linear, mark_flattened_input
from hnd_jax.models.registry import build_model
from hnd_jax.models.torch_mapping import expected_torch_shapes, export_torch_state_dict, load_torch_state_dict


class _FlattenHead(nnx.Module):
    """A Linear fed by a flattened H x W x C map, PyTorch having flattened it in ``order``."""

    def __init__(self, order: str, hwc: tuple[int, int, int]):
        h, w, c = hwc
        self.fc = mark_flattened_input(linear(h * w * c, 5, rngs=nnx.Rngs(0)), order, hwc)

    def __call__(self, x):
        return self.fc(flatten_nhwc(x))


@pytest.mark.parametrize("order, torch_permute", [("CHW", (0, 1, 2, 3)), ("WHC", (0, 3, 2, 1))])
def test_flatten_permutation_against_numpy(order, torch_permute):
    # H != W so that swapping H and W cannot pass unnoticed.
    hwc = (2, 3, 4)
    rng = np.random.default_rng(0)
    x_nhwc = rng.normal(size=(3, *hwc)).astype(np.float32)
    weight = rng.normal(size=(5, 24)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    # PyTorch's computation in NumPy: NCHW tensor, optional permute, row-major flatten, x @ W.T + b.
    x_nchw = x_nhwc.transpose(0, 3, 1, 2)
    reference = x_nchw.transpose(torch_permute).reshape(3, -1) @ weight.T + bias
    model = _FlattenHead(order, hwc)
    load_torch_state_dict(model, {"fc.weight": weight, "fc.bias": bias})
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x_nhwc))), reference, rtol=1e-5, atol=1e-5)
    exported = export_torch_state_dict(model)
    np.testing.assert_array_equal(exported["fc.weight"], weight)


def test_conv_and_batchnorm_layouts_against_torch():
    model = build_model("demo_cnn", num_outputs=3, use_batch_norm=False)
    tconv = torch.nn.Conv2d(3, 16, 3, padding=1)
    state = export_torch_state_dict(model)
    state["conv1.weight"] = tconv.weight.detach().numpy()
    state["conv1.bias"] = tconv.bias.detach().numpy()
    load_torch_state_dict(model, state)
    x = np.random.default_rng(1).normal(size=(2, 9, 7, 3)).astype(np.float32)
    with torch.no_grad():
        ref = tconv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(model.conv1(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


def _demo_state():
    model = build_model("demo_cnn", num_outputs=3)
    return model, export_torch_state_dict(model)


def test_strict_load_lists_missing_unexpected_and_wrong_shapes_in_one_line():
    model, state = _demo_state()
    before = np.asarray(model.conv1.kernel.get_value()).copy()
    state = {k: v + 1 for k, v in state.items()}
    del state["fc.bias"]
    state["head.weight"] = np.zeros(3, np.float32)
    state["conv2.weight"] = np.zeros((32, 16, 5, 5), np.float32)
    with pytest.raises(HndError) as e:
        load_torch_state_dict(model, state)
    message = str(e.value)
    assert "\n" not in message
    assert "1 missing [fc.bias]" in message
    assert "1 unexpected [head.weight]" in message
    assert "conv2.weight: (32, 16, 5, 5) in file, (32, 16, 3, 3) expected" in message
    # Nothing was assigned: a failed load leaves the model as it was.
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel.get_value()), before)


def test_long_key_lists_are_truncated_with_a_count():
    model = build_model("resnet18", num_outputs=10)
    with pytest.raises(HndError) as e:
        load_torch_state_dict(model, {})
    message = str(e.value)
    n = len(expected_torch_shapes(model))
    assert f"{n} missing [conv1.weight, " in message and f"... and {n - 6} more]" in message
    assert len(message) < 400


def test_wrong_architecture_is_reported():
    small = export_torch_state_dict(build_model("resnet18", num_outputs=10))
    with pytest.raises(HndError, match=r"missing \[layer1.0.conv3.weight"):
        load_torch_state_dict(build_model("resnet50", num_outputs=10), small)


def test_non_strict_returns_what_it_skipped_and_still_checks_shapes():
    model, state = _demo_state()
    new = {k: v + 1 for k, v in state.items() if not k.startswith("fc.")}
    new["extra.weight"] = np.zeros(2, np.float32)
    result = load_torch_state_dict(model, new, strict=False)
    assert result.missing == ["fc.weight", "fc.bias"] and result.unexpected == ["extra.weight"]
    np.testing.assert_allclose(export_torch_state_dict(model)["conv1.weight"], state["conv1.weight"] + 1)
    np.testing.assert_array_equal(export_torch_state_dict(model)["fc.bias"], state["fc.bias"])
    with pytest.raises(HndError, match="wrong shape"):
        load_torch_state_dict(model, {"conv1.weight": np.zeros((1, 1), np.float32)}, strict=False)


def test_num_batches_tracked_optional_and_dtypes():
    model, state = _demo_state()
    without = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    load_torch_state_dict(model, without)  # absent: fine
    half = dict(state, **{"conv1.weight": state["conv1.weight"].astype(np.float16)})
    load_torch_state_dict(model, half)
    brain = dict(state, **{"conv2.weight": state["conv2.weight"].astype(ml_dtypes.bfloat16)})
    load_torch_state_dict(model, brain)
    assert model.conv2.kernel.get_value().dtype == jnp.float32
    with pytest.raises(HndError, match="dtype int64"):
        load_torch_state_dict(model, dict(state, **{"fc.bias": np.zeros(3, np.int64)}))
    # torch tensors work too (anything np.asarray takes)
    load_torch_state_dict(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})


def test_export_then_load_reproduces_outputs():
    source = build_model("demo_cnn", num_outputs=3, rngs=nnx.Rngs(3))
    target = build_model("demo_cnn", num_outputs=3, rngs=nnx.Rngs(4))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype(np.float32))
    assert not np.allclose(np.asarray(source(x)), np.asarray(target(x)))
    load_torch_state_dict(target, export_torch_state_dict(source))
    np.testing.assert_array_equal(np.asarray(source(x)), np.asarray(target(x)))
