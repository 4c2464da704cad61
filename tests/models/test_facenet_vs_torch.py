"""InceptionResnetV1 and MTCNN nets against facenet-pytorch's own source (loaded from the wheel).

InceptionResnetV1: random PyTorch init with randomised BatchNorm statistics, at 80 px (the
smallest size is 75). MTCNN: the REAL weights shipped in the facenet-pytorch wheel. Outputs and
dissectable layers must agree within 1e-4 relative (max abs error / max abs PyTorch value).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hnd_jax.models.capture import forward_with_layers, list_layers
from hnd_jax.models.registry import build_model
from hnd_jax.models.torch_mapping import export_torch_state_dict, load_torch_state_dict

from hnd_models_torch_refs import (
    load_facenet_source,
    mtcnn_weights,
    numpy_state_dict,
    randomize_batchnorm,
    relative_error,
    torch_forward_with_hooks,
)

TOL = 1e-4


def test_inception_resnet_v1_matches_facenet_pytorch():
    torch.manual_seed(4)
    irv1 = load_facenet_source("inception_resnet_v1")
    tmodel = irv1.InceptionResnetV1(classify=False)  # no `pretrained`: no logits layer at all
    randomize_batchnorm(tmodel, 4)
    state = numpy_state_dict(tmodel)
    model = build_model("inception_resnet_v1", head="embedding")
    load_torch_state_dict(model, state)
    assert list(export_torch_state_dict(model)) == list(state)

    layers = ["conv2d_1a", "maxpool_3a", "conv2d_4b.conv", "repeat_1.4", "mixed_6a", "mixed_6a.branch2",
              "repeat_2.9.branch1", "mixed_7a.branch3", "repeat_3.4", "block8.branch1", "block8.conv2d", "block8"]
    x = np.random.default_rng(4).uniform(-1, 1, size=(2, 80, 80, 3)).astype(np.float32)
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, layers)
    out, acts = forward_with_layers(model, x, layers)
    assert np.asarray(out).shape == ref_out.shape == (2, 512)
    assert relative_error(out, ref_out) < TOL
    for name in layers:
        assert relative_error(acts[name], ref_acts[name]) < TOL, name


@pytest.mark.parametrize("classify", [False, True])
def test_inception_resnet_v1_with_logits_has_facenet_tensors(classify):
    """With num_classes, facenet-pytorch has a `logits` Linear (the VGGFace2 file carries it even
    for the embedding model); ours too, whether or not it is applied. Same names, shapes, order.
    (The logits Linear maps like every other Linear checked numerically above; a second full
    InceptionResnetV1 compile just for it would double this file's run time.)"""
    irv1 = load_facenet_source("inception_resnet_v1")
    tmodel = irv1.InceptionResnetV1(classify=True, num_classes=9)
    head = "logits" if classify else "embedding"
    model = build_model("inception_resnet_v1", head=head, num_outputs=9)
    ours = [(k, v.shape) for k, v in export_torch_state_dict(model).items()]
    assert ours == [(k, tuple(v.shape)) for k, v in tmodel.state_dict().items()]
    assert model.classify is classify


def test_inception_resnet_v1_lists_facenet_layers():
    model = build_model("inception_resnet_v1")
    layers = dict(list_layers(model, 160))
    assert layers["block8.branch1"] == (3, 3, 192)
    assert layers["block8"] == (3, 3, 1792)
    assert layers["repeat_3.4"] == (3, 3, 1792)
    assert layers["mixed_6a.branch2"] == (8, 8, 256)  # 160 -> 79 -> 77 -> 38 -> 36 -> 17 -> 8
    assert layers["repeat_1"] == (17, 17, 256)
    assert "last_linear" not in layers  # 2-D output: not dissectable


def _mtcnn_pair(net: str):
    mtcnn = load_facenet_source("mtcnn")
    tmodel = {"pnet": mtcnn.PNet, "rnet": mtcnn.RNet, "onet": mtcnn.ONet}[net](pretrained=False)
    weights = mtcnn_weights(net)
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    model = build_model(f"mtcnn_{net}")
    load_torch_state_dict(model, weights)  # strict: the real file fits exactly
    return tmodel, model


@pytest.mark.parametrize(
    "net, size, layers",
    [
        # 23x31: odd sizes make every ceil-mode pool keep a partial window.
        ("pnet", (23, 31), ["conv1", "prelu1", "pool1", "conv3", "conv4_1", "softmax4_1"]),
        ("rnet", (24, 24), ["prelu1", "pool1", "pool2", "prelu3"]),
        ("onet", (48, 48), ["pool1", "pool2", "pool3", "prelu4"]),
    ],
)
def test_mtcnn_real_weights(net, size, layers):
    tmodel, model = _mtcnn_pair(net)
    # MTCNN's own input scaling: (pixel - 127.5) / 128.
    x = ((np.random.default_rng(5).integers(0, 256, size=(3, *size, 3)) - 127.5) / 128).astype(np.float32)
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, layers)
    out, acts = forward_with_layers(model, x, layers)
    assert len(out) == len(ref_out)
    for ours, ref in zip(out, ref_out):
        ref = ref.transpose(0, 2, 3, 1) if ref.ndim == 4 else ref
        assert relative_error(ours, ref) < TOL
    for name in layers:
        assert relative_error(acts[name], ref_acts[name]) < TOL, name


def test_mtcnn_export_roundtrip_is_exact():
    weights = mtcnn_weights("onet")
    model = build_model("mtcnn_onet")
    load_torch_state_dict(model, weights)
    exported = export_torch_state_dict(model)
    assert list(exported) == list(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(exported[k], v, err_msg=k)
