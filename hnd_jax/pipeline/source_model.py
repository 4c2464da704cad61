"""Activations from a model's forward over the dictionary (``hnd dissect --model``).

One jit'ed forward per batch returns every requested layer (:mod:`hnd_jax.pipeline.forward`), sharded
over the ``data`` mesh. Pass 1 stores the activations in the cache when the plan allows
(:mod:`hnd_jax.pipeline.cache`); pass 2 reads them back and recomputes only what the cache does not
hold (a RAM cache lost in a crash, or a ``recompute`` plan). Global families are one forward per
batch of their images. A background thread reads, decodes, preprocesses and copies the next batches
to the devices while the current one computes (:mod:`hnd_jax.pipeline.prefetch`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.errors import HndError
from hnd_jax.models.capture import nothing_to_dissect
from hnd_jax.pipeline.cache import ActivationCache, plan_cache
from hnd_jax.pipeline.forward import LayerCapture, LayerForward
from hnd_jax.pipeline.model_source import ModelSource
from hnd_jax.pipeline.prefetch import Prefetch
from hnd_jax.pipeline.sizes import format_size
from hnd_jax.pipeline.sources import SourceBatch
from hnd_jax.sharding import pad_rows, padded_size


class ModelActivations:
    """The :class:`~hnd_jax.pipeline.sources.ActivationSource` of a model over a dictionary.

    model: the resolved model (module, preprocessing, identity); layers: dotted layer paths
    (validated here through ``jax.eval_shape``); dic: the dictionary at the analysis size; mesh: the
    data mesh; batch_size: images per step; capture: an optional layer-capture function;
    prefetch: batches read, preprocessed and copied to the devices ahead of the forward by a
    background thread (:mod:`hnd_jax.pipeline.prefetch`; 0: none).

    ``split`` (seconds, ``dissection.json`` timings): ``data`` reading the dictionary (in the
    prefetch thread), ``forward`` the forward passes, ``input_wait`` how long the forward loop
    waited for the next batch's images (the device starved for input).
    """

    def __init__(self, model: ModelSource, layers: tuple[str, ...], dic: FaceDictionary, mesh: Mesh,
                 batch_size: int, *, capture: LayerCapture | None = None, prefetch: int = 2):
        self.model = model
        self.layers = tuple(layers)
        self.dic = dic
        self.mesh = mesh
        self.padded = padded_size(batch_size, mesh)
        self.forward = LayerForward(model.module, self.layers, mesh, capture=capture)
        self.shapes = self.forward.shapes(int(dic.image_size), self.padded)  # validates the layer names
        for name, shape in self.shapes.items():
            reason = nothing_to_dissect(shape, dic.image_size)
            if reason is not None:
                raise HndError(f"layer {name}: {reason}")
        self.identity = model.identity
        self.prefetch = int(prefetch)
        self.split = {"data": 0.0, "forward": 0.0, "input_wait": 0.0}
        self.cache: ActivationCache | None = None
        self.plan = None
        self.counts = {"from_cache": 0, "recomputed": 0}

    # ------------------------------------------------------------------ cache
    def open_cache(self, start: int, stop: int, budget_bytes: int, directory: Path, *, resumed_stage: str | None,
                   resumed_batch: int, batch_size: int) -> None:
        """Plan and open the activation cache for local images ``[start, stop)``.

        A resumed run reuses a disk cache: images before the resume point (pass 1) or all of them
        (pass 1 finished) are marked present; a RAM cache was lost with the process and is refilled.
        """
        self.plan = plan_cache(self.shapes, stop - start, budget_bytes)
        self.cache = ActivationCache(self.plan, self.shapes, start, stop, directory,
                                     reuse_disk=resumed_stage is not None)
        if self.plan.mode == "disk" and resumed_stage is not None:
            filled_to = start + resumed_batch * batch_size if resumed_stage == "pass1" else stop
            self.cache.mark_filled(start, filled_to)

    # ------------------------------------------------------------------ batches
    def _to_device(self, images: np.ndarray) -> jax.Array:
        """Pad, preprocess and copy one batch's images to the devices (runs in the prefetch thread)."""
        return self.forward.put(self.model.preprocess(pad_rows(np.asarray(images, np.uint8), self.padded)))

    def _forward(self, x: jax.Array) -> dict[str, jax.Array]:
        t = time.perf_counter()
        acts = self.forward(x)
        jax.block_until_ready(acts)
        self.split["forward"] += time.perf_counter() - t
        return acts

    def _timed(self, batches: Iterator[Any]) -> Iterator[Any]:
        """The dictionary's batches, timing the reading (in the prefetch thread: ``split['data']``)."""
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            self.split["data"] += time.perf_counter() - t
            if batch is None:
                return
            yield batch

    def _ahead(self, batches: Iterator[Any], needs_images: Callable[[Any], bool]) -> Prefetch:
        """Read, decode and transfer ``self.prefetch`` batches ahead of the forward: yields
        ``(batch, device images or None)``; the wait for them is ``split['input_wait']``."""
        def transform(batch):
            return batch, (self._to_device(batch.images) if needs_images(batch) else None)

        return Prefetch(self._timed(batches), self.prefetch, transform=transform, name="hnd-read-model")

    def _waited(self, ahead: Prefetch) -> None:
        self.split["input_wait"] += ahead.wait

    def local_batches(self, start: int, stop: int, batch_size: int, *, stage: str) -> Iterator[SourceBatch]:
        pass2 = stage == "pass2"

        def cached(batch) -> bool:
            return pass2 and self.cache is not None and self.cache.has(batch.index)

        reads = self.dic.local_batches(batch_size, with_masks=pass2, start=start, stop=stop)
        ahead = self._ahead(reads, lambda batch: not cached(batch))
        try:
            for batch, x in ahead:
                n = len(batch)
                if x is None:
                    acts = self.cache.get(batch.index, self.layers)
                    self.counts["from_cache"] += n
                else:
                    acts = self._forward(x)
                    if pass2:
                        self.counts["recomputed"] += n
                    elif self.cache is not None and self.cache.enabled:
                        self.cache.store(batch.index, {name: np.asarray(acts[name])[:n] for name in self.layers})
                yield SourceBatch(np.asarray(batch.index, np.int64), acts,
                                  batch.masks if pass2 else None, batch.labelled if pass2 else None,
                                  batch.family if pass2 else None)
        finally:
            ahead.close()
            self._waited(ahead)

    def family_skip_reason(self, family: str) -> str | None:
        return None if len(self.dic.global_group_of(family)) else "no images"

    def family_batches(self, family: str, lo: int, hi: int, batch_size: int, first: int) -> Iterator[SourceBatch]:
        # [lo, hi) is this process's slice (the driver cut it); a resume starts past the done batches
        batches = self.dic.global_batches(family, batch_size, start=lo + first * batch_size, stop=hi)
        ahead = self._ahead(batches, lambda batch: True)
        try:
            for batch, x in ahead:
                yield SourceBatch(np.asarray(batch.index, np.int64), self._forward(x))
        finally:
            ahead.close()
            self._waited(ahead)

    def flush(self) -> None:
        """Make the disk cache durable before a checkpoint refers to it."""
        if self.cache is not None:
            self.cache.flush()

    # ------------------------------------------------------------------ facts
    def metadata(self) -> dict[str, Any]:
        plan = self.plan
        if plan is None:
            return {}
        return {"cache": {**plan.to_dict(), "needed": format_size(plan.needed_bytes),
                          "images_from_cache": self.counts["from_cache"],
                          "images_recomputed": self.counts["recomputed"]}}

    def close(self, *, completed: bool) -> None:
        if self.cache is not None:
            self.cache.close(remove=completed)
