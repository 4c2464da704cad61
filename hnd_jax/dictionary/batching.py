"""Batch iteration shared by every Face Dictionary reader (PNG and prepared).

A reader only says how to load *one* local image (with the masks of its labelled concepts) and
one global image; :class:`RecordDictionary` turns that into the whole
:class:`~hnd_jax.dictionary.base.FaceDictionary` protocol: contiguous per-process slices, batches
in dictionary order, random access and global families. Keeping this in one place is what makes
the PNG path and the prepared path deliver identical batches.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from hnd_jax.dictionary.base import GlobalBatch, LocalBatch
from hnd_jax.dictionary.scan import ordered_map
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import Taxonomy


def process_slice(start: int, stop: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The contiguous part of ``[start, stop)`` that process ``process_index`` reads.

    Parts differ in length by at most one (earlier processes get the extra items), and their union
    over all processes is the whole range, each item exactly once.
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise HndError(f"process_index {process_index} is not in 0..{process_count - 1}")
    n = max(0, stop - start)
    base, extra = divmod(n, process_count)
    lo = start + process_index * base + min(process_index, extra)
    return lo, lo + base + (1 if process_index < extra else 0)


def batch_bounds(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` bounds of consecutive batches of ``batch_size`` (last one may be short)."""
    if batch_size < 1:
        raise HndError(f"batch size {batch_size} must be at least 1")
    for lo in range(start, stop, batch_size):
        yield lo, min(lo + batch_size, stop)


class RecordDictionary:
    """FaceDictionary built on per-record loaders; subclasses implement the ``_load_*`` hooks.

    Subclasses set ``taxonomy``, ``image_size``, ``labelled`` [N, C], ``family`` [N] and
    ``_global_group`` (family name -> int32 group index per image), then implement
    :meth:`_load_local` and :meth:`_load_global` (and may override the ``_many`` variants to read
    several records at once).
    """

    taxonomy: Taxonomy
    image_size: int
    labelled: np.ndarray
    family: np.ndarray
    _global_group: dict[str, np.ndarray]
    num_workers: int | None = None

    # ------------------------------------------------------------------ hooks for subclasses
    def _load_local(self, index: int, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint8 [S, S, 3], bool [k, S, S] masks of the labelled concepts in concept order)."""
        raise NotImplementedError

    def _load_global(self, family: str, index: int) -> np.ndarray:
        """uint8 [S, S, 3] of image ``index`` of a global family."""
        raise NotImplementedError

    def _load_local_many(self, indices: Sequence[int], with_masks: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return ordered_map(lambda i: self._load_local(int(i), with_masks), indices, self.num_workers)

    def _load_global_many(self, family: str, indices: Sequence[int]) -> list[np.ndarray]:
        return ordered_map(lambda i: self._load_global(family, int(i)), indices, self.num_workers)

    def identity(self) -> dict[str, Any]:  # pragma: no cover - every reader overrides it
        raise NotImplementedError

    # ------------------------------------------------------------------ protocol
    @property
    def num_local(self) -> int:
        return int(self.labelled.shape[0])

    def _check_indices(self, indices: np.ndarray, n: int, what: str) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise HndError(f"{what} index out of range 0..{n - 1}: {idx[(idx < 0) | (idx >= n)][0]}")
        return idx

    def get_local(self, indices: np.ndarray, *, with_masks: bool = True) -> LocalBatch:
        """The local images at these dictionary positions, in the order given."""
        idx = self._check_indices(indices, self.num_local, "local image")
        loaded = self._load_local_many(idx.tolist(), with_masks)
        S, C = self.image_size, self.taxonomy.num_concepts
        images = np.zeros((len(idx), S, S, 3), dtype=np.uint8)
        masks = np.zeros((len(idx), C, S, S), dtype=bool) if with_masks else None
        for row, (i, (img, m)) in enumerate(zip(idx, loaded)):
            images[row] = img
            if masks is not None:
                concepts = np.flatnonzero(self.labelled[i])
                masks[row, concepts] = m
        return LocalBatch(
            images=images,
            masks=masks,
            labelled=self.labelled[idx].copy(),
            family=self.family[idx].astype(np.int32),
            index=idx,
        )

    def local_batches(
        self,
        batch_size: int,
        *,
        with_masks: bool = True,
        start: int = 0,
        stop: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[LocalBatch]:
        """Batches of local images ``start..stop`` (this process's contiguous slice of it)."""
        stop = self.num_local if stop is None else min(int(stop), self.num_local)
        start = max(0, int(start))
        lo, hi = process_slice(start, stop, process_index, process_count)
        for a, b in batch_bounds(lo, hi, batch_size):
            yield self.get_local(np.arange(a, b), with_masks=with_masks)

    def global_groups(self, family: str) -> tuple[str, ...]:
        return self.taxonomy.global_family(family).groups

    def global_group_of(self, family: str) -> np.ndarray:
        self.taxonomy.global_family(family)  # HndError for an unknown family
        return self._global_group[family].copy()

    def global_batches(
        self,
        family: str,
        batch_size: int,
        *,
        start: int = 0,
        stop: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[GlobalBatch]:
        """Batches of a global family's images ``start..stop`` in family order (this process's slice)."""
        groups = self.global_group_of(family)
        stop = len(groups) if stop is None else min(int(stop), len(groups))
        lo, hi = process_slice(max(0, int(start)), stop, process_index, process_count)
        for a, b in batch_bounds(lo, hi, batch_size):
            idx = np.arange(a, b, dtype=np.int64)
            imgs = self._load_global_many(family, idx.tolist())
            yield GlobalBatch(images=np.stack(imgs).astype(np.uint8), group=groups[idx].astype(np.int32), index=idx)
