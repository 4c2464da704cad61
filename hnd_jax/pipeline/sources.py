"""Where activations come from: the one small interface the driver reads (DESIGN.md §3).

A dissection needs, for every requested layer, the activations of the local dictionary images in
dictionary order (twice: pass 1 and pass 2, the second time with the masks) and of each global
family's images in family order. Two implementations provide them:

* :class:`~hnd_jax.pipeline.source_model.ModelActivations`: a Flax model's forward over the
  dictionary's images, one jit'ed, sharded forward per batch for all layers, with an activation
  cache between the passes;
* :class:`~hnd_jax.pipeline.source_file.FileActivations`: rows of an activations file (``.npy`` /
  ``.npz``) computed by any framework; the dictionary only supplies the masks.

Everything else (stages, resume, multi-process merge, progress, results) is the driver's
(:mod:`hnd_jax.pipeline.dissect`) and is shared by both, so a feature added there reaches both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np


@dataclass(frozen=True)
class SourceBatch:
    """One step of activations with the dictionary fields the stage needs.

    index:       int64 ``[n]`` positions (local dictionary order, or order within a global family).
    activations: layer -> ``[n or padded, h, w, U]`` float32 NHWC (host or device array).
    masks, labelled, family: the local dictionary batch's fields (pass 2 only; see
                 :class:`~hnd_jax.dictionary.base.LocalBatch`).
    """

    index: np.ndarray
    activations: dict[str, Any]
    masks: np.ndarray | None = None
    labelled: np.ndarray | None = None
    family: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])


class ActivationSource(Protocol):
    """What the driver reads activations from.

    layers:  the dissected layer names (results go to ``OUT/<layer>/``).
    shapes:  layer -> ``(h, w, U)`` of the raw maps.
    identity: JSON-able description (fingerprint and ``dissection.json``'s ``model``).
    """

    layers: tuple[str, ...]
    shapes: dict[str, tuple[int, int, int]]
    identity: dict[str, Any]

    def local_batches(self, start: int, stop: int, batch_size: int, *, stage: str) -> Iterator[SourceBatch]:
        """Local images ``[start, stop)`` in dictionary order; ``stage`` is ``'pass1'`` (no masks
        needed) or ``'pass2'`` (with masks, labelled, family)."""
        ...

    def family_skip_reason(self, family: str) -> str | None:
        """Why a global family cannot be scored from this source (None: it can)."""
        ...

    def family_batches(self, family: str, lo: int, hi: int, batch_size: int, first: int) -> Iterator[SourceBatch]:
        """The family's images at positions ``[lo, hi)`` (this process's slice) from batch ``first`` on."""
        ...

    def metadata(self) -> dict[str, Any]:
        """Source-specific facts for ``dissection.json`` (cache plan, file shape, ...)."""
        ...

    def close(self, *, completed: bool) -> None:
        """Release files and caches (``completed``: the run finished, caches may be removed)."""
        ...
