"""The torch-free checkpoint reader against torch.save itself, in both on-disk formats.

Also: pickles that would run code are refused before anything runs (the planted file never
appears), and damaged files give one-line errors that name the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from convert_torch_refs import mtcnn_weights, torch
from hnd_jax.convert.torch_pickle import ALLOWED_GLOBALS, load_torch_file
from hnd_jax.errors import HndError

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


def _as_numpy(t) -> np.ndarray:
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _tensors() -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    big = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    return OrderedDict(
        f32=torch.randn(3, 4, generator=g),
        f16=torch.randn(7, generator=g).half(),
        bf16=torch.randn(2, 3, generator=g).bfloat16(),
        f64=torch.randn(2, 2, generator=g, dtype=torch.float64),
        i64=torch.arange(-5, 5, dtype=torch.int64),
        u8=torch.randint(0, 256, (4, 3), dtype=torch.uint8, generator=g),
        boolean=torch.tensor([True, False, True]),
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 4),
        transposed=base.t(),  # non-contiguous view, shares base's storage
        offset_view=base[2:5, 1:4],  # storage offset + strides
        strided=big[:, ::2, 1::2],  # step slicing
        permuted=big.permute(2, 0, 1),
        base=base,  # the storage shared by the two views above
        param=torch.nn.Parameter(torch.randn(3, generator=g)),
    )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reader_equals_torch_save(tmp_path, fmt):
    ref = _tensors()
    got = load_torch_file(_save(ref, tmp_path / f"w_{fmt}.pt", fmt))
    assert isinstance(got, OrderedDict) and list(got) == list(ref)
    for key, tensor in ref.items():
        want = _as_numpy(tensor)
        value = got[key]
        assert isinstance(value, np.ndarray), key
        assert value.shape == tuple(tensor.shape), key
        if tensor.dtype == torch.bfloat16:
            assert value.dtype.name == "bfloat16"
            value = value.astype(np.float32)
        else:
            assert value.dtype == want.dtype, key
        np.testing.assert_array_equal(value, want, err_msg=key)
        assert value.flags.c_contiguous and value.flags.writeable, key


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_shared_storage_gives_independent_arrays(tmp_path, fmt):
    base = torch.arange(12, dtype=torch.float32)
    got = load_torch_file(_save({"a": base[:6].view(2, 3), "b": base[3:], "c": base}, tmp_path / "s.pt", fmt))
    np.testing.assert_array_equal(got["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got["b"], np.arange(3, 12, dtype=np.float32))
    got["a"][0, 0] = 100.0  # arrays own their memory: writing one must not change another
    assert got["c"][0] == 0.0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_nested_training_checkpoint(tmp_path, fmt):
    ckpt = {"epoch": 7, "arch": "resnet", "best": 0.5, "state_dict": OrderedDict(w=torch.ones(2)),
            "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}}
    got = load_torch_file(_save(ckpt, tmp_path / "c.pth", fmt))
    assert got["epoch"] == 7 and got["arch"] == "resnet" and got["best"] == 0.5
    np.testing.assert_array_equal(got["state_dict"]["w"], np.ones(2, np.float32))
    np.testing.assert_array_equal(got["optimizer"]["state"][0]["momentum_buffer"], np.zeros(2, np.float32))


def test_big_endian_zip_record(tmp_path):
    """A zip checkpoint whose byteorder record says 'big' (written on a big-endian machine)."""
    src = _save({"x": torch.arange(5, dtype=torch.float32), "h": torch.arange(3).half()}, tmp_path / "le.pt", "zip")
    dst = tmp_path / "be.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename and not info.filename.endswith("serialization_id"):
                item = 4 if len(data) == 20 else 2
                data = np.frombuffer(data, dtype=f"<u{item}").astype(f">u{item}").tobytes()
            zout.writestr(info, data)
    got = load_torch_file(dst)
    np.testing.assert_array_equal(got["x"], np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(got["h"], np.arange(3, dtype=np.float16))


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_real_mtcnn_legacy_files(net):
    path = mtcnn_weights(net)
    with open(path, "rb") as fh:
        assert not fh.read(4).startswith(b"PK"), "expected the legacy (non-zip) format"
    got = load_torch_file(path)
    ref = torch.load(path, weights_only=True)
    assert list(got) == list(ref)
    for key, tensor in ref.items():
        np.testing.assert_array_equal(got[key], tensor.numpy(), err_msg=key)


# ----------------------------------------------------------------------------------------------
# Malicious pickles.
# ----------------------------------------------------------------------------------------------


class _Planted:
    """An object whose unpickling would call ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path):
    cmd = f"touch {marker}"
    return {
        "posix.system": (os.system, (cmd,)),
        "builtins.exec": (exec, (f"open({str(marker)!r}, 'w').write('pwned')",)),
        "builtins.eval": (eval, (f"open({str(marker)!r}, 'w').write('pwned')",)),
        "io.open": (io.open, (str(marker), "w")),
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("global_name", ["posix.system", "builtins.exec", "builtins.eval", "io.open"])
def test_malicious_pickle_is_refused_before_running(tmp_path, fmt, global_name):
    marker = tmp_path / "pwned.txt"
    func, args = _payloads(marker)[global_name]
    path = _save({"weight": torch.ones(2), "evil": _Planted(func, args)}, tmp_path / f"evil_{fmt}.pt", fmt)
    assert not marker.exists()

    # Control: the file really is malicious -- torch's unrestricted loader runs the payload.
    torch.load(path, weights_only=False)
    assert marker.exists(), "the planted payload did not run under torch.load; the test would prove nothing"
    marker.unlink()

    with pytest.raises(HndError) as err:
        load_torch_file(path)
    assert not marker.exists(), "the payload ran"
    message = str(err.value)
    assert f"'{global_name}'" in message and str(path) in message and "\n" not in message


def test_allow_list_is_small_and_torch_only():
    assert "collections.OrderedDict" in ALLOWED_GLOBALS
    assert all(g.startswith("torch.") or g == "collections.OrderedDict" for g in ALLOWED_GLOBALS)


def test_whole_module_pickle_is_refused(tmp_path):
    path = _save(torch.nn.Linear(2, 2), tmp_path / "module.pt", "zip")
    with pytest.raises(HndError, match=r"torch\.nn\.modules\.linear\.Linear"):
        load_torch_file(path)


# ----------------------------------------------------------------------------------------------
# Damaged files.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_one_line_error(tmp_path, fmt, fraction):
    full = _save(OrderedDict(a=torch.randn(64, 64), b=torch.randn(100)), tmp_path / "full.pt", fmt).read_bytes()
    cut = tmp_path / f"cut_{fmt}_{fraction}.pt"
    cut.write_bytes(full[: int(len(full) * fraction)])
    with pytest.raises(HndError) as err:
        load_torch_file(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(HndError, match="not a PyTorch checkpoint"):
        load_torch_file(junk)
    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(HndError, match="data.pkl"):
        load_torch_file(other_zip)
    with pytest.raises(HndError, match="not found"):
        load_torch_file(tmp_path / "missing.pt")


def test_corrupt_storage_record(tmp_path):
    """A zip whose storage record is shorter than the tensor needs: refused, not read out of bounds."""
    src = _save({"x": torch.arange(10, dtype=torch.float32)}, tmp_path / "ok.pt", "zip")
    dst = tmp_path / "short.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if "/data/" in info.filename and len(data) == 40:
                data = data[:12]
            zout.writestr(info, data)
    with pytest.raises(HndError, match="corrupt"):
        load_torch_file(dst)


@pytest.mark.parametrize("state", ["dict", "slots"])
def test_pickle_cannot_modify_the_allowed_callables(tmp_path, state):
    """BUILD on an allowed global would set attributes on it (e.g. a function's __defaults__) for every
    later load in the process; the reader refuses instead."""
    from hnd_jax.convert import torch_pickle

    key = b"__defaults__"
    build_state = (
        b"}X" + len(key).to_bytes(4, "little") + key + b")s"  # {'__defaults__': ()}
        if state == "dict"
        else b"N}X" + len(key).to_bytes(4, "little") + key + b")s\x86"  # (None, {'__defaults__': ()})
    )
    payload = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + build_state + b"b."
    path = tmp_path / "build.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    before = torch_pickle._rebuild_tensor_v2.__defaults__
    with pytest.raises(HndError, match="build.pt"):
        load_torch_file(path)
    assert torch_pickle._rebuild_tensor_v2.__defaults__ == before


def _as_python2_strings(data: bytes) -> bytes:
    """Rewrite a legacy-format file as Python 2 would have pickled it: str as BINSTRING (bytes on disk).

    The five pickles of the legacy format are re-emitted op by op with every BINUNICODE string turned
    into a (SHORT_)BINSTRING; memo indices do not change, and the raw storage bytes are appended as is.
    """
    import pickletools
    import struct

    stream = io.BytesIO(data)
    out = bytearray()
    for _ in range(5):  # magic, protocol, sys_info, object, storage keys
        start = stream.tell()
        ops = list(pickletools.genops(stream))
        end = stream.tell()
        for i, (op, arg, pos) in enumerate(ops):
            nxt = ops[i + 1][2] if i + 1 < len(ops) else end
            if op.name == "BINUNICODE" and arg.isascii():
                raw = arg.encode("ascii")
                out += (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw
            else:
                out += data[pos:nxt]
        assert start <= end
    out += data[stream.tell():]
    return bytes(out)


def test_python2_legacy_pickle(tmp_path):
    """Old checkpoints (e.g. the SCUT-FBP5500 ResNet-18 the HND beauty model uses) were pickled by
    Python 2: keys and storage ids are byte strings, read with latin-1 like torch.load(encoding='latin1')."""
    ref = OrderedDict([("group1.conv1.weight", torch.randn(2, 3, 1, 1)), ("layer1.0.group1.bn1.running_var", torch.rand(2))])
    path = _save({"state_dict": ref, "arch": "resnet18"}, tmp_path / "py3.pth", "legacy")
    py2 = tmp_path / "py2.pth"
    py2.write_bytes(_as_python2_strings(path.read_bytes()))
    assert b"U\x13group1.conv1.weight" in py2.read_bytes()  # the rewrite really produced py2 strings
    got = load_torch_file(py2)
    assert got["arch"] == "resnet18" and list(got["state_dict"]) == list(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(got["state_dict"][k], v.numpy())
