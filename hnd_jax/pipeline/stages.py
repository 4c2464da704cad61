"""The one stage runner: batches in, accumulators updated, checkpoints, merge across processes.

Pass 1, pass 2 and every global family are the same loop (DESIGN.md §3)::

    states = [acc.init() ...]  or the checkpointed states of an interrupted run
    for source batch:                    # this process's slice, from the resume point on
        for each (layer, accumulator):  state = acc.update(state, Batch for that layer)
        every N batches:                 checkpoint {finished stages' states, this stage's states}
    merged = fold of every process's states with acc.merge (all-gather; one process: unchanged)

The runner knows nothing of any particular statistic (:mod:`hnd_jax.scoring.accumulator`) or source
(:mod:`hnd_jax.pipeline.sources`): what differs between stages is only which accumulators run and
which batches feed them, which the driver (:mod:`hnd_jax.pipeline.dissect`) decides.

Test hook: the environment variable ``HND_TEST_SLEEP_PER_BATCH`` (seconds, float) makes every batch
sleep that long, so tests can kill a run mid-way deterministically. It has no other effect.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from hnd_jax.errors import HndError
from hnd_jax.pipeline.checkpoints import RunCheckpoints
from hnd_jax.pipeline.progress import StageProgress
from hnd_jax.pipeline.sources import SourceBatch
from hnd_jax.scoring.accumulator import Accumulator, Batch
from hnd_jax.sharding import to_host

SLEEP_ENV = "HND_TEST_SLEEP_PER_BATCH"


def _sleep_hook() -> None:
    """After every batch: sleep ``$HND_TEST_SLEEP_PER_BATCH`` seconds (tests kill runs mid-way)."""
    delay = os.environ.get(SLEEP_ENV)
    if delay:
        time.sleep(float(delay))


@dataclass
class Stage:
    """One pass over a set of images.

    name:         checkpoint item name (``pass1``, ``pass2``, ``global_<i>``).
    label:        what progress output calls it.
    accumulators: ``(layer, accumulator)`` pairs; each is fed that layer's activations.
    num_images:   images of this process's slice (for progress).
    """

    name: str
    label: str
    accumulators: list[tuple[str, Accumulator]]
    num_images: int

    def init(self) -> list[Any]:
        return [acc.init() for _, acc in self.accumulators]

    def finalize(self, states: Sequence[Any]) -> list[Any]:
        """Each accumulator's result; an HndError (NaN activations, ...) names the layer."""
        out = []
        for (layer, acc), s in zip(self.accumulators, states):
            try:
                out.append(acc.finalize(s))
            except HndError as exc:
                raise HndError(f"layer {layer}: {exc}") from None
        return out


def merge_states(merge: Callable[[Any, Any], Any], parts: Sequence[Any], template: Any) -> Any:
    """Fold the states of disjoint image sets (processes) with the accumulator's own ``merge``,
    placing each host copy where ``template``'s arrays live (same shardings)."""

    def like(host_tree):
        return jax.tree.map(
            lambda ref, x: jax.device_put(np.asarray(x), ref.sharding) if isinstance(ref, jax.Array) else np.asarray(x),
            template, host_tree)

    merged = like(parts[0])
    for part in parts[1:]:
        merged = merge(merged, like(part))
    return merged


def merge_across_processes(merge: Callable[[Any, Any], Any], state: Any) -> Any:
    """All-gather this process's state and fold every process's state in process order.

    One process: returned unchanged. The fold is :func:`merge_states`.
    """
    count = jax.process_count()
    if count == 1:
        return state
    from jax.experimental import multihost_utils

    from hnd_jax.distributed import guarded_collective

    gathered = guarded_collective("a merge of the processes' states", multihost_utils.process_allgather,
                                  to_host(state), tiled=False)
    parts = [jax.tree.map(lambda x, i=i: np.asarray(x)[i], gathered) for i in range(count)]
    return merge_states(merge, parts, state)


def _jit_ready(batch: Batch) -> Batch:
    """With several processes, jit refuses NumPy inputs for sharded arguments: host activations (an
    activations file) become a JAX array first, which jit then places on the data mesh."""
    if jax.process_count() > 1 and isinstance(batch.activations, np.ndarray):
        return dataclasses.replace(batch, activations=jax.numpy.asarray(batch.activations))
    return batch


@dataclass
class StageRunner:
    """Runs stages for one dissection (shared settings and timings).

    ckpt: where states are checkpointed; checkpoint_every: batches between checkpoints (0: never);
    batch_size / padded: images per step before and after padding to the device count;
    progress: a progress mode (:mod:`hnd_jax.pipeline.progress`); before_checkpoint: called before
    each save (the model source flushes its disk cache so the checkpoint never points past it).
    """

    ckpt: RunCheckpoints
    checkpoint_every: int
    batch_size: int
    padded: int
    progress: str
    before_checkpoint: Callable[[], None] = lambda: None
    split: dict[str, float] = field(default_factory=lambda: {"score": 0.0, "checkpoint": 0.0})

    def run(self, stage: Stage, batches: Iterable[SourceBatch], *, states: list[Any], first: int,
            finished: dict[str, list[Any]]) -> list[Any]:
        """Feed ``batches`` (from batch ``first`` on) to the stage's accumulators, starting from
        ``states``; checkpoint every ``checkpoint_every`` batches together with the ``finished``
        stages' states; return the states merged across processes."""
        total = -(-stage.num_images // self.batch_size)
        done = first
        with StageProgress(stage.label, stage.num_images, mode=self.progress,
                           initial=min(first * self.batch_size, stage.num_images)) as progress:
            try:
                for source_batch in batches:
                    t = time.perf_counter()
                    states = self._update(stage, states, source_batch)
                    # XLA defers freeing the batch it read in place until Python's garbage collector
                    # runs JAX's callback (jax issue 14882); numeric work allocates few Python objects,
                    # so that could wait batches or a whole stage. A young-generation collection is cheap.
                    gc.collect(0)
                    self.split["score"] += time.perf_counter() - t
                    done += 1
                    if self.checkpoint_every and done % self.checkpoint_every == 0 and done < total:
                        self.save(stage.name, done, {**finished, stage.name: states})
                    progress.update(len(source_batch))
                    _sleep_hook()
            finally:
                close = getattr(batches, "close", None)
                if close is not None:  # stops a source's read-ahead thread now, also on an error
                    close()
        stage_seconds = progress.seconds
        self.split[f"stage:{stage.name}"] = self.split.get(f"stage:{stage.name}", 0.0) + stage_seconds
        return [merge_across_processes(acc.merge, s) for (_, acc), s in zip(stage.accumulators, states)]

    def _update(self, stage: Stage, states: list[Any], sb: SourceBatch) -> list[Any]:
        base = Batch.padded(self.padded, next(iter(sb.activations.values())), sb.index,
                            masks=sb.masks, labelled=sb.labelled, family=sb.family)
        per_layer: dict[str, Batch] = {}
        new = []
        for (layer, acc), state in zip(stage.accumulators, states):
            if layer not in per_layer:
                per_layer[layer] = _jit_ready(base.with_activations(sb.activations[layer]))
            new.append(acc.update(state, per_layer[layer]))
        jax.block_until_ready(new)
        return new

    def save(self, stage: str, next_batch: int, items: dict[str, Any]) -> None:
        if not self.checkpoint_every:
            return
        t = time.perf_counter()
        self.before_checkpoint()
        self.ckpt.save(stage, next_batch, items)
        self.split["checkpoint"] += time.perf_counter() - t
