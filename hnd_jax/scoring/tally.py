"""Pass 2 of the scoring: the IoU tally, intersection and union counts of every (unit, concept).

Spec (DESIGN.md §2): ``B_u(x) = [up(A_u(x)) > T_u]`` (``up``: :mod:`hnd_jax.scoring.upsample`),
``intersection[u, c] = sum_x |B_u(x) AND M_c(x)|`` over every image, and
``union[u, c] = sum_{x in X_c} |B_u(x)| + |M_c(x)| - |B_u(x) AND M_c(x)|`` with

* ``family``:   X_c = images whose family is the family of c (``M_c`` is empty where c is absent);
* ``labeled``:  X_c = images with ``labelled[x, c]``;
* ``official``: X_c = images with ``labelled[x, c]`` and ``B_u(x)`` not empty (the published code).

Same streaming protocol as every accumulator (``init / update / merge / finalize``)::

    tally = IoUTally(U, taxonomy.concept_family_index, S, (h, w), thresholds, "family", mesh)
    state = tally.init()
    for batch: state = tally.update(state, batch)   # a Batch with masks, labelled, family
    counts = tally.finalize(state)          # {"intersection": int64 [U, C], "union": int64 [U, C]}

Three kernels compute the same bits (the tests check them against each other and against a plain
NumPy reference); every one decides a pixel by the float64 value of the shared formula of
:mod:`hnd_jax.scoring.upsample` compared with ``float64(T_u)``:

* ``method="cells"`` (:mod:`hnd_jax.scoring.tally_cells`, :class:`~hnd_jax.scoring.tally_cells.CellTally`):
  DESIGN.md §2b, jitted and sharded; cells of the bilinear grid whose four raw corners are all
  above (below) ``T_u`` count without evaluating a pixel; only mixed cells are evaluated in float64.
* ``method="dense"`` (:mod:`hnd_jax.scoring.tally_dense`): jitted, sharded over the mesh's ``data``
  axis, every pixel of every unit upsampled in float64, binary maps times masks as matrix products.
* ``method="runs"`` (:mod:`hnd_jax.scoring.tally_runs`): masks as row runs, exact closed-form counts
  on the host in NumPy (it does not use the mesh).
* ``method="auto"``: :func:`auto_method` of the mesh's platform (the choice and its measurements
  are documented there). :func:`tally_factory_for` gives the same choice as a ``tally_factory``
  for :class:`hnd_jax.scoring.engine.LayerScorer` (what ``--tally auto|cells|runs|dense`` selects).

Counts are exact integers: the kernels produce per-batch int32 partials (a batch's counts are at
most ``B * S * S``, which must stay below ``2**31``: checked) and the state accumulates them in
host int64, so totals are exact for any number of images (``N * S * S < 2**63``). The state is a
dict of NumPy int64 arrays (orbax saves it as it is).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from hnd_jax.errors import HndError
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.scoring.config import IOU_MODES, MAX_IMAGE_SIZE
from hnd_jax.scoring.runs import mask_runs
from hnd_jax.scoring.tally_dense import build_dense_kernel, dense_platform
from hnd_jax.scoring.tally_runs import run_length_counts
from hnd_jax.scoring.upsample import TINY, flush_np
from hnd_jax.sharding import make_data_mesh

State = dict[str, Any]
METHODS = ("auto", "cells", "runs", "dense")


class IoUTally:
    """Streaming intersection/union counts ``[U, C]`` of one layer for fixed thresholds.

    num_units: U; concept_family: int32 [C], the local family of every concept (compared with the
    per-image ``family`` in 'family' mode); image_size: S; map_hw: (h, w) of the raw maps;
    thresholds: float32 [U]; mode: 'family' | 'labeled' | 'official'; mesh: a ``data`` mesh (default
    one device); method: 'auto' | 'cells' | 'runs' | 'dense'; capacity: mixed cells per chunk of the
    'cells' kernel (default from the platform's memory budget; ignored by the others).
    Raises HndError for an unknown mode or method, or an image size past ``MAX_IMAGE_SIZE``.
    """

    def __init__(
        self,
        num_units: int,
        concept_family: np.ndarray,
        image_size: int,
        map_hw: tuple[int, int],
        thresholds: np.ndarray,
        mode: str,
        mesh: Mesh | None = None,
        method: str = "auto",
        capacity: int | None = None,
    ):
        if mode not in IOU_MODES:
            raise HndError(f"iou mode {mode!r}: expected one of {', '.join(IOU_MODES)}")
        if method not in METHODS:
            raise HndError(f"tally method {method!r}: expected one of {', '.join(METHODS)}")
        self.num_units = int(num_units)
        self.concept_family = np.asarray(concept_family, np.int32)
        if self.concept_family.ndim != 1:
            raise ValueError(f"concept_family {self.concept_family.shape}: expected [C]")
        self.num_concepts = int(self.concept_family.shape[0])
        self.image_size = int(image_size)
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise HndError(f"--image-size {self.image_size}: expected 1..{MAX_IMAGE_SIZE} for exact counts")
        self.map_hw = (int(map_hw[0]), int(map_hw[1]))
        # Subnormal thresholds count as zero, like every other float32 subnormal (upsample.py).
        self.thresholds = flush_np(np.asarray(thresholds, np.float32))
        if self.thresholds.shape != (self.num_units,):
            raise ValueError(f"thresholds {self.thresholds.shape}: expected [{self.num_units}]")
        self.mode = mode
        self.mesh = mesh if mesh is not None else make_data_mesh(1)
        self.platform = dense_platform(self.mesh)
        self.method = auto_method(self.platform) if method == "auto" else method
        self._dense_kernels: dict[int, Any] = {}
        self.mixed_cells = 0  # 'cells' only: mixed (image, cell, unit) triples evaluated so far
        if self.method == "cells":
            from hnd_jax.scoring.tally_cells import axis_cells, cell_capacity

            cy, cx = axis_cells(self.map_hw[0], self.image_size), axis_cells(self.map_hw[1], self.image_size)
            self.num_cells = cy.count * cx.count
            self.cell_pixels = cy.longest * cx.longest
            if capacity is not None and int(capacity) < 1:
                raise HndError(f"tally capacity {capacity}: expected at least 1")
            self.capacity = int(capacity) if capacity is not None else cell_capacity(
                self.num_concepts, self.cell_pixels, self.platform
            )

    # ------------------------------------------------------------------ protocol
    def init(self) -> State:
        """Zero counts."""
        shape = (self.num_units, self.num_concepts)
        return {"intersection": np.zeros(shape, np.int64), "union": np.zeros(shape, np.int64)}

    def update(self, state: State, batch: Batch) -> State:
        """Fold one batch in and return the new state (the old one is not modified).

        batch.activations [B, h, w, U] float32 NHWC (finite); batch.masks [B, C, S, S] bool;
        batch.labelled [B, C] bool; batch.family [B] int32; batch.valid [B] bool (False rows are
        padding and never count). See :class:`~hnd_jax.scoring.accumulator.Batch`.
        """
        batch.require("masks", "labelled", "family")
        acts, masks, labelled, family, valid = self._check_batch(
            batch.activations, batch.masks, batch.labelled, batch.family, batch.valid)
        if self.method == "runs":
            inter, union = self._update_runs(acts, masks, labelled, family, valid)
        elif self.method == "cells":
            inter, union = self._update_cells(acts, masks, labelled, family, valid)
        else:
            inter, union = self._update_dense(acts, masks, labelled, family, valid)
        return {
            "intersection": state["intersection"] + np.asarray(inter, np.int64),
            "union": state["union"] + np.asarray(union, np.int64),
        }

    def merge(self, a: State, b: State) -> State:
        """Counts of two disjoint image sets (other hosts, or a resumed run's halves)."""
        return {k: np.asarray(a[k], np.int64) + np.asarray(b[k], np.int64) for k in ("intersection", "union")}

    def finalize(self, state: State) -> dict[str, np.ndarray]:
        """``{"intersection": int64 [U, C], "union": int64 [U, C]}``."""
        return {k: np.asarray(state[k], np.int64).copy() for k in ("intersection", "union")}

    # ------------------------------------------------------------------ pieces
    def in_union(self, labelled: np.ndarray, family: np.ndarray) -> np.ndarray:
        """bool [B, C]: does image x enter concept c's union (before official mode's firing test)."""
        if self.mode == "family":
            return family[:, None] == self.concept_family[None, :]
        return labelled.copy()

    def _check_batch(self, acts, masks, labelled, family, valid):
        acts = np.asarray(acts)
        masks = np.asarray(masks)
        labelled = np.asarray(labelled, bool)
        family = np.asarray(family, np.int32)
        valid = np.asarray(valid, bool)
        h, w = self.map_hw
        U, C, S = self.num_units, self.num_concepts, self.image_size
        B = acts.shape[0] if acts.ndim else -1
        if acts.shape != (B, h, w, U):
            raise ValueError(f"activations {acts.shape}: expected [B, {h}, {w}, {U}]")
        if masks.shape != (B, C, S, S):
            raise ValueError(f"masks {masks.shape}: expected [{B}, {C}, {S}, {S}]")
        if labelled.shape != (B, C) or family.shape != (B,) or valid.shape != (B,):
            raise ValueError(f"labelled {labelled.shape}, family {family.shape}, valid {valid.shape}: expected [{B}, {C}], [{B}], [{B}]")
        if B * S * S >= 2**31:
            raise ValueError(f"batch of {B} images at S={S}: counts could overflow int32; use smaller batches")
        acts = acts.astype(np.float32, copy=False)
        # One real image at a time (views): a batch-sized copy of the real rows, and the batch-sized
        # |acts| a subnormal test needs, would each be as large as the batch.
        subnormal = False
        for i in np.flatnonzero(valid):
            img = acts[i]
            if not (np.isfinite(img.max()) and np.isfinite(img.min())):
                raise HndError("activations contain NaN or inf values: expected finite numbers")
            # Subnormals are flushed to zero (upsample.py); exact zeros (ReLU) need no flushing.
            subnormal = subnormal or bool(((np.abs(img) < TINY) & (img != 0)).any())
        if subnormal:  # rare: only then pay for the copy
            acts = flush_np(acts)
        if masks.dtype != np.bool_:
            masks = masks != 0
        return acts, masks, labelled, family, valid

    def _update_runs(self, acts, masks, labelled, family, valid):
        if not valid.all():  # fancy indexing copies the (large) masks: only when there is padding
            keep = np.flatnonzero(valid)
            # Batch.padded puts the real rows first: then a slice (views, no copy) selects them.
            sel = slice(int(keep[0]), int(keep[-1]) + 1) if keep.size and keep[-1] - keep[0] + 1 == keep.size else keep
            acts, masks, labelled, family = acts[sel], masks[sel], labelled[sel], family[sel]
        runs = mask_runs(masks)
        counts = run_length_counts(acts, runs, self.thresholds, self.image_size)
        U, C = self.num_units, self.num_concepts
        inter_x_key = counts.unit * C + counts.concept
        inx = self.in_union(labelled, family)
        inter = np.bincount(inter_x_key, weights=counts.inter, minlength=U * C)
        in_u = inx[counts.image, counts.concept]
        inter_in = np.bincount(inter_x_key[in_u], weights=counts.inter[in_u], minlength=U * C)
        # The union's area terms: the formula of the dense kernel's union_partial, in int64.
        area_terms = _area_terms(counts.area, runs.area, inx, self.mode == "official")
        inter = np.rint(inter).astype(np.int64).reshape(U, C)
        inter_in = np.rint(inter_in).astype(np.int64).reshape(U, C)
        return inter, area_terms - inter_in

    def _sharded_batch(self, acts, labelled, family) -> tuple[int, np.ndarray]:
        """The batch size (checked: a multiple of the device count) and the in-union flags [B, C]."""
        B = acts.shape[0]
        ndev = int(self.mesh.devices.size)
        if B % ndev:
            raise ValueError(f"batch of {B} is not a multiple of the {ndev} devices (pad it)")
        return B, self.in_union(labelled, family)

    def _update_dense(self, acts, masks, labelled, family, valid):
        B, inx = self._sharded_batch(acts, labelled, family)
        with jax.enable_x64(True):
            kernel = self._dense_kernels.get(B)
            if kernel is None:
                kernel = build_dense_kernel(
                    self.mesh, B, self.num_units, self.num_concepts, self.image_size, self.mode == "official", self.platform
                )
                self._dense_kernels[B] = kernel
            inter, union = kernel(acts, masks, inx, valid, self.thresholds)
            return np.asarray(inter), np.asarray(union)


    def _update_cells(self, acts, masks, labelled, family, valid):
        from hnd_jax.scoring.tally_cells import build_cell_kernel

        B, inx = self._sharded_batch(acts, labelled, family)
        with jax.enable_x64(True):
            kernel = build_cell_kernel(
                self.mesh, B, self.map_hw, self.num_units, self.num_concepts, self.image_size,
                self.mode == "official", self.capacity,
            )
            inter, union, mixed = kernel(acts, masks, inx, valid, self.thresholds)
            self.mixed_cells += int(mixed)
            return np.asarray(inter), np.asarray(union)


def auto_method(platform: str) -> str:
    """The kernel ``auto`` picks on ``platform`` ('cpu', 'gpu', 'tpu', ...): 'runs' on CPUs, else 'cells'.

    Measured with ``benchmarks/bench_scoring.py --compare-kernels`` on the shared 2-core CPU (load
    2-9 from other jobs; medians of the batches after the compiling one; counts identical across the
    three kernels in every run):

    * "wide" (256 units, 7x7 maps, S=224, 38 concepts, 3 batches of 16): runs 1.6 ms/image,
      cells 13.5 ms/image, dense 340 ms/image (dense / cells = 25x in time; an earlier run under
      heavier load gave 13x); pixel evaluations 12.8 M/image dense vs 0.24 M cells (232 mixed
      cells of at most 32x32 pixels per image: 54x fewer);
    * "cpu-medium" (512 units, 4x4 maps, S=128, 256 images in batches of 64): runs 1.6 ms/image,
      cells 10.9 ms/image, dense 637 ms/image (58x; 57x fewer pixel evaluations).

    On CPUs the run-length kernel wins by about 7-8x: it resolves a firing row segment with a
    binary search and counts masks as runs in closed form, while the cells kernel evaluates every
    pixel of a mixed cell and ANDs its fire bits with ``C`` masks. On accelerators the run-length
    kernel cannot run (it is host NumPy, serial in the batch), and the dense kernel evaluates every
    pixel of every unit in float64 (GPUs run float64 at a fraction of their float32 rate, TPUs only
    emulate it): the cells kernel does the same float64 work on about 2% of the pixels, in static
    shapes, so it is the accelerator choice. Its GPU timing against dense is measured by
    ``benchmarks/accelerator.sh`` (not measured in this work: no accelerator was available).
    """
    return "runs" if platform == "cpu" else "cells"


def tally_factory_for(kind: str) -> Callable[..., IoUTally]:
    """A ``tally_factory`` (the signature of :class:`IoUTally` without ``method``) for one kernel.

    kind: 'auto' | 'cells' | 'runs' | 'dense' (``--tally``); 'auto' resolves per mesh platform with
    :func:`auto_method` when the tally is built. Raises HndError for any other kind.
    """
    if kind not in METHODS:
        raise HndError(f"--tally {kind!r}: expected one of {', '.join(METHODS)}")

    def factory(num_units, concept_family, image_size, map_hw, thresholds, mode, mesh=None, **kwargs):
        return IoUTally(num_units, concept_family, image_size, map_hw, thresholds, mode, mesh=mesh, method=kind, **kwargs)

    factory.kind = kind  # type: ignore[attr-defined]
    return factory


def _area_terms(area_b: np.ndarray, area_m: np.ndarray, in_union: np.ndarray, official: bool) -> np.ndarray:
    """``sum_{x in X_c} g(x, u) * (|B_u(x)| + |M_c(x)|)`` as int64 ``[U, C]`` (see ``union_partial``).

    The products run in float64 with ``einsum`` loops: every term and partial sum is an integer at
    most ``B * S * S < 2**31`` (checked per batch), far below 2**53, so they are exact and the
    rounding to int64 is exact too. Not int64 ``@`` (NumPy's integer matmul is a slow generic loop:
    10 ms per cpu-medium batch) and not BLAS (OpenBLAS wakes its threads for these small products; next
    to XLA's thread pool on a loaded 2-core machine one call took 15 ms; einsum takes 0.2 ms)."""
    inx = in_union.astype(np.float64)
    area_b = area_b.astype(np.float64)
    mask_term = inx * area_m.astype(np.float64)
    out = np.einsum("bu,bc->uc", area_b, inx, optimize=False)
    if official:
        out += np.einsum("bu,bc->uc", (area_b > 0).astype(np.float64), mask_term, optimize=False)
    else:
        out += mask_term.sum(axis=0)[None, :]
    return np.rint(out).astype(np.int64)
