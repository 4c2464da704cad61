"""ActivationFile.rows: the same float32 NHWC rows whatever the file's layout, without the memory map.

A C-order ``.npy`` is read with ``os.pread`` (the pages of a memory map that were read stay in the
process's resident set, so streaming a file through the map grew the RSS by the file's size); other
layouts go through the map or the loaded ``.npz`` member. Every path must give the reference rows
(``float32`` of the stored values, transposed NCHW -> NHWC) and the same one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.pipeline.source_file import ActivationFile


def reference_rows(arr, start, stop):
    with np.errstate(over="ignore"):
        return np.asarray(arr[start:stop]).astype(np.float32).transpose(0, 2, 3, 1)


LAYOUTS = {
    "c_float32": lambda a: a.astype(np.float32),
    "fortran_float32": lambda a: np.asfortranarray(a.astype(np.float32)),
    "big_endian_float32": lambda a: a.astype(">f4"),
    "float16": lambda a: a.astype(np.float16),
    "float64": lambda a: a.astype(np.float64) * (1 + 1e-12),  # rounds on the way to float32
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("fmt", ["npy", "npz"])
@pytest.mark.parametrize("chunk_images", [1, 3, 100])
def test_rows_equal_the_reference_for_every_layout(layout, fmt, chunk_images, tmp_path, monkeypatch):
    import hnd_jax.pipeline.source_file as sf

    rng = np.random.default_rng(0)
    arr = LAYOUTS[layout](rng.normal(size=(11, 5, 3, 4)) * 100)
    path = tmp_path / f"acts.{fmt}"
    np.save(path, arr) if fmt == "npy" else np.savez(path, local=arr)
    monkeypatch.setattr(sf, "READ_CHUNK_BYTES", chunk_images * arr[0].nbytes)
    f = ActivationFile(path)
    try:
        for start, stop in [(0, 11), (0, 4), (4, 8), (8, 11), (10, 11), (3, 3)]:
            got = f.rows("local", start, stop)
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, reference_rows(arr, start, stop))
    finally:
        f.close()


def test_c_order_npy_rows_do_not_read_through_the_memory_map(tmp_path):
    arr = np.arange(6 * 2 * 3 * 2, dtype=np.float32).reshape(6, 2, 3, 2)
    np.save(tmp_path / "a.npy", arr)
    f = ActivationFile(tmp_path / "a.npy")
    try:
        class NoReads:  # the map's shape and dtype, but any read through it fails
            shape, dtype = f.local.shape, f.local.dtype

            def __getitem__(self, item):
                raise AssertionError("read through the memory map")

        f.local = NoReads()
        np.testing.assert_array_equal(f.rows("local", 2, 5), reference_rows(arr, 2, 5))
    finally:
        f.close()
    f.close()  # twice is harmless


@pytest.mark.parametrize("value,dtype,message", [
    (np.nan, np.float32, "has NaN values (first at image 4)"),
    (-np.inf, ">f4", "has inf values (first at image 4)"),
    (1e300, np.float64, "overflow float32"),
])
@pytest.mark.parametrize("chunk_images", [1, 2, 100])
def test_bad_values_name_the_first_bad_image_of_the_block(value, dtype, message, chunk_images, tmp_path, monkeypatch):
    import hnd_jax.pipeline.source_file as sf

    monkeypatch.setattr(sf, "READ_CHUNK_BYTES", chunk_images * 2 * 2 * 2 * np.dtype(dtype).itemsize)
    arr = np.zeros((6, 2, 2, 2), dtype)
    arr[4, 1, 0, 1] = value
    arr[5] = value
    np.save(tmp_path / "a.npy", arr)
    f = ActivationFile(tmp_path / "a.npy")
    try:
        np.testing.assert_array_equal(f.rows("local", 0, 4), np.zeros((4, 2, 2, 2), np.float32))
        with pytest.raises(HndError, match="first at image 4") as err:
            f.rows("local", 3, 6)
        assert message in str(err.value) and str(tmp_path / "a.npy") in str(err.value)
    finally:
        f.close()


def test_a_file_truncated_after_opening_is_named(tmp_path):
    arr = np.ones((6, 2, 2, 2), np.float32)
    path = tmp_path / "a.npy"
    np.save(path, arr)
    f = ActivationFile(path)
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.truncate(size - 2 * 2 * 2 * 4 - 1)  # image 4 loses its last byte, image 5 is gone
        np.testing.assert_array_equal(f.rows("local", 0, 4), reference_rows(arr, 0, 4))
        with pytest.raises(HndError, match="ends before image 4"):
            f.rows("local", 2, 6)
    finally:
        f.close()
