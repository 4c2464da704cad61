"""convert_checkpoint / load_model against the PyTorch originals, and every conversion error.

Round trips: the REAL MTCNN weights from the facenet-pytorch wheel (legacy format) and a demo CNN
with random weights and BatchNorm statistics saved by torch.save (zip format). Converted folders
must give the same outputs as the torch model (1e-4 relative), and the same as the original file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convert_torch_refs import assert_close, hooked, mtcnn_weights, random_demo_cnn, torch, torch_mtcnn
from hnd_jax.convert.checkpoint import (
    CARD_COPY,
    MANIFEST,
    convert_checkpoint,
    file_sha256,
    load_model,
    save_model,
    weights_identity,
)
from hnd_jax.errors import HndError

MTCNN_SIZES = {"pnet": 20, "rnet": 24, "onet": 48}


def _nhwc(x_nchw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def _run(model, x_nhwc: np.ndarray):
    """The model's output through one jitted forward (faster than eager NNX calls on CPU)."""
    from hnd_jax.models.capture import forward_with_layers

    return forward_with_layers(model, x_nhwc, [])[0]


def _outputs(out) -> list[np.ndarray]:
    """Model outputs in PyTorch layout (4-D maps back to NCHW)."""
    outs = [np.asarray(o) for o in (out if isinstance(out, (tuple, list)) else (out,))]
    return [o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for o in outs]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> tuple[Path, object]:
    model = random_demo_cnn(seed=3)
    path = tmp_path_factory.mktemp("demo") / "demo_cnn.pth"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
    return path, model


@pytest.mark.parametrize("net", sorted(MTCNN_SIZES))
def test_mtcnn_real_weights_convert_and_match_torch(tmp_path, net):
    ref = torch_mtcnn(net)
    size = MTCNN_SIZES[net]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    want = [o.numpy() for o in ref(torch.from_numpy(x))]

    out = convert_checkpoint(f"mtcnn_{net}", mtcnn_weights(net), tmp_path / net)
    model, card = load_model(f"mtcnn_{net}", out)
    got = _outputs(_run(model, _nhwc(x)))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g, w)

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"]["sha256"] == file_sha256(mtcnn_weights(net))
    assert manifest["source"]["format"] == "pytorch-legacy" and manifest["architecture"] == f"mtcnn_{net}"
    assert (out / CARD_COPY).read_text() == card.path.read_text()


def test_demo_cnn_zip_checkpoint_round_trip(tmp_path, demo_file):
    path, ref = demo_file
    x = np.random.default_rng(1).normal(size=(3, 3, 64, 64)).astype(np.float32)
    want, _ = hooked(ref, x, [])

    direct, _ = load_model("demo_cnn", path)  # the original file
    out = convert_checkpoint("demo_cnn", path, tmp_path / "converted")
    restored, card = load_model(None, out)  # the converted folder, card taken from its copy
    assert card.name == "demo_cnn"
    direct_out = np.asarray(_run(direct, _nhwc(x)))
    assert_close(direct_out, want.numpy())
    np.testing.assert_array_equal(np.asarray(_run(restored, _nhwc(x))), direct_out)
    assert weights_identity(out)["sha256"] == weights_identity(path)["sha256"] == file_sha256(path)


def test_wrong_architecture_lists_the_keys(tmp_path):
    with pytest.raises(HndError) as err:
        convert_checkpoint("mtcnn_rnet", mtcnn_weights("onet"), tmp_path / "out")
    msg = str(err.value)
    assert "onet.pt" in msg and "mtcnn_rnet" in msg and "missing" in msg and "unexpected" in msg
    assert "\n" not in msg
    assert not (tmp_path / "out").exists(), "a failed conversion must not leave an output folder"


def test_shape_mismatch_names_the_tensor(tmp_path):
    state = random_demo_cnn(seed=0, num_outputs=3).state_dict()  # the card says 2 outputs
    path = tmp_path / "three.pth"
    torch.save(state, path)
    with pytest.raises(HndError) as err:
        convert_checkpoint("demo_cnn", path, tmp_path / "out")
    msg = str(err.value)
    assert "fc.weight" in msg and "wrong shape" in msg and "three.pth" in msg and "\n" not in msg


def test_truncated_file(tmp_path, demo_file):
    path, _ = demo_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(HndError) as err:
        convert_checkpoint("demo_cnn", cut, tmp_path / "out")
    assert "cut.pth" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_folder_converted_for_another_card_is_refused(tmp_path, demo_file):
    path, _ = demo_file
    out = convert_checkpoint("demo_cnn", path, tmp_path / "demo")
    with pytest.raises(HndError, match="converted for model 'demo_cnn'.*mtcnn_onet"):
        load_model("mtcnn_onet", out)


def test_out_folder_safety(tmp_path, demo_file):
    path, _ = demo_file
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "keep.txt").write_text("important")
    with pytest.raises(HndError, match="not a converted checkpoint folder"):
        convert_checkpoint("demo_cnn", path, precious)
    assert (precious / "keep.txt").read_text() == "important"

    out = convert_checkpoint("demo_cnn", path, tmp_path / "conv")
    first = json.loads((out / MANIFEST).read_text())
    again = convert_checkpoint("demo_cnn", path, out)  # a previous converted folder is replaced
    assert json.loads((again / MANIFEST).read_text()) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_packaged_weights_and_random_init(tmp_path):
    model, _ = load_model("mtcnn_onet", None)  # found inside the facenet-pytorch wheel
    ref = torch_mtcnn("onet")
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 48, 48)).astype(np.float32)
    for g, w in zip(_outputs(_run(model, _nhwc(x))), ref(torch.from_numpy(x))):
        assert_close(g, w.numpy())

    demo, _ = load_model("demo_cnn", None, random_init=True)
    out = save_model(demo, "demo_cnn", tmp_path / "random")
    restored, _ = load_model("demo_cnn", out)
    xx = _nhwc(x[:, :, :32, :32])
    np.testing.assert_array_equal(np.asarray(_run(restored, xx)), np.asarray(_run(demo, xx)))
    assert weights_identity(None)["kind"] == "random init"


def test_missing_package_weights_give_instructions(tmp_path, monkeypatch):
    from hnd_jax.cards import cards_dir

    text = (cards_dir() / "mtcnn_pnet.toml").read_text().replace('"facenet_pytorch"', '"no_such_package_hnd"')
    (tmp_path / "mtcnn_pnet.toml").write_text(text)
    monkeypatch.setenv("HND_MODELS_DIR", str(tmp_path))
    with pytest.raises(HndError) as err:
        load_model("mtcnn_pnet", None)
    assert "facenet-pytorch" in str(err.value) and "never downloads" in str(err.value)


def test_not_a_converted_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(HndError, match="not a converted checkpoint folder"):
        load_model("demo_cnn", tmp_path / "x")
    with pytest.raises(HndError, match="not found"):
        load_model("demo_cnn", tmp_path / "nope.pth")


def test_beauty_checkpoint_with_scut_fbp5500_names(tmp_path):
    """A checkpoint named like the SCUT-FBP5500 release (group1/group2.fullyconnected, under 'state_dict',
    legacy format) converts through the card's rename rules into the same model that produced it."""
    from hnd_jax.convert.checkpoint import build_from_card
    from hnd_jax.cards import load_card
    from hnd_jax.models.torch_mapping import export_torch_state_dict

    card = load_card("beauty")
    source = build_from_card(card, seed=7)
    scut = {}
    for key, value in export_torch_state_dict(source).items():
        if key.startswith(("conv1.", "bn1.")):
            key = f"group1.{key}"
        elif key.startswith("fc."):
            key = key.replace("fc.", "group2.fullyconnected.", 1)
        elif ".downsample." not in key:
            layer, block, rest = key.split(".", 2)
            key = f"{layer}.{block}.group1.{rest}"
        scut[f"module.{key}"] = torch.from_numpy(np.array(value))
    path = tmp_path / "resnet18.pth"
    torch.save({"epoch": 30, "state_dict": scut}, path, _use_new_zipfile_serialization=False)

    model, _ = load_model("beauty", convert_checkpoint("beauty", path, tmp_path / "beauty"))
    x = np.random.default_rng(4).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(_run(model, x)), np.asarray(_run(source, x)))


def test_facenet_card_round_trip_with_the_facenet_pytorch_class(tmp_path):
    """The paper's facenet model: facenet-pytorch's own InceptionResnetV1 (random weights, VGGFace2-sized
    logits) -> torch.save -> hnd convert -> the embedding and block8.branch1 (the hooked layer) agree."""
    from convert_torch_refs import torch_inception_resnet_v1
    from hnd_jax.models.capture import forward_with_layers

    ref = torch_inception_resnet_v1(seed=1)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(ref.state_dict(), path)
    model, card = load_model("facenet", convert_checkpoint("facenet", path, tmp_path / "facenet"))
    x = np.random.default_rng(5).uniform(0, 1, (2, 3, 96, 96)).astype(np.float32)
    want, hooks = hooked(ref, x, list(card.default_layers))
    out, acts = forward_with_layers(model, _nhwc(x), card.default_layers)  # one jitted forward
    assert_close(np.asarray(acts["block8.branch1"]).transpose(0, 3, 1, 2), hooks["block8.branch1"])
    assert_close(np.asarray(out), want.numpy())
