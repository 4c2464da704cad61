"""Images decode to what a viewer shows (issue 12, DESIGN.md §7).

Every PIL mode a face image can come in decodes like its 8-bit copy; the EXIF orientation is
applied to images and masks; sizes are checked from the header before any pixel is decoded.
The references are independent: NumPy arithmetic on the arrays the files were written from.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hnd_jax.dictionary import decode
from hnd_jax.dictionary.decode import decode_image, decode_mask, load_image, load_mask
from hnd_jax.errors import BadInputError

H, W = 12, 20


@pytest.fixture()
def gray() -> np.ndarray:
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (H, W), dtype=np.uint8)
    g[0, 0], g[0, 1] = 0, 255  # both ends of the range
    return g


@pytest.fixture()
def rgb() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def _decoded(path: Path) -> np.ndarray:
    return np.asarray(decode_image(path))


def test_16bit_png_decodes_like_its_8bit_copy(tmp_path, gray):
    """The issue's example: 8-bit values times 257 in a 16-bit PNG decoded as all-white (255)."""
    path = tmp_path / "g16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(_decoded(path), _gray3(gray))


def test_16bit_values_between_steps_are_rounded_not_clipped(tmp_path):
    values = np.array([[0, 128, 129, 256, 257, 385, 386, 65535, 32896, 1000]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    want = np.floor(values.astype(np.float64) / 257 + 0.5).astype(np.uint8)  # v/257 is never exactly x.5
    got = _decoded(path)[..., 0]
    np.testing.assert_array_equal(got, want)
    assert got[0, 7] == 255 and got[0, 0] == 0 and got[0, 4] == 1


def test_mode_I_tiff_decodes_like_its_8bit_copy(tmp_path, gray):
    path = tmp_path / "gI.tif"
    Image.fromarray(gray.astype(np.int32) * 257).save(path)
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(_decoded(path), _gray3(gray))


def test_mode_F_tiff_decodes_like_its_8bit_copy(tmp_path, gray):
    path = tmp_path / "gF.tif"
    Image.fromarray(gray.astype(np.float32)).save(path)
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(_decoded(path), _gray3(gray))


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_png_decodes_to_its_palette_colours(tmp_path, transparency):
    rng = np.random.default_rng(2)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = rng.integers(0, 256, (H, W), dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(palette.reshape(-1).tolist())
    path = tmp_path / "p.png"
    if transparency:
        im.save(path, transparency=int(idx[0, 0]))
        assert "transparency" in Image.open(path).info
    else:
        im.save(path)
    np.testing.assert_array_equal(_decoded(path), palette[idx])


def test_la_and_rgba_drop_alpha_keeping_the_colour(tmp_path, gray, rgb):
    alpha = np.random.default_rng(3).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(tmp_path / "la.png")
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(_decoded(tmp_path / "la.png"), _gray3(gray))
    np.testing.assert_array_equal(_decoded(tmp_path / "rgba.png"), rgb)


def test_cmyk_decodes_to_rgb(tmp_path, rgb):
    cmyk = np.dstack([255 - rgb, np.zeros((H, W), np.uint8)])  # K = 0: RGB = 255 - CMY exactly
    path = tmp_path / "c.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    assert Image.open(path).mode == "CMYK"
    np.testing.assert_array_equal(_decoded(path), rgb)


def test_bilevel_decodes_to_0_and_255(tmp_path, gray):
    bits = gray > 127
    path = tmp_path / "b.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(_decoded(path), _gray3(bits.astype(np.uint8) * 255))


def test_16bit_mask_is_inside_where_nonzero(tmp_path):
    m = np.random.default_rng(4).random((H, W)) < 0.4
    path = tmp_path / "m16.png"
    Image.fromarray(m.astype(np.uint16) * 65535).save(path)
    np.testing.assert_array_equal(decode_mask(path, (W, H)), m)
    np.testing.assert_array_equal(load_mask(path, (W, H), 8), decode.resize_mask(m, 8))


# ---------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------


def _save_with_orientation(arr: np.ndarray, path: Path, orientation: int, fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    Image.fromarray(arr).save(path, format=fmt, exif=exif, **kw)


# orientation -> how a viewer turns the stored pixels (np functions on [h, w, ...] arrays)
VIEW = {
    1: lambda a: a,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # stored sideways: the viewer turns it 90 degrees clockwise
    8: lambda a: np.rot90(a, 1),
    2: lambda a: a[:, ::-1],
}


@pytest.mark.parametrize("orientation", sorted(VIEW))
def test_exif_orientation_is_applied_to_images(tmp_path, orientation):
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:4, :6] = (250, 10, 10)  # a red block in the stored top-left corner
    path = tmp_path / "o.png"
    _save_with_orientation(stored, path, orientation, "PNG")
    np.testing.assert_array_equal(_decoded(path), VIEW[orientation](stored))


def test_phone_jpeg_orientation_6_and_its_correct_mask(tmp_path):
    """The issue's example: a sideways JPEG was read sideways and its correct mask refused."""
    rng = np.random.default_rng(5)
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:, : W // 2] = 255
    _save_with_orientation(stored, tmp_path / "face.jpg", 6, "JPEG")
    viewed = VIEW[6](stored)  # [W, H, 3]
    im = decode_image(tmp_path / "face.jpg")
    assert im.size == (H, W)  # (width, height) as a viewer shows it
    assert np.abs(np.asarray(im).astype(int) - viewed).mean() < 3
    mask = rng.random((W, H)) < 0.5  # drawn on the upright image
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "Smiling.png")
    np.testing.assert_array_equal(decode_mask(tmp_path / "Smiling.png", im.size), mask)


def test_mask_exif_orientation_is_applied(tmp_path):
    stored = np.random.default_rng(6).random((H, W)) < 0.5
    _save_with_orientation(stored.astype(np.uint8) * 255, tmp_path / "m.png", 8, "PNG")
    np.testing.assert_array_equal(decode_mask(tmp_path / "m.png", (H, W)), VIEW[8](stored))


# ---------------------------------------------------------------------------------------------
# Declared size checked before decoding
# ---------------------------------------------------------------------------------------------


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header declares width x height (its data is one short row)."""
    raw = zlib.compress(b"\x00" + b"\x00" * 8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_declared_size_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _png_declaring(path, 13000, 13000)
    assert path.stat().st_size < 200
    loads = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1) or real_load(self))
    with pytest.raises(BadInputError) as info:
        decode_image(path)
    assert info.value.kind == "image_too_large" and not loads
    msg = str(info.value)
    assert str(path) in msg and "13000x13000" in msg and "--max-image-pixels" in msg and "\n" not in msg
    with pytest.raises(BadInputError) as info:
        decode_mask(path)
    assert info.value.kind == "mask_too_large"
    with pytest.raises(BadInputError) as info:
        decode_image(path, kind_prefix="global_")
    assert info.value.kind == "global_image_too_large"


def test_the_limit_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _png_declaring(path, 13000, 13000)
    small = tmp_path / "small.png"
    _png_declaring(small, 300, 300)
    try:
        decode.set_max_image_pixels(200_000_000)
        with pytest.raises(BadInputError) as info:  # allowed now: it is decoded and found truncated
            decode_image(path)
        assert info.value.kind == "corrupt_image"
        decode.set_max_image_pixels(1000)
        with pytest.raises(BadInputError) as info:
            decode_image(small)
        assert info.value.kind == "image_too_large"
    finally:
        decode.set_max_image_pixels(None)
    monkeypatch.setenv(decode.MAX_PIXELS_ENV, "1000")
    assert decode.max_image_pixels() == 1000
    with pytest.raises(BadInputError) as info:
        decode_image(small)
    assert info.value.kind == "image_too_large"
    monkeypatch.setenv(decode.MAX_PIXELS_ENV, "lots")
    with pytest.raises(Exception) as info:
        decode.max_image_pixels()
    assert decode.MAX_PIXELS_ENV in str(info.value)
    monkeypatch.delenv(decode.MAX_PIXELS_ENV)
    assert decode.max_image_pixels() == decode.DEFAULT_MAX_IMAGE_PIXELS


def test_normal_images_still_resize_as_before(tmp_path, rgb):
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    want = np.asarray(Image.fromarray(rgb).resize((8, 8), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(load_image(path, 8), want)


def test_forged_chunk_length_does_not_allocate_it(tmp_path):
    """Found by the fuzz test: PIL reads the rest of a claimed IDAT length in one read(n), which a
    plain file answers by allocating n bytes (128 MB for a 300-byte file). Reads are capped."""
    import io
    import tracemalloc

    buf = io.BytesIO()
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT") - 4
    struct.pack_into(">I", data, idat, 0x08000000)
    path = tmp_path / "forged.png"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        try:
            decode_image(path)
        except BadInputError as err:
            assert "forged.png" in str(err)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
