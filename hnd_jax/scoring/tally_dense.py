"""The dense IoU tally kernel: upsample, threshold, binary map x mask matrix products (accelerators).

Per device and per chunk of units, the kernel materialises the binary maps ``[b, S*S, Uc]`` of its
slice of the batch (never ``[N, U, S, S]``), then

* ``inter_x[b, u, c] = sum_p B[b, p, u] * M[b, p, c]``: a batched matrix product over pixels with
  0/1 inputs (bfloat16 on accelerators, float32 on CPU) and float32 accumulation, exact because a
  per-image count is at most ``S*S < 2**24``; cast to int32;
* ``area_b[b, u]`` and ``area_m[b, c]``: integer pixel counts;
* the per-batch ``intersection``/``union`` partial sums ``[U, C]`` in int32 (see
  :func:`union_partial`), summed over the ``data`` axis with ``psum`` (integer, so the result is
  identical on any number of devices).

The host adds these partials into int64 totals, so counts stay exact for any number of images as
long as one batch's counts fit int32 (``B * S * S < 2**31``, checked by the tally).

The upsampling uses the float64 formula of :mod:`hnd_jax.scoring.upsample`, so the kernel is
traced and run under ``jax.enable_x64(True)``; every array it returns has an explicit 32-bit dtype.
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

#: Bound on one chunk's binary maps per device, in elements (b_local * S * S * Uc), per platform:
#: small on CPUs (host memory is shared), large on accelerators so the matrix products stay wide.
DENSE_CHUNK_ELEMENTS = {"cpu": 1 << 25}
DENSE_CHUNK_ELEMENTS_ACCELERATOR = 1 << 28


def union_partial(area_b, area_m, inter_x, in_union, official: bool):
    """Per-batch ``(intersection, union)`` ``[U, C]`` from per-image counts (valid rows only).

    area_b [n, U], area_m [n, C], inter_x [n, U, C] integer; in_union [n, C] bool: ``x in X_c``.
    ``union = sum_{x in X_c} g(x, u) * (|B| + |M|) - sum_{x in X_c} |B AND M|`` where ``g = 1``, except
    ``official`` mode, where images with an empty binary map do not enter (``g = [|B| > 0]``).
    ``intersection`` sums over every image (the masks alone decide it).
    """
    dt = area_b.dtype
    inx = in_union.astype(dt)
    inter = inter_x.sum(axis=0)
    inter_in = jnp.einsum("nuc,nc->uc", inter_x, inx)
    mask_term = inx * area_m  # [n, C]
    if official:
        fires = (area_b > 0).astype(dt)
        union = area_b.T @ inx + fires.T @ mask_term
    else:
        union = area_b.T @ inx + mask_term.sum(axis=0)[None, :]
    return inter, union - inter_in


def _unit_chunk(b_local: int, size: int, num_units: int, platform: str) -> int:
    budget = DENSE_CHUNK_ELEMENTS.get(platform, DENSE_CHUNK_ELEMENTS_ACCELERATOR)
    per_unit = max(1, b_local * size * size)
    return int(max(1, min(num_units, budget // per_unit)))


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
    uc = _unit_chunk(b_local, size, num_units, platform)
    n_chunks = -(-num_units // uc)
    padded_units = n_chunks * uc
    mm_dtype = jnp.float32 if platform == "cpu" else jnp.bfloat16

    def local(acts, masks, in_union, valid, thresholds):
        b = acts.shape[0]
        m = masks.reshape(b, num_concepts, size * size)
        m = jnp.where(valid[:, None, None], m, False)
        area_m = m.sum(axis=2, dtype=jnp.int32)  # [b, C]
        m_mm = m.astype(mm_dtype)
        pad = padded_units - num_units
        a = jnp.pad(acts, ((0, 0), (0, 0), (0, 0), (0, pad)))
        t = jnp.pad(thresholds, (0, pad), constant_values=jnp.inf)  # padded units never fire
        a = jnp.moveaxis(a.reshape(*a.shape[:3], n_chunks, uc), 3, 0)  # [n_chunks, b, h, w, uc]
        t = t.reshape(n_chunks, uc)

        def chunk(args):
            a_c, t_c = args
            v = upsample_nhwc_jax(a_c, size)  # [b, S, S, uc] float32
            fire = (v > t_c) & valid[:, None, None, None]
            fire = fire.reshape(b, size * size, uc)
            area = fire.sum(axis=1, dtype=jnp.int32)  # [b, uc]
            inter = jnp.einsum(
                "bpu,bcp->buc", fire.astype(mm_dtype), m_mm, preferred_element_type=jnp.float32
            ).astype(jnp.int32)
            return area, inter

        area_b, inter_x = jax.lax.map(chunk, (a, t))  # [n_chunks, b, uc], [n_chunks, b, uc, C]
        area_b = jnp.moveaxis(area_b, 0, 1).reshape(b, padded_units)[:, :num_units]
        inter_x = jnp.moveaxis(inter_x, 0, 1).reshape(b, padded_units, num_concepts)[:, :num_units]
        inx = in_union & valid[:, None]
        inter, union = union_partial(area_b, area_m, inter_x, inx, official)
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
