"""Pass-1 statistics of a layer: exact thresholds, per-unit min/max and per-image max (DESIGN.md §2).

One accumulator, :class:`UnitStats`, follows the engine's streaming protocol (davidbau/dissect
``runningstats`` style)::

    stats = UnitStats(num_units=U, num_images=N, map_hw=(h, w), quantile=0.005, mesh=mesh)
    state = stats.init()
    for batch in batches:                       # Batch: activations NHWC float32 [B, h, w, U], index, valid
        state = stats.update(state, batch)
    result = stats.finalize(state)              # thresholds, lo, hi, image_max, ...

Why a running top-k gives the EXACT threshold
    ``T_u = numpy.quantile(values_u, 1 - q)`` with linear interpolation reads the sorted values at
    positions ``floor(p)`` and ``floor(p) + 1`` where ``p = (n - 1) * (1 - q)`` and ``n = N * h * w``
    is known up front. Both positions lie in the top ``k = n - floor(p)`` values, so keeping the ``k``
    largest values of every unit (a multiset: ties are kept as often as they occur) is enough, and
    memory is ``O(U * k)``. The interpolation is then done with NumPy's own float formula, so the
    result equals ``numpy.quantile`` on the float32 values bit for bit.

Sharding
    The state's ``topk`` has a leading device axis ``[D, U, k]`` sharded over the mesh's ``data``
    axis: every device keeps the top-k of the images it saw (``jax.shard_map``, no communication
    per batch), and the device states are merged in :meth:`UnitStats.finalize` (top-k of the union).
    ``lo``/``hi`` are exact min/max reductions and ``image_max`` is a scatter-max by image index, so
    nothing depends on how images were split over devices: results are identical on 1 or 8 devices.
    Padding rows (``valid == False``, from :meth:`~hnd_jax.scoring.accumulator.Batch.padded`) never count.

The same accumulator with ``quantile=None`` serves the global families (per-image max and the
family's own lo/hi; no thresholds).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hnd_jax.errors import HndError
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.sharding import DATA_AXIS, make_data_mesh

State = dict[str, Any]


def quantile_position(num_values: int, quantile: float) -> float:
    """NumPy's virtual index of the ``quantile`` for ``method='linear'``: ``(n - 1) * quantile``."""
    return (num_values - 1) * quantile


def topk_size(num_values: int, q: float) -> int:
    """How many of the largest values decide the ``1 - q`` quantile of ``num_values`` values."""
    if num_values <= 0:
        raise HndError(f"cannot compute thresholds over {num_values} values (no local images?)")
    p = quantile_position(num_values, 1.0 - q)
    return int(num_values - math.floor(p))


def quantile_from_topk(top_desc: np.ndarray, num_values: int, q: float) -> np.ndarray:
    """The ``1 - q`` quantile of every row from its ``k`` largest values, sorted descending.

    ``top_desc`` is ``[U, k]`` with ``k = topk_size(num_values, q)``. Uses NumPy's linear
    interpolation formula (``numpy.lib._function_base_impl._lerp``) in the values' dtype, so the
    result equals ``numpy.quantile(values, 1 - q)`` on float32 values exactly.
    """
    quantile = 1.0 - q
    p = quantile_position(num_values, quantile)
    below = math.floor(p)
    above = min(below + 1, num_values - 1)
    k = num_values - below
    if top_desc.shape[-1] != k:
        raise ValueError(f"expected the {k} largest values per unit, got {top_desc.shape[-1]}")
    a = top_desc[:, k - 1]  # sorted position `below`
    b = top_desc[:, num_values - 1 - above]  # sorted position `above`
    gamma = p - below
    dtype = top_desc.dtype
    diff = b - a
    if gamma >= 0.5:
        out = b - diff * dtype.type(1.0 - gamma)
    else:
        out = a + diff * dtype.type(gamma)
    return out.astype(dtype)


#: Values per chunk of units in pass 1's running top-k (``[units, k + b*h*w]`` float32, 32 MiB): bounds
#: the per-batch work buffers of :meth:`UnitStats.update` independently of the number of units.
TOPK_CHUNK_VALUES = 1 << 23


def topk_unit_chunk(num_units: int, row_values: int) -> int:
    """Units per chunk of pass 1's top-k: ``TOPK_CHUNK_VALUES // row_values``, between 1 and ``num_units``.

    ``row_values`` is ``k + b*h*w``, one unit's candidates in one batch (per device)."""
    return max(1, min(num_units, TOPK_CHUNK_VALUES // max(1, row_values)))


class UnitStats:
    """Streaming pass-1 statistics of one layer. See the module docstring for the protocol.

    num_units:  U, channels of the layer.
    num_images: N, images of the set (local dictionary, or one global family); ``index`` values in
                ``update`` are positions ``0..N-1`` in that set.
    map_hw:     (h, w) of the raw activation maps.
    quantile:   q for thresholds, or ``None`` to skip them (global families).
    mesh:       a mesh with a ``data`` axis; default: one device.
    """

    def __init__(
        self,
        num_units: int,
        num_images: int,
        map_hw: tuple[int, int],
        quantile: float | None = 0.005,
        mesh: Mesh | None = None,
    ):
        self.num_units = int(num_units)
        self.num_images = int(num_images)
        self.map_hw = (int(map_hw[0]), int(map_hw[1]))
        self.quantile = None if quantile is None else float(quantile)
        self.mesh = mesh if mesh is not None else make_data_mesh(1)
        self.num_devices = int(self.mesh.devices.size)
        self.num_values = self.num_images * self.map_hw[0] * self.map_hw[1]
        self.k = 0 if self.quantile is None else topk_size(self.num_values, self.quantile)
        self._replicated = NamedSharding(self.mesh, P())
        self._per_device = NamedSharding(self.mesh, P(DATA_AXIS, None, None))
        self._update = self._build_update()
        self._merge = jax.jit(_merge_states, static_argnums=2, out_shardings=self._state_shardings())

    # ------------------------------------------------------------------ protocol
    def init(self) -> State:
        """A fresh state: top-k at -inf, lo at +inf, hi and image_max at -inf, count 0."""
        U = self.num_units
        state: State = {
            "lo": jnp.full((U,), jnp.inf, jnp.float32),
            "hi": jnp.full((U,), -jnp.inf, jnp.float32),
            "image_max": jnp.full((self.num_images, U), -jnp.inf, jnp.float32),
            "count": jnp.zeros((), jnp.int32),
            "nonfinite": jnp.zeros((), jnp.int32),
        }
        if self.k:
            state["topk"] = jnp.full((self.num_devices, U, self.k), -jnp.inf, jnp.float32)
        return jax.device_put(state, self._state_shardings())

    def update(self, state: State, batch: Batch) -> State:
        """Fold one batch in: ``batch.activations`` ``[B, h, w, U]`` float32 NHWC, ``batch.index``
        ``[B]`` positions in the set, ``batch.valid`` ``[B]`` bool (see :class:`Batch`).

        ``B`` must be a multiple of the mesh size (:meth:`Batch.padded` pads it).
        """
        batch.require("index")
        acts = batch.activations
        B = acts.shape[0]
        if acts.ndim != 4 or tuple(acts.shape[1:]) != (*self.map_hw, self.num_units):
            raise ValueError(f"activations {tuple(acts.shape)}: expected [B, {self.map_hw[0]}, {self.map_hw[1]}, {self.num_units}]")
        if B % self.num_devices:
            raise ValueError(f"batch of {B} is not a multiple of the {self.num_devices} devices (pad it)")
        return self._update(state, acts, jnp.asarray(batch.index, jnp.int32), jnp.asarray(batch.valid, bool))

    def merge(self, a: State, b: State) -> State:
        """Combine two states over disjoint image sets (other devices, hosts or resumed runs)."""
        return self._merge(a, b, self.k)

    def finalize(self, state: State) -> dict[str, np.ndarray]:
        """thresholds [U] f32 (absent when quantile is None), lo [U], hi [U], image_max [N, U] f32.

        Raises :class:`HndError` when a value was NaN or inf, or when not every image was seen exactly
        once (the threshold needs all ``N*h*w`` values).
        """
        bad = int(state["nonfinite"])
        if bad:
            raise HndError(f"the activations contain {bad} NaN or inf value(s): thresholds and ranks would be meaningless")
        count = int(state["count"])
        if count != self.num_images:
            raise HndError(f"pass 1 saw {count} image(s), expected {self.num_images}: every image must be fed once")
        out = {
            "lo": np.asarray(state["lo"], np.float32),
            "hi": np.asarray(state["hi"], np.float32),
            "image_max": np.asarray(state["image_max"], np.float32),
        }
        if self.k:
            top = np.asarray(state["topk"], np.float32)  # [D, U, k]
            union = np.moveaxis(top, 0, 1).reshape(self.num_units, -1)  # [U, D*k]
            width = union.shape[1]
            # Only the k largest of the union matter; partition then sort those k descending.
            part = np.partition(union, width - self.k, axis=1)[:, width - self.k :]
            top_desc = -np.sort(-part, axis=1)
            out["thresholds"] = quantile_from_topk(top_desc, self.num_values, self.quantile)
        return out

    # ------------------------------------------------------------------ jitted pieces
    def _state_shardings(self) -> State:
        sh: State = {k: self._replicated for k in ("lo", "hi", "image_max", "count", "nonfinite")}
        if self.k:
            sh["topk"] = self._per_device
        return sh

    def _build_update(self):
        k = self.k
        N = self.num_images
        mesh = self.mesh

        def local_topk(topk, acts, valid):
            # Per device: [1, U, k] state, [b, h, w, U] acts. Padding rows become -inf (never selected
            # ahead of a real value; the final union has at least k real values per unit).
            # Units are folded in chunks of `uc` (a fori_loop): the transposed copy and top_k's work
            # buffers then hold [uc, k + b*h*w] values instead of the whole batch three times over.
            # The last chunk starts at U - uc and may redo units of the one before: the same values,
            # written again (top_k of a unit's row does not depend on the other rows).
            b, hh, ww, U = acts.shape
            uc = topk_unit_chunk(U, b * hh * ww + k)

            def best_of(prev, part):  # [n, k] state rows, [b, h, w, n] activations -> [n, k]
                part = jnp.where(valid[:, None, None, None], part, -jnp.inf).reshape(b * hh * ww, -1)
                return jax.lax.top_k(jnp.concatenate([prev, part.T], axis=1), k)[0]

            if uc >= U:
                return best_of(topk[0], acts)[None]

            def chunk(i, out):
                start = jnp.minimum(i * uc, U - uc)
                part = jax.lax.dynamic_slice_in_dim(acts, start, uc, axis=3)  # [b, h, w, uc]
                prev = jax.lax.dynamic_slice_in_dim(topk[0], start, uc, axis=0)  # [uc, k]
                return jax.lax.dynamic_update_slice_in_dim(out, best_of(prev, part), start, axis=0)

            return jax.lax.fori_loop(0, -(-U // uc), chunk, topk[0])[None]

        sharded_topk = jax.shard_map(
            local_topk,
            mesh=mesh,
            in_specs=(P(DATA_AXIS, None, None), P(DATA_AXIS, None, None, None), P(DATA_AXIS)),
            out_specs=P(DATA_AXIS, None, None),
        )

        def local_nonfinite(acts, valid):
            # One image at a time: XLA on CPU stores the int32 mask it sums, so a whole-batch count
            # would hold [b, h, w, U] int32 (as large as the batch); per image it is [h, w, U].
            def one(i, total):
                bad = (~jnp.isfinite(jax.lax.dynamic_index_in_dim(acts, i, 0, keepdims=False))).sum(dtype=jnp.int32)
                return total + jnp.where(valid[i], bad, 0)

            start = jax.lax.pcast(jnp.int32(0), (DATA_AXIS,), to="varying")  # a per-device count
            return jax.lax.psum(jax.lax.fori_loop(0, acts.shape[0], one, start), DATA_AXIS)

        sharded_nonfinite = jax.shard_map(
            local_nonfinite,
            mesh=mesh,
            in_specs=(P(DATA_AXIS, None, None, None), P(DATA_AXIS)),
            out_specs=P(),
        )

        def update(state, acts, index, valid):
            acts = acts.astype(jnp.float32)
            per_image_max = acts.max(axis=(1, 2))  # [B, U]
            per_image_min = acts.min(axis=(1, 2))
            new = dict(state)
            new["lo"] = jnp.minimum(state["lo"], jnp.where(valid[:, None], per_image_min, jnp.inf).min(axis=0))
            new["hi"] = jnp.maximum(state["hi"], jnp.where(valid[:, None], per_image_max, -jnp.inf).max(axis=0))
            # Padding rows scatter to index N, which mode='drop' discards.
            target = jnp.where(valid, index, N)
            new["image_max"] = state["image_max"].at[target].max(per_image_max, mode="drop")
            new["count"] = state["count"] + valid.sum(dtype=jnp.int32)
            new["nonfinite"] = state["nonfinite"] + sharded_nonfinite(acts, valid)
            if k:
                new["topk"] = sharded_topk(state["topk"], acts, valid)
            return new

        data = NamedSharding(mesh, P(DATA_AXIS))
        acts_sh = NamedSharding(mesh, P(DATA_AXIS, None, None, None))
        shardings = self._state_shardings()
        return jax.jit(
            update,
            in_shardings=(shardings, acts_sh, data, data),
            out_shardings=shardings,
            donate_argnums=0,
        )


def _merge_states(a: State, b: State, k: int) -> State:
    out = {
        "lo": jnp.minimum(a["lo"], b["lo"]),
        "hi": jnp.maximum(a["hi"], b["hi"]),
        "image_max": jnp.maximum(a["image_max"], b["image_max"]),
        "count": a["count"] + b["count"],
        "nonfinite": a["nonfinite"] + b["nonfinite"],
    }
    if k:
        out["topk"] = jax.lax.top_k(jnp.concatenate([a["topk"], b["topk"]], axis=-1), k)[0]
    return out
