"""The naive scoring the benchmark compares against: per image, per unit, per label, in NumPy.

What a straightforward port of the published code does (it used threaded OpenCV resizes): for every
image and unit, upsample the map bilinearly to S x S (half-pixel centres, edge clamping, as two
small float32 interpolation matrices: ``Wy @ A @ Wx.T``), threshold it, then for every concept of
the image's family a logical and/or with the mask ('family' IoU mode). Thresholds are
``numpy.quantile`` over all values of each unit. Deliberately unoptimised beyond NumPy's own
vectorisation of one map; it is the yardstick, not a competitor.
"""

from __future__ import annotations

import numpy as np


def interpolation_matrix(n_in: int, size: int, dtype=np.float32) -> np.ndarray:
    """``[size, n_in]`` bilinear weights (float32 by default), half-pixel centres, edge clamping."""
    src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = src - i0
    m = np.zeros((size, n_in), np.float64)
    np.add.at(m, (np.arange(size), i0), 1 - f)
    np.add.at(m, (np.arange(size), i1), f)
    return m.astype(dtype)


def naive_thresholds(acts_nhwc: np.ndarray, q: float) -> np.ndarray:
    U = acts_nhwc.shape[-1]
    return np.quantile(acts_nhwc.reshape(-1, U), 1 - q, axis=0).astype(np.float32)


def naive_tally(acts_nhwc, masks, labelled, family, concept_family, thresholds, size):
    """'family' mode counts ``(intersection, union)`` int64 [U, C], one image and one unit at a time."""
    N, h, w, U = acts_nhwc.shape
    C = masks.shape[1]
    wy, wx = interpolation_matrix(h, size), interpolation_matrix(w, size)
    inter = np.zeros((U, C), np.int64)
    union = np.zeros((U, C), np.int64)
    for x in range(N):
        members = np.flatnonzero(concept_family == family[x])
        for u in range(U):
            b = (wy @ acts_nhwc[x, :, :, u] @ wx.T) > thresholds[u]
            area = int(b.sum())
            for c in members:
                if labelled[x, c]:
                    m = masks[x, c]
                    inter[u, c] += int(np.logical_and(b, m).sum())
                    union[u, c] += int(np.logical_or(b, m).sum())
                else:
                    union[u, c] += area
    return inter, union
