"""Throughput of a whole dissection on synthetic inputs of a named shape (``hnd bench``, DESIGN.md §6).

Needs no repository checkout and no download: the dictionary is the synthetic one
(``synthetic:N``) and the model is a model card's architecture with random parameters (the cards
ship in the wheel). One real run of the single driver (:class:`hnd_jax.pipeline.dissect.Dissection`),
so what is measured is what ``hnd dissect`` does, except that batches are not read ahead
(``prefetch=0``) so that the stages are disjoint; a proxy around the activation source times the
dictionary reads and the forward passes per stage, so every stage is reported on its own:

=====================  ==========================================================================
``dictionary_read``    decoding/generating dictionary batches (images, masks), every stage
``forward``            preprocessing + the model's jit'ed forward, every stage
``pass1``              pass-1 unit statistics (top-k thresholds, per-image max), reads excluded
``iou_tally``          pass-2 intersection/union tally and top maps, reads and forward excluded
``global_families``    the global families' statistics, reads and forward excluded
``finalize``           IoU, hierarchy, global probabilities
``end_to_end``         the whole run: setup, compilation, every stage, writing the results
=====================  ==========================================================================

Rates are aggregates over all processes (``images_per_s``: images of the stage, all processes,
per second of process 0's wall time) and per device (``images_per_s_per_device``).
``unit_concept_pairs_per_s`` counts image x unit x concept evaluations of the tally; ``tflops`` and
``fraction_of_peak`` are given for the dense tally (its useful FLOPs: the binary-map x mask product
and the upsampling, :func:`dense_tally_flops`) on devices of known peak (:data:`PEAK_TFLOPS`).
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from hnd_jax.errors import HndError


@dataclass(frozen=True)
class BenchConfig:
    """A named shape: ``images`` local synthetic images at ``image_size``, a card's architecture
    with random parameters, one ``layer`` (``units`` x ``map_size``^2 maps), ``batch`` images per step."""

    name: str
    model: str
    layer: str
    image_size: int
    images: int
    batch: int
    units: int
    map_size: int
    permutations: int = 100


CONFIGS: dict[str, BenchConfig] = {
    # Finishes in under two minutes on 2 CPU cores.
    "cpu-small": BenchConfig("cpu-small", "resnet18", "layer4.1", 64, 256, 32, units=512, map_size=2,
                             permutations=20),
    # The shapes of the scoring benchmark (benchmarks/bench_scoring.py): 512 units of 4x4 at S=128 ...
    "cpu-medium": BenchConfig("cpu-medium", "resnet18", "layer4.1", 128, 2500, 64, units=512, map_size=4),
    # ... and 2048 units of 7x7 at S=224.
    "gpu-large": BenchConfig("gpu-large", "resnet50", "layer4.2", 224, 25000, 128, units=2048, map_size=7),
}
DEFAULT_CONFIG = "cpu-small"
#: ``--tally`` choices: :data:`hnd_jax.scoring.tally.METHODS`, restated so that ``hnd --help`` needs
#: no JAX import (a test checks they are equal).
TALLY_KERNELS = ("auto", "cells", "runs", "dense")

#: Dense bf16 (or fp16) matrix peak of known accelerators, TFLOP/s, keyed by a substring of device_kind.
PEAK_TFLOPS = {
    "H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0,
    "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v4": 275.0, "TPU v6": 918.0,
}


def device_peak_tflops(kind: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key.lower() in kind.lower():
            return value
    return None


def dense_tally_flops(images: int, units: int, concepts: int, image_size: int) -> float:
    """Useful FLOPs of the dense tally: 2*S^2*U*C (binary maps x masks) + 6*S^2*U (upsampling,
    thresholding) per image."""
    s2 = float(image_size) ** 2
    return images * (2.0 * s2 * units * concepts + 6.0 * s2 * units)


class _TimedSource:
    """Proxy of an activation source: time spent producing batches (reads + forward), per stage."""

    def __init__(self, source: Any):
        self._source = source
        self.produce: dict[str, float] = {}
        self.images: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def _timed(self, stage: str, batches: Iterator[Any]) -> Iterator[Any]:
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            self.produce[stage] = self.produce.get(stage, 0.0) + time.perf_counter() - t
            if batch is None:
                return
            self.images[stage] = self.images.get(stage, 0) + len(batch)
            yield batch

    def local_batches(self, start, stop, batch_size, *, stage):
        return self._timed(stage, iter(self._source.local_batches(start, stop, batch_size, stage=stage)))

    def family_batches(self, family, lo, hi, batch_size, first):
        return self._timed("global", iter(self._source.family_batches(family, lo, hi, batch_size, first)))


def run_bench(config: BenchConfig, *, tally: str = "auto", out: str | Path | None = None,
              progress: str = "none") -> dict[str, Any]:
    """Run one dissection of ``config`` and return the report (see the module docstring).

    tally: 'auto' | 'cells' | 'runs' | 'dense' (:func:`hnd_jax.scoring.tally.tally_factory_for`).
    out: where the run writes (default: a temporary folder, removed after; several processes
    need a shared folder). Raises HndError for an unknown tally kernel.
    """
    import jax

    from hnd_jax.pipeline.config import RunConfig
    from hnd_jax.pipeline.dissect import model_dissection
    from hnd_jax.scoring.config import ScoringConfig
    from hnd_jax.scoring.tally import tally_factory_for

    factory = tally_factory_for(tally)
    tmp = None
    if out is None:
        if jax.process_count() > 1:
            raise HndError("hnd bench on several processes needs --out DIR on a file system all of them share")
        tmp = tempfile.TemporaryDirectory(prefix="hnd-bench-")
        out = tmp.name
    try:
        t0 = time.perf_counter()
        # No read-ahead: the stages then add up to the run (with hnd dissect's default prefetch, reads
        # overlap the device and the end-to-end time is lower, but no longer splits into stages).
        run_cfg = RunConfig(batch_size=config.batch, checkpoint_every=0, progress=progress, fresh=True, prefetch=0)
        scoring = ScoringConfig(image_size=config.image_size, permutations=config.permutations)
        dissection = model_dissection(config.model, dictionary=f"synthetic:{config.images}", out=out,
                                      layers=(config.layer,), scoring=scoring, run=run_cfg, random_init=True,
                                      tally_factory=factory)
        timed = dissection.source = _TimedSource(dissection.source)
        dissection.run()
        end_to_end = time.perf_counter() - t0
        report = _report(config, dissection, timed, end_to_end, tally)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return report


def _report(config, dissection, timed, end_to_end, tally) -> dict[str, Any]:
    import jax

    dic, tally_method = dissection.dic, dissection.tally_method  # 'auto' resolved per platform

    processes = jax.process_count()
    devices = jax.devices()
    local = jax.local_devices()
    kind = getattr(local[0], "device_kind", local[0].platform)
    n_dev = len(devices)
    tm = dissection.timings
    concepts = int(dic.taxonomy.num_concepts)
    units = int(next(iter(timed.shapes.values()))[2])
    n_local = int(dic.num_local)
    n_global = sum(len(dic.global_group_of(f.name)) for f in dic.taxonomy.global_families)
    read_images = sum(timed.images.values()) * processes  # every process reads its slice of each stage

    def stage(images: int, seconds: float, **extra: Any) -> dict[str, Any]:
        seconds = max(float(seconds), 1e-9)
        row = {"seconds": seconds, "images": int(images), "images_per_s": images / seconds,
               "images_per_s_per_device": images / seconds / n_dev}
        row.update({k: v for k, v in extra.items() if v is not None})
        return row

    pass1 = tm.get("pass1", 0.0) - timed.produce.get("pass1", 0.0)
    pass2 = tm.get("pass2", 0.0) - timed.produce.get("pass2", 0.0)
    glob = tm.get("global", 0.0) - timed.produce.get("global", 0.0)
    tally_extra: dict[str, Any] = {"unit_concept_pairs_per_s": n_local * units * concepts / max(pass2, 1e-9),
                                   "kernel": tally_method}
    if tally_method == "dense":
        tflops = dense_tally_flops(n_local, units, concepts, config.image_size) / max(pass2, 1e-9) / 1e12
        peak = device_peak_tflops(kind)
        tally_extra.update(tflops=tflops, fraction_of_peak=None if peak is None else tflops / (peak * n_dev))
    stages = {
        "dictionary_read": stage(read_images, timed.split["data"]),
        "forward": stage((timed.images.get("pass1", 0) + timed.counts["recomputed"] + timed.images.get("global", 0))
                         * processes, timed.split["forward"]),
        "pass1": stage(n_local, pass1),
        "iou_tally": stage(n_local, pass2, **tally_extra),
        "global_families": stage(n_global, glob),
        "finalize": stage(n_local, tm.get("finalize", 0.0)),
        "end_to_end": stage(n_local, end_to_end),
    }
    memory = None
    if local[0].platform != "cpu":
        peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in local if hasattr(d, "memory_stats")]
        peaks = [p for p in peaks if p is not None]
        memory = max(peaks) if peaks else None
    from hnd_jax.demo.machine import measured_on

    return {
        "config": asdict(config),
        "machine": measured_on(),
        "tally": tally,
        "device_kind": kind,
        "platform": local[0].platform,
        "device_count": n_dev,
        "local_device_count": len(local),
        "process_count": processes,
        "concepts": concepts,
        "units": units,
        "global_images": n_global,
        "cache": timed.metadata().get("cache", {}).get("mode"),
        "stages": stages,
        "peak_host_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_device_memory_bytes": memory,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table (one line per stage)."""
    c = report["config"]
    head = (f"hnd bench {c['name']}: {c['model']} (random init) {c['layer']}, {c['images']} synthetic images at "
            f"{c['image_size']}px, batch {c['batch']}, {report['units']} units, {report['concepts']} concepts, "
            f"tally {report['stages']['iou_tally'].get('kernel', report['tally'])}; {report['device_count']} x "
            f"{report['device_kind']} in {report['process_count']} process(es)")
    lines = [head, f"  {'stage':<16} {'seconds':>9} {'images/s':>11} {'per device':>11}  other"]
    for name, row in report["stages"].items():
        other = []
        if "unit_concept_pairs_per_s" in row:
            other.append(f"{row['unit_concept_pairs_per_s']:.3g} image-unit-concept/s")
        if "tflops" in row:
            frac = row.get("fraction_of_peak")
            other.append(f"{row['tflops']:.2f} TFLOP/s" + ("" if frac is None else f" ({100 * frac:.1f}% of peak)"))
        lines.append(f"  {name:<16} {row['seconds']:>9.2f} {row['images_per_s']:>11.1f} "
                     f"{row['images_per_s_per_device']:>11.1f}  {'; '.join(other)}")
    mem = f"  peak host memory {report['peak_host_memory_bytes'] / 2**20:.0f} MiB"
    if report.get("peak_device_memory_bytes"):
        mem += f", peak device memory {report['peak_device_memory_bytes'] / 2**20:.0f} MiB"
    lines.append(mem)
    return "\n".join(lines)
