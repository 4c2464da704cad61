"""Turn images into exactly the float32 input a model card describes (NHWC, RGB).

Activations only match the original PyTorch model's when the input matches bit for bit, so the
steps mirror what the original pipelines did, in the same order and precision:

1. decode and convert to RGB (grayscale is replicated to three channels, as PIL does);
2. resize to ``input_size x input_size`` with the card's PIL filter (the HND paper's models: PIL
   bicubic, the default of ``Image.resize``);
3. ``x = uint8 / divide_by`` in float32 (``transforms.ToTensor()`` is ``/ 255``);
4. when the card gives them, ``x = (x - mean) / std`` per channel in float32.

The Face Dictionary readers resize dictionary images themselves (with the same PIL filter, named by
``card.preprocessing.resize``), so they call :func:`preprocess_uint8` for steps 3-4 only.
Face cropping (MTCNN) is recorded on the card but not performed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from hnd_jax.cards import RESIZE_FILTERS, ModelCard
from hnd_jax.errors import HndError

__all__ = [
    "IMAGE_SUFFIXES",
    "pil_filter",
    "load_rgb",
    "resize_rgb",
    "preprocess_uint8",
    "preprocess_images",
    "preprocess_files",
    "list_image_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def pil_filter(name: str) -> Image.Resampling:
    """The PIL resampling filter called ``name`` (``bicubic``, ``bilinear``, ``box``, ...)."""
    key = name.lower()
    if key not in RESIZE_FILTERS:
        raise HndError(f"unknown resize filter {name!r}; expected one of {', '.join(RESIZE_FILTERS)}")
    return getattr(Image.Resampling, key.upper())


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully and convert it to RGB (one-line error for a bad file).

    The same decoder as the Face Dictionary readers (:func:`hnd_jax.dictionary.decode.decode_image`):
    EXIF orientation applied, 16-bit and palette modes scaled like their 8-bit copy, the declared
    size checked from the header before decoding (DESIGN.md §7).
    """
    from hnd_jax.dictionary.decode import decode_image

    return decode_image(path)


def resize_rgb(img: Image.Image, size: int, resize: str) -> np.ndarray:
    """An RGB PIL image resized to ``size x size`` with the named filter, as uint8 [size, size, 3]."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), resample=pil_filter(resize))
    return np.asarray(img, dtype=np.uint8)


def preprocess_uint8(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """Scale (and normalise) uint8 NHWC RGB images that are already at the right size -> float32 NHWC."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise HndError(f"preprocess_uint8 expects uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise HndError(f"preprocess_uint8 expects images [N, H, W, 3] (NHWC RGB), got shape {list(images.shape)}")
    pre = card.preprocessing
    x = images.astype(np.float32) / np.float32(pre.divide_by)
    if pre.mean is not None and pre.std is not None:
        mean = np.asarray(pre.mean, dtype=np.float32)
        std = np.asarray(pre.std, dtype=np.float32)
        x = (x - mean) / std
    return x.astype(np.float32, copy=False)


def preprocess_images(images: Sequence[Image.Image], card: ModelCard) -> np.ndarray:
    """PIL images -> float32 NHWC at the card's input size, exactly as the card says."""
    size = card.input_size
    if not images:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    batch = np.stack([resize_rgb(img, size, card.preprocessing.resize) for img in images])
    return preprocess_uint8(batch, card)


def preprocess_files(paths: Sequence[str | Path], card: ModelCard) -> np.ndarray:
    """Image files -> float32 NHWC (decoded, RGB, resized, scaled) in the given order."""
    return preprocess_images([load_rgb(p) for p in paths], card)


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` in sorted name order (one-line error when none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HndError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise HndError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files
