"""The exact cell-sparse IoU tally (DESIGN.md §2b): skip the cells that cannot be mixed.

The upsampled map is piecewise bilinear. Output pixel ``(y, x)`` reads the raw values at rows
``i0(y), i1(y)`` and columns ``i0(x), i1(x)`` (:func:`hnd_jax.scoring.upsample.axis_weights`); the
pixels sharing those four indices form a **cell** (a rectangle of ``ly x lx`` pixels; about
``(h + 1) x (w + 1)`` cells per map). With the shared formula every value of a cell lies between
the smallest and the largest of its four raw corners, exactly (convex weights, exact float64
products, monotone rounding, flushing only to 0 inside the range). So per image, unit and cell:

* ``max(corners) <= T_u``: no pixel fires (the common case: ``T_u`` is a tail quantile);
* ``min(corners) >  T_u``: every pixel fires: the cell adds its mask pixel counts
  ``cnt[x, cell, c]`` (computed once per image) to the intersections and its size to the area, as
  one product ``[U, cells] x [cells, 2C]`` per image group instead of ``[U, S*S] x [S*S, 2C]``;
* otherwise (**mixed**): its pixels are evaluated with the shared float64 formula and compared
  with ``float64(T_u)`` (no float32 rounding of the final value) and counted against the masks.

Counts equal the dense and run-length paths bit for bit (the tests check them on random and
adversarial inputs). Only the mixed cells use float64; the classification and the full-cell product
use float32 (exact: 0/1 times counts, sums below ``2**24``, ``Precision.HIGHEST`` so that TPUs and
TF32-capable GPUs do not round the inputs to bfloat16 or TF32).

**Static shapes.** The number of mixed (image, cell, unit) triples depends on the data. The kernel
lists them with ``jnp.nonzero(..., size=B*cells*U)`` (static) and evaluates them in a
``lax.while_loop`` over chunks of a fixed ``capacity`` (pixels ``capacity x ly x lx``, mask bits
``capacity x C x ceil(ly*lx/32)`` words): the loop runs ``ceil(mixed / capacity)`` times, so a
batch with more mixed cells than the capacity is still exact, takes longer, and never recompiles.
The capacity is sized from a per-platform memory budget (:data:`CELL_CHUNK_ELEMENTS`). The masks
are laid out per cell and bit-packed once per batch (``[B, cells, C, words]`` uint32): a full
cell's mask counts and a mixed cell's intersections are popcounts (of the mask bits, and of the
cell's fire bits AND the mask bits).

**TPUs.** The mixed-cell evaluation is the only float64 work (DESIGN §2b). A TPU has no float64
unit: under ``jax_enable_x64`` XLA emulates it with float32 pairs, which is not IEEE binary64 (see
:mod:`hnd_jax.scoring.upsample`); pixels within about one float64 step of ``T_u`` can then be
decided differently from CPUs and GPUs. Run ``benchmarks/check_accelerator.py`` (counts against the
CPU's) before relying on a TPU's counts bit for bit.

Sharded like the dense kernel: each device takes its slice of the batch over the mesh's ``data``
axis and the integer ``[U, C]`` partials are summed with ``psum`` (identical on any device count).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hnd_jax.scoring.tally import IoUTally
from hnd_jax.scoring.tally_dense import exact_image_group, union_partial
from hnd_jax.scoring.tally_runs import row_segments
from hnd_jax.scoring.upsample import TINY, axis_weights
from hnd_jax.sharding import DATA_AXIS

#: Bound on one chunk of mixed cells, in elements (see :func:`cell_capacity`), per platform.
CELL_CHUNK_ELEMENTS = {"cpu": 1 << 22}
CELL_CHUNK_ELEMENTS_ACCELERATOR = 1 << 27


@dataclass(frozen=True)
class AxisCells:
    """The cells of one axis: output pixels grouped by the pair of inputs ``(i0, i1)`` they read.

    i0, i1: int32 [G] input indices; start, length: int32 [G] pixel ranges; pix: int32 [G, L]
    pixel index of the cell's ``t``-th pixel, or ``S`` (a zero padding pixel) past its length;
    w0, w1: float64 [G, L] the pixel's weights (0 on padding); L = the longest cell.
    """

    i0: np.ndarray
    i1: np.ndarray
    start: np.ndarray
    length: np.ndarray
    pix: np.ndarray
    w0: np.ndarray
    w1: np.ndarray

    @property
    def count(self) -> int:
        return int(self.i0.shape[0])

    @property
    def longest(self) -> int:
        return int(self.pix.shape[1])


def axis_cells(n_in: int, size: int) -> AxisCells:
    """Cells of one axis for ``n_in`` inputs upsampled to ``size`` pixels."""
    ax = axis_weights(n_in, size)
    seg = row_segments(ax)
    length = (seg.end - seg.start).astype(np.int32)
    L = int(length.max())
    t = np.arange(L)[None, :]
    inside = t < length[:, None]
    pix = np.where(inside, seg.start[:, None] + t, size).astype(np.int32)
    safe = np.minimum(pix, size - 1)
    w0 = np.where(inside, ax.w0[safe], 0.0)
    w1 = np.where(inside, ax.w1[safe], 0.0)
    return AxisCells(seg.j0.astype(np.int32), seg.j1.astype(np.int32), seg.start, length, pix, w0, w1)


def cell_capacity(num_concepts: int, cell_pixels: int, platform: str) -> int:
    """Mixed cells per chunk: the per-platform element budget over one cell's work (at least 1).

    One mixed cell holds ``ly * lx`` float64 values and ``C * ceil(ly*lx/32)`` words of mask bits.
    """
    budget = CELL_CHUNK_ELEMENTS.get(platform, CELL_CHUNK_ELEMENTS_ACCELERATOR)
    per_cell = 4 * cell_pixels + num_concepts * -(-cell_pixels // 32)
    return max(1, budget // max(1, per_cell))


def pack_bits(x: jax.Array) -> jax.Array:
    """bool [..., P] -> uint32 [..., ceil(P/32)]: bit ``j`` of word ``i`` is pixel ``32*i + j`` (zero padded)."""
    P = x.shape[-1]
    W = -(-P // 32)
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, W * 32 - P)]).reshape(*x.shape[:-1], W, 32)
    shifts = jnp.arange(32, dtype=jnp.uint32)
    return (x.astype(jnp.uint32) << shifts).sum(axis=-1, dtype=jnp.uint32)


@lru_cache(maxsize=32)
def build_cell_kernel(
    mesh: Mesh,
    batch: int,
    map_hw: tuple[int, int],
    num_units: int,
    num_concepts: int,
    size: int,
    official: bool,
    capacity: int,
) -> Callable:
    """A jitted ``(acts, masks, in_union, valid, thresholds) -> (inter, union, mixed)``.

    acts [B, h, w, U] f32, masks [B, C, S, S] bool, in_union [B, C] bool, valid [B] bool sharded over
    ``data``; thresholds [U] f32 replicated. Returns int32 ``inter [U, C]``, ``union [U, C]`` and the
    number of mixed (image, cell, unit) triples of the batch (int32 scalar). Call it under
    ``jax.enable_x64(True)``. Cached per shape and capacity.
    """
    ndev = int(mesh.devices.size)
    b = batch // ndev
    h, w = map_hw
    U, C, S = num_units, num_concepts, size
    cy, cx = axis_cells(h, S), axis_cells(w, S)
    Gy, Gx, Ly, Lx = cy.count, cx.count, cy.longest, cx.longest
    K = Gy * Gx
    cap = int(capacity)
    n_triples = b * K * U
    if n_triples + cap >= 2**31:
        raise ValueError(f"{b} images x {K} cells x {U} units per device: too many for int32 indices; use smaller batches")
    n_slots = -(-n_triples // cap) * cap
    group = exact_image_group(b, S)
    hi = jax.lax.Precision.HIGHEST

    # Static per-cell tables (NumPy constants folded into the program).
    cell_size = (cy.length[:, None].astype(np.int32) * cx.length[None, :]).reshape(K)  # [K]
    ypix_np, xpix_np = cy.pix, cx.pix
    tiny32 = np.float32(TINY)
    tiny64 = np.float64(TINY)

    def flush32(x):
        return jnp.where(jnp.abs(x) < tiny32, jnp.float32(0), x)

    def flush64(x):
        return jnp.where(jnp.abs(x) < tiny64, jnp.float64(0), x)

    def local(acts, masks, in_union, valid, thresholds):
        a = flush32(acts.astype(jnp.float32))  # [b, h, w, U]
        t32 = thresholds.astype(jnp.float32)
        t64 = t32.astype(jnp.float64)
        m = masks & valid[:, None, None, None]  # [b, C, S, S]
        inx = in_union & valid[:, None]
        area_m = m.sum(axis=(2, 3), dtype=jnp.int32)  # [b, C]

        # 1. Classify every (image, cell, unit) by its four raw corners (float32 comparisons only).
        top, bot = a[:, cy.i0], a[:, cy.i1]  # [b, Gy, w, U]
        c00, c01, c10, c11 = top[:, :, cx.i0], top[:, :, cx.i1], bot[:, :, cx.i0], bot[:, :, cx.i1]  # [b, Gy, Gx, U]
        cmin = jnp.minimum(jnp.minimum(c00, c01), jnp.minimum(c10, c11)).reshape(b, K, U)
        cmax = jnp.maximum(jnp.maximum(c00, c01), jnp.maximum(c10, c11)).reshape(b, K, U)
        live = valid[:, None, None]
        full = (cmin > t32) & live
        mixed = (cmax > t32) & ~(cmin > t32) & live

        # 2. Masks laid out per cell and bit-packed once per batch ([b, K, C, W] uint32, W words of 32
        #    pixels); per-cell mask counts are their popcounts.
        m_pad = jnp.pad(m, ((0, 0), (0, 0), (0, 1), (0, 1)))  # pixel S is the zero padding pixel
        cells = m_pad[:, :, ypix_np[:, :, None, None], xpix_np[None, None, :, :]]  # [b, C, Gy, Ly, Gx, Lx]
        cells = cells.transpose(0, 2, 4, 1, 3, 5).reshape(b, K, C, Ly * Lx)
        mbits = pack_bits(cells)  # [b, K, C, W] uint32
        cnt = jax.lax.population_count(mbits).astype(jnp.int32).sum(axis=3, dtype=jnp.int32)  # [b, K, C]

        # 3. Full cells: one product per image group (exact in float32: each group's sums < 2**24).
        cnt = cnt.astype(jnp.float32)
        q = jnp.concatenate([cnt, cnt * inx[:, None, :].astype(jnp.float32)], axis=2)  # [b, K, 2C]
        ng = b // group
        prod = jnp.einsum(
            "nku,nkq->nuq",
            full.astype(jnp.float32).reshape(ng, group * K, U),
            q.reshape(ng, group * K, 2 * C),
            precision=hi,
        ).astype(jnp.int32).sum(axis=0, dtype=jnp.int32)  # [U, 2C]: each group's sums < 2**24
        inter, inter_in = prod[:, :C], prod[:, C:]
        area_b = jnp.einsum("bku,k->bu", full.astype(jnp.int32), jnp.asarray(cell_size), preferred_element_type=jnp.int32)

        # 4. Mixed cells: listed with a static size, evaluated in chunks of `cap` (exact for any count);
        #    a mixed cell's intersections are popcounts of (its fire bits AND the cell's mask bits).
        flat = mixed.reshape(n_triples)
        n_mixed = flat.sum(dtype=jnp.int32)
        (order,) = jnp.nonzero(flat, size=n_slots, fill_value=0)
        order = order.astype(jnp.int32)
        wy0, wy1 = jnp.asarray(cy.w0), jnp.asarray(cy.w1)
        wx0, wx1 = jnp.asarray(cx.w0), jnp.asarray(cx.w1)
        yin, xin = jnp.asarray(cy.pix < S), jnp.asarray(cx.pix < S)
        iy0, iy1, jx0, jx1 = (jnp.asarray(v) for v in (cy.i0, cy.i1, cx.i0, cx.i1))
        inx_i = inx.astype(jnp.int32)

        def body(carry):
            i, inter, inter_in, area_b = carry
            slot = i * cap + jnp.arange(cap, dtype=jnp.int32)
            ok = slot < n_mixed
            tri = jax.lax.dynamic_slice(order, (i * cap,), (cap,))
            bt, rest = tri // (K * U), tri % (K * U)
            kt, ut = rest // U, rest % U
            gy, gx = kt // Gx, kt % Gx
            a00 = a[bt, iy0[gy], jx0[gx], ut].astype(jnp.float64)[:, None]
            a01 = a[bt, iy0[gy], jx1[gx], ut].astype(jnp.float64)[:, None]
            a10 = a[bt, iy1[gy], jx0[gx], ut].astype(jnp.float64)[:, None]
            a11 = a[bt, iy1[gy], jx1[gx], ut].astype(jnp.float64)[:, None]
            y0, y1 = wy0[gy], wy1[gy]  # [cap, Ly]
            r0 = flush32((y0 * a00 + y1 * a10).astype(jnp.float32)).astype(jnp.float64)  # rows stage: float32
            r1 = flush32((y0 * a01 + y1 * a11).astype(jnp.float32)).astype(jnp.float64)
            v = flush64(wx0[gx][:, None, :] * r0[:, :, None] + wx1[gx][:, None, :] * r1[:, :, None])  # [cap, Ly, Lx]
            fire = (v > t64[ut][:, None, None]) & yin[gy][:, :, None] & xin[gx][:, None, :] & ok[:, None, None]
            fbits = pack_bits(fire.reshape(cap, Ly * Lx))  # [cap, W]
            both = mbits[bt, kt] & fbits[:, None, :]  # [cap, C, W]
            hit = jax.lax.population_count(both).astype(jnp.int32).sum(axis=2, dtype=jnp.int32)  # [cap, C]
            area_t = fire.sum(axis=(1, 2), dtype=jnp.int32)
            inter = inter.at[ut].add(hit)
            inter_in = inter_in.at[ut].add(hit * inx_i[bt])
            area_b = area_b.at[bt, ut].add(area_t)
            return i + 1, inter, inter_in, area_b

        n_chunks = (n_mixed + cap - 1) // cap
        _, inter, inter_in, area_b = jax.lax.while_loop(
            lambda c: c[0] < n_chunks, body, (jnp.int32(0), inter, inter_in, area_b)
        )
        union = union_partial(area_b, area_m, inter_in, inx, official)
        return (
            jax.lax.psum(inter, DATA_AXIS),
            jax.lax.psum(union, DATA_AXIS),
            jax.lax.psum(n_mixed, DATA_AXIS),
        )

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
        out_specs=(P(), P(), P()),
    )
    data = NamedSharding(mesh, P(DATA_AXIS))
    rep = NamedSharding(mesh, P())
    return jax.jit(sharded, in_shardings=(data, data, data, data, rep), out_shardings=(rep, rep, rep))


class CellTally(IoUTally):
    """:class:`~hnd_jax.scoring.tally.IoUTally` with the cell-sparse kernel (same protocol, same counts).

    Same arguments as ``IoUTally`` (without ``method``), plus capacity: mixed (image, cell, unit)
    triples evaluated per chunk (default: from the platform's memory budget, :func:`cell_capacity`);
    any number of mixed cells is exact, more take more chunks. ``mixed_cells`` holds the running
    number of mixed triples evaluated and ``cell_pixels`` the pixels of the largest cell
    (``ly * lx``): their product is the number of pixel evaluations (the benchmark reports it).
    """

    def __init__(self, num_units, concept_family, image_size, map_hw, thresholds, mode, mesh=None, capacity: int | None = None):
        super().__init__(num_units, concept_family, image_size, map_hw, thresholds, mode, mesh=mesh, method="cells",
                         capacity=capacity)
