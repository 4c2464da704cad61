"""forward_with_layers / list_layers: right activations, one compile, errors that help."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models import capture
from hnd_jax.models.capture import forward_with_layers, list_layers, module_names
from hnd_jax.models.layers import ReLU, conv2d
from hnd_jax.models.registry import build_model


def numpy_conv_same3x3(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Independent reference: 3x3 conv, stride 1, zero padding 1, NHWC x HWIO, by explicit loops."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy:dy + h, dx:dx + w, :] @ kernel[dy, dx].astype(np.float64)
    return out + bias


@pytest.fixture(scope="module")
def demo():
    model = build_model("demo_cnn", num_outputs=3, use_batch_norm=False, rngs=nnx.Rngs(7))
    model.conv1.bias.set_value(jnp.linspace(-0.5, 0.5, 16))
    return model


def test_list_layers_names_shapes_and_order(demo):
    layers = list_layers(demo, 64)
    assert [n for n, _ in layers] == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
                                      "pool3", "conv4", "relu4", "avgpool"]
    shapes = dict(layers)
    assert shapes["conv1"] == (64, 64, 16) and shapes["pool1"] == (32, 32, 16)
    assert shapes["conv4"] == (8, 8, 128) and shapes["avgpool"] == (1, 1, 128)
    assert dict(list_layers(demo, (40, 24)))["conv4"] == (5, 3, 128)


def test_activations_equal_numpy_reference_and_plain_forward(demo):
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    out, acts = forward_with_layers(demo, x, ["conv1", "relu1", "pool3"])
    kernel = np.asarray(demo.conv1.kernel.get_value())
    ref = numpy_conv_same3x3(x.astype(np.float64), kernel, np.asarray(demo.conv1.bias.get_value()))
    np.testing.assert_allclose(np.asarray(acts["conv1"]), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(acts["relu1"]), np.maximum(ref, 0), rtol=1e-5, atol=1e-5)
    assert acts["pool3"].shape == (2, 2, 2, 64)
    np.testing.assert_allclose(np.asarray(out), np.asarray(demo(jnp.asarray(x))), rtol=1e-6, atol=1e-6)


def test_one_compile_for_new_images_and_new_weights():
    model = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(1))
    x = np.ones((2, 16, 16, 3), np.float32)
    forward_with_layers(model, x, ["conv2"])
    before = capture._forward_jit._cache_size()
    _, a = forward_with_layers(model, x * 2, ["conv2"])
    model.conv2.kernel.set_value(model.conv2.kernel.get_value() * 0)
    _, b = forward_with_layers(model, x * 2, ["conv2"])
    assert capture._forward_jit._cache_size() == before
    assert not np.allclose(np.asarray(a["conv2"]), np.asarray(b["conv2"]))  # new weights were used
    np.testing.assert_array_equal(np.asarray(b["conv2"]), 0.0)  # zero kernel, no bias (BN follows)


def test_works_inside_an_outer_jit(demo):
    graphdef, state = nnx.split(demo)

    @jax.jit
    def run(state, x):
        return forward_with_layers(nnx.merge(graphdef, state), x, ("conv3",))[1]["conv3"]

    x = np.random.default_rng(1).normal(size=(1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(run(state, x)), np.asarray(forward_with_layers(demo, x, ["conv3"])[1]["conv3"]),
                               rtol=1e-6, atol=1e-6)


def test_unknown_layer_is_one_line_with_close_matches(demo):
    with pytest.raises(HndError) as e:
        forward_with_layers(demo, np.zeros((1, 16, 16, 3), np.float32), ["conv1", "cnov2"])
    message = str(e.value)
    assert "'cnov2'" in message and "conv2" in message and "\n" not in message


def test_names_are_deduplicated_and_a_single_string_is_accepted(demo):
    _, acts = forward_with_layers(demo, np.zeros((1, 8, 8, 3), np.float32), ["conv4", "conv4"])
    assert list(acts) == ["conv4"]
    _, acts = forward_with_layers(demo, np.zeros((1, 8, 8, 3), np.float32), "conv4")
    assert list(acts) == ["conv4"]


class _WithUnusedBranch(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.used = conv2d(3, 4, 3, padding=1, rngs=rngs)
        self.unused = conv2d(3, 4, 3, padding=1, rngs=rngs)
        self.relu = ReLU()

    def __call__(self, x):
        return self.relu(self.relu(self.used(x)) - 1.0)  # relu called twice: the last call counts


def test_unused_module_and_repeated_module():
    model = _WithUnusedBranch()
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 3)).astype(np.float32)
    with pytest.raises(HndError, match="not run by its forward"):
        forward_with_layers(model, x, ["unused"])
    out, acts = forward_with_layers(model, x, ["relu", "used"])
    np.testing.assert_array_equal(np.asarray(acts["relu"]), np.asarray(out))
    np.testing.assert_allclose(np.asarray(out), np.maximum(np.maximum(np.asarray(acts["used"]), 0) - 1, 0))
    assert [n for n, _ in list_layers(model, 6)] == ["used", "relu"]
    assert module_names(model) == ["used", "unused", "relu"]


def test_list_layers_rejects_impossible_sizes():
    with pytest.raises(HndError, match="image size"):
        list_layers(build_model("demo_cnn"), 0)
    with pytest.raises(HndError, match="mtcnn_onet"):
        list_layers(build_model("mtcnn_onet"), 40)


def test_batch_sharded_over_devices_gives_the_same_activations(demo):
    from hnd_jax.sharding import make_data_mesh, put_sharded

    mesh = make_data_mesh()
    n = len(mesh.devices.ravel())
    x = np.random.default_rng(3).normal(size=(n, 8, 8, 3)).astype(np.float32)
    _, sharded = forward_with_layers(demo, put_sharded(x, mesh), ["conv2", "pool2"])
    _, single = forward_with_layers(demo, x, ["conv2", "pool2"])
    for name in ("conv2", "pool2"):
        np.testing.assert_allclose(np.asarray(sharded[name]), np.asarray(single[name]), rtol=1e-6, atol=1e-6)
