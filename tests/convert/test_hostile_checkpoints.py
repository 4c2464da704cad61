"""Checkpoints and arrays built to exhaust memory or confuse the reader (issue 12, DESIGN.md §7).

Each test builds the hostile file the issue describes (scaled down where the original needed
gigabytes) and checks the right behaviour: a correct result or a one-line HndError, with the
memory the reader allocated (tracemalloc peak: NumPy and zlib report their buffers to it) bounded
by what the file honestly holds.
"""

from __future__ import annotations

import argparse
import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from convert_torch_refs import torch
from hnd_jax.cli.main import main
from hnd_jax.convert import torch_pickle
from hnd_jax.convert.torch_pickle import load_torch_file
from hnd_jax.convert.weights_io import read_state_dict, unwrap_state_dict
from hnd_jax.errors import HndError

MB = 1 << 20


def _peak(fn):
    """(result or exception, peak traced bytes) of fn()."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - returned to the test, which checks the type
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _rewrite_zip(src: Path, dst: Path, replace: dict) -> Path:
    """Copy a zip, replacing records: name ending -> (bytes, compress_type, compresslevel)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for suffix, (data, ctype, level) in replace.items():
                if info.filename.endswith(suffix):
                    zout.writestr(info.filename, data, compress_type=ctype, compresslevel=level)
                    break
            else:
                zout.writestr(info, zin.read(info))
    return dst


# ---------------------------------------------------------------------------------------------
# Bounded memory and work
# ---------------------------------------------------------------------------------------------


def test_zip_record_inflating_far_beyond_the_metadata_is_not_inflated(tmp_path):
    """The issue's example: a small .pt whose data record inflates to gigabytes (here 48 MB)."""
    src = tmp_path / "ok.pt"
    torch.save(OrderedDict(w=torch.arange(10, dtype=torch.float32)), src)
    with zipfile.ZipFile(src) as zf:
        record = next(n for n in zf.namelist() if "/data/" in n)
        good = zf.read(record)
    bomb = _rewrite_zip(src, tmp_path / "bomb.pt", {record: (good + bytes(48 * MB), zipfile.ZIP_DEFLATED, 9)})
    assert bomb.stat().st_size < MB
    out, peak = _peak(lambda: load_torch_file(bomb))
    assert not isinstance(out, Exception), out
    np.testing.assert_array_equal(out["w"], np.arange(10, dtype=np.float32))
    assert peak < 4 * MB, peak


def test_zip_record_declaring_more_than_deflate_can_produce_is_refused(tmp_path):
    src = tmp_path / "ok.pt"
    torch.save(OrderedDict(w=torch.arange(10, dtype=torch.float32)), src)
    with zipfile.ZipFile(src) as zf:
        record = next(n for n in zf.namelist() if "/data/" in n)
    forged = _rewrite_zip(src, tmp_path / "forged.pt", {record: (bytes(40), zipfile.ZIP_DEFLATED, 9)})
    raw = bytearray(forged.read_bytes())
    pos = 0
    while (pos := raw.find(b"PK\x01\x02", pos + 1)) != -1:  # central directory entries
        name_len = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46: pos + 46 + name_len].decode().endswith(record.rsplit("/", 1)[-1]) and b"/data/" in raw[pos + 46: pos + 46 + name_len]:
            struct.pack_into("<I", raw, pos + 24, 2**32 - 1)
    forged.write_bytes(bytes(raw))
    out, peak = _peak(lambda: load_torch_file(forged))
    assert isinstance(out, HndError) and "forged.pt" in str(out), out
    assert peak < 4 * MB


def test_stride_zero_tensor_bigger_than_its_storage_is_refused(tmp_path):
    """The issue's example: a few hundred bytes rebuild a (25000, 25000) tensor from one element."""
    path = tmp_path / "expand.pt"
    torch.save({"w": torch.zeros(1).expand(25000, 25000)}, path)
    assert path.stat().st_size < 2000
    out, peak = _peak(lambda: load_torch_file(path))
    assert isinstance(out, HndError), out
    msg = str(out)
    assert "(25000, 25000)" in msg and "inconsistent with the storage" in msg and "contiguous()" in msg
    assert "\n" not in msg and peak < MB


def test_many_tensors_over_one_storage_are_bounded(tmp_path, monkeypatch):
    """Each view fits its storage, but thousands of copies of it would not fit in memory."""
    base = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "views.pt"
    torch.save({f"v{i}": base for i in range(200)}, path)
    monkeypatch.setattr(torch_pickle, "MAX_COPY_FACTOR", 4)
    budget = torch_pickle._budget({"k": torch_pickle._Storage("k", np.dtype(np.float32), 1000)})[0]
    monkeypatch.setattr(torch_pickle, "_budget", lambda storages: [100 * 4000])  # room for 100 copies
    with pytest.raises(HndError, match="times the bytes of their storages"):
        load_torch_file(path)
    assert budget == 4 * 4000 + (1 << 20)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_pickle_nested_200000_deep_is_one_line(tmp_path, fmt):
    depth = 200_000
    nested = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    path = tmp_path / "deep.pt"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", nested)
    else:
        head = b"".join(pickle.dumps(x, protocol=2) for x in (torch_pickle.LEGACY_MAGIC_NUMBER, 1001, {}))
        path.write_bytes(head + nested + pickle.dumps([], protocol=2))
    with pytest.raises(HndError) as info:
        load_torch_file(path)
    assert "nested more than" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(HndError):
        read_state_dict(path)


def test_npz_weights_claiming_1e12_elements_are_one_line(tmp_path):
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}).encode()
    header += b" " * ((64 - (11 + len(header)) % 64) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64)
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("conv.weight.npy", npy)
    out, peak = _peak(lambda: read_state_dict(path))
    assert isinstance(out, HndError) and "w.npz" in str(out) and "holds only" in str(out), out
    assert peak < MB


def test_npz_weights_still_load(tmp_path):
    arrays = {"conv.weight": np.ones((2, 3), np.float32), "conv.bias": np.arange(2, dtype=np.float32)}
    np.savez(tmp_path / "w.npz", **arrays)
    got = read_state_dict(tmp_path / "w.npz")
    assert set(got) == set(arrays) and all(np.array_equal(got[k], v) for k, v in arrays.items())


# ---------------------------------------------------------------------------------------------
# BUILD on the allowed markers
# ---------------------------------------------------------------------------------------------


def _build_payload(global_name: str, state: bytes) -> bytes:
    module, _, name = global_name.rpartition(".")
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + state + b"b."


STATES = {
    "dict": b"}X\x04\x00\x00\x00nameX\x05\x00\x00\x00owneds",  # {'name': 'owned'}
    "slots": b"N}X\x05\x00\x00\x00dtypeK\x01s\x86",  # (None, {'dtype': 1})
}


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("global_name", sorted(torch_pickle.ALLOWED_GLOBALS))
def test_build_on_any_allowed_global_is_refused_and_changes_nothing(tmp_path, global_name, state):
    path = tmp_path / "build.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _build_payload(global_name, STATES[state]))
    before = {k: (repr(v), getattr(v, "dtype", None)) for k, v in torch_pickle._allowed_globals().items()}
    with pytest.raises(HndError, match="build.pt"):
        load_torch_file(path)
    after = {k: (repr(v), getattr(v, "dtype", None)) for k, v in torch_pickle._allowed_globals().items()}
    assert after == before
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3, dtype=torch.float32), "h": torch.ones(2).half()}, good)
    got = load_torch_file(good)
    assert got["w"].dtype == np.float32 and got["h"].dtype == np.float16


def test_every_load_gets_fresh_markers():
    a, b = torch_pickle._allowed_globals(), torch_pickle._allowed_globals()
    for key in a:
        if key != "collections.OrderedDict":
            assert a[key] is not b[key] and a[key] == b[key] if not callable(a[key]) else a[key] is not b[key]


# ---------------------------------------------------------------------------------------------
# float8, torch.compile prefixes, helpful refusals
# ---------------------------------------------------------------------------------------------

F8 = [(torch.float8_e4m3fn, ml_dtypes.float8_e4m3fn), (torch.float8_e5m2, ml_dtypes.float8_e5m2)]


@pytest.mark.parametrize("torch_dtype,ml_dtype", F8)
def test_float8_pth_is_upcast_to_float32(tmp_path, torch_dtype, ml_dtype):
    t = (torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) * 3).to(torch_dtype)
    path = tmp_path / "w.pth"
    torch.save({"conv.weight": t, "conv.bias": torch.zeros(5), "view": t[1:3, ::2]}, path)
    raw = load_torch_file(path)
    assert raw["conv.weight"].dtype == np.dtype(ml_dtype)
    state = read_state_dict(path)
    ref = t.float().numpy()
    assert state["conv.weight"].dtype == np.float32
    np.testing.assert_array_equal(state["conv.weight"], ref)
    np.testing.assert_array_equal(state["view"], ref[1:3, ::2])


@pytest.mark.parametrize("torch_dtype,ml_dtype", F8)
def test_float8_safetensors_is_upcast_to_float32(tmp_path, torch_dtype, ml_dtype):
    from safetensors.torch import save_file

    t = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)) * 3).to(torch_dtype)
    b = torch.randn(3, generator=torch.Generator().manual_seed(2)).bfloat16()
    save_file({"w": t, "b": b, "f": torch.ones(2)}, tmp_path / "w.safetensors")
    state = read_state_dict(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(state["w"], t.float().numpy())
    assert state["w"].dtype == np.float32 and state["b"].dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(state["b"].astype(np.float32), b.float().numpy())


def test_unknown_safetensors_dtype_is_one_line(tmp_path):
    import json

    header = json.dumps({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(HndError) as info:
        read_state_dict(path)
    assert "w.safetensors" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "_orig_mod.module.", "module._orig_mod.", "module."])
def test_wrapper_prefixes_are_stripped(prefix):
    state = {f"{prefix}conv.weight": np.ones(2), f"{prefix}fc.bias": np.zeros(1)}
    assert set(unwrap_state_dict(state)) == {"conv.weight", "fc.bias"}
    mixed = {f"{prefix}conv.weight": np.ones(2), "fc.bias": np.zeros(1)}  # not every key: kept as is
    assert set(unwrap_state_dict(mixed)) == set(mixed)


def test_torch_compile_state_dict_file(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(2, 3))
    sd = {f"_orig_mod.{k}": v for k, v in net.state_dict().items()}  # what a compiled model's state_dict holds
    torch.save(sd, tmp_path / "c.pt")
    assert set(read_state_dict(tmp_path / "c.pt")) == set(net.state_dict())


def test_full_model_pickle_says_how_to_fix_it(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(HndError) as info:
        read_state_dict(tmp_path / "model.pt")
    msg = str(info.value)
    assert "whole model" in msg and "torch.save(model.state_dict(), f)" in msg and "\n" not in msg


def test_extra_objects_say_how_to_fix_it(tmp_path):
    net = torch.nn.Linear(2, 2)
    torch.save({"state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    with pytest.raises(HndError) as info:
        read_state_dict(tmp_path / "ns.pt")
    assert "argparse.Namespace" in str(info.value) and "state_dict()" in str(info.value)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.save({"model": net.state_dict(), "optimizer": opt}, tmp_path / "opt.pt")
    with pytest.raises(HndError) as info:
        read_state_dict(tmp_path / "opt.pt")
    assert "optimizer" in str(info.value) and "state_dict()" in str(info.value)
    # the optimizer's own state_dict is plain data: the weights load, the rest is ignored
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ok.pt")
    assert set(read_state_dict(tmp_path / "ok.pt")) == {"weight", "bias"}


def test_no_state_dict_says_how_to_fix_it(tmp_path):
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "x.pt")
    with pytest.raises(HndError, match=r"torch\.save\(model\.state_dict\(\), f\)"):
        read_state_dict(tmp_path / "x.pt")


def test_cli_convert_of_a_hostile_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "expand.pt"
    torch.save({"w": torch.zeros(1).expand(5000, 5000)}, path)
    code = main(["convert", "--model", "demo_cnn", "--weights", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "expand.pt" in err, err


@pytest.mark.parametrize("opcode", [b"B\xff\xff\xff\x7f", b"\x8e\xff\xff\xff\xff\x00\x00\x00\x00",
                                    b"\x96\xff\xff\xff\xff\x00\x00\x00\x00", b"X\xff\xff\xff\x7f"])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_forged_string_lengths_do_not_allocate(tmp_path, opcode, fmt):
    """Found by the fuzz test: BINBYTES claiming 4 GB in a 1 kB file made the C unpickler allocate 4 GB."""
    payload = b"\x80\x02" + opcode + b"x" * 100
    path = tmp_path / "len.pt"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(payload)  # the first of the legacy format's pickles (the magic number) is forged
    out, peak = _peak(lambda: load_torch_file(path))
    assert isinstance(out, HndError) and "len.pt" in str(out), out
    assert peak < MB, peak


def test_lfs_pointers_and_html_pages_are_named(tmp_path):
    """Common mistakes get a message that says what the file is (fresh-user report)."""
    from hnd_jax.convert.weights_io import read_state_dict
    from hnd_jax.errors import HndError

    lfs = tmp_path / "w.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1234\n")
    with pytest.raises(HndError, match="Git LFS pointer"):
        read_state_dict(lfs)
    page = tmp_path / "p.pth"
    page.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    with pytest.raises(HndError, match="HTML page"):
        read_state_dict(page)
