"""`hnd dissect --activations FILE` end to end on a tiny published-layout dictionary, and every bad FILE."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import reference as ref
from hnd_jax.cli.main import main
from hnd_jax.results import load_layer_results, write_dissection_json
from hnd_jax.pipeline.dissect import dissect_activations
from published_fixture import GLOBAL_SIZES, num_local, write_tiny_dictionary
from scoring_fixtures import ReferenceTally, all_device_mesh, one_device_mesh, tiny_taxonomy

S = 8
U, h, w = 4, 3, 2
LAYER = "layer4.2.conv1"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root, tax_path = write_tiny_dictionary(tmp_path_factory.mktemp("dic") / "root")
    return root, tax_path


def local_acts(seed=0, n=None):
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(num_local() if n is None else n, U, h, w)).astype(np.float32)
    acts[:, 0] = 0.25  # a dead unit
    return acts


def global_arrays(seed=1, families=("Gender", "Age")):
    rng = np.random.default_rng(seed)
    tax = tiny_taxonomy()
    out = {}
    for name in families:
        for g, n in zip(tax.global_family(name).groups, GLOBAL_SIZES[name]):
            out[f"{name}/{g}"] = rng.normal(size=(n, U, h, w)).astype(np.float32)
    return out


def opened(root):
    from hnd_jax.dictionary import open_dictionary

    return open_dictionary(str(root), S, taxonomy=tiny_taxonomy())


def expected(dic, acts_nchw, garrays, q=0.05):
    """The whole spec through the NumPy reference, from the dictionary's own masks."""
    tax = dic.taxonomy
    acts = acts_nchw.transpose(0, 2, 3, 1)
    masks = np.concatenate([b.masks for b in dic.local_batches(100)])
    T = ref.thresholds(acts, q)
    lo, hi = ref.lo_hi(acts)
    inter, union = ref.tally(acts, masks, dic.labelled, dic.family, tax.concept_family_index, T, S, "family")
    iou = ref.iou(inter, union)
    top, loc, region = ref.top_concept(iou, tax.concept_regions, 0.04)
    probs, paired = ref.local_probs(iou, ref.image_max(acts), lo, hi, dic.labelled, tax.concept_regions, region, 1.5)
    out = dict(thresholds=T, iou=iou.astype(np.float32), top_concept=top, localizable=loc, region=region, local_probs=probs, paired=paired)
    for fam in tax.global_families:
        keys = [f"{fam.name}/{g}" for g in fam.groups]
        if keys[0] not in garrays:
            continue
        gacts = np.concatenate([garrays[k] for k in keys]).transpose(0, 2, 3, 1)
        glo, ghi = ref.lo_hi(gacts)
        gp, gb = ref.global_probs(ref.image_max(gacts), dic.global_group_of(fam.name), fam.num_groups, glo, ghi, fam.bias_cutoff)
        out[f"global_probs_{fam.name}"], out[f"biased_{fam.name}"] = gp, gb
    return out


def check_schema(arrays, tax, n_units, families):
    C = tax.num_concepts
    spec = {
        "concepts": ((C,), "U"), "concept_region": ((C,), "U"), "concept_type": ((C,), "U"),
        "thresholds": ((n_units,), "f"), "iou": ((n_units, C), "f"), "top_concept": ((n_units,), "i"),
        "localizable": ((n_units,), "b"), "region": ((n_units,), "U"), "local_probs": ((n_units, C), "f"),
        "paired": ((n_units, C), "b"), "lo": ((n_units,), "f"), "hi": ((n_units,), "f"),
        "intersection": ((n_units, C), "i"), "union": ((n_units, C), "i"), "top_images": ((n_units, 4), "i"),
        "top_maps": ((n_units, 4, h, w), "f"),
    }
    for fam in families:
        G = tax.global_family(fam).num_groups
        spec[f"global_groups_{fam}"] = ((G,), "U")
        spec[f"global_probs_{fam}"] = ((n_units, G), "f")
        spec[f"biased_{fam}"] = ((n_units, G), "b")
    for key, (shape, kind) in spec.items():
        assert key in arrays, key
        assert arrays[key].shape == shape, (key, arrays[key].shape)
        assert arrays[key].dtype.kind == kind, (key, arrays[key].dtype)
    for key in ("thresholds", "iou", "local_probs"):
        assert arrays[key].dtype == np.float32, key
    assert arrays["concepts"].tolist() == list(tax.concept_names)
    assert arrays["concept_region"].tolist() == tax.concept_regions.tolist()
    assert arrays["concept_type"].tolist() == tax.concept_types.tolist()


def test_npz_end_to_end_matches_reference(tiny, tmp_path):
    root, _ = tiny
    dic = opened(root)
    acts = local_acts()
    garr = global_arrays()
    path = tmp_path / "acts.npz"
    np.savez(path, local=acts, **garr)
    out = tmp_path / "out"
    folder = dissect_activations(path, dictionary=dic, layer=LAYER, out=out, scoring={"image_size": S, "quantile": 0.05},
                                 mesh=one_device_mesh(), tally_factory=ReferenceTally)
    assert folder == out / LAYER
    got = load_layer_results(folder)
    tax = dic.taxonomy
    check_schema(got, tax, U, ["Gender", "Age"])
    assert "global_probs_skin_tone" not in got
    want = expected(dic, acts, garr)
    for key in ("thresholds", "iou", "top_concept", "localizable", "region", "paired"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_allclose(got["local_probs"], want["local_probs"], rtol=1e-6, atol=1e-7)
    for fam in ("Gender", "Age"):
        np.testing.assert_allclose(got[f"global_probs_{fam}"], want[f"global_probs_{fam}"], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[f"biased_{fam}"], want[f"biased_{fam}"])
    # top maps are the raw maps of the top images
    for u in range(U):
        for j, x in enumerate(got["top_images"][u]):
            np.testing.assert_array_equal(got["top_maps"][u, j], acts[x, u])
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["layers"] == [LAYER]
    assert meta["global_families"]["scored"] == ["Age", "Gender"]
    assert list(meta["global_families"]["skipped"]) == ["skin_tone"]
    for key in ("settings", "versions", "dictionary", "model", "timings", "image_size"):
        assert key in meta, key
    assert meta["settings"]["quantile"] == 0.05 and meta["image_size"] == S
    assert {"jax", "flax", "numpy", "hnd-jax"} <= set(meta["versions"])
    lines = (folder / "units.csv").read_text().splitlines()
    assert len(lines) == U + 1 and lines[0].startswith("unit,top_concept,iou,region,localizable")


def test_npy_equals_npz_and_devices_agree(tiny, tmp_path):
    root, _ = tiny
    dic = opened(root)
    acts = local_acts(seed=3)
    np.save(tmp_path / "a.npy", acts)
    np.savez(tmp_path / "a.npz", local=acts)
    kw = dict(dictionary=dic, layer="L", scoring={"image_size": S, "quantile": 0.1}, tally_factory=ReferenceTally, run={"batch_size": 3})
    dissect_activations(tmp_path / "a.npy", out=tmp_path / "o1", mesh=one_device_mesh(), **kw)
    dissect_activations(tmp_path / "a.npz", out=tmp_path / "o8", mesh=all_device_mesh(), **kw)
    a = load_layer_results(tmp_path / "o1" / "L")
    b = load_layer_results(tmp_path / "o8" / "L")
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    meta = json.loads((tmp_path / "o1" / "dissection.json").read_text())
    assert sorted(meta["global_families"]["skipped"]) == ["Age", "Gender", "skin_tone"]


def cli(args, capsys):
    code = main(["dissect", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def base_args(root, tax_path, path, out):
    return ["--activations", str(path), "--dictionary", str(root), "--image-size", str(S), "--layer", LAYER,
            "--out", str(out), "--taxonomy", str(tax_path), "--progress", "none"]


BAD_FILES = {
    "rank": (lambda: local_acts()[:, 0], "npy", "expected 4 dimensions"),
    "rows": (lambda: local_acts(n=num_local() + 2), "npy", f"has {num_local() + 2} rows but the dictionary has {num_local()}"),
    "nan": (lambda: _poison(np.nan, 5), "npy", "has NaN values (first at image 5)"),
    "inf": (lambda: _poison(-np.inf, 2), "npy", "has inf values (first at image 2)"),
    # issue 12: a finite float64 beyond float32's range is an overflow, not "NaN or inf"
    "overflow": (lambda: _poison(1e300, 3, np.float64), "npy", "overflow float32"),
    "dtype": (lambda: local_acts().astype(np.int32), "npy", "dtype int32: expected floating point"),
    "no_local": (lambda: {"acts": local_acts()}, "npz", "no 'local' array"),
    "group_count": (lambda: {"local": local_acts(), **_drop_row(global_arrays(), "Age/mid")}, "npz",
                    "array 'Age/mid' has 1 rows but the dictionary has 2 images"),
    "group_missing": (lambda: {"local": local_acts(), **_without(global_arrays(), "Gender/Female")}, "npz",
                      "none for 'Gender/Female'"),
    "unknown_key": (lambda: {"local": local_acts(), "Age/ancient": local_acts()}, "npz", "unexpected array 'Age/ancient'"),
    "group_shape": (lambda: {"local": local_acts(), "Gender/Male": np.zeros((2, U + 1, h, w), np.float32),
                             "Gender/Female": np.zeros((3, U, h, w), np.float32)}, "npz", "expected [n, 4, 3, 2]"),
    "group_nan": (lambda: {"local": local_acts(), **_nan_group(global_arrays(), "Gender/Female")}, "npz",
                  "array 'Gender/Female' has NaN values (first at image 1)"),
}


def _poison(value, row, dtype=np.float32):
    a = local_acts().astype(dtype)
    a[row, 1, 0, 1] = value
    return a


def _drop_row(d, key):
    d[key] = d[key][1:]
    return d


def _without(d, key):
    del d[key]
    return d


def _nan_group(d, key):
    d[key][1, 0, 0, 0] = np.nan
    return d


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_one_line_error_and_keeps_previous_results(case, tiny, tmp_path, capsys):
    root, tax_path = tiny
    make, fmt, message = BAD_FILES[case]
    path = tmp_path / f"bad.{fmt}"
    data = make()
    if fmt == "npy":
        np.save(path, data)
    else:
        np.savez(path, **data)
    out = tmp_path / "out"
    (out / LAYER).mkdir(parents=True)
    # a previous run's dissection.json as hnd writes it (a foreign one would be refused: test_out_safety.py)
    previous = write_dissection_json(out, {"layers": [LAYER], "settings": {}, "model": {}, "previous": True})
    meta = previous.read_bytes()
    (out / LAYER / "scores.npz").write_bytes(b"previous")
    code, err = cli(base_args(root, tax_path, path, out), capsys)
    assert code == 2
    assert err.startswith("hnd: error: ") and "\n" not in err, err
    assert message in err, err
    assert str(path) in err
    assert previous.read_bytes() == meta
    assert (out / LAYER / "scores.npz").read_bytes() == b"previous"


@pytest.mark.parametrize("name,content,message", [
    ("missing.npy", None, "activations file not found"),
    ("acts.txt", b"1 2 3", "expected an activations file ending in .npy or .npz"),
    ("broken.npy", b"not numpy at all", "not a NumPy .npy array"),
    ("broken.npz", b"PK\x03\x04garbage", "not a readable .npz archive"),
])
def test_unreadable_files(name, content, message, tiny, tmp_path, capsys):
    root, tax_path = tiny
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, err = cli(base_args(root, tax_path, path, tmp_path / "out"), capsys)
    assert code == 2 and message in err and "\n" not in err, err


@pytest.mark.parametrize("make", ["dev_zero", "folder", "fifo"])
def test_an_activations_path_that_is_not_a_regular_file(make, tiny, tmp_path, capsys):
    """A link to /dev/zero, a folder or a FIFO is not 'not found': it is there but not a file."""
    import os

    root, tax_path = tiny
    path = tmp_path / "acts.npy"
    if make == "dev_zero":
        path.symlink_to("/dev/zero")
    elif make == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    code, err = cli(base_args(root, tax_path, path, tmp_path / "out"), capsys)
    assert code == 2 and f"{path}: not a regular file" in err and "\n" not in err.rstrip("\n"), err


def test_cli_subprocess_success_and_error(tiny, tmp_path):
    root, tax_path = tiny
    path = tmp_path / "acts.npz"
    np.savez(path, local=local_acts(), **global_arrays(families=("Gender", "Age", "skin_tone")))
    out = tmp_path / "out"
    env = dict(os.environ)
    run = subprocess.run([sys.executable, "-m", "hnd_jax.cli.main", "dissect", *base_args(root, tax_path, path, out),
                          "--quantile", "0.05"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    got = load_layer_results(out / LAYER)
    tax = tiny_taxonomy()
    check_schema(got, tax, U, ["Gender", "Age", "skin_tone"])
    dic = opened(root)
    want = expected(dic, local_acts(), global_arrays(families=("Gender", "Age", "skin_tone")))
    np.testing.assert_array_equal(got["iou"], want["iou"])
    np.testing.assert_allclose(got["local_probs"], want["local_probs"], rtol=1e-6, atol=1e-7)
    bad = tmp_path / "bad.npy"
    np.save(bad, local_acts()[:, :, :, 0])
    run = subprocess.run([sys.executable, "-m", "hnd_jax.cli.main", "dissect", *base_args(root, tax_path, bad, out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr, run.stderr
