"""`hnd extract`, `hnd layers`, `hnd convert`: activations equal PyTorch forward hooks (NCHW), layer
listings equal the torch module shapes, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert_torch_refs import assert_close, hooked, random_demo_cnn, torch, torch_mtcnn
from hnd_jax.cli.main import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A torch demo CNN with random weights/BN stats and its checkpoint file."""
    model = random_demo_cnn(seed=5)
    path = tmp_path_factory.mktemp("demo") / "demo.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _reference_preprocess(path: Path, size: int) -> np.ndarray:
    """Independent of hnd_jax.preprocess: PIL bicubic resize of the RGB image, then ToTensor's / 255."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return (torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)).numpy()


def test_extract_inputs_npy_equals_torch_hooks(tmp_path, capsys, demo):
    model, weights = demo
    x_nchw = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x_nchw.transpose(0, 2, 3, 1))  # --inputs is NHWC
    out = tmp_path / "acts.npz"
    code, stdout, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", weights, "--layer", "conv4",
                             "--layer", "conv2", "--inputs", tmp_path / "x.npy", "--out", out, "--batch-size", 2)
    assert code == 0, err
    _, want = hooked(model, x_nchw, ["conv4", "conv2"])
    with np.load(out) as acts:
        assert sorted(acts.files) == ["conv2", "conv4"]
        for name in ("conv4", "conv2"):
            assert acts[name].dtype == np.float32 and acts[name].shape == want[name].shape  # NCHW
            assert_close(acts[name], want[name])


def test_extract_images_dir_in_sorted_order(tmp_path, capsys, demo):
    model, weights = demo
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = ["b.png", "a.png", "c.png"]
    for i, name in enumerate(names):  # different native sizes, one grayscale image
        shape = (50 + 10 * i, 70) if i != 2 else (40, 40)
        arr = rng.integers(0, 256, size=shape + ((3,) if i != 2 else ()), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "acts.npy"
    code, _, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", weights, "--layer", "conv3",
                        "--images", folder, "--out", out)
    assert code == 0, err
    x = np.stack([_reference_preprocess(folder / n, 64) for n in sorted(names)])
    _, want = hooked(model, x, ["conv3"])
    assert_close(np.load(out), want["conv3"])


def test_extract_dictionary_in_dictionary_order(tmp_path, capsys, demo, monkeypatch):
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    model, weights = demo
    out = tmp_path / "local.npy"
    code, _, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", weights, "--layer", "conv4",
                        "--dictionary", "synthetic:6:0", "--out", out, "--batch-size", 4)
    assert code == 0, err
    from hnd_jax.dictionary import open_dictionary

    dic = open_dictionary("synthetic:6:0", 64, image_resample="bicubic")
    images = np.concatenate([b.images for b in dic.local_batches(6, with_masks=False)])
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    _, want = hooked(model, x, ["conv4"])
    acts = np.load(out)
    assert acts.shape == (dic.num_local, 128, 8, 8)
    assert_close(acts, want["conv4"])


def test_convert_cli_then_extract_from_folder(tmp_path, capsys, demo):
    model, weights = demo
    code, stdout, err = _run(capsys, "convert", "--model", "demo_cnn", "--weights", weights, "--out", tmp_path / "conv")
    assert code == 0, err
    assert "demo_cnn" in stdout and "pytorch-zip" in stdout
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", tmp_path / "conv",
                        "--inputs", tmp_path / "x.npy", "--out", tmp_path / "a.npz")
    assert code == 0, err
    _, want = hooked(model, x.transpose(0, 3, 1, 2), ["conv4"])  # the card's default layer
    with np.load(tmp_path / "a.npz") as acts:
        assert_close(acts["conv4"], want["conv4"])


def test_layers_listing_matches_torch_module_shapes(capsys):
    code, stdout, err = _run(capsys, "layers", "--model", "mtcnn_onet", "--json")
    assert code == 0, err
    rows = {r["name"]: (r["channels"], r["height"], r["width"]) for r in json.loads(stdout)}
    ref = torch_mtcnn("onet")
    four_d = [n for n, m in ref.named_modules() if n and not list(m.children()) and not isinstance(m, torch.nn.Linear)]
    _, acts = hooked(ref, np.zeros((1, 3, 48, 48), np.float32), four_d)
    want = {n: a.shape[1:] for n, a in acts.items() if a.ndim == 4}
    assert rows == want

    code, stdout, _ = _run(capsys, "layers", "--model", "demo_cnn", "--image-size", "32")
    assert code == 0 and "* conv4" in stdout and "128 x 4 x 4" in stdout


BAD = {
    "rank3": (lambda d: np.save(d / "x.npy", np.zeros((4, 64, 64), np.float32)), ["--inputs", "{d}/x.npy"], "x.npy"),
    "nchw": (lambda d: np.save(d / "x.npy", np.zeros((2, 3, 64, 64), np.float32)), ["--inputs", "{d}/x.npy"], "NHWC"),
    "int": (lambda d: np.save(d / "x.npy", np.zeros((2, 8, 8, 3), np.uint8)), ["--inputs", "{d}/x.npy"], "float32"),
    "empty_dir": (lambda d: (d / "empty").mkdir(), ["--images", "{d}/empty"], "no image files"),
    "bad_image": (lambda d: ((d / "im").mkdir(), (d / "im" / "a.png").write_bytes(b"\x89PNG broken")),
                  ["--images", "{d}/im"], "a.png"),
    "unknown_layer": (lambda d: np.save(d / "x.npy", np.zeros((1, 64, 64, 3), np.float32)),
                      ["--inputs", "{d}/x.npy", "--layer", "conv44"], "close matches: conv4"),
    "bad_out": (lambda d: np.save(d / "x.npy", np.zeros((1, 64, 64, 3), np.float32)),
                ["--inputs", "{d}/x.npy", "--out", "{d}/acts.txt"], "acts.txt"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_extract_bad_input_is_one_line_exit_2(tmp_path, capsys, demo, case):
    _, weights = demo
    make, args, fragment = BAD[case]
    make(tmp_path)
    args = [a.format(d=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "acts.npz")]
    code, _, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", weights, *args)
    assert code == 2 and err.startswith("hnd: error: ") and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "acts.npz").exists()


def test_cli_errors_without_traceback_in_a_subprocess(tmp_path):
    """The real console path (python -m hnd_jax.cli.main): one line on stderr, exit 2, no traceback."""
    res = subprocess.run([sys.executable, "-m", "hnd_jax.cli.main", "convert", "--model", "age", "--weights",
                          str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert "missing.pth" in res.stderr


def test_layers_and_convert_errors(capsys, tmp_path):
    code, _, err = _run(capsys, "layers", "--model", "no_such_model")
    assert code == 2 and "unknown model" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "layers", "--model", "demo_cnn", "--image-size", "0")
    assert code == 2 and "--image-size" in err
    code, _, err = _run(capsys, "extract", "--model", "age", "--inputs", tmp_path / "x.npy", "--out", tmp_path / "a.npz")
    assert code == 2 and "needs weights" in err and "hnd convert --model age" in err


def test_extract_for_dissect_feeds_hnd_dissect(tmp_path, capsys, demo, monkeypatch):
    """--for-dissect writes 'local' + '<Family>/<group>' (torch-equal), and `hnd dissect --activations`
    scores every global family from it."""
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    model, weights = demo
    out = tmp_path / "acts.npz"
    code, _, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", weights, "--layer", "conv4",
                        "--dictionary", "synthetic:6:0", "--out", out, "--for-dissect", "--batch-size", 5)
    assert code == 0, err
    from hnd_jax.dictionary import open_dictionary

    dic = open_dictionary("synthetic:6:0", 64, image_resample="bicubic")
    with np.load(out) as acts:
        expected_keys = {"local"}
        for family in dic.taxonomy.global_families:
            images = np.concatenate([b.images for b in dic.global_batches(family.name, 100)])
            group_of = np.asarray(dic.global_group_of(family.name))
            _, want = hooked(model, images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0, ["conv4"])
            for g, group in enumerate(dic.global_groups(family.name)):
                if np.any(group_of == g):
                    key = f"{family.name}/{group}"
                    expected_keys.add(key)
                    assert_close(acts[key], want["conv4"][group_of == g])
        assert set(acts.files) == expected_keys
        assert acts["local"].shape[0] == dic.num_local

    code, _, err = _run(capsys, "dissect", "--activations", out, "--layer", "conv4", "--image-size", "64",
                        "--dictionary", "synthetic:6:0", "--out", tmp_path / "dissect")
    assert code == 0, err
    with np.load(tmp_path / "dissect" / "conv4" / "scores.npz") as scores:  # DESIGN.md section 4 keys
        for family in dic.taxonomy.global_families:
            assert np.isfinite(scores[f"global_probs_{family.name}"]).all(), family.name

    code, _, err = _run(capsys, "extract", "--model", "demo_cnn", "--weights", weights, "--layer", "conv4",
                        "--layer", "conv3", "--dictionary", "synthetic:6:0", "--out", out, "--for-dissect")
    assert code == 2 and "one layer" in err


def test_an_empty_slice_takes_part_only_in_a_multi_process_run(monkeypatch):
    """A process whose slice of a small set is empty returns 0-row arrays of the right shape (it
    still joins the gather); alone, no input at all stays an error."""
    import jax

    from hnd_jax.convert.checkpoint import load_model
    from hnd_jax.convert.extract import extract_activations
    from hnd_jax.errors import HndError

    model, card = load_model("demo_cnn", None, random_init=True)
    one = (card.input_size, card.input_size, 3)
    full = extract_activations(model, ["conv4"], iter([np.zeros((2, *one), np.float32)]))["conv4"]
    with pytest.raises(HndError, match="no inputs"):
        extract_activations(model, ["conv4"], iter([]), input_shape=one)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    empty = extract_activations(model, ["conv4"], iter([]), input_shape=one)["conv4"]
    assert empty.shape == (0, *full.shape[1:]) and empty.dtype == np.float32
