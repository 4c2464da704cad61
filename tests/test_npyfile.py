"""hnd_jax.npyfile: .npy/.npz headers checked against the file before anything is allocated."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.npyfile import NpzReader, finite_float32, load_npy, load_npz, read_npy_header


def _npy_bytes(arr: np.ndarray, version=None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
    return buf.getvalue()


def _forged_npy(shape, descr="<f8", payload=b"\x00" * 16) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


@pytest.mark.parametrize("arr", [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    np.zeros((0, 5), np.float16),
    np.array(3.5),
    np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_round_trip_equals_numpy(tmp_path, arr, version):
    path = tmp_path / "a.npy"
    path.write_bytes(_npy_bytes(arr, version))
    header = read_npy_header(path)
    assert header.shape == arr.shape and header.dtype == arr.dtype and header.nbytes == arr.nbytes
    np.testing.assert_array_equal(load_npy(path), np.load(path))
    np.testing.assert_array_equal(load_npy(path, mmap_mode="r"), arr)


def test_header_claiming_1e12_elements_is_refused_without_allocating(tmp_path):
    """The issue's example: the header claims 1e12 elements; np.load ended in a MemoryError."""
    path = tmp_path / "big.npy"
    path.write_bytes(_forged_npy((10**12,)))
    tracemalloc.start()
    try:
        with pytest.raises(HndError) as info:
            load_npy(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert str(path) in msg and "8000000000000 bytes" in msg and "holds only 16" in msg and "\n" not in msg
    assert peak < 1 << 20


@pytest.mark.parametrize("data,words", [
    (b"", "bad magic"),
    (b"\x93NUMPY\x01", "bad magic"),
    (b"\x93NUMPY\x09\x00\x00\x00", "version 9.0"),
    (b"\x93NUMPY\x01\x00\xff\xff", "longer than"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr':", "truncated"),
    (_forged_npy((2,), descr="|O"), "Python objects"),
    (_forged_npy((-1,)), "non-negative"),
    (_forged_npy((2,), descr="<q9"), "unknown dtype"),
    (_forged_npy((2, 2)), "holds only 16"),
    (b"\x93NUMPY\x01\x00\x08\x00(((((((\n", "not readable"),
])
def test_bad_npy_is_one_line(tmp_path, data, words):
    path = tmp_path / "x.npy"
    path.write_bytes(data)
    with pytest.raises(HndError) as info:
        load_npy(path)
    assert words in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def _npz(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_round_trip_equals_numpy(tmp_path, compressed):
    arrays = {"local": np.random.default_rng(0).random((3, 2, 2, 2)), "Age/sixty_plus": np.arange(5, dtype=np.int16)}
    path = tmp_path / "a.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    got = load_npz(path)
    assert list(got) == list(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.writeable
    with NpzReader(path) as npz:
        assert npz.header("local").shape == (3, 2, 2, 2)


def test_npz_member_claiming_too_much_is_refused(tmp_path):
    path = _npz(tmp_path / "a.npz", {"local.npy": _forged_npy((10**12,))}, zipfile.ZIP_DEFLATED)
    with pytest.raises(HndError) as info:
        load_npz(path)
    assert "array 'local'" in str(info.value) and "holds only" in str(info.value)


def test_npz_member_that_inflates_beyond_its_claim_is_read_only_to_the_claim(tmp_path):
    """A member whose deflated data is far larger than its header claims: only the claim is inflated."""
    arr = np.arange(4, dtype=np.float64)
    data = _npy_bytes(arr) + b"\x00" * (64 << 20)  # 64 MB of trailing zeros, about 64 kB deflated
    path = _npz(tmp_path / "a.npz", {"local.npy": data}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        got = load_npz(path)["local"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, arr)
    assert peak < 4 << 20


def test_npz_forged_sizes(tmp_path):
    path = _npz(tmp_path / "a.npz", {"local.npy": _npy_bytes(np.zeros(4))})
    raw = bytearray(path.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")  # central directory: uncompressed size at offset 24
    struct.pack_into("<I", raw, cd + 24, 2**31)
    path.write_bytes(bytes(raw))
    with pytest.raises(HndError) as info:
        load_npz(path)
    assert "stored member claims" in str(info.value)
    path = _npz(tmp_path / "b.npz", {"local.npy": _npy_bytes(np.zeros(4))}, zipfile.ZIP_BZIP2)
    with pytest.raises(HndError, match="compression method"):
        load_npz(path)
    with pytest.raises(HndError, match="no array 'nope'"):
        NpzReader(path).header("nope")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(HndError, match="not a readable .npz"):
        NpzReader(tmp_path / "c.npz")


# ---------------------------------------------------------------------------------------------
# finite_float32
# ---------------------------------------------------------------------------------------------


def test_finite_float32_passes_finite_values_through():
    x = np.random.default_rng(1).normal(size=(3, 2, 2)) * 1e30
    np.testing.assert_array_equal(finite_float32(x, "a.npy"), x.astype(np.float32))
    assert finite_float32(x, "a.npy").dtype == np.float32
    big = np.float64(np.finfo(np.float32).max)  # the largest float32 itself is fine
    assert finite_float32(np.array([[big]]), "a.npy")[0, 0] == np.finfo(np.float32).max


@pytest.mark.parametrize("value,words", [
    (1e300, "overflow float32"),
    (-1e39, "overflow float32"),
    (np.inf, "inf values"),
    (-np.inf, "inf values"),
    (np.nan, "NaN values"),
])
def test_finite_float32_tells_nan_inf_and_overflow_apart(value, words):
    x = np.zeros((5, 3), np.float64)
    x[3, 1] = value
    with pytest.raises(HndError) as info:
        finite_float32(x, "acts.npz: array 'local'", first_index=10)
    msg = str(info.value)
    assert words in msg and "image 13" in msg and msg.startswith("acts.npz: array 'local'")
    if "overflow" in words:
        assert f"{abs(value):.3g}" in msg and "NaN" not in msg


def test_finite_float32_reports_the_first_bad_image():
    x = np.zeros((4, 2), np.float32)
    x[2, 0] = np.nan
    x[1, 1] = np.inf
    with pytest.raises(HndError, match="inf values \\(first at image 1\\)"):
        finite_float32(x, "a.npy")


def test_npz_with_an_empty_member_name_is_one_line(tmp_path):
    """Found by the long fuzz run: zipfile's ZipInfo.is_dir() raised IndexError on an empty name."""
    good = tmp_path / "g.npz"
    np.savez(good, w=np.arange(3))
    raw = good.read_bytes()
    cd = raw.rfind(b"PK\x01\x02")
    name_len = struct.unpack_from("<H", raw, cd + 28)[0]
    bad = bytearray(raw)
    struct.pack_into("<H", bad, cd + 28, 0)  # central directory entry with an empty file name
    del bad[cd + 46 : cd + 46 + name_len]
    eocd = bad.rfind(b"PK\x05\x06")
    struct.pack_into("<I", bad, eocd + 12, struct.unpack_from("<I", bad, eocd + 12)[0] - name_len)
    path = tmp_path / "b.npz"
    path.write_bytes(bytes(bad))
    try:
        got = load_npz(path)
    except HndError as exc:
        assert "b.npz" in str(exc)
    else:
        assert got == {}


def test_corrupt_deflate_stream_is_one_line(tmp_path):
    """Found by the long fuzz run: a damaged deflate stream raised zlib.error."""
    path = tmp_path / "c.npz"
    np.savez_compressed(path, w=np.random.default_rng(0).random(500))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"w.npy") + 5
    for i in range(start + 20, start + 60):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(HndError) as info:
        load_npz(path)
    assert "c.npz" in str(info.value) and "\n" not in str(info.value)


def test_an_npz_member_larger_than_the_memory_available_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """A few KB of deflated zeros may honestly claim gigabytes; an .npz member is read whole, so the
    claim is checked against the memory available (here pretended to be 1 MiB) first."""
    from hnd_jax import npyfile

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, small=np.zeros(10, np.float32), big=np.zeros((1024, 1024), np.float32))  # 4 MiB
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(npyfile, "memory_available", lambda: 1 << 20)
    with npyfile.NpzReader(path) as npz:
        assert npz.read("small").shape == (10,)
        with pytest.raises(HndError, match=r"array 'big': needs 4\.0 MiB uncompressed, more than the 1\.0 MiB of"):
            npz.read("big")
    monkeypatch.setattr(npyfile, "memory_available", lambda: None)  # unknown (not Linux): no refusal
    assert npyfile.load_npz(path)["big"].shape == (1024, 1024)


@pytest.mark.parametrize("version", ["v2", "v1", "v2 unlimited", "none"])
def test_memory_available_respects_the_memory_cgroup(tmp_path, version):
    """A container's (or SLURM job's) memory cgroup limits the process below the machine's
    MemAvailable: the memory plan must compare with what the cgroup still allows."""
    from hnd_jax.npyfile import memory_available

    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 32000000 kB\nMemAvailable: 20000000 kB\n")
    if version.startswith("v2"):
        (proc / "self" / "cgroup").write_text("0::/job/42\n")
        (root / "job" / "42").mkdir(parents=True)
        (root / "job" / "42" / "memory.max").write_text("max\n" if "unlimited" in version else f"{4 << 30}\n")
        (root / "job" / "42" / "memory.current").write_text(f"{1 << 30}\n")
    elif version == "v1":
        (proc / "self" / "cgroup").write_text("4:memory:/slurm/job7\n1:cpu:/\n")
        (root / "memory" / "slurm" / "job7").mkdir(parents=True)
        (root / "memory" / "slurm" / "job7" / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")
        (root / "memory" / "slurm" / "job7" / "memory.usage_in_bytes").write_text(f"{1 << 29}\n")
    else:
        (proc / "self" / "cgroup").write_text("0::/\n")
    got = memory_available(str(proc), str(root))
    expected = {"v2": 3 << 30, "v1": (2 << 30) - (1 << 29)}.get(version, 20000000 * 1024)
    assert got == expected
