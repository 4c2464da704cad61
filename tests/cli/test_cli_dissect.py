"""``hnd dissect --model`` through the real CLI, model card, weights reader and synthetic dictionary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def hnd(*args, env):
    return subprocess.run([sys.executable, "-m", "hnd_jax.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hnd_jax.convert.checkpoint import load_model
    from hnd_jax.models.torch_mapping import export_torch_state_dict

    root = tmp_path_factory.mktemp("cli")
    model, _ = load_model("demo_cnn", None, random_init=True)
    np.savez(root / "w.npz", **export_torch_state_dict(model))
    env = dict(os.environ, HND_CACHE=str(root / "cache"))
    return root, env


def test_cli_dissects_a_card_model_on_the_synthetic_dictionary(setup):
    root, env = setup
    out = root / "out"
    res = hnd("dissect", "--model", "demo_cnn", "--weights", str(root / "w.npz"), "--dictionary", "synthetic:24",
              "--out", str(out), "--image-size", "16", "--batch-size", "8", "--cache-budget", "0", env=env)
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["layers"] == ["conv4"]  # the card's default layer
    assert meta["model"]["card"] == "demo_cnn" and len(meta["model"]["weights"]["sha256"]) == 64
    assert meta["cache"]["mode"] == "recompute" and meta["image_size"] == 16
    # how long the forward loop waited for the reader (issue 11), and the kernel --tally auto chose on a CPU
    assert 0.0 <= meta["timings"]["split"]["input_wait"] <= meta["timings"]["total"]
    assert meta["tally"] == "runs" and meta["run"]["tally"] == "auto"
    plan = meta["memory_plan"]["conv4"]  # the estimate checked before pass 1 (a model source: a lower bound)
    assert plan["estimate_bytes"] > 0 and plan["peak_in"] and plan["certain"] is False
    with np.load(out / "conv4" / "scores.npz") as data:
        assert data["iou"].shape[0] == meta["units"]["conv4"]
    # the report is written after the results, from them
    html = (out / "report.html").read_text()
    assert "conv4" in html and any((out / "plots").rglob("*.png")) and "report" in res.stdout


def test_cli_no_report_leaves_results_only(setup):
    root, env = setup
    out = root / "bare"
    res = hnd("dissect", "--model", "demo_cnn", "--weights", str(root / "w.npz"), "--dictionary", "synthetic:24",
              "--out", str(out), "--image-size", "16", "--batch-size", "8", "--no-report", env=env)
    assert res.returncode == 0, res.stderr
    assert (out / "dissection.json").is_file() and not (out / "report.html").exists() and not (out / "plots").exists()
    assert f"hnd report {out}" in res.stdout


@pytest.mark.parametrize("args, needle", [(["--layer", "conv9"], "conv9")])  # more cases in-process
def test_cli_bad_input_is_one_line(setup, args, needle):
    root, env = setup
    res = hnd("dissect", "--model", "demo_cnn", "--weights", str(root / "w.npz"), "--dictionary", "synthetic:24",
              "--out", str(root / "bad"), "--image-size", "16", *args, env=env)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0 and needle in err, err


def test_nan_weights_name_the_weights_and_the_layer_and_keep_earlier_results(setup):
    """Issue 12: a rerun with NaN weights fails late; the one-line error names the weights file and
    the layer, and the finished results of the earlier run in OUT are untouched."""
    root, env = setup
    out = root / "nan_out"
    common = ["--dictionary", "synthetic:24", "--out", str(out), "--image-size", "16", "--batch-size", "8",
              "--no-report", "--progress", "none"]
    assert hnd("dissect", "--model", "demo_cnn", "--weights", str(root / "w.npz"), *common, env=env).returncode == 0
    before = (out / "conv4" / "scores.npz").read_bytes(), (out / "dissection.json").read_bytes()
    with np.load(root / "w.npz") as w:
        arrays = {k: np.full_like(w[k], np.nan) if w[k].dtype.kind == "f" else w[k] for k in w.files}
    np.savez(root / "w_nan.npz", **arrays)
    res = hnd("dissect", "--model", "demo_cnn", "--weights", str(root / "w_nan.npz"), *common, env=env)
    err = res.stderr.strip()
    assert res.returncode == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert "w_nan.npz" in err and "layer conv4" in err and "NaN" in err, err
    assert ((out / "conv4" / "scores.npz").read_bytes(), (out / "dissection.json").read_bytes()) == before


def test_random_init_with_a_seed_through_the_cli(setup, tmp_path):
    """hnd dissect --random-init --seed K: the untrained control, deterministic per seed (in-process CLI)."""
    from hnd_jax.cli.main import main

    def run(seed, name):
        out = tmp_path / name
        assert main(["dissect", "--model", "demo_cnn", "--random-init", "--seed", str(seed), "--dictionary",
                     "synthetic:24", "--out", str(out), "--image-size", "16", "--batch-size", "8", "--no-report",
                     "--progress", "none", "--permutations", "50"]) == 0
        meta = json.loads((out / "dissection.json").read_text())
        assert meta["model"]["weights"] == {"kind": "random init", "seed": seed}
        with np.load(out / "conv4" / "scores.npz") as z:
            return z["thresholds"].copy(), z["image_max"].copy()

    a, b, c = run(3, "a"), run(3, "b"), run(4, "c")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert main(["dissect", "--activations", "x.npy", "--random-init", "--layer", "l", "--image-size", "8",
                 "--dictionary", "synthetic:24", "--out", str(tmp_path / "d")]) == 2
