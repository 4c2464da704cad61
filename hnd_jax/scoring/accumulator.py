"""One protocol for every streaming statistic of a dissection, and the one batch type they all read.

Every statistic HND needs is a fold over images: thresholds, lo/hi and per-image maxima (pass 1,
:class:`~hnd_jax.scoring.unit_stats.UnitStats`), intersection/union counts (pass 2,
:class:`~hnd_jax.scoring.tally.IoUTally`), the raw maps of each unit's top images
(:class:`~hnd_jax.scoring.top_maps.TopMaps`). Modelled on davidbau/dissect's ``runningstats``, they
share one shape::

    state = acc.init()                       # a pytree of arrays (jit-, shard- and orbax-ready)
    for batch in batches:
        state = acc.update(state, batch)     # pure: the old state is not modified
    state = acc.merge(state, other_state)    # disjoint image sets: devices, processes, resumed halves
    result = acc.finalize(state)             # plain NumPy arrays

Because the states are plain pytrees and ``merge`` is associative over disjoint image sets, the
driver (:mod:`hnd_jax.pipeline.stages`) needs no knowledge of any particular statistic: it feeds
batches, checkpoints states, all-gathers them across processes and folds them with ``merge``. A
resumed run restores a checkpoint into the structure of ``init()``; nothing is hand-built.

Why one batch type. Pass 1 needs activations and image indices, pass 2 also the masks, the
labelled flags and the local family of each image; global families need only indices. One frozen
:class:`Batch` carries whichever fields the source has, so every accumulator has the same
``update(state, batch)`` signature and a source (a model's forward, an activations file) builds one
object per step. Batches are padded to a fixed size (a multiple of the device count, so one program
is compiled per run); ``valid`` switches the padding rows off in every accumulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from hnd_jax.sharding import pad_rows

S = TypeVar("S")
R = TypeVar("R", covariant=True)


@dataclass(frozen=True)
class Batch:
    """One padded step of images for the accumulators.

    activations: ``[B, h, w, U]`` float32 NHWC (a NumPy or a sharded JAX array).
    valid:       ``[B]`` bool; False rows are padding and never count.
    index:       ``[B]`` int, position of each image in its set (local dictionary order, or the
                 position within a global family); None where no accumulator needs it.
    masks:       ``[B, C, S, S]`` bool concept masks at the analysis size (pass 2 only).
    labelled:    ``[B, C]`` bool, concepts annotated on each image (pass 2 only).
    family:      ``[B]`` int32, the local family of each image (pass 2 only).
    unpadded:    the array :meth:`padded` padded into ``activations`` (None otherwise):
                 :meth:`with_activations` of that same array reuses the padded copy.
    """

    activations: Any
    valid: np.ndarray
    index: np.ndarray | None = None
    masks: np.ndarray | None = None
    labelled: np.ndarray | None = None
    family: np.ndarray | None = None
    unpadded: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def padded(cls, size: int, activations: Any, index: np.ndarray | None = None, *,
               masks: np.ndarray | None = None, labelled: np.ndarray | None = None,
               family: np.ndarray | None = None) -> "Batch":
        """A batch of ``n <= size`` real rows padded with zero rows to ``size`` (``valid`` marks the real ones).

        Raises ValueError when ``n > size``. Activations already ``size`` rows long (a forward that
        ran on a padded batch) are kept as they are.
        """
        n = len(index) if index is not None else int(activations.shape[0])
        valid = np.zeros(size, bool)
        valid[:n] = True

        def pad(x, dtype=None):
            if x is None:
                return None
            return pad_rows(np.asarray(x, dtype) if dtype is not None else np.asarray(x), size)

        if int(activations.shape[0]) == size:
            acts, unpadded = activations, None
        else:
            acts, unpadded = pad_activations(activations, size), activations
        return cls(acts, valid, pad(index, np.int64), pad(masks, bool), pad(labelled, bool), pad(family, np.int32),
                   unpadded=unpadded)

    def with_activations(self, activations: Any) -> "Batch":
        """The same images with another layer's activations (padded to this batch's size).

        The array this batch was padded from gives this batch itself (no second padded copy)."""
        if activations is self.activations or (self.unpadded is not None and activations is self.unpadded):
            return self
        acts = activations if int(activations.shape[0]) == self.size else pad_activations(activations, self.size)
        return replace(self, activations=acts, unpadded=None)

    @property
    def size(self) -> int:
        return int(self.valid.shape[0])

    def require(self, *fields: str) -> None:
        """Raise ValueError naming the first of ``fields`` this batch lacks (an accumulator's contract)."""
        for name in fields:
            if getattr(self, name) is None:
                raise ValueError(f"this accumulator needs batch.{name}, which the batch does not carry")


#: Byte alignment at which XLA's CPU client uses a NumPy array in place instead of copying it
#: (measured: a 16-byte aligned batch passed to a jitted function was copied, a 64-byte aligned one not).
HOST_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts at a multiple of :data:`HOST_ALIGNMENT`
    bytes, so that handing it to a jitted function on the CPU does not copy it (one batch less)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + HOST_ALIGNMENT, np.uint8)
    offset = (-raw.ctypes.data) % HOST_ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def pad_activations(activations: Any, size: int) -> np.ndarray:
    """``activations`` ``[n, ...]`` padded with zero rows to ``size`` rows, in one aligned buffer
    (:func:`aligned_empty`; no separate block of padding rows is built). ValueError when ``n > size``."""
    x = np.asarray(activations)
    n = int(x.shape[0])
    if n > size:
        raise ValueError(f"batch of {n} rows is larger than the padded size {size}")
    out = aligned_empty((size, *x.shape[1:]), x.dtype)
    out[:n] = x
    out[n:] = 0
    return out


class Accumulator(Protocol, Generic[S, R]):
    """A streaming statistic: ``init`` / ``update(state, batch)`` / ``merge`` / ``finalize``.

    Contract: ``finalize(merge(fold(A), fold(B))) == finalize(fold(A ∪ B))`` for disjoint image
    sets A and B, bit for bit, whatever the order and the split of the batches; states are pytrees
    of arrays whose shapes do not depend on the data (so a checkpoint restores into ``init()``).
    """

    def init(self) -> S: ...

    def update(self, state: S, batch: Batch) -> S: ...

    def merge(self, a: S, b: S) -> S: ...

    def finalize(self, state: S) -> R: ...
