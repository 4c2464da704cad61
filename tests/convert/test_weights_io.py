"""read_state_dict: every supported format, the usual wrappers, and one-line errors."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from convert_torch_refs import mtcnn_weights, torch
from hnd_jax.convert.weights_io import read_state_dict, unwrap_state_dict
from hnd_jax.errors import HndError


def _state():
    g = torch.Generator().manual_seed(1)
    return OrderedDict(
        [("conv1.weight", torch.randn(4, 3, 3, 3, generator=g)), ("conv1.bias", torch.randn(4, generator=g)),
         ("fc.weight", torch.randn(2, 4, generator=g))]
    )


def _check(got: dict, ref: OrderedDict) -> None:
    assert list(got) == list(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v.numpy())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"epoch": 3, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
        lambda sd: {"model_state_dict": sd, "best_acc": 0.9},
        lambda sd: {"model": sd},
        lambda sd: {"model": {"state_dict": sd}},
        lambda sd: {"net": sd},
        lambda sd: OrderedDict((f"module.{k}", v) for k, v in sd.items()),
        lambda sd: {"state_dict": OrderedDict((f"module.{k}", v) for k, v in sd.items())},
    ],
    ids=["bare", "state_dict", "model_state_dict", "model", "model.state_dict", "net", "module.", "wrapped+module."],
)
@pytest.mark.parametrize("suffix,zip_format", [(".pth", True), (".pt", False), (".bin", True)])
def test_wrappers_are_unwrapped(tmp_path, wrap, suffix, zip_format):
    ref = _state()
    path = tmp_path / f"w{suffix}"
    torch.save(wrap(ref), path, _use_new_zipfile_serialization=zip_format)
    _check(read_state_dict(path), ref)


def test_module_prefix_only_stripped_when_on_every_key():
    state = {"module.a": np.ones(1), "b": np.zeros(1)}
    assert sorted(unwrap_state_dict(state)) == ["b", "module.a"]


def test_safetensors_including_bfloat16(tmp_path):
    from safetensors.torch import save_file

    ref = _state()
    save_file(dict(ref), tmp_path / "w.safetensors")
    got = read_state_dict(tmp_path / "w.safetensors")
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v.numpy())

    bf = {"w": torch.randn(3, 2).bfloat16()}
    save_file(bf, tmp_path / "bf.safetensors")
    got = read_state_dict(tmp_path / "bf.safetensors")
    assert got["w"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(got["w"].astype(np.float32), bf["w"].float().numpy())


def test_npz(tmp_path):
    ref = {k: v.numpy() for k, v in _state().items()}
    np.savez(tmp_path / "w.npz", **ref)
    got = read_state_dict(tmp_path / "w.npz")
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(HndError, match="obj.npz"):
        read_state_dict(tmp_path / "obj.npz")


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_real_mtcnn_files(net):
    path = mtcnn_weights(net)
    got = read_state_dict(path)
    ref = torch.load(path, weights_only=True)
    assert list(got) == list(ref)
    assert all(np.array_equal(got[k], v.numpy()) for k, v in ref.items())


def test_errors_are_one_line_and_name_the_file(tmp_path):
    cases = {}
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "nostate.pth")
    cases["nostate.pth"] = "no state dict"
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    cases["list.pth"] = "list"
    torch.save({}, tmp_path / "empty.pth")
    cases["empty.pth"] = "no state dict"
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    cases["bad.safetensors"] = "safetensors"
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    cases["bad.npz"] = "npz"
    cases["missing.pt"] = "not found"
    for name, fragment in cases.items():
        with pytest.raises(HndError) as err:
            read_state_dict(tmp_path / name)
        msg = str(err.value)
        assert name in msg and fragment in msg and "\n" not in msg, msg
    with pytest.raises(HndError, match="is a folder"):
        read_state_dict(tmp_path)
