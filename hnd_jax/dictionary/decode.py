"""Decode and resize one dictionary image or mask, turning every decoding problem into a BadInputError.

Why a module of its own: the published-layout reader, ``hnd dictionary check`` and
``hnd dictionary prepare`` must decode files *identically* (the PNG path and the prepared path give
the same pixels), so there is exactly one place that opens, validates and resizes a file.

Conventions (DESIGN.md §1, §2):

* Images are converted to RGB (L, LA, RGBA, P, I;16 ... all become 3 x uint8) and resized to S x S
  with the resample filter the model card names (PIL bicubic for the paper's models).
* Masks: any non-zero pixel is inside. RGB masks count a pixel as inside when any colour channel is
  non-zero; the alpha channel of RGBA/LA masks is ignored (it is usually fully opaque and would mark
  everything as inside). Palette masks are expanded to RGB first. A mask must have the size of its
  image (native size, usually not square) and is resized to S x S with PIL NEAREST.
* A file is only accepted after it has been fully decoded (``Image.load()``), so a truncated PNG is
  found here and not as garbage pixels later.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hnd_jax.errors import BadInputError, HndError

#: Resample filter names accepted by ``--resample`` and model cards, mapped to PIL filters.
RESAMPLE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

DEFAULT_RESAMPLE = "bicubic"

#: Decoding failures PIL reports for unreadable, truncated or corrupt files.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def resample_filter(name: str) -> Image.Resampling:
    """The PIL filter for a resample name (``bicubic``, ``bilinear``, ...); HndError if unknown."""
    try:
        return RESAMPLE_FILTERS[str(name).lower()]
    except KeyError:
        raise HndError(
            f"resample {name!r} is not known; expected one of {', '.join(RESAMPLE_FILTERS)}"
        ) from None


def check_image_size(size: int) -> int:
    """Validate the analysis size S (a positive int)."""
    try:
        value = int(size)
    except (TypeError, ValueError):
        raise HndError(f"image size {size!r} is not an integer") from None
    if value <= 0 or value != size:
        raise HndError(f"image size {size!r} must be a positive integer")
    return value


def _open_fully(path: Path, missing_kind: str, corrupt_kind: str, what: str) -> Image.Image:
    """Open and fully decode a file; BadInputError(kind) when missing or undecodable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd chunks; we judge by load() alone
            with Image.open(path) as im:
                im.load()  # pixels are in memory now: the image stays usable after the file closes
                return im.convert("RGB") if im.mode == "P" else im
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BadInputError(f"{path}: {what} file not found", kind=missing_kind) from None
    except _DECODE_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{path}: {what} is corrupt or truncated ({reason})", kind=corrupt_kind) from None


def decode_image(path: str | Path, *, kind_prefix: str = "") -> Image.Image:
    """Fully decode an image file into an RGB PIL image (native size).

    ``kind_prefix`` distinguishes global images (``global_``) in --skip-bad counts.
    """
    im = _open_fully(Path(path), f"missing_{kind_prefix}image", f"corrupt_{kind_prefix}image", "image")
    return im if im.mode == "RGB" else im.convert("RGB")


def resize_image(im: Image.Image, size: int, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """uint8 [S, S, 3]: an RGB PIL image resized to S x S with the named filter."""
    if im.size != (size, size):
        im = im.resize((size, size), resample=resample_filter(resample))
    return np.asarray(im, dtype=np.uint8).reshape(size, size, 3)


def load_image(path: str | Path, size: int, resample: str = DEFAULT_RESAMPLE, *, kind_prefix: str = "") -> np.ndarray:
    """Decode, convert to RGB and resize one image: uint8 [S, S, 3]."""
    return resize_image(decode_image(path, kind_prefix=kind_prefix), size, resample)


def mask_to_bool(im: Image.Image) -> np.ndarray:
    """bool [h, w]: any non-zero colour channel is inside (alpha ignored)."""
    if im.mode in ("RGBA", "LA", "PA", "RGBX", "RGBa", "La"):
        im = im.convert("RGB" if im.mode.startswith("RGB") or im.mode == "PA" else "L")
    arr = np.asarray(im)
    if arr.ndim == 3:  # OR the channels explicitly: ndarray.any over a length-3 axis is slow
        inside = arr[..., 0] != 0
        for c in range(1, arr.shape[-1]):
            inside |= arr[..., c] != 0
        return inside
    return arr != 0


def _open_mask(path: Path, image_size_wh: tuple[int, int] | None) -> Image.Image:
    im = _open_fully(path, "missing_mask", "corrupt_mask", "mask")
    if image_size_wh is not None and tuple(im.size) != tuple(image_size_wh):
        raise BadInputError(
            f"{path}: mask is {im.size[0]}x{im.size[1]} but its image is "
            f"{image_size_wh[0]}x{image_size_wh[1]} (masks must have the image's native size)",
            kind="mask_size",
        )
    return im


def load_mask(path: str | Path, image_size_wh: tuple[int, int] | None, size: int) -> np.ndarray:
    """Decode, validate and resize one mask: bool [S, S] (same result as decode_mask + resize_mask).

    Single-channel masks are resized before thresholding: NEAREST only copies pixels, so
    thresholding before or after gives the same bits, and the common L case skips a conversion.
    """
    im = _open_mask(Path(path), image_size_wh)
    if im.mode in ("L", "1", "I", "I;16", "F"):
        if im.size != (size, size):
            im = im.resize((size, size), resample=Image.Resampling.NEAREST)
        return np.asarray(im) != 0
    return resize_mask(mask_to_bool(im), size)


def decode_mask(path: str | Path, image_size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """Fully decode a mask at native size: bool [h, w].

    When ``image_size_wh`` (width, height of the image it annotates) is given, a mask of another
    size is rejected (``kind='mask_size'``): the published masks are at the image's native size.
    """
    return mask_to_bool(_open_mask(Path(path), image_size_wh))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool [S, S]: a native-size bool mask resized with PIL NEAREST (DESIGN.md §2)."""
    if mask.shape == (size, size):
        return mask.copy()
    im = Image.fromarray(mask.astype(np.uint8) * 255)  # 2-D uint8 -> mode L
    return np.asarray(im.resize((size, size), resample=Image.Resampling.NEAREST)) != 0
