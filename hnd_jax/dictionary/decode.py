"""Decode and resize one dictionary image or mask, turning every decoding problem into a BadInputError.

Why a module of its own: the published-layout reader, ``hnd dictionary check`` and
``hnd dictionary prepare`` must decode files *identically* (the PNG path and the prepared path give
the same pixels), so there is exactly one place that opens, validates and resizes a file.

Conventions (DESIGN.md §1, §2):

* Images decode to what a viewer shows (DESIGN.md §7): the EXIF orientation is applied
  (``ImageOps.exif_transpose``), then every mode becomes 3 x uint8 like its 8-bit copy would:
  16-bit (``I;16*``, and ``I``, which is how 16-bit PNG/TIFF greyscale decodes) is scaled by 1/257
  and rounded, not clipped; ``F`` is taken as 0..255 (PIL's convention), rounded and clipped; alpha
  (LA, RGBA, PA, P with transparency) is dropped, keeping the colour under it, as ``convert("RGB")``
  and the original PyTorch pipelines do; P, CMYK, 1, YCbCr go through PIL's ``convert("RGB")``.
  Images are then resized to S x S with the resample filter the model card names (PIL bicubic for
  the paper's models).
* The size an image's header declares is checked *before* its pixels are decoded: more than
  :func:`max_image_pixels` pixels (default 64 megapixels; ``$HND_MAX_IMAGE_PIXELS`` or
  ``--max-image-pixels`` raise it) is refused with ``kind='image_too_large'``.
* Masks: EXIF orientation applied like images; any non-zero pixel is inside. RGB masks count a pixel as inside when any colour channel is
  non-zero; the alpha channel of RGBA/LA masks is ignored (it is usually fully opaque and would mark
  everything as inside). Palette masks are expanded to RGB first. A mask must have the size of its
  image (native size, usually not square) and is resized to S x S with PIL NEAREST.
* A file is only accepted after it has been fully decoded (``Image.load()``), so a truncated PNG is
  found here and not as garbage pixels later.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hnd_jax.capped_io import CappedReader
from hnd_jax.errors import BadInputError, HndError, one_line

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

#: Decoding failures PIL reports for unreadable, truncated or corrupt files (some plugins let
#: struct, index and type errors escape on forged headers).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError,
                  IndexError, ZeroDivisionError, struct.error)


#: Default limit on the pixels an image header may declare (64 megapixels: 8000 x 8000).
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
#: Environment variable that raises (or lowers) the limit for a whole process.
MAX_PIXELS_ENV = "HND_MAX_IMAGE_PIXELS"

_max_pixels_setting: int | None = None  # set by set_max_image_pixels (the CLI's --max-image-pixels)


def set_max_image_pixels(limit: int | None) -> None:
    """Set the process-wide pixel limit (None: back to ``$HND_MAX_IMAGE_PIXELS`` or the default).

    PIL's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is raised with it when needed,
    so an image we accept is never refused by PIL; it is never lowered.
    """
    global _max_pixels_setting
    if limit is not None:
        limit = int(limit)
        if limit < 1:
            raise HndError(f"max image pixels {limit}: must be at least 1")
    _max_pixels_setting = limit
    _raise_pil_limit(max_image_pixels())


def _raise_pil_limit(limit: int) -> None:
    # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we do our own check first.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit


def max_image_pixels_setting() -> int | None:
    """The limit set by :func:`set_max_image_pixels` (None when the env/default applies)."""
    return _max_pixels_setting


def max_image_pixels() -> int:
    """The largest width x height an image header may declare (see :func:`set_max_image_pixels`)."""
    if _max_pixels_setting is not None:
        return _max_pixels_setting
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise HndError(f"${MAX_PIXELS_ENV}={env!r}: expected a positive integer (pixels)") from None
        if value < 1:
            raise HndError(f"${MAX_PIXELS_ENV}={env!r}: expected a positive integer (pixels)")
        return value
    return DEFAULT_MAX_IMAGE_PIXELS


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


def _too_large(path: Path, what: str, size: tuple[int, int] | None, kind: str) -> BadInputError:
    limit = max_image_pixels()
    dims = f"declares {size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "declares too many pixels"
    return BadInputError(
        f"{path}: {what} {dims}, more than the limit of {limit} (refused before decoding; raise it with "
        f"--max-image-pixels or ${MAX_PIXELS_ENV} if the file is genuine)",
        kind=kind,
    )


def _open_regular(path: Path, what: str, missing_kind: str):
    """``open(path, "rb")`` for a regular file only; BadInputError(missing_kind) for a folder, FIFO,
    socket or device. Opened non-blocking, so that a FIFO with no writer is refused, not waited on
    (the flag changes nothing for a regular file)."""
    from hnd_jax.dictionary.layout import special_file_kind

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BadInputError(f"{path}: {what} is not a regular file ({special_file_kind(mode)})", kind=missing_kind)
    return os.fdopen(fd, "rb")


def _open_fully(path: Path, what: str, kind_prefix: str = "") -> Image.Image:
    """Open, size-check, fully decode and orient a file; BadInputError(kind) when it is not usable.

    ``what`` is ``image`` or ``mask``; the kinds are ``missing_<prefix><what>``,
    ``corrupt_<prefix><what>`` and ``<prefix><what>_too_large``. Returns the image in its own mode
    (callers convert), with the EXIF orientation applied.
    """
    missing_kind, corrupt_kind = f"missing_{kind_prefix}{what}", f"corrupt_{kind_prefix}{what}"
    too_large_kind = f"{kind_prefix}{what}_too_large"
    limit = max_image_pixels()
    _raise_pil_limit(limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd chunks; we judge by load() alone
            with _open_regular(path, what, missing_kind) as raw, \
                    Image.open(CappedReader(raw, os.fstat(raw.fileno()).st_size)) as im:
                # CappedReader: PIL reads a chunk's claimed length in one read(n), which would
                # allocate n bytes for a forged length; capped, it allocates at most the file.
                width, height = im.size  # from the header: nothing decoded yet
                if width * height > limit:
                    raise _too_large(path, what, (width, height), too_large_kind)
                im.load()  # pixels are in memory now: the image stays usable after the file closes
                ImageOps.exif_transpose(im, in_place=True)  # what a viewer shows; no copy when upright
                return im
    except BadInputError:
        raise
    except Image.DecompressionBombError:
        raise _too_large(path, what, None, too_large_kind) from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BadInputError(f"{path}: {what} file not found", kind=missing_kind) from None
    except MemoryError:
        raise BadInputError(f"{path}: {what} too large to decode in memory", kind=too_large_kind) from None
    except UnidentifiedImageError:  # PIL's text names the reader object, not the file
        raise BadInputError(f"{path}: {what} is corrupt or not an image format PIL reads", kind=corrupt_kind) from None
    except _DECODE_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{path}: {what} is corrupt or truncated ({one_line(reason)})", kind=corrupt_kind) from None



#: PIL modes holding 16-bit samples (I is how PIL decodes 16-bit greyscale PNG/TIFF).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB (3 x uint8) copy of any PIL image, as a viewer shows it (see the module doc)."""
    if im.mode == "RGB":
        return im
    if im.mode in _SIXTEEN_BIT_MODES or im.mode == "F":
        arr = np.asarray(im)
        if arr.ndim != 2:
            raise BadInputError(f"unsupported {im.mode} image layout {arr.shape}", kind="corrupt_image")
        if im.mode == "F":
            vals = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        else:
            vals = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
        gray = np.clip(np.rint(vals), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB")
    if im.mode in ("RGBA", "RGBa", "RGBX", "LA", "La", "PA"):
        base = {"LA": "L", "La": "L", "PA": "RGBA"}.get(im.mode)
        if base == "RGBA":
            im = im.convert("RGBA")
        elif base == "L":
            return Image.merge("RGB", [im.getchannel(0)] * 3)
        return im.convert("RGB") if im.mode == "RGBX" else Image.merge("RGB", im.split()[:3])
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise BadInputError(f"image mode {im.mode} cannot be shown as RGB ({one_line(str(exc))})", kind="corrupt_image") from None


def decode_image(path: str | Path, *, kind_prefix: str = "") -> Image.Image:
    """Fully decode an image file into an RGB PIL image (native size, EXIF orientation applied).

    ``kind_prefix`` distinguishes global images (``global_``) in --skip-bad counts.
    Raises BadInputError (kinds ``missing_image``, ``corrupt_image``, ``image_too_large`` with the
    prefix) naming the file.
    """
    path = Path(path)
    im = _open_fully(path, "image", kind_prefix)
    try:
        return to_rgb(im)
    except BadInputError as err:
        raise BadInputError(f"{path}: {err}", kind=f"corrupt_{kind_prefix}image") from None


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
    elif im.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        im = to_rgb(im)
    arr = np.asarray(im)
    if arr.ndim == 3:  # OR the channels explicitly: ndarray.any over a length-3 axis is slow
        inside = arr[..., 0] != 0
        for c in range(1, arr.shape[-1]):
            inside |= arr[..., c] != 0
        return inside
    return arr != 0


def _open_mask(path: Path, image_size_wh: tuple[int, int] | None) -> Image.Image:
    im = _open_fully(path, "mask")
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
