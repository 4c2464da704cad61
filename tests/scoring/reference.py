"""A plain NumPy reference of DESIGN.md §2, written from the spec, independent of hnd_jax.scoring.

Explicit loops over units, images and concepts on purpose: it is slow and obvious. Only the tests use it.
"""

from __future__ import annotations

import numpy as np


def thresholds(acts_nhwc: np.ndarray, q: float) -> np.ndarray:
    """T_u = numpy.quantile of every raw value of unit u, 1 - q, linear interpolation."""
    U = acts_nhwc.shape[-1]
    return np.array([np.quantile(acts_nhwc[..., u].ravel(), 1 - q) for u in range(U)], dtype=np.float32)


def lo_hi(acts_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    U = acts_nhwc.shape[-1]
    lo = np.array([acts_nhwc[..., u].min() for u in range(U)], np.float32)
    hi = np.array([acts_nhwc[..., u].max() for u in range(U)], np.float32)
    return lo, hi


def image_max(acts_nhwc: np.ndarray) -> np.ndarray:
    N, U = acts_nhwc.shape[0], acts_nhwc.shape[-1]
    out = np.empty((N, U), np.float32)
    for x in range(N):
        for u in range(U):
            out[x, u] = acts_nhwc[x, :, :, u].max()
    return out


def upsample(a: np.ndarray, S: int) -> np.ndarray:
    """Bilinear h x w -> S x S, half-pixel centres, edge clamping (float32 arithmetic)."""
    h, w = a.shape

    def axis(n):
        src = (np.arange(S, dtype=np.float64) + 0.5) * n / S - 0.5
        src = np.clip(src, 0, n - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (src - i0)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    out = np.empty((S, S), np.float64)
    for i in range(S):
        for j in range(S):
            top = a[y0[i], x0[j]] * (1 - fx[j]) + a[y0[i], x1[j]] * fx[j]
            bot = a[y1[i], x0[j]] * (1 - fx[j]) + a[y1[i], x1[j]] * fx[j]
            out[i, j] = top * (1 - fy[i]) + bot * fy[i]
    return out


def tally(acts_nhwc, masks, labelled, family, concept_family, T, S, mode):
    """inter/union [U, C] int64 per the three IoU modes."""
    N, U, C = acts_nhwc.shape[0], acts_nhwc.shape[-1], masks.shape[1]
    inter = np.zeros((U, C), np.int64)
    union = np.zeros((U, C), np.int64)
    for x in range(N):
        for u in range(U):
            b = upsample(acts_nhwc[x, :, :, u], S) > T[u]
            for c in range(C):
                if mode == "family":
                    use = family[x] == concept_family[c]
                elif mode == "labeled":
                    use = labelled[x, c]
                else:
                    use = labelled[x, c] and b.any()
                m = masks[x, c]
                inter[u, c] += np.logical_and(b, m).sum()
                if use:
                    union[u, c] += np.logical_or(b, m).sum()
    return inter, union


def iou(inter, union):
    """Exact ratios in float64 (the library stores them as float32)."""
    U, C = inter.shape
    out = np.empty((U, C), np.float64)
    for u in range(U):
        for c in range(C):
            out[u, c] = np.nan if union[u, c] == 0 else inter[u, c] / union[u, c]
    return out


def top_concept(iou_uc, concept_region, threshold):
    """(top [U], localizable [U], region [U] str) with NaN ignored; -1 when the best IoU is 0 or all NaN."""
    U, C = iou_uc.shape
    top = np.full(U, -1, np.int64)
    loc = np.zeros(U, bool)
    reg = []
    for u in range(U):
        best, arg = None, -1
        for c in range(C):
            v = iou_uc[u, c]
            if np.isnan(v):
                continue
            if best is None or v > best:
                best, arg = v, c
        if best is None or best == 0:
            arg = -1
        top[u] = arg
        loc[u] = arg >= 0 and best >= threshold
        reg.append(concept_region[arg] if loc[u] else "")
    return top, loc, np.array(reg, dtype=str)


def _ranks(values):
    """r(x): ascending rank with ties broken by position, divided by n (a plain sorted() over pairs)."""
    n = len(values)
    order = sorted(range(n), key=lambda i: (values[i], i))
    r = np.empty(n)
    for pos, i in enumerate(order):
        r[i] = (pos + 1) / n
    return r


def _a(m, lo, hi):
    return 0.0 if hi == lo else (float(m) - float(lo)) / (float(hi) - float(lo))


def local_probs(iou_uc, image_max_nu, lo, hi, labelled, concept_region, regions_of_units, pair_factor):
    U, C = iou_uc.shape
    probs = np.zeros((U, C))
    paired = np.zeros((U, C), bool)
    for u in range(U):
        R = regions_of_units[u]
        if R == "":
            continue
        members = [c for c in range(C) if concept_region[c] == R]
        I_R = [x for x in range(labelled.shape[0]) if any(labelled[x, c] for c in members)]
        if not I_R:
            continue
        r = dict(zip(I_R, _ranks([image_max_nu[x, u] for x in I_R])))
        S = {}
        for c in members:
            I_c = [x for x in I_R if labelled[x, c]]
            v = iou_uc[u, c]
            if not I_c or np.isnan(v):
                S[c] = 0.0
                continue
            S[c] = sum(r[x] * _a(image_max_nu[x, u], lo[u], hi[u]) for x in I_c) / len(I_c) * float(v)
        total = sum(S.values())
        for c in members:
            probs[u, c] = 0.0 if total == 0 else S[c] / total
            paired[u, c] = probs[u, c] > pair_factor / len(members)
    return probs, paired


def global_probs(image_max_nu, group, num_groups, lo, hi, cutoff):
    n, U = image_max_nu.shape
    probs = np.zeros((U, num_groups))
    for u in range(U):
        r = _ranks(list(image_max_nu[:, u]))
        S = []
        for g in range(num_groups):
            members = [x for x in range(n) if group[x] == g]
            S.append(0.0 if not members else sum(r[x] * _a(image_max_nu[x, u], lo[u], hi[u]) for x in members) / len(members))
        total = sum(S)
        for g in range(num_groups):
            probs[u, g] = 0.0 if total == 0 else S[g] / total
    return probs, probs >= cutoff
