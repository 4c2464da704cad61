"""Significance of HND's biased and paired units (DESIGN.md §2c): permutation test, AUC test, BH.

Three pieces, each usable alone:

* :func:`global_permutation_test`: for a global family F, the null hypothesis is that the group
  labels are exchangeable over F's images. ``S(g|u) = sum_x w_u(x) [label(x) = g] / n_g`` with
  ``w_u(x) = r_u(x) a_u(x)`` is linear in the one-hot labels, so a block of K permutations is one
  matrix product ``w^T [n, U] x onehot [n, K*G]`` (a jit'ed JAX kernel, scanned over blocks). The
  permutations come from :func:`permutation_indices` (NumPy ``Generator`` from the seed), so a
  reference can reuse them. p-value (Phipson & Smyth 2010, the "+1" keeps it a valid p-value):
  ``p(u,g) = (1 + #{perm: P_perm(g|u) >= P(g|u) - TIE_TOLERANCE}) / (1 + n_perm)``.
* :func:`auc_test`: for local concept c over the images of c's family, the AUC of the per-image
  max ``m_u(x)`` of images labelled c against the family's other images (ties 1/2), i.e. the
  Mann-Whitney ``U1 / (n1 n0)``, with the one-sided p-value for AUC > 0.5 from the normal
  approximation with tie correction and continuity correction 1/2, exactly what
  ``scipy.stats.mannwhitneyu(x1, x0, alternative='greater', method='asymptotic')`` returns with
  its default ``use_continuity=True``: ``z = (U1 - n1 n0 / 2 - 1/2) / sigma``,
  ``sigma^2 = n1 n0 / 12 * ((n + 1) - sum_t (t^3 - t) / (n (n - 1)))`` (t: sizes of tie groups of
  the family's values), ``p = 1 - Phi(z)``. Ranks are computed once per unit and family; the rank
  sums of every concept are one product with the labelled matrix.
* :func:`benjamini_hochberg`: BH adjusted p-values (Benjamini & Hochberg 1995; the values of
  ``scipy.stats.false_discovery_control(p, method='bh')``) and the rejections at level alpha.

Resolution: a permutation p-value is at least 1 / (1 + n_perm), and BH over m tests rejects the k
smallest only if p_(k) <= k alpha / m; with the default 1000 permutations a layer's biased units can
be significant only when at least about 2% of its m = U * sum_F G_F tests reach the smallest p-values
(alpha 0.05). Few strong effects among many units need more permutations (``--permutations``).

Degenerate cases give p = 1, never NaN: a constant unit (every permuted P equals the observed one;
every value tied, so z = -inf), an empty group (P = 0 always). Pairs that cannot be tested (a
concept with no labelled image, or labelled on every image of its family, so n1 = 0 or n0 = 0)
get AUC NaN and p = 1 and are left out of BH's count of tests.

The scoring kernels are NumPy/JAX only (no SciPy at run time); SciPy is the tests' reference.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hnd_jax.scoring.hierarchy import ascending_rank_fraction, normalised_activation

#: A permuted P(g|u) counts as at least as extreme as the observed one when it is within this much
#: below it. The kernel sums in float32 (accelerator-friendly) while P is observed in float64, so a
#: permutation that only reorders a group's images (same P exactly) must not be lost to rounding;
#: counting near-ties as extreme is the conservative side. P lies in [0, 1].
TIE_TOLERANCE = 1e-5
#: Upper bound on the one-hot block ``[K, n, G]`` float32 values per scan step (memory knob).
BLOCK_VALUES = 1 << 23
#: Bias weights ``r_u(x) a_u(x)`` in [0, 1] are rounded to multiples of this for the permutation
#: sums (a change of at most 3e-8 in a weight, far below the comparison tolerance): their sums are
#: then exact in float64, so the test's results do not depend on summation order or device count.
WEIGHT_QUANTUM = 2.0**-24
#: Values ``[n, units]`` per block of units in :func:`auc_test` (its rank buffers are ~40 bytes per value).
AUC_BLOCK_VALUES = 1 << 21
#: Permutations per block are a multiple of this (a device count up to it divides a block evenly).
BLOCK_MULTIPLE = 64
#: Upper bound on the permuted labels ``[blocks, K, n]`` drawn and sent to the kernel at once (about
#: 20 bytes each on the host while drawn): the permutations are drawn chunk by chunk from one
#: generator (the same rows as :func:`permutation_indices` at once) so memory does not grow with
#: their number (``MAX_PERMUTATIONS`` in ``hnd_jax/scoring/config.py`` bounds the time).
CHUNK_VALUES = 1 << 24


def permutation_indices(num_images: int, num_permutations: int, seed: int | Sequence[int]) -> np.ndarray:
    """``[num_permutations, num_images]`` int64: independent uniform permutations of ``0..n-1``.

    Row k is permutation k; permuted labels are ``group[perm[k]]``, which keeps the group sizes.
    ``seed`` is anything :func:`numpy.random.default_rng` takes (an int, or a list of ints such as
    ``[config.seed, family_position]``); the same seed gives the same permutations on every machine.
    """
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.arange(num_images, dtype=np.int64), (num_permutations, num_images))
    return rng.permuted(base, axis=1)


def bias_weights(image_max: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``w_u(x) = r_u(x) a_u(x)`` [n, U] float64 over one global family (DESIGN.md §2, global concepts)."""
    m = np.asarray(image_max)
    out = ascending_rank_fraction(m)
    out *= normalised_activation(m, lo, hi)  # in place: one [n, U] float64 array less at the peak
    return out


@functools.partial(jax.jit, static_argnames=("num_groups",))
def _permutation_counts(weight, labels, valid, observed, inv_size, count, total, *, num_groups):
    """Scan over blocks of permutations, in float64 (call under ``jax.enable_x64``).

    weight [n, U] f64 on the 2**-24 grid (:data:`WEIGHT_QUANTUM`); labels [B, K, n] int32 (permuted
    group labels, B blocks of K); valid [B, K] bool (padding rows off); observed [U, G] f64; inv_size
    [G] f64 (1 / n_g, 0 for empty groups); count [U, G] int32 and total [K, U, G] f64: the carry of the
    chunks before (zeros for the first), so a run of chunks adds in the same order as one scan.
    Returns (#{P_perm >= observed - tol} [U, G] int32, sum of P_perm over the blocks [K, U, G] f64).

    Why it does not depend on the device count: every weight is a multiple of 2**-24 in [0, 1], so
    each group sum ``weight^T onehot`` is an exact float64 integer multiple of 2**-24 whatever order
    the product sums in (a device's share of a block changes the shape of the product, and with it
    XLA's summation order); the sum over groups is written as explicit additions in group order; the
    sums over permutations are kept per position k of a block (summed in block order) and added on
    the host.
    """
    groups = jnp.arange(num_groups, dtype=labels.dtype)

    def step(carry, block):
        count, total = carry
        lab, ok = block
        onehot = (lab[:, :, None] == groups).astype(jnp.float64)  # [K, n, G]
        s = jnp.einsum("nu,kng->kug", weight, onehot) * inv_size
        denom = s[..., 0]
        for g in range(1, num_groups):  # fixed order: no reduction XLA may reassociate
            denom = denom + s[..., g]
        denom = denom[..., None]
        p = jnp.where(denom > 0, s / jnp.where(denom > 0, denom, 1.0), 0.0)  # [K, U, G]
        ok3 = ok[:, None, None]
        count = count + jnp.sum((p >= observed - TIE_TOLERANCE) & ok3, axis=0, dtype=jnp.int32)
        total = total + jnp.where(ok3, p, 0.0)
        return (count, total), None

    (count, total), _ = jax.lax.scan(step, (count, total), (labels, valid))
    return count, total


def global_permutation_test(
    image_max: np.ndarray,
    group: np.ndarray,
    num_groups: int,
    lo: np.ndarray,
    hi: np.ndarray,
    observed: np.ndarray,
    num_permutations: int,
    seed: int | Sequence[int],
    block: int | None = None,
    mesh: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Permutation p-values and effect sizes of ``P(g|u)`` for one global family (DESIGN.md §2c).

    image_max [n, U] (m_u(x) over the family's images), group [n] int in 0..G-1, lo/hi [U] over the
    family's images, observed [U, G] the unit's ``P(g|u)`` (from
    :func:`hnd_jax.scoring.hierarchy.global_probabilities`). The permutations are
    :func:`permutation_indices` ``(n, num_permutations, seed)``; ``block`` permutations form one matrix
    product (default: as many as fit ``BLOCK_VALUES``). With a ``mesh`` of several devices the
    permutations of each block are sharded over its ``data`` axis (each device evaluates its share;
    the counts are summed exactly, so the p-values do not depend on the device count).

    Returns ``pvalues`` [U, G] float64 in [1/(1+n_perm), 1] and ``effect`` [U, G] float64 =
    ``P(g|u)`` minus the mean of ``P_perm(g|u)`` over the permutations.
    Raises ValueError for ``num_permutations < 1`` or mismatched shapes.
    """
    m = np.asarray(image_max)
    group = np.asarray(group, np.int64)
    observed = np.asarray(observed, np.float64)
    n, U = m.shape
    if num_permutations < 1:
        raise ValueError(f"num_permutations {num_permutations}: expected at least 1")
    if group.shape != (n,) or observed.shape != (U, num_groups):
        raise ValueError(f"group {group.shape} / observed {observed.shape}: expected [{n}] / [{U}, {num_groups}]")
    sizes = np.bincount(group, minlength=num_groups).astype(np.float64)
    inv_size = np.zeros(num_groups, np.float64)
    np.divide(1.0, sizes, out=inv_size, where=sizes > 0)
    weight = bias_weights(m, lo, hi)
    k = block or max(1, min(num_permutations, BLOCK_VALUES // max(1, n * num_groups)))
    ndev = 1 if mesh is None else int(mesh.devices.size)
    # A block size that does not depend on the device count (the same permutations share a block on
    # 1 or 8 devices), split evenly over the devices; padding rows are off.
    k = -(-k // BLOCK_MULTIPLE) * BLOCK_MULTIPLE
    k = -(-k // ndev) * ndev
    blocks = -(-num_permutations // k)
    # Chunks of whole blocks, all of one shape (one compilation), balanced so that the last one pads
    # fewer blocks than there are chunks; padding rows are off and add exact zeros. Chunk after chunk
    # continues the scan's carry: the same sums in the same order as one scan over every block.
    chunks = -(-blocks // max(1, CHUNK_VALUES // max(1, k * n)))
    chunk = -(-blocks // chunks)
    rng = np.random.default_rng(seed)  # drawn chunk by chunk: the rows of permutation_indices(n, N, seed)
    # exact group sums (see _permutation_counts); in place, the same operations as
    # round(weight / Q) * Q (Q a power of two: both scalings exact) without two [n, U] temporaries
    np.divide(weight, WEIGHT_QUANTUM, out=weight)
    np.round(weight, out=weight)
    np.multiply(weight, WEIGHT_QUANTUM, out=weight)
    with jax.enable_x64(True):
        args = [jnp.asarray(a, jnp.float64) for a in (weight, observed, inv_size)]
        count = jnp.zeros(observed.shape, jnp.int32)
        total = jnp.zeros((k, *observed.shape), jnp.float64)
        for first in range(0, num_permutations, chunk * k):
            rows = min(chunk * k, num_permutations - first)
            perms = rng.permuted(np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)), axis=1)
            labels = np.zeros((chunk * k, n), np.int32)
            labels[:rows] = group[perms]
            valid = np.zeros(chunk * k, bool)
            valid[:rows] = True
            labels, valid = labels.reshape(chunk, k, n), valid.reshape(chunk, k)
            if ndev > 1:
                from jax.sharding import NamedSharding, PartitionSpec as P

                from hnd_jax.sharding import DATA_AXIS

                labels = jax.device_put(labels, NamedSharding(mesh, P(None, DATA_AXIS, None)))
                valid = jax.device_put(valid, NamedSharding(mesh, P(None, DATA_AXIS)))
            count, total = _permutation_counts(
                args[0], jnp.asarray(labels), jnp.asarray(valid), args[1], args[2], count, total,
                num_groups=int(num_groups),
            )
        count, total = np.asarray(count), np.asarray(total)
    count = np.asarray(count, np.float64)
    pvalues = (1.0 + count) / (1.0 + num_permutations)
    effect = observed - np.asarray(total).sum(axis=0, dtype=np.float64) / num_permutations
    return pvalues, effect


def midranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks per column (1..n, ties share their mean rank) and the tie term per column.

    values [n, U]; returns ``ranks`` [n, U] float64 (``scipy.stats.rankdata(method='average')`` per
    column) and ``tie_term`` [U] float64 = ``sum over tie groups of t^3 - t``.
    """
    v = np.asarray(values)
    n, U = v.shape
    ranks = np.empty((n, U), np.float64)
    if n == 0:
        return ranks, np.zeros(U, np.float64)
    order = np.argsort(v, axis=0, kind="stable")
    s = np.take_along_axis(v, order, axis=0)
    starts = np.ones((n, U), bool)
    starts[1:] = s[1:] != s[:-1]
    ends = np.ones((n, U), bool)
    ends[:-1] = starts[1:]
    pos = np.arange(n)[:, None]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[::-1], axis=0)[::-1]
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    t = (last - first + 1).astype(np.float64)
    tie_term = (t * t - 1.0).sum(axis=0)  # each member of a group of size t adds t^2 - 1: t^3 - t per group
    return ranks, tie_term


_normal_sf = np.frompyfunc(lambda z: 0.5 * math.erfc(z / math.sqrt(2.0)), 1, 1)


def normal_sf(z: np.ndarray) -> np.ndarray:
    """``1 - Phi(z)`` elementwise in float64 (accurate in the far tail; ``-inf -> 1``, ``inf -> 0``)."""
    z = np.asarray(z, np.float64)
    return np.asarray(_normal_sf(z), np.float64).reshape(z.shape)


def auc_test(
    image_max: np.ndarray,
    labelled: np.ndarray,
    image_family: np.ndarray,
    concept_family: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of ``m_u(x)`` for every (unit, local concept) and its one-sided Mann-Whitney p-value.

    image_max [N, U] (m_u(x), dictionary order); labelled [N, C] bool; image_family [N] int (local
    family of each image); concept_family [C] int (family that annotates each concept). For concept
    c the sample is the images of c's family: n1 labelled c, n0 the others.

    Returns ``auc`` [U, C] float64 (``U1 / (n1 n0)``, NaN where n1 = 0 or n0 = 0), ``pvalues``
    [U, C] float64 (one-sided, AUC > 0.5; the module docstring gives the formula; 1 where
    untestable or where every value is tied) and ``tested`` [U, C] bool (n1 > 0 and n0 > 0).
    """
    m = np.asarray(image_max)
    lab = np.asarray(labelled, bool)
    image_family = np.asarray(image_family)
    concept_family = np.asarray(concept_family)
    N, U = m.shape
    C = lab.shape[1]
    auc = np.full((U, C), np.nan, np.float64)
    pvalues = np.ones((U, C), np.float64)
    tested = np.zeros((U, C), bool)
    for f in np.unique(concept_family):
        cols = np.flatnonzero(concept_family == f)
        rows = np.flatnonzero(image_family == f)
        n = rows.size
        if n < 2:
            continue
        lab_f = lab[np.ix_(rows, cols)]
        n1 = lab_f.sum(axis=0).astype(np.float64)  # [C_f]
        n0 = n - n1
        ok = (n1 > 0) & (n0 > 0)
        if not ok.any():
            continue
        lab_f64 = lab_f.astype(np.float64)
        n1n0 = n1 * n0
        sel = np.flatnonzero(ok)
        tested[:, cols[sel]] = True
        # Units in blocks: the ranks and their sort buffers are [n, block] (several float64/int64
        # arrays), not [n, U]. Every unit is computed alone, and rank sums are sums of half-integers
        # (exact in float64), so the blocks change no bit of the result.
        step = max(1, AUC_BLOCK_VALUES // n)
        for u0 in range(0, U, step):
            units = slice(u0, min(u0 + step, U))
            ranks, tie_term = midranks(m[rows, units])  # [n, u], [u]
            r1 = ranks.T @ lab_f64  # rank sums [u, C_f]
            u1 = r1 - (n1 * (n1 + 1) / 2.0)[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                a = u1 / n1n0[None, :]
                var = (n1n0 / 12.0)[None, :] * ((n + 1.0) - tie_term[:, None] / (n * (n - 1.0)))
                z = (u1 - (n1n0 / 2.0)[None, :] - 0.5) / np.sqrt(np.maximum(var, 0.0))
            z = np.where(np.isnan(z), -np.inf, z)  # 0/0 cannot occur (numerator <= -1/2 when var = 0)
            p = np.clip(normal_sf(z), 0.0, 1.0)
            auc[units, cols[sel]] = a[:, sel]
            pvalues[units, cols[sel]] = p[:, sel]
    return auc, pvalues, tested


def benjamini_hochberg(
    pvalues: np.ndarray, alpha: float, tested: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg over all entries (of any shape) where ``tested`` (default: all).

    Returns the BH-adjusted p-values (``min_{j >= i} p_(j) m / j`` clipped to 1, as
    ``scipy.stats.false_discovery_control(p, method='bh')``; 1 where not tested) and the rejections
    ``adjusted <= alpha`` (False where not tested), both with the shape of ``pvalues``.
    m is the number of tested entries.
    """
    p = np.asarray(pvalues, np.float64)
    mask = np.ones(p.shape, bool) if tested is None else np.asarray(tested, bool)
    adjusted = np.ones(p.shape, np.float64)
    flat = p[mask]
    m = flat.size
    if m:
        order = np.argsort(flat, kind="stable")
        scaled = flat[order] * m / np.arange(1, m + 1)
        adj_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        adj = np.empty(m, np.float64)
        adj[order] = adj_sorted
        adjusted[mask] = adj
    return adjusted, mask & (adjusted <= alpha)
