"""How much memory a dissection will need, estimated from shapes and settings before pass 1.

A dissection's memory is the process already running (Python, JAX, the dictionary's labels) plus,
at the worst moment, the largest of its stages (DESIGN.md §3); each stage holds a few batches and
the per-unit state of its accumulators. :func:`plan_layer` adds up those terms for one layer, in
bytes, from the quantities that decide them (measured with ``benchmarks/bench_memory.py``):

* **read-ahead**: ``prefetch + 2`` batches of float32 NHWC rows ``[b, h, w, U]`` (the queue, the
  batch being read, the batch being scored; 1 without read-ahead; at most the number of batches),
  plus one padded copy ``[B, h, w, U]`` when a batch has fewer rows than the padded size (the last
  one, or N < B);
* **pass 1** (:class:`~hnd_jax.scoring.unit_stats.UnitStats`): the running top-k ``[D, U, k]``
  (``k = topk_size(N*h*w, q)``), ``image_max`` ``[N, U]`` (both held twice while updated) and XLA's
  work buffers, bounded by the unit chunks of ``TOPK_CHUNK_VALUES`` and one image's mask;
* **pass 2** (:class:`~hnd_jax.scoring.tally.IoUTally` on the CPU's run-length kernel, and
  :class:`~hnd_jax.scoring.top_maps.TopMaps`): the masks ``[B, C, S, S]`` (three copies: the
  dictionary's, the padded one, the kernel's), the kernel's chunk of active maps (bounded by
  ``tally_runs.CHUNK_ELEMENTS``), one image's checks, the top maps ``[U, 4, h, w]`` (three copies);
* **global families**: their images' ``image_max`` ``[n_F, U]`` (no top-k);
* **finalize** (significance and probabilities, NumPy float64): every ``image_max`` plus about
  ``FINALIZE_LOCAL_BYTES`` per local ``N x U`` value or ``FINALIZE_GLOBAL_BYTES`` per value of the
  largest global family's ``n_F x U``, whichever is more (ranks, orders and weights of the units).

An ``.npz`` activations file's arrays are read whole (:mod:`hnd_jax.pipeline.source_file`): ``local``
for the whole run, a family's group arrays during its stage.

The estimate is checked against measured peaks by ``tests/pipeline/test_memory_plan.py`` (within
``ESTIMATE_FACTOR``). It is **certain** only where every term is modelled: an activations file scored
with the run-length tally (the CPU kernel). A model's forward (its parameters and intermediate
activations), the disk cache of model activations, and the accelerator kernels' device memory are
not modelled: there the plan is only a lower bound and :func:`check_memory` warns instead of refusing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from hnd_jax import npyfile
from hnd_jax.errors import HndError
from hnd_jax.pipeline.sizes import format_size

#: Bytes of finalize's work per value of the local ``image_max`` ``[N, U]`` (AUC ranks in blocks of
#: units, probabilities per region; measured 9.4 at N=20000, U=1024) and per value of the largest
#: global family's ``[n_F, U]`` (rank fractions, weights and the permutation kernel's copy, float64;
#: measured about 39 at n_F=10000).
FINALIZE_LOCAL_BYTES = 12
FINALIZE_GLOBAL_BYTES = 40
#: Compiled programs, allocator slack and the like: a constant on top of the modelled terms.
RUNTIME_BYTES = 128 << 20
#: The measured peak lies within estimate / ESTIMATE_FACTOR .. estimate * ESTIMATE_FACTOR (tested).
ESTIMATE_FACTOR = 2.0
#: Bytes the run-length tally holds per element of its chunk of active maps (several int32/float64
#: arrays per (map, row, segment); measured about 190 MiB at the full chunk of 4M elements).
RUNS_BYTES_PER_ELEMENT = 48
F32 = 4


@dataclass(frozen=True)
class MemoryPlan:
    """The estimated memory of one layer's dissection, in bytes beyond the running process.

    layer: the layer's name; stages: stage -> bytes at that stage's worst moment (``pass1``,
    ``pass2``, ``global``, ``finalize``); resident: bytes held for the whole run (an ``.npz``'s
    ``local`` array, the runtime constant); total: ``resident + max(stages)``; certain: False when
    a term is not modelled (see the module docstring), with the reasons in ``unmodelled``.
    """

    layer: str
    stages: Mapping[str, int]
    resident: int
    certain: bool = True
    unmodelled: Sequence[str] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return self.resident + max(self.stages.values(), default=0)

    @property
    def worst_stage(self) -> str:
        return max(self.stages, key=self.stages.get) if self.stages else ""


def plan_layer(
    layer: str,
    num_images: int,
    num_units: int,
    map_hw: tuple[int, int],
    *,
    batch_size: int,
    padded_batch: int | None = None,
    image_size: int,
    num_concepts: int,
    quantile: float,
    devices: int = 1,
    prefetch: int = 2,
    family_sizes: Sequence[int] = (),
    npz_local_bytes: int = 0,
    npz_family_bytes: Sequence[int] = (),
    tally: str = "runs",
) -> MemoryPlan:
    """The :class:`MemoryPlan` of one layer with ``num_units`` units of ``map_hw`` maps over
    ``num_images`` local images (this process's slice for the batches; ``image_max`` is always all N).

    batch_size / padded_batch: images per step before / after padding to the device count;
    family_sizes: images of each scored global family; npz_local_bytes / npz_family_bytes: bytes
    of an ``.npz``'s ``local`` array and of each family's group arrays (0 / empty for a ``.npy``);
    tally: the resolved pass-2 kernel ('runs' is modelled; others make the plan uncertain).
    """
    from hnd_jax.scoring.tally_runs import CHUNK_ELEMENTS
    from hnd_jax.scoring.unit_stats import TOPK_CHUNK_VALUES, topk_size

    N, U = int(num_images), int(num_units)
    h, w = (int(d) for d in map_hw)
    B = int(padded_batch or batch_size)
    b = min(int(batch_size), N)
    row = U * h * w * F32  # one image's float32 maps
    batches = -(-N // max(1, b))
    in_flight = min(int(prefetch) + 2, batches) if prefetch else 1
    padding = B * row if (N % b or B != b) else 0  # a batch with fewer rows than B is padded (a copy)
    reading = in_flight * b * row + padding
    b_dev = -(-B // max(1, devices))

    k = topk_size(N * h * w, quantile)
    topk_state = 2 * devices * U * k * F32
    image_max = 2 * N * U * F32
    chunk_values = min(U * (b_dev * h * w + k), TOPK_CHUNK_VALUES)
    pass1_work = 2 * chunk_values * F32 + 5 * h * w * U  # transposed chunk + top_k buffers; one image's mask
    pass1 = reading + topk_state + image_max + pass1_work

    S, C = int(image_size), int(num_concepts)
    masks = 3 * B * C * S * S
    maps_in_batch = b * U
    runs_chunk = min(CHUNK_ELEMENTS, maps_in_batch * S * (w + 1))  # (map, row, segment) elements
    tally_work = RUNS_BYTES_PER_ELEMENT * runs_chunk + 3 * row  # + one image's |x|, comparisons
    top_maps = 3 * U * 4 * h * w * F32
    counts = 6 * U * C * 8
    pass2 = reading + masks + tally_work + top_maps + counts + N * U * F32

    stages = {"pass1": pass1, "pass2": pass2}
    if family_sizes:
        worst = max(int(n) for n in family_sizes)
        fam_arrays = max((int(x) for x in npz_family_bytes), default=0)
        stages["global"] = reading + 2 * worst * U * F32 + 5 * h * w * U + fam_arrays + N * U * F32
    kept = N * U * F32 + sum(int(n) for n in family_sizes) * U * F32  # every image_max, finalize's inputs
    largest_family = max((int(n) for n in family_sizes), default=0)
    stages["finalize"] = kept + max(FINALIZE_LOCAL_BYTES * N, FINALIZE_GLOBAL_BYTES * largest_family) * U

    unmodelled = [] if tally == "runs" else [f"the '{tally}' tally kernel's memory"]
    return MemoryPlan(layer, stages, RUNTIME_BYTES + int(npz_local_bytes), not unmodelled, tuple(unmodelled))


def suggest_batch_size(fits, batch_size: int) -> int | None:
    """The largest batch size below ``batch_size`` for which ``fits(b)`` holds (None when even 1 does not)."""
    if not fits(1):
        return None
    lo, hi = 1, int(batch_size)  # fits(lo); not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_memory(plans: Sequence[MemoryPlan], *, batch_size: int, replan=None,
                 available: int | None = None, say=None) -> None:
    """Refuse a run that cannot fit: HndError (one line) when the layers' plans together need more
    than the memory available now (``MemAvailable``; nothing checked where it is unknown).

    The message names the layer that needs the most, the estimate, the memory available and what to
    change: the largest ``--batch-size`` that fits (``replan(b)`` gives the plans at batch size
    ``b``), or fewer layers. When a plan is not certain (unmodelled terms) it warns through ``say``
    instead (default: one ``hnd: warning:`` line on stderr) and returns.
    """
    if not plans:
        return
    free = npyfile.memory_available() if available is None else available
    if free is None:
        return
    need = sum(p.total for p in plans) - RUNTIME_BYTES * (len(plans) - 1)
    if need <= free:
        return
    worst = max(plans, key=lambda p: p.total)
    what = (f"layer {worst.layer}: needs about {format_size(need)} of memory (peak in "
            f"{worst.worst_stage}), more than the {format_size(free)} available")
    if not all(p.certain for p in plans):
        unknown = sorted({u for p in plans for u in p.unmodelled})
        message = f"{what} (not counting {', '.join(unknown)}); the run may fail for lack of memory"
        (say or _warn)(message)
        return
    advice = []
    if replan is not None and batch_size > 1:
        def fits(b):
            ps = replan(b)
            return sum(p.total for p in ps) - RUNTIME_BYTES * (len(ps) - 1) <= free

        best = suggest_batch_size(fits, batch_size)
        if best is not None:
            advice.append(f"use --batch-size {best} or less")
    if len(plans) > 1:
        advice.append("fewer layers per run")
    if not advice:
        advice.append("per-image statistics alone exceed it: fewer units per layer or images, or more memory")
    raise HndError(f"{what}; {' or '.join(advice)}")


def _warn(message: str) -> None:
    print(f"hnd: warning: {message}", file=sys.stderr, flush=True)


def dissection_planner(dissection):
    """``b -> [MemoryPlan per layer]`` for a built dissection at batch size ``b`` (the rest of its
    settings unchanged). Only an activations file with the run-length tally is fully modelled."""
    from hnd_jax.sharding import padded_size

    d = dissection
    source = d.source
    families = [(name, int(group.size)) for name, group in d._families()
                if int(group.size) and not source.family_skip_reason(name)]
    npz_local, npz_family = 0, {}
    if hasattr(source, "npz_bytes"):
        npz_local, npz_family = source.npz_bytes()
    certain = d.kind == "activations"

    def plans(batch_size: int) -> list[MemoryPlan]:
        out = []
        for layer, (h, w, u) in source.shapes.items():
            p = plan_layer(
                layer, d.N, u, (h, w), batch_size=min(batch_size, max(1, d.stop - d.start)),
                padded_batch=padded_size(batch_size, d.mesh), image_size=d.config.image_size,
                num_concepts=d.tax.num_concepts, quantile=d.config.quantile, devices=int(d.mesh.devices.size),
                prefetch=d.run_config.prefetch, family_sizes=[n for _, n in families],
                npz_local_bytes=npz_local, npz_family_bytes=list(npz_family.values()), tally=d.tally_method,
            )
            if not certain:
                p = MemoryPlan(p.layer, p.stages, p.resident, False,
                               (*p.unmodelled, "the model's forward and the activation cache"))
            out.append(p)
        return out

    return plans


def check_dissection_memory(dissection) -> list[MemoryPlan]:
    """Before pass 1: refuse (HndError) or warn when the dissection's estimate exceeds the memory
    available (:func:`check_memory`); returns the plans (recorded in ``dissection.json``)."""
    planner = dissection_planner(dissection)
    plans = planner(dissection.run_config.batch_size)
    check_memory(plans, batch_size=dissection.run_config.batch_size, replan=planner)
    return plans
