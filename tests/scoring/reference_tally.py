"""A plain NumPy reference of the IoU tally (DESIGN.md §2), per image, per unit, per pixel.

Written from the spec, independent of ``hnd_jax.scoring``: explicit loops, obvious and slow. The
bilinear upsampling follows the half-pixel-centre formula with edge clamping, pixel by pixel, and
evaluates each interpolation with the engine's documented float rule (two float64 products of
weights on a 2**-24 grid with float32 values, one float64 sum; rows first, rounded to float32,
then columns, kept in float64 and compared with float64(T) (DESIGN.md §2: never decided after a
final float32 rounding); float32 subnormals count as zero, and so do float64 values below the
smallest normal float32), so that boundary pixels are decided with the same bits.
"""

from __future__ import annotations

import math

import numpy as np


def source_position(o: int, n_in: int, size: int) -> tuple[int, int, float, float]:
    """Output index ``o`` of ``size`` reads inputs ``i0, i1`` of ``n_in`` with weights ``w0, w1``."""
    src = (o + 0.5) * n_in / size - 0.5
    k = math.floor(src)
    frac = round((src - k) * 2**24) / 2**24
    if frac >= 1.0:
        k, frac = k + 1, 0.0
    i0 = min(max(k, 0), n_in - 1)
    i1 = min(max(k + 1, 0), n_in - 1)
    return i0, i1, 1.0 - frac, frac


def flush(v) -> np.float32:
    """float32 subnormals count as zero (the engine's documented rule, as XLA's flush-to-zero)."""
    v = np.float32(v)
    return np.float32(0.0) if abs(v) < np.finfo(np.float32).tiny else v


def interpolate(a: float, b: float, w0: float, w1: float) -> np.float32:
    """Row stage: rounded to float32."""
    return flush(np.float64(w0) * np.float64(flush(a)) + np.float64(w1) * np.float64(flush(b)))


def interpolate64(a: float, b: float, w0: float, w1: float) -> np.float64:
    """Column (final) stage: the float64 value itself, the one compared with the threshold."""
    v = np.float64(w0) * np.float64(flush(a)) + np.float64(w1) * np.float64(flush(b))
    return np.float64(0.0) if abs(v) < np.float64(np.finfo(np.float32).tiny) else v


def upsample(a: np.ndarray, size: int) -> np.ndarray:
    """Bilinear ``h x w -> size x size`` of one map, pixel by pixel (rows first, then columns): float64."""
    h, w = a.shape
    rows = np.empty((size, w), np.float32)
    for y in range(size):
        i0, i1, w0, w1 = source_position(y, h, size)
        for j in range(w):
            rows[y, j] = interpolate(a[i0, j], a[i1, j], w0, w1)
    out = np.empty((size, size), np.float64)
    for x in range(size):
        j0, j1, w0, w1 = source_position(x, w, size)
        for y in range(size):
            out[y, x] = interpolate64(rows[y, j0], rows[y, j1], w0, w1)
    return out


def tally(acts_nhwc, masks, labelled, family, concept_family, thresholds, size, mode, valid=None):
    """``(intersection, union)`` int64 ``[U, C]`` by the definition, over rows with ``valid``."""
    N, U, C = acts_nhwc.shape[0], acts_nhwc.shape[-1], masks.shape[1]
    valid = np.ones(N, bool) if valid is None else valid
    inter = np.zeros((U, C), np.int64)
    union = np.zeros((U, C), np.int64)
    for x in range(N):
        if not valid[x]:
            continue
        for u in range(U):
            b = upsample(acts_nhwc[x, :, :, u], size) > np.float64(flush(thresholds[u]))
            for c in range(C):
                m = masks[x, c].astype(bool)
                inter[u, c] += int(np.logical_and(b, m).sum())
                if mode == "family":
                    use = family[x] == concept_family[c]
                elif mode == "labeled":
                    use = bool(labelled[x, c])
                elif mode == "official":
                    use = bool(labelled[x, c]) and bool(b.any())
                else:
                    raise ValueError(mode)
                if use:
                    union[u, c] += int(np.logical_or(b, m).sum())
    return inter, union
