"""Property-based fuzzing of every reader of untrusted bytes (issue 12, DESIGN.md §7).

For each reader, valid seed files are mutated (bytes flipped, set, inserted, deleted, sizes
overwritten with extreme integers, truncated) and the property is: the reader returns a result or
raises :class:`~hnd_jax.errors.HndError` -- never another exception -- and the memory it traces
(tracemalloc: Python objects, NumPy buffers, zlib output) stays under :data:`TRACED_LIMIT`. PIL's
pixel buffers are not traced, so image decoding is held to the declared-pixel limit instead (every
decoded image is within it), and the process's peak RSS may not grow by more than
:data:`RSS_GROWTH_LIMIT` over a test.

Run longer with ``HYPOTHESIS_PROFILE=long`` (see conftest.py).
"""

from __future__ import annotations

import io
import json
import resource
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from hnd_jax.errors import HndError

TRACED_LIMIT = 64 << 20
RSS_GROWTH_LIMIT = 512 << 20
INTERESTING_INTS = [0, 1, 2, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63 - 1, 2**64 - 1]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few random edits (the edits hypothesis shrinks towards none)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "int", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "int" and data:
            value = draw(st.sampled_from(INTERESTING_INTS))
            width, fmt = draw(st.sampled_from([(2, "<H"), (4, "<I"), (8, "<Q"), (4, ">I")]))
            data[pos : pos + width] = struct.pack(fmt, value % (1 << (8 * width)))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _bounded(fn) -> None:
    """Run fn(): a result or HndError; traced memory under the limit."""
    tracemalloc.start()
    try:
        try:
            fn()
        except HndError as exc:
            assert "\n" not in str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < TRACED_LIMIT, f"reader traced {peak} bytes"


@pytest.fixture(autouse=True)
def _rss_growth():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert after - before < RSS_GROWTH_LIMIT, f"peak RSS grew by {after - before} bytes"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _rezip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# PyTorch checkpoints (restricted unpickler, zip and legacy formats)
# ---------------------------------------------------------------------------------------------


def _torch_seeds() -> tuple[list[bytes], list[bytes]]:
    torch = pytest.importorskip("torch", reason="torch writes the seed checkpoints")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g)
    sd = OrderedDict(w=base, t=base.t(), h=torch.randn(5, generator=g).half(), i=torch.arange(4),
                     f8=torch.randn(3, generator=g).to(torch.float8_e4m3fn), nested={"b": [torch.ones(2)]})
    files, pickles = [], []
    for zip_format in (True, False):
        buf = io.BytesIO()
        torch.save(sd, buf, _use_new_zipfile_serialization=zip_format)
        files.append(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(files[0])) as zf:
        pickles.append(zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl"))))
    return files, pickles


@pytest.fixture(scope="module")
def torch_seeds():
    return _torch_seeds()


def test_fuzz_torch_file_bytes(work, torch_seeds):
    from hnd_jax.convert.torch_pickle import load_torch_file

    path = work / "raw.pt"

    @given(mutated(torch_seeds[0]))
    def run(data):
        path.write_bytes(data)
        _bounded(lambda: load_torch_file(path))

    run()


def test_fuzz_torch_pickle_inside_a_valid_zip(work, torch_seeds):
    """Mutate data.pkl itself (a valid zip around it), so the unpickler, not the CRC, sees the damage."""
    from hnd_jax.convert.torch_pickle import load_torch_file

    files, pickles = torch_seeds
    with zipfile.ZipFile(io.BytesIO(files[0])) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl_name = next(n for n in members if n.endswith("data.pkl"))
    path = work / "pkl.pt"

    @given(mutated(pickles))
    def run(pkl):
        path.write_bytes(_rezip({**members, pkl_name: pkl}))
        _bounded(lambda: load_torch_file(path))

    run()


def test_fuzz_read_state_dict(work, torch_seeds):
    from hnd_jax.convert.weights_io import read_state_dict

    path = work / "sd.pth"

    @given(mutated(torch_seeds[0]))
    def run(data):
        path.write_bytes(data)
        _bounded(lambda: read_state_dict(path))

    run()


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------


def test_fuzz_safetensors(work):
    from safetensors.numpy import save

    from hnd_jax.convert.weights_io import read_state_dict

    seed = save({"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.int64)})
    header_len = struct.unpack("<Q", seed[:8])[0]
    header = json.loads(seed[8 : 8 + header_len])
    header["a"]["dtype"] = "F8_E4M3"
    header["a"]["shape"] = [4, 12]
    h2 = json.dumps(header).encode()
    seed_f8 = struct.pack("<Q", len(h2)) + h2 + seed[8 + header_len :]
    path = work / "w.safetensors"

    @given(mutated([seed, seed_f8]))
    def run(data):
        path.write_bytes(data)
        _bounded(lambda: read_state_dict(path))

    run()


# ---------------------------------------------------------------------------------------------
# .npy / .npz (hnd_jax.npyfile, also .npz weights)
# ---------------------------------------------------------------------------------------------


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


NPY_SEEDS = [
    _npy(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
    _npy(np.asfortranarray(np.ones((3, 2), np.int16))),
    _npy(np.zeros((2, 1, 1, 1), np.float64)),
]


def test_fuzz_npy(work):
    from hnd_jax.npyfile import load_npy

    path = work / "a.npy"

    @given(mutated(NPY_SEEDS), st.sampled_from([None, "r"]))
    def run(data, mmap_mode):
        path.write_bytes(data)

        def read():
            arr = load_npy(path, mmap_mode=mmap_mode)
            np.asarray(arr).sum()  # touch every element
            del arr

        _bounded(read)

    run()


def test_fuzz_npz_members(work):
    from hnd_jax.npyfile import load_npz

    path = work / "a.npz"

    @given(mutated(NPY_SEEDS), st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    def run(member, compression):
        path.write_bytes(_rezip({"local.npy": member, "b.npy": NPY_SEEDS[1]}, compression))
        _bounded(lambda: load_npz(path))

    run()


def test_fuzz_npz_archive_bytes(work):
    from hnd_jax.convert.weights_io import read_state_dict

    seeds = [_rezip({"w.npy": NPY_SEEDS[0], "b.npy": NPY_SEEDS[1]}),
             _rezip({"w.npy": NPY_SEEDS[0]}, zipfile.ZIP_DEFLATED)]
    path = work / "w.npz"

    @given(mutated(seeds))
    def run(data):
        path.write_bytes(data)
        _bounded(lambda: read_state_dict(path))

    run()


# ---------------------------------------------------------------------------------------------
# CSV index files
# ---------------------------------------------------------------------------------------------


def test_fuzz_index_csv(pristine_fixture, tmp_path_factory):
    import shutil

    from hnd_jax.dictionary.layout import read_layout
    from hnd_jax.taxonomy import default_taxonomy

    root = tmp_path_factory.mktemp("fuzz_index") / "root"
    shutil.copytree(pristine_fixture.root, root)
    seeds = [(pristine_fixture.root / n).read_bytes() for n in ("Parts.csv", "Attributes.csv", "Action_Units.csv")]
    seeds.append(seeds[0].replace(b"\r\n", b"\r").replace(b"/", b"\\"))
    tax = default_taxonomy()

    @given(mutated(seeds), st.booleans())
    def run(data, skip_bad):
        (root / "Parts.csv").write_bytes(data)
        _bounded(lambda: read_layout(root, tax, skip_bad=skip_bad))

    run()


# ---------------------------------------------------------------------------------------------
# PNG / JPEG decoding (images and masks)
# ---------------------------------------------------------------------------------------------


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for im, fmt, kw in [
        (Image.fromarray(rgb), "PNG", {}),
        (Image.fromarray(rgb[..., 0]), "PNG", {}),
        (Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG", {}),
        (Image.fromarray(rgb).quantize(16), "PNG", {"transparency": 0}),
        (Image.fromarray(rgb), "JPEG", {"quality": 90}),
    ]:
        buf = io.BytesIO()
        exif = Image.Exif()
        exif[0x0112] = 6
        im.save(buf, format=fmt, exif=exif, **kw)
        out.append(buf.getvalue())
    return out


LIMIT_PIXELS = 1_000_000


def test_fuzz_image_and_mask_decoding(work):
    from hnd_jax.dictionary import decode

    seeds = _image_seeds()
    path = work / "x.img"

    @given(mutated(seeds))
    def run(data):
        path.write_bytes(data)

        def read():
            im = decode.decode_image(path)
            assert im.mode == "RGB" and im.size[0] * im.size[1] <= LIMIT_PIXELS
            mask = decode.decode_mask(path)
            assert mask.dtype == bool and mask.size <= LIMIT_PIXELS
            decode.load_mask(path, None, 8)

        _bounded(read)

    decode.set_max_image_pixels(LIMIT_PIXELS)
    try:
        run()
    finally:
        decode.set_max_image_pixels(None)
