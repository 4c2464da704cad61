"""Thumbnails of a unit's top images: thresholded activation overlaid, top concept's mask outlined.

What a tile shows (the NetDissect way of looking at a unit, with the HND concept added):

* the binary map of DESIGN.md §2, B = [up(A) > T_u], where ``up`` is bilinear upsampling of the raw
  map to the analysis size S with half-pixel centres and edge clamping; pixels outside B are dimmed
  and B's boundary is drawn in orange;
* the mask of the unit's top concept on that image (empty when the concept is not annotated there),
  outlined in cyan.

B and the mask are computed at S, exactly as scored, and only then reduced to the thumbnail size
(area average, then >= 0.5), so a thumbnail never shows a region the scoring did not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image

from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.errors import HndError
from hnd_jax.reports.results_view import LayerResults

THUMB_SIZE = 96
ACTIVATION_RGB = (255, 150, 0)
CONCEPT_RGB = (0, 230, 255)
DIM_OUTSIDE = 0.55
FETCH_CHUNK = 32


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 weights of 1-D linear interpolation with half-pixel centres, edges clamped.

    Output pixel i samples input coordinate (i + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1];
    the 2-D upsampling is separable: ``W_y @ A @ W_x.T`` (OpenCV INTER_LINEAR / jax.image.resize
    'linear' when enlarging).
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lo), 1.0 - frac)
    np.add.at(w, (rows, hi), frac)
    return w


def upsample_bilinear(maps: np.ndarray, size: int) -> np.ndarray:
    """Upsample [..., h, w] raw maps to [..., size, size] (float32), see :func:`bilinear_matrix`."""
    maps = np.asarray(maps, dtype=np.float64)
    wy = bilinear_matrix(maps.shape[-2], size)
    wx = bilinear_matrix(maps.shape[-1], size)
    return np.einsum("ih,...hw,jw->...ij", wy, maps, wx).astype(np.float32)


def outline(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~interior


def _shrink_mask(mask: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.Resampling.BOX)) >= 0.5


def render_tile(
    image: np.ndarray, active: np.ndarray | None, concept_mask: np.ndarray | None, size: int = THUMB_SIZE
) -> np.ndarray:
    """uint8 [size, size, 3]: the image with the binary activation ``active`` and the concept outline.

    ``image`` is uint8 [S, S, 3]; ``active`` and ``concept_mask`` are bool [S, S] or None (not drawn).
    """
    thumb = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    if active is not None:
        act = _shrink_mask(active, size)
        thumb = np.where(act[..., None], thumb, thumb * DIM_OUTSIDE)
        thumb[outline(act)] = ACTIVATION_RGB
    if concept_mask is not None and concept_mask.any():
        thumb[outline(_shrink_mask(concept_mask, size))] = CONCEPT_RGB
    return np.clip(np.rint(thumb), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class UnitTiles:
    """The rendered top images of one unit: tiles [K, t, t, 3] (blank where no image) and their indices."""

    unit: int
    tiles: np.ndarray
    indices: np.ndarray
    active_fraction: np.ndarray  # [K] share of the S x S pixels above threshold (NaN without a map)

    def strip(self, gap: int = 2) -> np.ndarray:
        """The K tiles side by side, separated by white columns."""
        k, t = self.tiles.shape[:2]
        out = np.full((t, k * t + (k - 1) * gap, 3), 255, dtype=np.uint8)
        for i in range(k):
            out[:, i * (t + gap) : i * (t + gap) + t] = self.tiles[i]
        return out


def render_unit_tiles(
    layer: LayerResults,
    dictionary: FaceDictionary,
    units: Iterable[int],
    *,
    size: int = THUMB_SIZE,
    chunk: int = FETCH_CHUNK,
) -> dict[int, UnitTiles]:
    """Render the top images of ``units``; each dictionary image is fetched once (chunked random access).

    Needs ``layer.top_images``; ``layer.top_maps`` is optional (without it only the concept is drawn).
    """
    if layer.top_images is None:
        raise HndError(f"{layer.path}: no 'top_images' stored, cannot show the units' top images")
    units = [int(u) for u in units]
    s = int(dictionary.image_size)
    n = int(dictionary.num_local)
    if tuple(dictionary.taxonomy.concept_names) != layer.concepts:
        raise HndError(
            f"{layer.path}: the dictionary's concepts differ from the results' concepts"
            " (open it with the taxonomy the run used)"
        )
    top = layer.top_images
    k = top.shape[1]
    wanted = top[units] if units else np.zeros((0, k), dtype=np.int64)
    if np.any(wanted >= n):
        raise HndError(f"{layer.path}: 'top_images' refers to image {int(wanted.max())} but the dictionary has {n}")
    users: dict[int, list[tuple[int, int]]] = {}
    for row, u in enumerate(units):
        for slot in range(k):
            idx = int(wanted[row, slot])
            if idx >= 0:
                users.setdefault(idx, []).append((u, slot))

    tiles = {u: np.full((k, size, size, 3), 235, dtype=np.uint8) for u in units}
    fractions = {u: np.full((k,), np.nan, dtype=np.float64) for u in units}
    order = np.array(sorted(users), dtype=np.int64)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        batch = dictionary.get_local(idx, with_masks=True)
        if batch.images.shape[1:3] != (s, s):
            raise HndError(f"dictionary returned images of shape {batch.images.shape[1:3]}, expected ({s}, {s})")
        for j, image_index in enumerate(np.asarray(batch.index, dtype=np.int64)):
            for u, slot in users.get(int(image_index), []):
                active = None
                if layer.top_maps is not None:
                    active = upsample_bilinear(layer.top_maps[u, slot], s) > layer.thresholds[u]
                    fractions[u][slot] = float(active.mean())
                c = int(layer.top_concept[u])
                mask = batch.masks[j, c] if (c >= 0 and batch.masks is not None) else None
                tiles[u][slot] = render_tile(batch.images[j], active, mask, size)
    return {
        u: UnitTiles(unit=u, tiles=tiles[u], indices=top[u].copy(), active_fraction=fractions[u]) for u in units
    }
