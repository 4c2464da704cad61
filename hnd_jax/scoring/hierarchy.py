"""Finalization of HND scores from accumulated statistics (DESIGN.md §2), as pure NumPy functions.

Everything here runs once per layer on small arrays (``[U, C]`` counts, ``[N, U]`` per-image maxima),
so it is plain vectorised NumPy in float64, without Python loops over units or images (loops run
over the handful of regions and global groups only). Inputs are exact (integer counts, float32 maxima
that do not depend on the device count), so the outputs are identical on 1 or 8 devices.

Guards (the spec's "probability 0, not NaN"): a unit with ``hi == lo`` has ``a_u(x) = 0``; a concept
with no labelled image (empty ``I_c``) or no IoU support (NaN IoU) scores 0; a zero sum of scores
gives probability 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def iou_from_counts(intersection: np.ndarray, union: np.ndarray, dtype=np.float32) -> np.ndarray:
    """IoU [U, C] = intersection / union, NaN where the union is 0 (no support).

    Decisions (top concept, localizable, scores) use ``dtype=np.float64`` so that an IoU of exactly
    the threshold (e.g. 1/25 against 0.04) is decided on the exact ratio; results store float32.
    """
    inter = np.asarray(intersection, np.float64)
    uni = np.asarray(union, np.float64)
    out = np.full(inter.shape, np.nan, np.float64)
    np.divide(inter, uni, out=out, where=uni > 0)
    return out.astype(dtype)


def top_concepts(
    iou: np.ndarray,
    concept_region_index: np.ndarray,
    regions: Sequence[str],
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best concept of every unit, whether it is localizable, and its region (DESIGN.md §2).

    Returns ``top_concept`` [U] int64 (argmax of IoU ignoring NaN, first concept on ties; -1 when
    the unit's best IoU is 0 or every IoU is NaN: such a unit has no top concept, never the first
    concept of the axis), ``localizable`` [U] bool (best IoU >= ``iou_threshold``; False when
    ``top_concept`` is -1) and ``region`` [U] str ('' when not localizable).
    """
    iou = np.asarray(iou)
    supported = ~np.isnan(iou)
    filled = np.where(supported, iou, -np.inf)
    top = np.argmax(filled, axis=1).astype(np.int64) if iou.shape[1] else np.zeros(iou.shape[0], np.int64)
    best = filled[np.arange(iou.shape[0]), top] if iou.shape[1] else np.full(iou.shape[0], -np.inf)
    has_top = best > 0  # False for 0, -inf (all NaN) and when there is no concept
    top = np.where(has_top, top, -1)
    localizable = has_top & (best >= iou_threshold)
    region_names = np.asarray(list(regions) + [""])
    unit_region_index = np.where(localizable, np.asarray(concept_region_index)[np.maximum(top, 0)], -1)
    region = region_names[unit_region_index]  # -1 picks the trailing ''
    return top, localizable, region.astype(str)


def ascending_rank_fraction(values: np.ndarray) -> np.ndarray:
    """``r(x)`` per column: ascending rank (1..n, ties broken by row order) divided by n. [n, U] float64."""
    values = np.asarray(values)
    n = values.shape[0]
    out = np.empty(values.shape, np.float64)
    if n == 0:
        return out
    order = np.argsort(values, axis=0, kind="stable")
    ranks = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64)[:, None], values.shape)
    np.put_along_axis(out, order, ranks, axis=0)
    del order
    out /= n  # in place: one [n, U] float64 array less at the peak
    return out


def normalised_activation(image_max: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``a_u(x) = (m_u(x) - lo_u) / (hi_u - lo_u)`` [n, U] float64; 0 for units with ``hi == lo``."""
    lo64 = np.asarray(lo, np.float64)
    span = np.asarray(hi, np.float64) - lo64
    live = span > 0
    out = np.subtract(image_max, lo64, dtype=np.float64)  # float32 -> float64 is exact: (m - lo) as before
    np.divide(out, span, out=out, where=live[None, :])  # in place: no float64 copy of m and no temporary
    out[:, ~live] = 0.0
    return out


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape), np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def local_probabilities(
    iou: np.ndarray,
    image_max: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    labelled: np.ndarray,
    region_members: np.ndarray,
    unit_region_index: np.ndarray,
    pair_factor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Within-region probabilities ``P(c|u)`` [U, C] float32 and pairing flags [U, C] bool.

    iou [U, C]; image_max [N, U] (m_u(x), dictionary order); lo/hi [U] over all local images and
    positions; labelled [N, C] bool; region_members [R, C] bool; unit_region_index [U] int (-1 for
    units that are not localizable: they get all zeros). For a unit of region R, over the images I_R
    labelled with any concept of R: ``S(c|u) = mean_{x in I_c} r_u(x) a_u(x) * IoU(u, c)`` and
    ``P(c|u) = S(c|u) / sum_{c' in R} S(c'|u)``; paired when ``P(c|u) > pair_factor / |R|``.
    """
    iou = np.asarray(iou)
    labelled = np.asarray(labelled, bool)
    region_members = np.asarray(region_members, bool)
    unit_region_index = np.asarray(unit_region_index)
    U, C = iou.shape
    probs = np.zeros((U, C), np.float64)
    paired = np.zeros((U, C), bool)
    for r in range(region_members.shape[0]):
        units = np.flatnonzero(unit_region_index == r)
        members = np.flatnonzero(region_members[r])
        if units.size == 0 or members.size == 0:
            continue
        lab_r = labelled[:, members]
        in_region = lab_r.any(axis=1)  # I_R
        if not in_region.any():
            continue
        m = np.asarray(image_max)[np.ix_(np.flatnonzero(in_region), units)]  # [n_R, U_r], dictionary order kept
        # a_u(x) of the region's images and units only (elementwise: the same values as over all
        # [N, U], without a float64 copy of the whole image_max)
        a = normalised_activation(m, np.asarray(lo)[units], np.asarray(hi)[units])
        weight = ascending_rank_fraction(m) * a  # r_u(x) * a_u(x)
        lab_in = lab_r[in_region].astype(np.float64)  # [n_R, C_r]
        sums = weight.T @ lab_in  # [U_r, C_r]
        mean = _safe_divide(sums, lab_in.sum(axis=0)[None, :])  # empty I_c -> 0
        support = np.nan_to_num(iou[np.ix_(units, members)].astype(np.float64), nan=0.0)
        score = mean * support
        p = _safe_divide(score, score.sum(axis=1, keepdims=True))
        probs[np.ix_(units, members)] = p
        paired[np.ix_(units, members)] = p > pair_factor / members.size
    return probs.astype(np.float32), paired


def global_probabilities(
    image_max: np.ndarray,
    group: np.ndarray,
    num_groups: int,
    lo: np.ndarray,
    hi: np.ndarray,
    cutoff: float,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Global-family probabilities ``P(g|u)`` [U, G] (``dtype``, float32 by default; the flags are
    always decided in float64) and ``biased`` [U, G] bool.

    image_max [n_F, U] over the family's images (family image order), group [n_F] int in 0..G-1,
    lo/hi [U] over the family's images. Ranks run over the whole family;
    ``S(g|u) = sum_{x in g} r_u(x) a_u(x) / n_g``, ``P = S / sum_g S``; biased when ``P >= cutoff``.
    """
    group = np.asarray(group, np.int64)
    m = np.asarray(image_max)
    weight = ascending_rank_fraction(m)
    weight *= normalised_activation(m, lo, hi)  # [n_F, U] r_u(x) a_u(x), in place
    onehot = (group[:, None] == np.arange(num_groups)[None, :]).astype(np.float64)  # [n_F, G]
    score = _safe_divide(weight.T @ onehot, onehot.sum(axis=0)[None, :])  # empty group -> 0
    p = _safe_divide(score, score.sum(axis=1, keepdims=True))
    return p.astype(dtype), p >= cutoff


def top_images(image_max: np.ndarray, k: int = 4) -> np.ndarray:
    """[U, k] int64: the dictionary indices of each unit's k highest ``m_u(x)`` (ties: lower index first)."""
    m = np.asarray(image_max)
    N, U = m.shape
    k = min(k, N)
    if k == 0 or U == 0:
        return np.zeros((U, k), np.int64)
    # Only images at or above each unit's k-th largest value can be in its top k (a partition, O(N)),
    # then those few candidates are ordered by (value descending, index ascending).
    kth = -np.partition(-m, k - 1, axis=0)[k - 1]  # [U]
    unit, image = np.nonzero((m >= kth[None, :]).T)  # sorted by unit, then image
    order = np.lexsort((image, -m[image, unit], unit))  # lexsort is stable: ties keep the lower index first
    counts = np.bincount(unit, minlength=U)  # >= k for every unit
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    picks = order[first[:, None] + np.arange(k)[None, :]]
    return image[picks].astype(np.int64)
