"""``hnd dissect --model``: run a model over the Face Dictionary and score every requested layer.

Data flows one way (DESIGN.md §3)::

    dictionary batches (uint8) -> preprocess -> ONE jit'ed forward per batch, sharded over 'data',
    returning every requested layer -> pass 1 (UnitStats per layer) -> thresholds
    -> pass 2 (IoU tally per layer; activations from the cache or a second forward)
    -> global families (one forward over each family's images: per-image max, family lo/hi)
    -> LayerScorer.finalize -> OUT/<layer>/scores.npz + units.csv, then OUT/dissection.json LAST.

Resume. Every ``checkpoint_every`` batches the accumulator states of all layers are saved with
orbax under ``OUT/.checkpoints`` together with the stage, the next batch index and a fingerprint of
the run (:mod:`hnd_jax.pipeline.fingerprint`). Running the same command again after a crash or a
``kill -9`` prints ``resumed from <stage> at batch <i>`` and continues; the accumulators are exact
(top-k, min/max, integer counts), so the scores equal an uninterrupted run's. A checkpoint with a
different fingerprint is refused with a one-line error naming what changed (``--fresh`` starts over).
Results of the requested layers and ``dissection.json`` are removed when the run starts and written
only at the end (atomically, ``dissection.json`` last), so an interrupted run never looks complete.

Multi-host. Call ``jax.distributed.initialize()`` on every host before ``dissect_model`` (e.g. the
same command on every host with the usual ``JAX_COORDINATOR_ADDRESS``/process id environment, or a
small launcher that calls ``jax.distributed.initialize()`` then :func:`dissect_model`). Each host
reads its own contiguous slice of the dictionary (``process_index``/``process_count``) and runs it on
its local devices; after each stage the hosts' accumulator states are all-gathered and folded with
the accumulators' own ``merge`` -- the same merge that combines devices and resumed halves -- so
every host holds the same merged state. Host 0 writes the results. Each host checkpoints its own
states under ``OUT/.checkpoints/process_<i>`` (OUT must be a shared file system).

Activation cache: see :mod:`hnd_jax.pipeline.cache`.

Test hook: the environment variable ``HND_TEST_SLEEP_PER_BATCH`` (seconds, float) makes every batch
sleep that long, so tests can kill a run mid-way deterministically. It has no other effect.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from hnd_jax import __version__
from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.errors import HndError
from hnd_jax.pipeline.cache import ActivationCache, plan_cache
from hnd_jax.pipeline.checkpoints import RunCheckpoints, checkpoint_dir
from hnd_jax.pipeline.fingerprint import canonical
from hnd_jax.pipeline.forward import LayerForward, LayerCapture, pad_rows, padded_batch_size
from hnd_jax.pipeline.model_source import ModelSource, resolve_model
from hnd_jax.pipeline.progress import progress_enabled, stage_bar
from hnd_jax.pipeline.sizes import format_size, parse_size
from hnd_jax.results import DISSECTION_FILE, layer_dir, write_dissection_json, write_layer_results
from hnd_jax.scoring.config import ScoringConfig
from hnd_jax.scoring.engine import TOP_IMAGES, LayerScorer
from hnd_jax.scoring.hierarchy import top_images as rank_top_images
from hnd_jax.sharding import make_data_mesh
from hnd_jax.taxonomy import Taxonomy, resolve_taxonomy

SLEEP_ENV = "HND_TEST_SLEEP_PER_BATCH"
DEFAULT_CHECKPOINT_EVERY = 50
STAGES = ("pass1", "pass2", "global")


# ---------------------------------------------------------------------------------------- helpers
def process_slice(num: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The contiguous part of ``[0, num)`` this process reads (same rule as the dictionary readers)."""
    from hnd_jax.dictionary.batching import process_slice as _slice

    return _slice(0, num, process_index, process_count)


def to_host(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def like(template: Any, host_tree: Any) -> Any:
    """Put host arrays where ``template``'s arrays live (same shardings): restores jit-ready states."""
    return jax.tree.map(
        lambda ref, x: jax.device_put(np.asarray(x), ref.sharding) if isinstance(ref, jax.Array) else np.asarray(x),
        template,
        host_tree,
    )


def merge_states(merge: Callable[[Any, Any], Any], parts: Sequence[Any], template: Any) -> Any:
    """Fold the states of disjoint image sets (processes) with the accumulator's own ``merge``."""
    merged = like(template, parts[0])
    for part in parts[1:]:
        merged = merge(merged, like(template, part))
    return merged


def merge_across_processes(merge: Callable[[Any, Any], Any], state: Any) -> Any:
    """All-gather this process's state and fold every process's state in process order.

    One process: returned unchanged. The fold is :func:`merge_states`, the same code a test drives
    with simulated processes.
    """
    count = jax.process_count()
    if count == 1:
        return state
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(to_host(state), tiled=False)
    parts = [jax.tree.map(lambda x, i=i: np.asarray(x)[i], gathered) for i in range(count)]
    return merge_states(merge, parts, state)


def gather_top_maps(top_maps: np.ndarray, found: np.ndarray, tops: np.ndarray, index: np.ndarray,
                    acts: np.ndarray) -> None:
    """Copy the raw maps of top images present in this batch (``index`` rows of ``acts`` [B,h,w,U])."""
    index = np.asarray(index)
    pos = {int(i): r for r, i in enumerate(index)}
    hit = np.isin(tops, index)
    uu, jj = np.nonzero(hit)
    if uu.size:
        rows = np.array([pos[int(i)] for i in tops[uu, jj]])
        top_maps[uu, jj] = np.asarray(acts)[rows, :, :, uu]
        found[uu, jj] = True


def _sleep_hook() -> None:
    delay = os.environ.get(SLEEP_ENV)
    if delay:
        time.sleep(float(delay))


def _say(message: str) -> None:
    print(f"hnd: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- public API
def dissect_model(
    model: str | nnx.Module,
    weights: str | None = None,
    layers: Sequence[str] | None = None,
    dictionary: str | Path | FaceDictionary = "synthetic",
    out: str | Path = "hnd-out",
    scoring: Mapping[str, Any] | None = None,
    taxonomy: str | Path | Taxonomy | None = None,
    batch_size: int = 32,
    fresh: bool = False,
    cache_budget: str | int = "2GiB",
    *,
    card: Any = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    random_init: bool = False,
    capture: LayerCapture | None = None,
    tally_factory: Callable[..., Any] | None = None,
) -> Path:
    """Dissect ``layers`` of ``model`` on ``dictionary``; write results under ``out``; return ``out``.

    model:       a model card name (weights from ``weights``: original file or converted folder), or
                 an ``nnx.Module`` (give ``card`` or ``scoring['image_size']``; ``preprocess`` maps
                 uint8 NHWC -> float32, default scale to [0, 1]).
    layers:      dotted layer paths; default: the card's ``default_layers``.
    dictionary:  ROOT, PREP, ``synthetic[:N[:SEED]]`` or an opened :class:`FaceDictionary`.
    scoring:     :class:`ScoringConfig` fields; ``image_size`` None -> the model's input size.
    fresh:       discard an interrupted run's checkpoints instead of resuming.
    cache_budget: bytes (``'2GiB'``, ``'512MiB'``, ``0``) allowed for keeping activations between passes.
    checkpoint_every: save the accumulator states every this many batches (0: never).
    random_init: allow a card without weights (tests, demos).
    capture / tally_factory: injection points (tests; a custom layer capture for exotic modules).
    """
    run = _Dissection(
        model=model, weights=weights, layers=layers, dictionary=dictionary, out=Path(out), scoring=dict(scoring or {}),
        taxonomy=taxonomy, batch_size=batch_size, fresh=fresh, cache_budget=cache_budget, card=card, mesh=mesh,
        progress=progress, checkpoint_every=checkpoint_every, preprocess=preprocess, random_init=random_init,
        capture=capture, tally_factory=tally_factory,
    )
    return run.run()


class _Dissection:
    """One run of :func:`dissect_model` (state shared by the stages)."""

    def __init__(self, *, model, weights, layers, dictionary, out: Path, scoring: dict, taxonomy, batch_size: int,
                 fresh: bool, cache_budget, card, mesh, progress: bool, checkpoint_every: int, preprocess,
                 random_init: bool, capture, tally_factory):
        t0 = time.perf_counter()
        self.t_start = t0
        self.timings: dict[str, float] = {}
        self.split = {"data": 0.0, "forward": 0.0, "score": 0.0, "checkpoint": 0.0}
        if int(batch_size) <= 0:
            raise HndError(f"--batch-size {batch_size}: expected a positive integer")
        self.batch_size = int(batch_size)
        self.budget = parse_size(cache_budget)
        self.out = out
        self.fresh = fresh
        self.checkpoint_every = int(checkpoint_every or 0)
        self.progress = progress_enabled(progress)

        # Model, analysis size, layers.
        self.source: ModelSource = resolve_model(model, weights, card=card, preprocess=preprocess,
                                                 random_init=random_init)
        if scoring.get("image_size") is None:
            if self.source.input_size is None:
                raise HndError("a model passed as a module needs a card or scoring['image_size'] (the analysis size S)")
            scoring["image_size"] = self.source.input_size
        self.config = ScoringConfig(**scoring)
        self.image_size = int(self.config.image_size)
        self.layers = tuple(layers) if layers else self.source.default_layers
        if not self.layers:
            raise HndError("no layer to dissect: pass --layer NAME (see 'hnd layers --model NAME')")
        if len(set(self.layers)) != len(self.layers):
            raise HndError(f"--layer given twice: {', '.join(self.layers)}")
        for name in self.layers:
            layer_dir(out, name)

        # Dictionary (at S, with the card's resize filter).
        if isinstance(dictionary, (str, Path)):
            from hnd_jax.dictionary import open_dictionary

            tax = taxonomy if isinstance(taxonomy, Taxonomy) else resolve_taxonomy(taxonomy)
            self.dic = open_dictionary(str(dictionary), self.image_size, taxonomy=tax,
                                       image_resample=self.source.resample)
            self.dictionary_spec = str(dictionary)
        else:
            self.dic = dictionary
            self.dictionary_spec = None
            if int(self.dic.image_size) != self.image_size:
                raise HndError(f"dictionary image size {self.dic.image_size} != analysis size {self.image_size}")
        self.tax: Taxonomy = self.dic.taxonomy
        self.N = int(self.dic.num_local)
        if self.N == 0:
            raise HndError("the dictionary has no local images")

        # Devices and the forward.
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.mesh = mesh if mesh is not None else make_data_mesh(devices=jax.local_devices())
        self.padded = padded_batch_size(self.batch_size, self.mesh)
        self.forward = LayerForward(self.source.module, self.layers, self.mesh, capture=capture)
        self.shapes = self.forward.shapes(self.image_size, self.padded)  # validates layer names
        self.start, self.stop = process_slice(self.N, self.process_index, self.process_count)
        self.scorers = [
            LayerScorer(self.tax, self.dic.labelled, self.dic.family, shape[2], shape[:2], self.config,
                        mesh=self.mesh, tally_factory=tally_factory)
            for shape in self.shapes.values()
        ]
        self.fingerprint = canonical({
            "hnd_jax": __version__,
            "scoring": self.config.to_dict(),
            "model": self.source.identity,
            "dictionary": self.dic.identity(),
            "taxonomy": self.tax.fingerprint,
            "layers": list(self.layers),
            "batch_size": self.batch_size,
            "devices": int(self.mesh.devices.size),
            "process": [self.process_index, self.process_count],
        })
        self.ckpt = RunCheckpoints(checkpoint_dir(out, self.process_index, self.process_count), self.fingerprint,
                                   process_index=self.process_index, process_count=self.process_count)
        self.cache_dir = out / ".cache" / (f"process_{self.process_index}" if self.process_count > 1 else "")
        self.timings["setup"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ driver
    def run(self) -> Path:
        out = self.out
        if self.fresh:
            self.ckpt.clear()
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        resumed = self.ckpt.find()
        if resumed is None:
            self.ckpt.clear()
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        else:
            _say(f"resumed from {resumed.stage} at batch {resumed.next_batch}")
        self.resumed = resumed
        self._remove_stale_results()

        self.plan = plan_cache(self.shapes, self.stop - self.start, self.budget)
        self.cache = ActivationCache(self.plan, self.shapes, self.start, self.stop, self.cache_dir,
                                     reuse_disk=resumed is not None)
        self.cache_counts = {"from_cache": 0, "recomputed": 0}
        stage = resumed.stage if resumed else "pass1"
        if stage not in STAGES:
            raise HndError(f"{self.ckpt.directory}: unknown checkpoint stage {stage!r}; rerun with --fresh")

        if stage == "pass1":
            r1 = self._pass1(resumed)
            resumed = None
        else:
            r1 = None
        if stage in ("pass1", "pass2"):
            r1, r2, top_maps = self._pass2(r1, resumed)
            resumed = None
        else:
            r1 = r2 = top_maps = None
        g = self._global(r1, r2, top_maps, resumed)
        r1, r2, top_maps, global_results = g

        t = time.perf_counter()
        results = []
        for i, (name, scorer) in enumerate(zip(self.layers, self.scorers)):
            arrays = scorer.finalize(r1[i], r2[i], global_results[i])
            arrays["top_images"] = rank_top_images(r1[i]["image_max"], TOP_IMAGES)
            arrays["top_maps"] = top_maps[i]
            results.append(arrays)
        self.timings["finalize"] = time.perf_counter() - t

        if self.process_index == 0:
            t = time.perf_counter()
            for name, arrays in zip(self.layers, results):
                write_layer_results(out, name, arrays, self.tax)
            self.timings["write"] = time.perf_counter() - t
            self.timings["total"] = time.perf_counter() - self.t_start
            write_dissection_json(out, self._metadata())
        self.cache.close(remove=True)
        self.ckpt.clear()
        if self.process_index == 0:
            shutil.rmtree(out / ".cache", ignore_errors=True)
        return out

    def _remove_stale_results(self) -> None:
        """An old dissection.json would mark half-rewritten results as complete: remove it first."""
        if self.process_index != 0:
            return
        marker = self.out / DISSECTION_FILE
        if marker.exists():
            marker.unlink()
        for name in self.layers:
            shutil.rmtree(self.out / name, ignore_errors=True)

    # ------------------------------------------------------------------ batches
    def _local_iter(self, first_batch: int, with_masks: bool):
        begin = self.start + first_batch * self.batch_size
        return self.dic.local_batches(self.batch_size, with_masks=with_masks, start=begin, stop=self.stop)

    def _stage_batches(self, desc: str, first: int, with_masks: bool):
        """This process's local batches from batch ``first`` on (see :meth:`_timed_batches`)."""
        return self._timed_batches(self._local_iter(first, with_masks=with_masks), desc, self.stop - self.start, first)

    def _timed_batches(self, batches, desc: str, num_images: int, first: int):
        """Yield ``batches`` with the reads timed (``split['data']``) and a progress bar over ``num_images``."""
        bar = stage_bar(desc, num_images, enabled=self.progress, initial=min(first * self.batch_size, num_images))
        try:
            while True:
                td = time.perf_counter()
                batch = next(batches, None)
                self.split["data"] += time.perf_counter() - td
                if batch is None:
                    return
                yield batch
                bar.update(len(batch))
        finally:
            bar.close()

    def _num_local_batches(self) -> int:
        return -(-(self.stop - self.start) // self.batch_size)

    def _forward(self, images: np.ndarray) -> dict[str, jax.Array]:
        t = time.perf_counter()
        x = self.source.preprocess(pad_rows(np.asarray(images, np.uint8), self.padded))
        acts = self.forward(x)
        jax.block_until_ready(acts)
        self.split["forward"] += time.perf_counter() - t
        return acts

    def _valid(self, n: int) -> np.ndarray:
        valid = np.zeros(self.padded, bool)
        valid[:n] = True
        return valid

    def _maybe_checkpoint(self, stage: str, done: int, total: int, state_fn, extra=None) -> None:
        if self.checkpoint_every and done % self.checkpoint_every == 0 and done < total:
            t = time.perf_counter()
            self.cache.flush()
            self.ckpt.save(stage, done, state_fn(), extra)
            self.split["checkpoint"] += time.perf_counter() - t

    # ------------------------------------------------------------------ pass 1
    def _pass1(self, resumed) -> list[dict[str, np.ndarray]]:
        t = time.perf_counter()
        template = {"p1": [s.pass1.init() for s in self.scorers]}
        first = 0
        if resumed is not None:
            state = self.ckpt.restore_state(resumed, template)
            first = resumed.next_batch
            if self.plan.mode == "disk":
                self.cache.mark_filled(self.start, self.start + first * self.batch_size)
        else:
            state = template
        states = state["p1"]
        total = self._num_local_batches()
        done = first
        for batch in self._stage_batches("pass 1 (unit statistics)", first, with_masks=False):
            n = len(batch)
            acts = self._forward(batch.images)
            ts = time.perf_counter()
            index = pad_rows(np.asarray(batch.index, np.int64), self.padded)
            valid = self._valid(n)
            states = [s.pass1.update(st, acts[name], index, valid)
                      for s, st, name in zip(self.scorers, states, self.layers)]
            if self.cache.enabled:
                self.cache.store(batch.index, {name: np.asarray(acts[name])[:n] for name in self.layers})
            jax.block_until_ready(states)
            self.split["score"] += time.perf_counter() - ts
            done += 1
            self._maybe_checkpoint("pass1", done, total, lambda: {"p1": states})
            _sleep_hook()
        results = []
        for s, st in zip(self.scorers, states):
            st = merge_across_processes(s.pass1.merge, st)
            results.append(s.pass1.finalize(st))
        self.timings["pass1"] = time.perf_counter() - t
        return results

    # ------------------------------------------------------------------ pass 2
    def _pass2_templates(self, r1):
        tallies = [s.pass2(r["thresholds"]) for s, r in zip(self.scorers, r1)]
        tops = [rank_top_images(r["image_max"], TOP_IMAGES) for r in r1]
        maps = [np.zeros((*top.shape, h, w), np.float32) for top, (h, w, _) in zip(tops, self.shapes.values())]
        found = [np.zeros(top.shape, bool) for top in tops]
        return tallies, tops, maps, found

    def _r1_template(self) -> list[dict[str, np.ndarray]]:
        return [
            {"thresholds": np.zeros(u, np.float32), "lo": np.zeros(u, np.float32), "hi": np.zeros(u, np.float32),
             "image_max": np.zeros((self.N, u), np.float32)}
            for (_, _, u) in self.shapes.values()
        ]

    def _pass2(self, r1, resumed):
        t = time.perf_counter()
        first = 0
        if r1 is None:  # resuming inside pass 2: restore pass-1 results first, then the tallies
            r1_tmpl = self._r1_template()
            tallies, tops, maps, found = self._pass2_templates(r1_tmpl)
            template = {"r1": r1_tmpl, "p2": [tl.init() for tl in tallies], "maps": maps, "found": found}
            state = self.ckpt.restore_state(resumed, template)
            r1 = state["r1"]
            tallies, tops, _, _ = self._pass2_templates(r1)
            states, maps, found = state["p2"], state["maps"], state["found"]
            first = resumed.next_batch
            if self.plan.mode == "disk":  # pass 1 completed: the disk cache holds every image
                self.cache.mark_filled(self.start, self.stop)
        else:
            tallies, tops, maps, found = self._pass2_templates(r1)
            states = [tl.init() for tl in tallies]
            if self.checkpoint_every:  # pass 1 is over: a crash from here on does not redo it
                self.cache.flush()
                self.ckpt.save("pass2", 0, {"r1": r1, "p2": states, "maps": maps, "found": found})
        total = self._num_local_batches()
        done = first
        for batch in self._stage_batches("pass 2 (IoU tally)", first, with_masks=True):
            n = len(batch)
            if self.cache.has(batch.index):
                acts = {name: pad_rows(a, self.padded) for name, a in self.cache.get(batch.index, self.layers).items()}
                self.cache_counts["from_cache"] += n
            else:
                acts = self._forward(batch.images)
                self.cache_counts["recomputed"] += n
            ts = time.perf_counter()
            masks = pad_rows(np.asarray(batch.masks, bool), self.padded, False)
            labelled = pad_rows(np.asarray(batch.labelled, bool), self.padded, False)
            family = pad_rows(np.asarray(batch.family, np.int32), self.padded)
            valid = self._valid(n)
            new_states = []
            for i, (tl, st, name) in enumerate(zip(tallies, states, self.layers)):
                new_states.append(tl.update(st, acts[name], masks, labelled, family, valid))
                gather_top_maps(maps[i], found[i], tops[i], batch.index, np.asarray(acts[name])[:n])
            states = new_states
            jax.block_until_ready(states)
            self.split["score"] += time.perf_counter() - ts
            done += 1
            self._maybe_checkpoint("pass2", done, total,
                                   lambda: {"r1": r1, "p2": states, "maps": maps, "found": found})
            _sleep_hook()
        r2 = []
        for i, (tl, st) in enumerate(zip(tallies, states)):
            r2.append(tl.finalize(merge_across_processes(tl.merge, st)))
            merged = merge_across_processes(_merge_top_maps, {"maps": maps[i], "found": found[i]})
            maps[i] = np.asarray(merged["maps"])
        self.timings["pass2"] = time.perf_counter() - t
        # Pass 2 is over: save so that a crash in the global stage does not redo it.
        if self.checkpoint_every:
            self.ckpt.save("global", 0, self._global_state(r1, r2, maps, {}, None), {"family": 0})
        return r1, r2, maps

    # ------------------------------------------------------------------ global families
    def _families(self) -> list[tuple[str, np.ndarray]]:
        fams = []
        for fam in self.tax.global_families:
            group = np.asarray(self.dic.global_group_of(fam.name), np.int32)
            fams.append((fam.name, group))
        return fams

    def _global_state(self, r1, r2, maps, done_results: dict, current) -> dict:
        return {"r1": r1, "r2": r2, "maps": maps, "done": done_results, "current": current or []}

    def _global(self, r1, r2, maps, resumed):
        t = time.perf_counter()
        families = self._families()
        results: dict[str, list[dict[str, np.ndarray]]] = {}
        first_family, first_batch = 0, 0
        if r1 is None:  # resuming inside the global stage
            fi = int(resumed.extra.get("family", 0))
            r1_t = self._r1_template()
            r2_t = [{"intersection": np.zeros((u, self.tax.num_concepts), np.int64),
                     "union": np.zeros((u, self.tax.num_concepts), np.int64)} for (_, _, u) in self.shapes.values()]
            _, _, maps_t, _ = self._pass2_templates(r1_t)
            done_t = {name: self._family_result_template(group) for name, group in families[:fi] if group.size}
            cur_t = ([s.global_stats(int(families[fi][1].size)).init() for s in self.scorers]
                     if fi < len(families) and families[fi][1].size and resumed.next_batch else [])
            state = self.ckpt.restore_state(resumed, self._global_state(r1_t, r2_t, maps_t, done_t, cur_t))
            r1, r2, maps, results = state["r1"], state["r2"], state["maps"], dict(state["done"])
            for name, group in families[:fi]:
                if name in results:
                    results[name] = [{**r, "group": group} for r in results[name]]
            first_family, first_batch = fi, resumed.next_batch
            current = state["current"] or None
        else:
            current = None
        self.global_status: dict[str, str] = {}
        for fi, (name, group) in enumerate(families):
            if fi < first_family:
                self.global_status[name] = "scored" if name in results else "skipped: no images"
                continue
            if group.size == 0:
                self.global_status[name] = "skipped: no images"
                continue
            stats = [s.global_stats(int(group.size)) for s in self.scorers]
            states = current if (fi == first_family and current) else [st.init() for st in stats]
            first = first_batch if fi == first_family else 0
            lo, hi = process_slice(int(group.size), self.process_index, self.process_count)
            total = -(-(hi - lo) // self.batch_size)
            if self.process_count == 1:
                batches = self.dic.global_batches(name, self.batch_size, start=first * self.batch_size)
            else:
                batches = itertools.islice(
                    self.dic.global_batches(name, self.batch_size, process_index=self.process_index,
                                            process_count=self.process_count), first, None)
            done = first
            for batch in self._timed_batches(batches, f"global {name}", hi - lo, first):
                n = len(batch)
                acts = self._forward(batch.images)
                ts = time.perf_counter()
                index = pad_rows(np.asarray(batch.index, np.int64), self.padded)
                valid = self._valid(n)
                states = [st.update(s, acts[lname], index, valid) for st, s, lname in zip(stats, states, self.layers)]
                jax.block_until_ready(states)
                self.split["score"] += time.perf_counter() - ts
                done += 1
                self._maybe_checkpoint(
                    "global", done, total,
                    lambda: self._global_state(r1, r2, maps, _strip_groups(results), states), {"family": fi})
                _sleep_hook()
            results[name] = [
                {**st.finalize(merge_across_processes(st.merge, s)), "group": group}
                for st, s in zip(stats, states)
            ]
            self.global_status[name] = "scored"
            if self.checkpoint_every and fi + 1 < len(families):
                self.ckpt.save("global", 0, self._global_state(r1, r2, maps, _strip_groups(results), None),
                               {"family": fi + 1})
        per_layer = [{name: res[i] for name, res in results.items()} for i in range(len(self.layers))]
        self.timings["global"] = time.perf_counter() - t
        return r1, r2, maps, per_layer

    def _family_result_template(self, group: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [{"lo": np.zeros(u, np.float32), "hi": np.zeros(u, np.float32),
                 "image_max": np.zeros((group.size, u), np.float32)} for (_, _, u) in self.shapes.values()]

    # ------------------------------------------------------------------ metadata
    def _metadata(self) -> dict[str, Any]:
        identity = dict(self.dic.identity())
        identity.setdefault("spec", self.dictionary_spec)
        devices = self.mesh.devices.ravel()
        return {
            "layers": list(self.layers),
            "source": "model",
            "model": self.source.identity,
            "dictionary": identity,
            "image_size": self.image_size,
            "settings": self.config.to_dict(),
            "taxonomy": {"name": self.tax.name, "fingerprint": self.tax.fingerprint, "source": self.tax.source},
            "global_families": {
                "scored": sorted(k for k, v in self.global_status.items() if v == "scored"),
                "skipped": {k: v for k, v in self.global_status.items() if v != "scored"},
            },
            "units": {name: int(shape[2]) for name, shape in self.shapes.items()},
            "map_hw": {name: [int(shape[0]), int(shape[1])] for name, shape in self.shapes.items()},
            "batch_size": self.batch_size,
            "devices": {"count": int(devices.size), "kind": devices[0].device_kind, "platform": devices[0].platform,
                        "process_count": self.process_count},
            "cache": {**self.plan.to_dict(), "needed": format_size(self.plan.needed_bytes),
                      "images_from_cache": self.cache_counts["from_cache"],
                      "images_recomputed": self.cache_counts["recomputed"]},
            "resumed": None if self.resumed is None else {"stage": self.resumed.stage,
                                                           "batch": self.resumed.next_batch},
            "checkpoint_every": self.checkpoint_every,
            "timings": {**self.timings, "split": dict(self.split)},
        }


def _strip_groups(results: dict[str, list[dict[str, np.ndarray]]]) -> dict:
    """Checkpointable form of finished global families (the group arrays come from the dictionary)."""
    return {name: [{k: v for k, v in r.items() if k != "group"} for r in res] for name, res in results.items()}


def _merge_top_maps(a: dict, b: dict) -> dict:
    """Top maps of two processes: each image lives in exactly one process's slice."""
    fa, fb = np.asarray(a["found"]), np.asarray(b["found"])
    return {"maps": np.where(fb[..., None, None], np.asarray(b["maps"]), np.asarray(a["maps"])), "found": fa | fb}
