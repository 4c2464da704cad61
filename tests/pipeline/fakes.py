"""Tiny stand-ins for the pipeline tests: an in-memory Face Dictionary and a two-conv NNX model.

The dictionary implements the :class:`hnd_jax.dictionary.base.FaceDictionary` protocol with random
12x12 images and blob masks, so the tests run in seconds and control every value (including ties).
"""

from __future__ import annotations

import hashlib

import numpy as np
from flax import nnx

from hnd_jax.dictionary.base import GlobalBatch, LocalBatch
from hnd_jax.taxonomy import default_taxonomy


class TinyDictionary:
    """``num_local`` random local images at ``image_size`` plus a few images per global group."""

    def __init__(self, num_local: int = 24, image_size: int = 12, seed: int = 0, per_group: int = 3):
        rng = np.random.default_rng(seed)
        self.taxonomy = default_taxonomy()
        tax = self.taxonomy
        self.image_size = image_size
        S, C = image_size, tax.num_concepts
        F = len(tax.local_families)
        self.family = np.sort(np.arange(num_local) % F).astype(np.int32)
        fam_of_concept = tax.concept_family_index
        self.labelled = (rng.random((num_local, C)) < 0.4) & (fam_of_concept[None, :] == self.family[:, None])
        self.images = rng.integers(0, 256, (num_local, S, S, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:S, :S]
        masks = np.zeros((num_local, C, S, S), bool)
        for i, c in zip(*np.nonzero(self.labelled)):
            cy, cx, r = rng.integers(0, S), rng.integers(0, S), rng.integers(1, S // 2)
            masks[i, c] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        self.masks = masks
        self.global_images = {}
        self.global_groups_of = {}
        for fam in tax.global_families:
            sizes = [per_group + (g % 2) for g in range(fam.num_groups)]
            self.global_groups_of[fam.name] = np.repeat(np.arange(fam.num_groups), sizes).astype(np.int32)
            self.global_images[fam.name] = rng.integers(0, 256, (sum(sizes), S, S, 3), dtype=np.uint8)
        self.seed = seed

    @property
    def num_local(self) -> int:
        return int(self.labelled.shape[0])

    def identity(self) -> dict:
        digest = hashlib.sha256(self.images.tobytes() + self.masks.tobytes()).hexdigest()
        return {"kind": "tiny-test", "num_local": self.num_local, "sha256": digest}

    def _batch(self, idx: np.ndarray, with_masks: bool) -> LocalBatch:
        return LocalBatch(
            images=self.images[idx],
            masks=self.masks[idx] if with_masks else None,
            labelled=self.labelled[idx],
            family=self.family[idx],
            index=idx.astype(np.int64),
        )

    def local_batches(self, batch_size, *, with_masks=True, start=0, stop=None, process_index=0, process_count=1):
        from hnd_jax.dictionary.batching import process_slice

        stop = self.num_local if stop is None else stop
        lo, hi = process_slice(start, stop, process_index, process_count)
        for a in range(lo, hi, batch_size):
            yield self._batch(np.arange(a, min(a + batch_size, hi)), with_masks)

    def get_local(self, indices, *, with_masks=True):
        return self._batch(np.asarray(indices), with_masks)

    def global_groups(self, family):
        return self.taxonomy.global_family(family).groups

    def global_group_of(self, family):
        return self.global_groups_of[family]

    def global_batches(self, family, batch_size, *, start=0, stop=None, process_index=0, process_count=1):
        from hnd_jax.dictionary.batching import process_slice

        groups = self.global_groups_of[family]
        stop = len(groups) if stop is None else min(stop, len(groups))
        lo, hi = process_slice(start, stop, process_index, process_count)
        for a in range(lo, hi, batch_size):
            idx = np.arange(a, min(a + batch_size, hi))
            yield GlobalBatch(images=self.global_images[family][idx], group=groups[idx], index=idx.astype(np.int64))


class TinyNet(nnx.Module):
    """conv1 (3->4, 3x3, same) -> relu -> conv2 (4->6, 3x3, stride 2): maps 12x12 and 6x6 at S=12."""

    def __init__(self, seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.conv1 = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(4, 6, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)

    def __call__(self, x):
        return self.conv2(nnx.relu(self.conv1(x)))
