"""The run-length IoU tally kernel: exact per-pixel counts without visiting the pixels (CPU path).

Brute force upsamples and thresholds ``N * U * S * S`` pixels (21 billion in the "cpu-medium"
benchmark); on a 2-core CPU that is no faster than the published OpenCV code. This kernel does
less work and stays exact, using three facts about the shared formula of
:mod:`hnd_jax.scoring.upsample` (the same bits as the dense path, which the tests check):

1. **Bounds.** Every interpolated value is a convex combination of two float32 values, computed
   with rounding only, and rounding never leaves the interval between two representable numbers:
   so ``min(a, b) <= lerp(a, b) <= max(a, b)`` exactly. A map whose raw maximum is ``<= T_u`` has
   no pixel above threshold, and a row segment between two column centres whose end values are
   both ``<= T_u`` (or both ``> T_u``) is entirely out (or in). Since ``T_u`` is a tail quantile,
   at most ``q * h * w`` of the maps (8% for 4x4 maps, q = 0.005) are *active* at all.
2. **Monotonicity.** Along an output row between two column centres the value is
   ``float64(w0(x)*a + w1(x)*b)`` (compared with ``float64(T_u)``, never rounded to float32) with
   ``w1`` increasing in ``x``; the exact value is linear in ``w1`` and rounding is monotone, so the pixels above threshold form one prefix or suffix of the
   segment. A vectorised binary search with the exact formula finds its end in
   ``ceil(log2(segment length + 1))`` evaluations: boundary pixels are decided by the same float
   formula as the dense path, never by an analytic estimate.
3. **Runs.** With each row's above-threshold set as at most ``w + 1`` intervals, a mask run
   ``[start, end)`` on that row intersects it in ``sum_s |[start, end) & [lo_s, hi_s)|`` pixels:
   O(runs) per unit instead of O(S^2), and only for (unit, row) pairs that fire at all.

Everything is vectorised NumPy over (active map, row, segment) and over (run, firing row); there
are no Python loops over units, pixels or images (only over chunks of active maps, to bound memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hnd_jax.scoring.runs import MaskRuns
from hnd_jax.scoring.upsample import AxisWeights, axis_weights, flush64_np, upsample_rows_np

#: Active maps are processed in chunks so that the per-(map, row, segment) arrays stay near this size.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class RowSegments:
    """The output columns grouped by the pair of input columns they interpolate between.

    start, end: int32 [G] pixel ranges ``[start, end)``; j0, j1: int32 [G] input columns
    (``j0 == j1`` on the clamped borders, where the value is constant).
    """

    start: np.ndarray
    end: np.ndarray
    j0: np.ndarray
    j1: np.ndarray

    @property
    def count(self) -> int:
        return int(self.start.shape[0])


def row_segments(ax: AxisWeights) -> RowSegments:
    """Split ``0..S-1`` into maximal ranges with the same source columns ``(i0, i1)``."""
    key = ax.i0.astype(np.int64) * (int(ax.i1.max()) + 1) + ax.i1
    cut = np.flatnonzero(np.diff(key)) + 1
    start = np.concatenate([[0], cut]).astype(np.int32)
    end = np.concatenate([cut, [ax.size]]).astype(np.int32)
    return RowSegments(start=start, end=end, j0=ax.i0[start], j1=ax.i1[start])


@dataclass(frozen=True)
class RunCounts:
    """Per-batch counts from :func:`run_length_counts`.

    area: int64 [n, U], ``|B_u(x)|`` for every image and unit.
    image, unit, concept, inter: int64 [K], the non-zero ``|B_u(x) AND M_c(x)|`` as sparse entries
    (each (image, unit, concept) at most once).
    """

    area: np.ndarray
    image: np.ndarray
    unit: np.ndarray
    concept: np.ndarray
    inter: np.ndarray


def _above_intervals(rows: np.ndarray, thresholds: np.ndarray, seg: RowSegments, ax: AxisWeights):
    """For first-stage rows ``[r, w]`` (one output row of one map each) and their thresholds ``[r]``:
    the above-threshold interval ``[lo, hi)`` of every (row, segment), int32 ``[r, G]`` each."""
    a = rows[:, seg.j0]  # [r, G] float32
    b = rows[:, seg.j1]
    t = thresholds[:, None]
    xs = np.broadcast_to(seg.start, a.shape)
    xe = np.broadcast_to(seg.end, a.shape)
    whole = np.minimum(a, b) > t
    lo = np.where(whole, xs, xe).astype(np.int32)  # default: the empty interval [xe, xe)
    hi = xe.astype(np.int32, copy=True)
    partial = (np.maximum(a, b) > t) & ~whole
    idx = np.nonzero(partial)
    if idx[0].size:
        pa, pb_, pt64 = a[idx], b[idx], thresholds[idx[0]].astype(np.float64)
        pa64, pb64 = pa.astype(np.float64), pb_.astype(np.float64)
        s_lo, s_hi = xs[idx].astype(np.int64), xe[idx].astype(np.int64)
        decreasing = pb_ < pa
        # First x in [s_lo, s_hi] where pred(x) := (V(x) > T) XOR decreasing turns true.
        left, right = s_lo.copy(), s_hi.copy()
        longest = int((seg.end - seg.start).max())
        for _ in range(int(np.ceil(np.log2(longest + 1)))):
            open_ = left < right
            mid = (left + right) // 2
            col = np.minimum(mid, ax.size - 1)
            v = flush64_np(ax.w0[col] * pa64 + ax.w1[col] * pb64)  # lerp64_np, inlined: decided in float64
            pred = (v > pt64) ^ decreasing
            right = np.where(open_ & pred, mid, right)
            left = np.where(open_ & ~pred, mid + 1, left)
        k = left.astype(np.int32)
        lo[idx] = np.where(decreasing, s_lo, k)
        hi[idx] = np.where(decreasing, k, s_hi)
    return lo, hi


def run_length_counts(acts: np.ndarray, runs: MaskRuns, thresholds: np.ndarray, image_size: int) -> RunCounts:
    """Areas and intersections of ``B_u(x) = [up(A_u(x)) > T_u]`` with the masks given as runs.

    acts: float32 ``[n, h, w, U]`` (real images only, finite values); runs: the masks of the same
    ``n`` images; thresholds: float32 ``[U]``. Bit-identical to thresholding the dense upsampled maps.
    """
    acts = np.asarray(acts, np.float32)
    n, h, w, U = acts.shape
    S = int(image_size)
    T = np.asarray(thresholds, np.float32)
    ax = axis_weights(w, S)
    seg = row_segments(ax)
    area = np.zeros((n, U), np.int64)
    empty = np.zeros(0, np.int64)
    if n == 0:
        return RunCounts(area, empty, empty, empty, empty)

    # 1. Active maps: the raw maximum bounds every interpolated value (module docstring, fact 1).
    active = acts.reshape(n, h * w, U).max(axis=1) > T[None, :]
    pair_img, pair_unit = np.nonzero(active)  # image-major order

    run_key = runs.image.astype(np.int64) * S + runs.row
    run_order = np.argsort(run_key, kind="stable")
    run_key_sorted = run_key[run_order]
    out_img, out_unit, out_con, out_cnt = [], [], [], []
    C_bound = int(runs.concept.max()) + 1 if runs.num_runs else 1

    chunk = max(1, CHUNK_ELEMENTS // (S * max(w, seg.count)))
    for begin in range(0, pair_img.size, chunk):
        pimg = pair_img[begin : begin + chunk]
        punit = pair_unit[begin : begin + chunk]
        maps = acts[pimg, :, :, punit]  # [p, h, w]
        rows = upsample_rows_np(maps, S)  # [p, S, w]
        # 2. Active rows: the row's maximum bounds the row (fact 1 again); only those are resolved.
        t_pair = T[punit]
        rp, ry = np.nonzero(rows.max(axis=2) > t_pair[:, None])
        lo, hi = _above_intervals(rows[rp, ry], t_pair[rp], seg, ax)  # [r, G]
        row_count = (hi - lo).sum(axis=1, dtype=np.int64)  # [r]
        area[pimg, punit] = np.bincount(rp, weights=row_count, minlength=pimg.size).astype(np.int64)
        if not runs.num_runs:
            continue

        # 3. Join every mask run with the firing rows (map, row) of the same image and row.
        fire = np.flatnonzero(row_count)
        entry_key = pimg[rp[fire]].astype(np.int64) * S + ry[fire]
        order = np.argsort(entry_key, kind="stable")
        entry_row, entry_key = fire[order], entry_key[order]
        first = np.searchsorted(entry_key, run_key_sorted, side="left")
        count = np.searchsorted(entry_key, run_key_sorted, side="right") - first
        total = int(count.sum())
        if total == 0:
            continue
        run_of_item = np.repeat(np.arange(run_key_sorted.size), count)
        offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        e = entry_row[first[run_of_item] + offset]  # index into the active rows
        r = run_order[run_of_item]
        x0 = runs.start[r][:, None]
        x1 = runs.end[r][:, None]
        overlap = np.minimum(x1, hi[e]) - np.maximum(x0, lo[e])  # [J, G]
        inter = np.maximum(overlap, 0).sum(axis=1, dtype=np.int64)

        # 4. Sum over the runs of each (map, concept).
        key = rp[e].astype(np.int64) * C_bound + runs.concept[r]
        sums = np.bincount(key, weights=inter, minlength=pimg.size * C_bound)
        nz = np.flatnonzero(sums)
        out_img.append(pimg[nz // C_bound])
        out_unit.append(punit[nz // C_bound])
        out_con.append(nz % C_bound)
        out_cnt.append(np.rint(sums[nz]).astype(np.int64))

    def cat(parts):
        return np.concatenate(parts).astype(np.int64) if parts else empty

    return RunCounts(area, cat(out_img), cat(out_unit), cat(out_con), cat(out_cnt))
