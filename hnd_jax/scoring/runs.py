"""Masks as row runs (run-length encoding), the representation the CPU tally counts against.

A Face Dictionary mask is a few blobs on an ``S x S`` grid: storing, for every mask row, the
half-open column intervals ``[start, end)`` that are inside turns ``S*S`` pixels into a few dozen
runs. The run-length tally (:mod:`hnd_jax.scoring.tally_runs`) then counts a unit's pixels above
threshold inside a run in closed form instead of visiting the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskRuns:
    """Every maximal horizontal run of ``True`` in a batch of masks, in (image, concept, row, start) order.

    image, concept, row, start, end: int32 [R] (``end`` exclusive; ``start < end``).
    area: int64 [B, C], pixels inside every mask (the sum of its run lengths).
    """

    image: np.ndarray
    concept: np.ndarray
    row: np.ndarray
    start: np.ndarray
    end: np.ndarray
    area: np.ndarray

    @property
    def num_runs(self) -> int:
        return int(self.image.shape[0])


def mask_runs(masks: np.ndarray) -> MaskRuns:
    """Row runs of bool masks ``[B, C, S, S]`` (empty masks give no runs)."""
    masks = np.asarray(masks)
    if masks.ndim != 4 or masks.shape[2] != masks.shape[3]:
        raise ValueError(f"masks {masks.shape}: expected [B, C, S, S]")
    if masks.dtype != np.bool_:
        masks = masks != 0
    B, C, S, _ = masks.shape
    # Only non-empty masks, and in them only non-empty rows, are scanned: most (image, concept)
    # cells of a batch are empty, and a blob covers a fraction of its mask's rows.
    flat = masks.reshape(B * C, S * S)
    nonempty = np.flatnonzero(_any_last(flat))
    sub = masks.reshape(B * C, S, S)[nonempty]
    cell_k, row = np.nonzero(_any_last(sub))
    padded = np.zeros((cell_k.size, S + 2), np.int8)
    padded[:, 1:-1] = sub[cell_k, row]
    # Transitions come in row-major order and alternate rise (start) / fall (end) inside each row.
    edges = np.flatnonzero(np.diff(padded, axis=1))
    which, x = np.divmod(edges, S + 1)
    starts, ends = slice(0, None, 2), slice(1, None, 2)
    run_row = which[starts]
    cell = nonempty[cell_k[run_row]]
    image = (cell // C).astype(np.int32)
    concept = (cell % C).astype(np.int32)
    start = x[starts].astype(np.int32)
    end = x[ends].astype(np.int32)
    area = np.bincount(cell, weights=(end - start), minlength=B * C).astype(np.int64).reshape(B, C)
    return MaskRuns(image=image, concept=concept, row=row[run_row].astype(np.int32), start=start, end=end, area=area)


def _any_last(x: np.ndarray) -> np.ndarray:
    """``x.any(axis=-1)`` for a C-contiguous bool array, 8 bools per uint64 when the last axis allows
    (a bool is one byte, 0 or 1: a word is non-zero iff one of its 8 bools is True)."""
    n = x.shape[-1]
    if n % 8 == 0 and x.flags.c_contiguous and x.size:
        return x.view(np.uint64).any(axis=-1)
    return x.any(axis=-1)
