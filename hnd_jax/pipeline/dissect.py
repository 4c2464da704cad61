"""The dissection driver: one for every activation source (DESIGN.md §3).

Data flows one way::

    source batches (a model's forward, or rows of an activations file; :mod:`.sources`)
    -> pass 1 (UnitStats per layer)             -> thresholds, lo/hi, per-image max
    -> pass 2 (IoU tally + top maps per layer)  -> intersection/union counts, top images' maps
    -> one stage per global family (UnitStats without thresholds)
    -> LayerScorer.finalize -> OUT/<layer>/scores.npz + units.csv, then OUT/dissection.json LAST.

Every stage is the same loop (:class:`~hnd_jax.pipeline.stages.StageRunner`); what differs is which
accumulators run (:mod:`hnd_jax.scoring.accumulator`) and which batches feed them.

Resume. Every ``checkpoint_every`` batches, and at every stage boundary, the accumulator states are
saved with orbax under ``OUT/.checkpoints`` (:mod:`.checkpoints`) with a fingerprint of the run
(:mod:`.fingerprint`). Running the same command again after a crash or a ``kill -9`` prints
``resumed from <stage> at batch <i>`` and continues; the accumulators are exact (top-k, min/max,
integer counts), so the scores equal an uninterrupted run's. Each stage's states restore into its
accumulators' own ``init()``. A checkpoint with a different fingerprint is refused with a one-line
error naming what changed (``fresh`` starts over); the settings only the final scoring reads
(:data:`~hnd_jax.scoring.config.FINALIZE_ONLY`: IoU cut, pairing, bias cut-offs, significance tests)
are not in it, so a resumed run may change them. Results are written only at the end, beside any
previous results, and swapped in when complete with ``dissection.json`` last
(:mod:`.publish`): an interrupted or failed run never destroys finished results nor looks complete.

Multi-process. Call ``jax.distributed.initialize()`` in every process first. Each process reads its
own contiguous slice of the local images and of each global family and runs it on its local
devices; after each stage the processes' states are all-gathered and folded with the accumulators'
own ``merge`` (the same merge that combines devices and resumed halves). Process 0 writes the
results; each process checkpoints under ``OUT/.checkpoints/process_<i>`` (OUT on a shared file
system).
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from hnd_jax import __version__
from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.dictionary.batching import process_slice
from hnd_jax.errors import HndError, raise_if_stopped
from hnd_jax.pipeline.checkpoints import RunCheckpoints, checkpoint_dir
from hnd_jax.pipeline.config import RunConfig, coerce
from hnd_jax.pipeline.fingerprint import canonical
from hnd_jax.pipeline.outlock import locked_out
from hnd_jax.pipeline.sources import ActivationSource
from hnd_jax.pipeline.stages import Stage, StageRunner
from hnd_jax.pipeline.publish import clean_staging, publish_results
from hnd_jax.out_folder import check_out_folder
from hnd_jax.results import holds_our_dissection, layer_dir, read_our_dissection
from hnd_jax.scoring.config import ScoringConfig
from hnd_jax.scoring.engine import TOP_IMAGES, LayerScorer
from hnd_jax.scoring.tally import auto_method, tally_factory_for
from hnd_jax.scoring.tally_dense import dense_platform
from hnd_jax.scoring.top_maps import TopMaps
from hnd_jax.sharding import make_data_mesh, padded_size
from hnd_jax.taxonomy import Taxonomy, resolve_taxonomy

Settings = ScoringConfig | Mapping[str, Any] | None
Run = RunConfig | Mapping[str, Any] | None


def _say(message: str) -> None:
    print(f"hnd: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- public API
def dissect_model(model: Any, **options: Any) -> Path:
    """Dissect ``layers`` of ``model`` on ``dictionary``; write results under ``out``; return ``out``.

    The options are :func:`model_dissection`'s (its signature is this function's, for ``help()``);
    this builds the run and runs it.
    """
    return model_dissection(model, **options).run()


def model_dissection(
    model: Any,
    *,
    dictionary: str | Path | FaceDictionary = "synthetic",
    out: str | Path = "hnd-out",
    layers: Sequence[str] | None = None,
    weights: str | None = None,
    scoring: Settings = None,
    run: Run = None,
    taxonomy: str | Path | Taxonomy | None = None,
    card: Any = None,
    mesh: Mesh | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    random_init: bool = False,
    seed: int = 0,
    capture: Any = None,
    tally_factory: Callable[..., Any] | None = None,
) -> "Dissection":
    """The :class:`Dissection` of ``layers`` of ``model`` on ``dictionary``, built and checked but
    not run (:func:`dissect_model` runs it; ``hnd bench`` times its source first).

    model:      a model card name or ``.toml`` path (weights from ``weights``: original file or
                converted folder), or a ``flax.nnx.Module`` (give ``card`` or ``scoring['image_size']``;
                ``preprocess`` maps uint8 NHWC -> float32, default: scale to [0, 1]).
    dictionary: ROOT, PREP, ``synthetic[:N[:SEED]]`` or an opened :class:`FaceDictionary`.
    out:        OUT, the results folder: absent, empty, or an earlier dissection's (:func:`check_out`;
                a folder holding other files is refused before any work).
    layers:     dotted layer paths; default: the card's ``default_layers``.
    scoring:    a :class:`ScoringConfig` or its fields; ``image_size`` defaults to the model's input size.
    run:        a :class:`RunConfig` or its fields (batch size, cache budget, checkpoints, devices, progress).
    random_init / seed: dissect the card's architecture with random parameters drawn from ``seed``
                (the untrained control of dissection studies; deterministic per seed).
    capture / tally_factory: injection points (a custom layer capture for exotic modules; a reference tally in tests).

    Raises HndError for every problem a user can cause (unknown layer, bad settings, a checkpoint of
    a different run, NaN activations, ...); the ones found while building are raised here, before
    any image is read.
    """
    from hnd_jax.pipeline.model_source import resolve_model
    from hnd_jax.pipeline.source_model import ModelActivations

    out = check_out(out)  # before any work: never a user's folder
    run_cfg = coerce(RunConfig, run)
    source_model = resolve_model(model, weights, card=card, preprocess=preprocess, random_init=random_init,
                                 seed=seed)
    given = scoring.to_dict() if isinstance(scoring, ScoringConfig) else dict(scoring or {})
    if given.get("image_size") is None:
        if source_model.input_size is None:
            raise HndError("a model passed as a module needs a card or scoring['image_size'] (the analysis size S)")
        given["image_size"] = source_model.input_size
    config = coerce(ScoringConfig, given)
    layers = tuple(layers) if layers else source_model.default_layers
    if not layers:
        raise HndError("no layer to dissect: pass --layer NAME (see 'hnd layers --model NAME')")
    _check_layers(out, layers)
    dic, spec = _open_dictionary(dictionary, config.image_size, taxonomy, resample=source_model.resample)
    run_cfg = _batch_within_stages(run_cfg, dic)
    mesh = mesh if mesh is not None else make_data_mesh(run_cfg.devices)
    source = ModelActivations(source_model, layers, dic, mesh, run_cfg.batch_size, capture=capture,
                              prefetch=run_cfg.prefetch)
    return Dissection(source, dic, config, run_cfg, Path(out), mesh, kind="model", dictionary_spec=spec,
                      tally_factory=tally_factory)


dissect_model.__signature__ = inspect.signature(model_dissection).replace(  # type: ignore[attr-defined]
    return_annotation=Path)


def dissect_activations(
    path: str | Path,
    *,
    dictionary: str | Path | FaceDictionary,
    layer: str,
    out: str | Path,
    scoring: Settings,
    run: Run = None,
    taxonomy: str | Path | Taxonomy | None = None,
    mesh: Mesh | None = None,
    tally_factory: Callable[..., Any] | None = None,
) -> Path:
    """Score the activations in ``path`` (``.npy``/``.npz``, :mod:`.source_file`) against the
    dictionary; write ``OUT/<layer>`` and ``dissection.json``; return the layer's result folder.

    The same driver as :func:`dissect_model`: resume after a kill, multiple processes, progress and
    results are shared. ``scoring`` must give ``image_size``. Raises HndError when the file does not
    match the dictionary (rows, groups, dtype, NaN/inf), a setting is out of range, or ``out`` holds
    files that are not an earlier dissection's (:func:`check_out`, before any work).
    """
    from hnd_jax.pipeline.source_file import FileActivations

    out = check_out(out)  # before any work: never a user's folder
    run_cfg = coerce(RunConfig, run)
    config = coerce(ScoringConfig, scoring.to_dict() if isinstance(scoring, ScoringConfig) else scoring)
    _check_layers(out, (layer,))
    dic, spec = _open_dictionary(dictionary, config.image_size, taxonomy)
    run_cfg = _batch_within_stages(run_cfg, dic)
    source = FileActivations(path, layer, dic, prefetch=run_cfg.prefetch)
    try:
        mesh = mesh if mesh is not None else make_data_mesh(run_cfg.devices)
        dissection = Dissection(source, dic, config, run_cfg, Path(out), mesh, kind="activations",
                                dictionary_spec=spec, tally_factory=tally_factory)
    except BaseException:
        source.close(completed=False)
        raise
    dissection.run()  # closes the source
    return layer_dir(out, layer)


def check_out(out: str | Path) -> Path:
    """OUT as a Path when a dissection may write there: absent, empty, or an earlier dissection's
    (:func:`hnd_jax.results.holds_our_dissection`); HndError naming ``--out`` otherwise (DESIGN.md §7:
    a user's files are never replaced). Writes nothing."""
    return check_out_folder(out, what="hnd dissection", holds_ours=holds_our_dissection)


def _check_layers(out: str | Path, layers: Sequence[str]) -> None:
    """Refuse (before any work) a bad layer name, a layer given twice, and a layer whose folder in OUT
    is not an earlier run's result of that layer (a user's file or folder of that name would be
    replaced by the results)."""
    for name in layers:
        layer_dir(out, name)
    if len(set(layers)) != len(layers):
        raise HndError(f"--layer given twice: {', '.join(layers)}")
    earlier = set((read_our_dissection(out) or {}).get("layers", []))
    for name in layers:
        path = Path(out) / name
        if (path.exists() or path.is_symlink()) and name not in earlier:
            raise HndError(f"{path}: exists and is not an earlier result of layer {name} (results would replace it); "
                           "move it or choose another --out")


def _batch_within_stages(run_cfg: RunConfig, dic: FaceDictionary) -> RunConfig:
    """``run_cfg`` with ``batch_size`` at most the images of the largest stage (the local images or a
    global family): every batch is padded to the batch size, so ``--batch-size 100000`` on 600 images
    would allocate (and the memory plan refuse) 100,000-row batches. Same batches, same scores."""
    most = max([int(dic.num_local)] + [len(dic.global_group_of(f.name)) for f in dic.taxonomy.global_families])
    if run_cfg.batch_size <= most:
        return run_cfg
    return dataclasses.replace(run_cfg, batch_size=max(1, most))


def _open_dictionary(dictionary: Any, image_size: int, taxonomy: Any, *, resample: str | None = None
                     ) -> tuple[FaceDictionary, str | None]:
    """An opened dictionary at ``image_size`` and the spec it came from (None for an object)."""
    if isinstance(dictionary, (str, Path)):
        from hnd_jax.dictionary import open_dictionary

        tax = taxonomy if isinstance(taxonomy, Taxonomy) else resolve_taxonomy(taxonomy)
        kwargs = {"image_resample": resample} if resample is not None else {}
        return open_dictionary(str(dictionary), image_size, taxonomy=tax, **kwargs), str(dictionary)
    if int(dictionary.image_size) != int(image_size):
        raise HndError(f"the dictionary was opened at size {dictionary.image_size}, not the analysis size {image_size}")
    return dictionary, None


# ---------------------------------------------------------------------------------------- the driver
class Dissection:
    """One run: the stages over one source, resume, merge across processes, results.

    source: an :class:`~hnd_jax.pipeline.sources.ActivationSource`; dic: the dictionary it follows;
    config / run: the settings; out: OUT; mesh: the data mesh; kind: ``'model'`` or ``'activations'``
    (recorded in ``dissection.json``).
    """

    def __init__(self, source: ActivationSource, dic: FaceDictionary, config: ScoringConfig, run: RunConfig,
                 out: Path, mesh: Mesh, *, kind: str, dictionary_spec: str | None,
                 tally_factory: Callable[..., Any] | None = None):
        self.t_start = time.perf_counter()
        self.source, self.dic, self.config, self.run_config = source, dic, config, run
        self.out, self.mesh, self.kind, self.dictionary_spec = out, mesh, kind, dictionary_spec
        self.tax: Taxonomy = dic.taxonomy
        self.layers = source.layers
        self.N = int(dic.num_local)
        if self.N == 0:
            raise HndError("the dictionary has no local images")
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.start, self.stop = process_slice(0, self.N, self.process_index, self.process_count)
        if tally_factory is None:  # --tally: the kernel changes the speed, never the counts (not fingerprinted)
            tally_factory = tally_factory_for(run.tally)
        method = getattr(tally_factory, "kind", "custom")
        self.tally_method = auto_method(dense_platform(mesh)) if method == "auto" else method
        self.scorers = [
            LayerScorer(self.tax, dic.labelled, dic.family, u, (h, w), config, mesh=mesh, tally_factory=tally_factory)
            for (h, w, u) in source.shapes.values()
        ]
        self.fingerprint = canonical({
            "hnd_jax": __version__,
            "source": kind,
            "scoring": config.streaming_dict(),  # finalize-only settings may change on resume
            "model": source.identity,
            "dictionary": dic.identity(),
            "taxonomy": self.tax.fingerprint,
            "layers": list(self.layers),
            "batch_size": run.batch_size,
            "devices": int(mesh.devices.size),
            "process": [self.process_index, self.process_count],
        })
        self.ckpt = RunCheckpoints(checkpoint_dir(out, self.process_index, self.process_count), self.fingerprint,
                                   process_count=self.process_count)
        self.cache_dir = out / ".cache" / (f"process_{self.process_index}" if self.process_count > 1 else "")
        self.runner = StageRunner(self.ckpt, run.checkpoint_every, run.batch_size, padded_size(run.batch_size, mesh),
                                  run.progress, before_checkpoint=getattr(source, "flush", lambda: None))
        from hnd_jax.pipeline.memory_plan import check_dissection_memory

        self.memory_plans = check_dissection_memory(self)  # before pass 1: refuse a run that cannot fit
        self.timings: dict[str, float] = {"setup": time.perf_counter() - self.t_start}
        self.global_status: dict[str, str] = {}

    # ------------------------------------------------------------------ stages
    def _families(self) -> list[tuple[str, np.ndarray]]:
        """(family, group of each of its images) in taxonomy order (read from the dictionary once)."""
        if not hasattr(self, "_family_groups"):
            self._family_groups = [(f.name, np.asarray(self.dic.global_group_of(f.name), np.int32))
                                   for f in self.tax.global_families]
        return self._family_groups

    def _plan(self) -> list[tuple[str, Callable[[dict[str, list[Any]]], Stage | None]]]:
        """(stage name, builder) in run order; a builder gets the finished stages' results."""
        local = self.stop - self.start
        layers = self.layers

        def pass1(_):
            return Stage("pass1", "pass 1 (unit statistics)", [(n, s.pass1) for n, s in zip(layers, self.scorers)],
                         local)

        def pass2(results):
            r1 = results["pass1"]
            tallies = [(n, s.pass2(r["thresholds"])) for n, s, r in zip(layers, self.scorers, r1)]
            tops = [(n, TopMaps.from_image_max(r["image_max"], TOP_IMAGES, shape[:2]))
                    for n, r, shape in zip(layers, r1, self.source.shapes.values())]
            return Stage("pass2", "pass 2 (IoU tally)", tallies + tops, local)

        def family(i, name, group):
            def build(_):
                reason = self.source.family_skip_reason(name)
                if reason:
                    self.global_status[name] = f"skipped: {reason}"
                    return None
                self.global_status[name] = "scored"
                lo, hi = process_slice(0, int(group.size), self.process_index, self.process_count)
                return Stage(f"global_{i}", f"global {name}",
                             [(n, s.global_stats(int(group.size))) for n, s in zip(layers, self.scorers)], hi - lo)
            return build

        return [("pass1", pass1), ("pass2", pass2),
                *[(f"global_{i}", family(i, name, group)) for i, (name, group) in enumerate(self._families())]]

    def _runs_after(self, later: Sequence[str]) -> bool:
        """Will any of the ``later`` stages run? (Skipped global families do not: no checkpoint is
        worth saving just before the results.)"""
        families = self._families()
        return any(name in ("pass1", "pass2")
                   or not self.source.family_skip_reason(families[int(name.split("_")[1])][0]) for name in later)

    def _batches(self, stage: Stage, first: int):
        size = self.run_config.batch_size
        if stage.name in ("pass1", "pass2"):
            return self.source.local_batches(self.start + first * size, self.stop, size, stage=stage.name)
        name, group = self._families()[int(stage.name.split("_")[1])]
        lo, hi = process_slice(0, int(group.size), self.process_index, self.process_count)
        return self.source.family_batches(name, lo, hi, size, first)

    # ------------------------------------------------------------------ run
    def run(self) -> Path:
        """Run (or resume) every stage, finalize, write the results; return OUT.

        The processes first agree on the run's settings (one line on every process when they
        differ, DESIGN.md §6); then OUT is locked for the whole run (:mod:`.outlock`): a second run
        on the same OUT is refused with one line naming the process that holds it."""
        from hnd_jax.distributed import agree_across_processes, comparable

        completed = closed = False

        def close():  # files, caches and orbax closed however the run ends (a failed run keeps its disk cache)
            nonlocal closed
            if not closed:
                closed = True
                self.source.close(completed=completed)
                self.ckpt.close()

        try:
            # before any work; OUT too: process 0 writes there, and the others checkpoint beside it
            agree_across_processes({**comparable(self.fingerprint), "scoring": self.config.to_dict(),
                                    "out": str(self.out.absolute())})
            with locked_out(self.out, self.process_index) as taken_over:
                try:
                    self.lock_taken_over = taken_over
                    out = self._run()
                    completed = True
                finally:  # still locked: the next run on OUT must not see this one remove its cache
                    close()
            return out
        finally:
            close()

    def _run(self) -> Path:
        from hnd_jax.distributed import agree_on_resume_stage

        resumed = None if self.run_config.fresh else self.ckpt.find()
        if resumed is None:  # a fresh start: no earlier checkpoint or cache may leak in
            self.ckpt.clear()
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        else:
            where = resumed.stage.partition("_")[0]  # pass1, pass2, global
            family = (f" of family {self._families()[int(resumed.stage.partition('_')[2])][0]}"
                      if where == "global" else "")
            _say(f"resumed from {where} at batch {resumed.next_batch}{family}")
        self.resumed = resumed
        agree_on_resume_stage(resumed.stage if resumed else None)
        if self.process_index == 0:
            clean_staging(self.out)
        if hasattr(self.source, "open_cache"):
            self.source.open_cache(self.start, self.stop, self.run_config.cache_budget_bytes, self.cache_dir,
                                   resumed_stage=resumed.stage if resumed else None,
                                   resumed_batch=resumed.next_batch if resumed else 0,
                                   batch_size=self.run_config.batch_size)

        plan = self._plan()
        names = [name for name, _ in plan]
        if resumed is not None and resumed.stage not in names:
            raise HndError(f"{self.ckpt.directory}: unknown checkpoint stage {resumed.stage!r}; rerun with --fresh")
        resume_at = names.index(resumed.stage) if resumed else 0
        finished: dict[str, list[Any]] = {}
        results: dict[str, list[Any]] = {}
        for i, (name, build) in enumerate(plan):
            t = time.perf_counter()
            stage = build(results)
            if stage is None:
                continue
            first = resumed.next_batch if (resumed is not None and i == resume_at) else 0
            # Finished before the interruption (its merged states were saved), or interrupted inside.
            saved = i < resume_at or first
            states = self.ckpt.restore(resumed, name, stage.init()) if saved else stage.init()
            if i >= resume_at:
                states = self.runner.run(stage, self._batches(stage, first), states=states, first=first,
                                         finished=finished)
                if self._runs_after(names[i + 1:]):  # a crash from here on does not redo this stage
                    self.runner.save(names[i + 1], 0, {**finished, name: states})
            finished[name] = states
            try:
                results[name] = stage.finalize(states)
            except HndError as exc:  # e.g. NaN activations: say which weights and which layer
                raise HndError(f"{self._source_label()}, {exc}") from None
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

        t = time.perf_counter()
        arrays = self._finalize(results)
        self.timings["finalize"] = time.perf_counter() - t
        self.timings["global"] = sum(v for k, v in self.timings.items() if k.startswith("global_"))
        if self.process_index == 0:
            t = time.perf_counter()

            def metadata():
                self.timings["write"] = time.perf_counter() - t
                self.timings["total"] = time.perf_counter() - self.t_start
                return self._metadata()

            raise_if_stopped()  # a stop whose exception was swallowed after the last batch: no results
            removed = publish_results(self.out, self.layers, arrays, self.tax, metadata)
            if removed:
                _say(f"{self.out} held an earlier run's results of {', '.join(removed)}: replaced by this run's "
                     "(give each run its own --out to keep both)")
        self.ckpt.clear()
        if self.process_index == 0:
            shutil.rmtree(self.out / ".cache", ignore_errors=True)
        return self.out

    def _source_label(self) -> str:
        """What produced the activations, for error messages: the weights (or file) and the model."""
        ident = self.source.identity
        if "file" in ident:
            return f"activations file {ident['file']}"
        weights = ident.get("weights") or {}
        what = weights.get("path") or weights.get("kind") or "in-memory parameters"
        return f"model {ident.get('card') or ident.get('class') or '?'} with weights {what}"

    def _finalize(self, results: dict[str, list[Any]]) -> list[dict[str, np.ndarray]]:
        L = len(self.layers)
        families = self._families()
        out = []
        for i, scorer in enumerate(self.scorers):
            global_results = {
                name: {**results[f"global_{f}"][i], "group": group}
                for f, (name, group) in enumerate(families) if f"global_{f}" in results
            }
            top = results["pass2"][L + i]  # TopMaps ranked the top images once; finalize reuses them
            arrays = scorer.finalize(results["pass1"][i], results["pass2"][i], global_results, tops=top["tops"])
            arrays["top_maps"] = top["maps"]
            out.append(arrays)
        return out

    # ------------------------------------------------------------------ metadata
    def _metadata(self) -> dict[str, Any]:
        identity = dict(self.dic.identity())
        identity.setdefault("spec", self.dictionary_spec)
        devices = self.mesh.devices.ravel()
        shapes = self.source.shapes
        split = {**self.source.split, **{k: v for k, v in self.runner.split.items() if not k.startswith("stage:")}}
        return {
            "layers": list(self.layers),
            "source": self.kind,
            "model": self.source.identity,
            "dictionary": identity,
            "image_size": int(self.config.image_size),
            "settings": self.config.to_dict(),
            "run": self.run_config.to_dict(),
            "taxonomy": {"name": self.tax.name, "fingerprint": self.tax.fingerprint, "source": self.tax.source},
            "global_families": {
                "scored": sorted(k for k, v in self.global_status.items() if v == "scored"),
                "skipped": {k: v.removeprefix("skipped: ") for k, v in self.global_status.items() if v != "scored"},
            },
            "units": {name: int(shape[2]) for name, shape in shapes.items()},
            "map_hw": {name: [int(shape[0]), int(shape[1])] for name, shape in shapes.items()},
            "batch_size": self.run_config.batch_size,
            "devices": {"count": int(devices.size), "kind": devices[0].device_kind, "platform": devices[0].platform,
                        "process_count": self.process_count},
            **self.source.metadata(),
            "resumed": None if self.resumed is None else {"stage": self.resumed.stage,
                                                           "batch": self.resumed.next_batch},
            "lock_taken_over_from": self.lock_taken_over,
            "checkpoint_every": self.run_config.checkpoint_every,
            "memory_plan": {p.layer: {"estimate_bytes": int(p.total), "peak_in": p.worst_stage, "certain": p.certain}
                            for p in self.memory_plans},
            "tally": self.tally_method,
            "timings": {**self.timings, "split": split},
        }
