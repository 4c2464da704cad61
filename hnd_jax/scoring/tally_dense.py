"""The dense IoU tally kernel: upsample, threshold, binary map x mask matrix products (accelerators).

Per device the kernel walks its slice of the batch in chunks of ``bc`` images (never materialising
``[N, U, S, S]``); for one chunk it builds the binary maps of ALL units ``B [bc*S*S, U]`` and makes
one wide matrix product over images and pixels together::

    [U, 2C] = B^T  x  [ M | M AND x in X_c ]        (K = bc*S*S, 0/1 inputs)

giving ``sum_x |B_u(x) AND M_c(x)|`` (intersection) and the same sum over the images that enter
the union (``inter_in``). The product is in bfloat16 on accelerators (float32 on CPU) with float32
accumulation, exact because ``K < 2**24`` is enforced by the chunk size; each chunk's result is cast
to int32 and the chunks' partials are summed in int32. The union's area terms come from per-image areas of the chunk (see
:func:`union_partial`), so ``official`` mode (whose union needs ``|B_u(x)| > 0`` per image) works the
same way. Partial ``[U, C]`` counts are summed over the ``data`` axis with ``psum`` (integer, so the
result is identical on any number of devices).

Why this shape (measured on an H200, U=2048, 7x7 maps, S=224): the previous kernel chunked over
units and made one small product per image (``[uc, S*S] x [S*S, C]`` with uc ~ 41 and C = 38),
which tensor cores run at a fraction of a percent of their peak; contracting over images and
pixels at once gives an ``[U x K] x [K x 2C]`` product with U in the thousands.

The host adds these partials into int64 totals, so counts stay exact for any number of images as
long as one batch's counts fit int32 (``B * S * S < 2**31``, checked by the tally).

The upsampling uses the float64 formula of :mod:`hnd_jax.scoring.upsample` and compares its float64
value with ``float64(T_u)`` (no final float32 rounding), so the kernel is traced and run under
``jax.enable_x64(True)``; every array it returns has an explicit 32-bit dtype. It evaluates every
pixel of every unit in float64, which GPUs run at a fraction of their float32 rate and TPUs only
emulate (see ``upsample.py``): on accelerators the cell-sparse kernel (``tally_cells.py``) is the
one to use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hnd_jax.scoring.upsample import upsample_nhwc_jax
from hnd_jax.sharding import DATA_AXIS

#: Bound on one chunk's binary maps per device, in elements (bc * S * S * U), per platform:
#: small on CPUs (host memory is shared), large on accelerators so the matrix products stay wide.
DENSE_CHUNK_ELEMENTS = {"cpu": 1 << 25}
DENSE_CHUNK_ELEMENTS_ACCELERATOR = 1 << 28
#: float32 accumulation of 0/1 products is exact up to 2**24 terms: the contraction length bound.
EXACT_F32_TERMS = 1 << 24


def union_partial(area_b, area_m, inter_in, in_union, official: bool):
    """Per-chunk ``union`` ``[U, C]`` from per-image areas and the chunk's ``inter_in`` (valid rows only).

    area_b [n, U], area_m [n, C] integer; inter_in [U, C] = ``sum_{x in X_c} |B AND M|``; in_union
    [n, C] bool: ``x in X_c``. ``union = sum_{x in X_c} g(x, u) * (|B| + |M|) - inter_in`` where
    ``g = 1``, except ``official`` mode, where images with an empty binary map do not enter
    (``g = [|B| > 0]``).
    """
    dt = area_b.dtype
    inx = in_union.astype(dt)
    mask_term = inx * area_m  # [n, C]
    if official:
        fires = (area_b > 0).astype(dt)
        union = area_b.T @ inx + fires.T @ mask_term
    else:
        union = area_b.T @ inx + mask_term.sum(axis=0, dtype=dt)[None, :]
    return union - inter_in


def exact_image_group(b_local: int, size: int, limit: int | None = None) -> int:
    """The largest divisor of ``b_local`` that is at most ``limit`` (default: no limit) and keeps
    ``g * S * S < 2**24``: images whose per-image counts a float32 sum adds exactly."""
    bound = max(1, min(b_local, (EXACT_F32_TERMS - 1) // (size * size), b_local if limit is None else limit))
    while b_local % bound:
        bound -= 1
    return bound


def image_chunk(b_local: int, size: int, num_units: int, platform: str) -> int:
    """Images per chunk: a divisor of ``b_local`` within the memory budget and the exactness bound."""
    budget = DENSE_CHUNK_ELEMENTS.get(platform, DENSE_CHUNK_ELEMENTS_ACCELERATOR)
    return exact_image_group(b_local, size, budget // max(1, size * size * num_units))


@lru_cache(maxsize=32)
def build_dense_kernel(
    mesh: Mesh, batch: int, num_units: int, num_concepts: int, size: int, official: bool, platform: str
) -> Callable:
    """A jitted ``(acts, masks, in_union, valid, thresholds) -> (inter [U,C], union [U,C])`` int32.

    acts [B, h, w, U] f32, masks [B, C, S, S] bool, in_union [B, C] bool, valid [B] bool sharded over
    ``data``; thresholds [U] f32 replicated. Call it under ``jax.enable_x64(True)``. Cached: tallies
    of the same shapes (other modes, layers of equal width, tests) share one compiled program.
    """
    ndev = int(mesh.devices.size)
    b_local = batch // ndev
    bc = image_chunk(b_local, size, num_units, platform)
    n_chunks = b_local // bc
    pixels = size * size
    C, U = num_concepts, num_units
    mm_dtype = jnp.float32 if platform == "cpu" else jnp.bfloat16

    def local(acts, masks, in_union, valid, thresholds):
        h, w = acts.shape[1:3]
        m = masks.reshape(b_local, C, pixels) & valid[:, None, None]
        inx = in_union & valid[:, None]
        area_m = m.sum(axis=2, dtype=jnp.int32)  # [b, C]
        q = jnp.concatenate([m, m & inx[:, :, None]], axis=1)  # [b, 2C, P]: masks, masks of X_c images

        def chunk(xs):
            a_c, q_c, v_c, inx_c, area_m_c = xs
            v = upsample_nhwc_jax(a_c, size)  # [bc, S, S, U] float64: decided before any float32 rounding
            fire = (v > thresholds.astype(jnp.float64)) & v_c[:, None, None, None]
            fire = fire.reshape(bc, pixels, U)
            area_b = fire.sum(axis=1, dtype=jnp.int32)  # [bc, U]
            prod = jnp.einsum(
                "bpu,bqp->uq", fire.astype(mm_dtype), q_c.astype(mm_dtype), preferred_element_type=jnp.float32
            ).astype(jnp.int32)  # [U, 2C], exact: bc * P < 2**24 terms of 0/1
            inter, inter_in = prod[:, :C], prod[:, C:]
            union = union_partial(area_b, area_m_c, inter_in, inx_c, official)
            return inter, union

        xs = (
            acts.reshape(n_chunks, bc, h, w, U),
            q.reshape(n_chunks, bc, 2 * C, pixels),
            valid.reshape(n_chunks, bc),
            inx.reshape(n_chunks, bc, C),
            area_m.reshape(n_chunks, bc, C),
        )
        inter, union = jax.lax.map(chunk, xs)  # [n_chunks, U, C] each: small, summed in int32
        inter, union = inter.sum(axis=0, dtype=jnp.int32), union.sum(axis=0, dtype=jnp.int32)
        return jax.lax.psum(inter, DATA_AXIS), jax.lax.psum(union, DATA_AXIS)

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
        out_specs=(P(), P()),
    )
    data = NamedSharding(mesh, P(DATA_AXIS))
    rep = NamedSharding(mesh, P())
    return jax.jit(sharded, in_shardings=(data, data, data, data, rep), out_shardings=(rep, rep))


def dense_platform(mesh: Mesh) -> str:
    """The platform of the mesh's devices ('cpu', 'gpu', 'tpu')."""
    return str(np.asarray(mesh.devices).flat[0].platform)
