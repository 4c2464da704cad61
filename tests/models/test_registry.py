"""build_model and the ARCHITECTURES table: every name builds, bad requests give one-line errors."""

from __future__ import annotations

import pytest
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.capture import list_layers
from hnd_jax.models.demo_cnn import DemoCNN
from hnd_jax.models.inception_resnet_v1 import InceptionResnetV1
from hnd_jax.models.mtcnn import ONet, PNet, RNet
from hnd_jax.models.registry import ARCHITECTURES, build_model, get_architecture
from hnd_jax.models.iresnet import IResNet
from hnd_jax.models.resnet import ResNet
from hnd_jax.models.vit import ClipVisionTransformer, VisionTransformer

EXPECTED = {
    "resnet18": ResNet, "resnet34": ResNet, "resnet50": ResNet, "resnet101": ResNet, "resnet152": ResNet,
    "iresnet18": IResNet, "iresnet34": IResNet, "iresnet50": IResNet, "iresnet100": IResNet,
    "vit_tiny_patch16_224": VisionTransformer, "vit_small_patch16_224": VisionTransformer,
    "vit_base_patch16_224": VisionTransformer, "clip_vit_b16": ClipVisionTransformer,
    "inception_resnet_v1": InceptionResnetV1, "mtcnn_pnet": PNet, "mtcnn_rnet": RNet, "mtcnn_onet": ONet,
    "demo_cnn": DemoCNN,
}


def test_table_names_the_brief_architectures():
    assert set(ARCHITECTURES) == set(EXPECTED)
    for name, spec in ARCHITECTURES.items():
        assert spec.name == name and spec.heads and spec.min_image_size <= spec.default_image_size


@pytest.mark.parametrize("arch", ["resnet18", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "demo_cnn"])
def test_small_architectures_build_and_list_layers_at_their_default_size(arch):
    # (ResNet-34/50/101 and InceptionResnetV1 are built in the comparison tests against PyTorch.)
    model = build_model(arch)
    assert type(model) is EXPECTED[arch]
    layers = list_layers(model, ARCHITECTURES[arch].default_image_size)
    assert layers and all(len(shape) == 3 for _, shape in layers)


def test_heads_and_output_counts():
    assert build_model("resnet18", num_outputs=7).fc.out_features == 7
    mlp = build_model("resnet18", head="mlp", num_outputs=2, image_size=128)
    assert [mlp.fc[i].out_features for i in (0, 2, 4, 6)] == [2048, 512, 64, 2]
    assert mlp.fc[0].in_features == 512 * 4 * 4
    emb = build_model("resnet18", head="embedding", image_size=64)
    assert emb.fc.out_features == 128 and emb.classifier is None
    assert build_model("demo_cnn", num_outputs=5).fc.out_features == 5


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("resnet5O"), r"unknown architecture 'resnet5O' \(did you mean resnet50"),
    (lambda: build_model("vgg16"), "known: resnet18, resnet34"),
    (lambda: build_model("resnet18", head="arcface"), "expected one of fc, mlp, embedding"),
    (lambda: build_model("resnet18", head="mlp"), "needs image_size"),
    (lambda: build_model("resnet18", num_outputs=-1), "non-negative integer"),
    (lambda: build_model("resnet18", num_outputs=2.5), "non-negative integer"),
    (lambda: build_model("resnet18", num_outputs=0), "needs num_outputs >= 1"),
    (lambda: build_model("demo_cnn", num_outputs=0), "needs num_outputs >= 1"),
    (lambda: build_model("mtcnn_pnet", num_outputs=3), "fixed outputs"),
    (lambda: build_model("demo_cnn", image_sise=64), "does not take option"),
    (lambda: build_model("inception_resnet_v1", head="logits"), "needs num_outputs"),
    (lambda: get_architecture(None), "unknown architecture"),
])
def test_bad_requests_raise_one_line_hnd_errors(call, match):
    with pytest.raises(HndError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_rngs_make_builds_reproducible():
    a = build_model("demo_cnn", rngs=nnx.Rngs(5)).conv2.kernel.get_value()
    b = build_model("demo_cnn", rngs=nnx.Rngs(5)).conv2.kernel.get_value()
    c = build_model("demo_cnn", rngs=nnx.Rngs(6)).conv2.kernel.get_value()
    assert (a == b).all() and not (a == c).all()


def test_infer_num_outputs_reads_the_head_of_a_state_dict():
    import numpy as np

    from hnd_jax.models.registry import infer_num_outputs

    state = {"fc.weight": np.zeros((7, 2048), np.float32), "fc.bias": np.zeros(7, np.float32)}
    assert infer_num_outputs("resnet50", None, state) == 7
    assert infer_num_outputs("resnet50", "mlp", state) is None  # the MLP head's size is not fc.weight's
    assert infer_num_outputs("vit_small_patch16_224", None, {"head.weight": np.zeros((3, 384))}) == 3
    assert infer_num_outputs("clip_vit_b16", None, {"proj": np.zeros((768, 256))}) == 256
    assert infer_num_outputs("iresnet50", None, {"fc.weight": np.zeros((128, 25088))}) == 128
    assert infer_num_outputs("resnet50", None, {"conv1.weight": np.zeros((64, 3, 7, 7))}) is None
    assert infer_num_outputs("mtcnn_onet", None, state) is None


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_names_a_default_layer_it_has(arch):
    spec = ARCHITECTURES[arch]
    model = nnx.eval_shape(lambda: build_model(arch))
    from hnd_jax.models.capture import module_names

    assert spec.default_layer in module_names(model)
