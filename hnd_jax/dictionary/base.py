"""What every Face Dictionary source (published layout, prepared tfds, synthetic) hands downstream.

This is the contract between the readers and the rest of hnd-jax. The scoring engine and the
pipeline only see :class:`FaceDictionary`, :class:`LocalBatch` and :class:`GlobalBatch`.

Conventions:

* Local images are indexed ``0..N-1`` in dictionary order (taxonomy ``local_families`` order, then
  CSV row order: Attributes.csv, Action_Units.csv, Parts.csv for the default taxonomy). External
  activation files (``--activations``) must use the same order.
* Global images of a family are ordered group by group (taxonomy group order), and inside a group by
  sorted file name; they are indexed ``0..n_F-1`` per family.
* ``image_size`` ``S`` is the analysis resolution: images and masks are both delivered at S x S.
  Images are resized with the resample filter the model card asks for (PIL bicubic for the paper's
  models); masks with PIL NEAREST.
* Batches are never padded: the last batch of an iteration may be smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from hnd_jax.taxonomy import Taxonomy


@dataclass(frozen=True)
class LocalBatch:
    """A batch of local-dictionary images with their masks.

    images:   uint8 [B, S, S, 3] (NHWC), resized to S.
    masks:    bool  [B, C, S, S]; all-False where the concept is not labelled on that image.
              ``None`` when the iterator was asked for ``with_masks=False`` (pass 1 needs no masks).
    labelled: bool  [B, C]; concept c is annotated (present) on the image.
    family:   int32 [B]; index into ``taxonomy.local_families`` of the file that lists the image.
    index:    int64 [B]; position of the image in dictionary order.
    """

    images: np.ndarray
    masks: np.ndarray | None
    labelled: np.ndarray
    family: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class GlobalBatch:
    """A batch of images of one global family.

    images: uint8 [B, S, S, 3]; group: int32 [B] index into the family's groups;
    index:  int64 [B] position in the family's image order.
    """

    images: np.ndarray
    group: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


@runtime_checkable
class FaceDictionary(Protocol):
    """A Face Dictionary ready for dissection at one analysis size.

    Attributes
    ----------
    taxonomy:   the concept taxonomy the dictionary was read with.
    image_size: S, the side of delivered images and masks.
    labelled:   bool [N, C] for all local images (kept in memory: it is small).
    family:     int32 [N] local family of each image.
    """

    taxonomy: Taxonomy
    image_size: int
    labelled: np.ndarray
    family: np.ndarray

    @property
    def num_local(self) -> int:
        """N, the number of local-dictionary images."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies this dictionary's content (kind, path, counts, a content hash).

        Used in ``dissection.json`` and in resume fingerprints: it must change when the index files
        or the set of images change.
        """
        ...

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
        """Yield local images ``start..stop`` in dictionary order.

        With ``process_count > 1`` each process reads only its own contiguous slice of that range
        (for multi-host runs); the union over processes is the whole range.
        """
        ...

    def get_local(self, indices: np.ndarray, *, with_masks: bool = True) -> LocalBatch:
        """Random access: the local images at these dictionary positions (reports use it for top images)."""
        ...

    def global_groups(self, family: str) -> tuple[str, ...]:
        """The subgroups of a global family, in taxonomy order."""
        ...

    def global_group_of(self, family: str) -> np.ndarray:
        """int32 [n_F]: the group index of every image of the family, in family image order."""
        ...

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
        """Yield the family's images ``start..stop`` (positions in family image order), this
        process's contiguous slice of that range as :meth:`local_batches` does."""
        ...
