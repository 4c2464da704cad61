"""Small shared fixtures for the scoring tests: a tiny taxonomy, meshes, random labelled data."""

from __future__ import annotations

import jax
import numpy as np

from hnd_jax.sharding import make_data_mesh
from hnd_jax.taxonomy import taxonomy_from_dict

TINY_TAXONOMY = {
    "name": "tiny",
    "regions": ["Eye", "Mouth", "Chin"],
    "local_families": [
        {"name": "attrs", "index_file": "Attributes.csv", "type": "attribute",
         "concepts": {"Smiling": "Mouth", "Eyeglasses": "Eye", "Goatee": "Chin", "Big_Lips": "Mouth"}},
        {"name": "parts", "index_file": "Parts.csv", "type": "part",
         "concepts": {"left_eye": "Eye", "mouth": "Mouth", "chin": "Chin"}},
    ],
    "global_families": [
        {"name": "Gender", "groups": ["Male", "Female"]},
        {"name": "Age", "groups": ["young", "mid", "old"]},
        {"name": "skin_tone", "groups": ["a", "b", "c", "d"]},
    ],
}


def tiny_taxonomy():
    return taxonomy_from_dict(TINY_TAXONOMY, source="<tiny test taxonomy>")


def one_device_mesh():
    return make_data_mesh(devices=jax.devices()[:1])


def all_device_mesh():
    return make_data_mesh(devices=jax.devices())


def random_labels(rng, taxonomy, n):
    """labelled [n, C] and family [n]: images split over families, each labels some of its concepts."""
    fam_of_concept = taxonomy.concept_family_index
    family = np.sort(rng.integers(0, len(taxonomy.local_families), size=n)).astype(np.int32)
    labelled = (rng.random((n, taxonomy.num_concepts)) < 0.5) & (family[:, None] == fam_of_concept[None, :])
    return labelled, family


class ReferenceTally:
    """The IoUTally protocol on top of the plain NumPy reference (tiny inputs only).

    It lets the engine tests run independently of the real tally kernel (tests/scoring/test_tally*).
    """

    def __init__(self, num_units, concept_family, image_size, map_hw, thresholds, mode, mesh=None):
        self.args = (np.asarray(concept_family), int(image_size), np.asarray(thresholds, np.float32), mode)
        self.num_units = num_units

    def init(self):
        return []

    def update(self, state, batch):
        v = np.asarray(batch.valid, bool)
        return state + [(np.asarray(batch.activations)[v], np.asarray(batch.masks)[v], np.asarray(batch.labelled)[v],
                         np.asarray(batch.family)[v])]

    def merge(self, a, b):
        return a + b

    def finalize(self, state):
        import reference as ref

        cf, S, T, mode = self.args
        acts = np.concatenate([s[0] for s in state])
        masks = np.concatenate([s[1] for s in state])
        lab = np.concatenate([s[2] for s in state])
        fam = np.concatenate([s[3] for s in state])
        inter, union = ref.tally(acts, masks, lab, fam, cf, T, S, mode)
        return {"intersection": inter, "union": union}


class FakeDictionary:
    """An in-memory FaceDictionary (hnd_jax.dictionary.base protocol) with random masks and groups."""

    def __init__(self, taxonomy, num_local=14, image_size=8, seed=0, global_sizes=None):
        from hnd_jax.dictionary.base import LocalBatch

        self._LocalBatch = LocalBatch
        rng = np.random.default_rng(seed)
        self.taxonomy = taxonomy
        self.image_size = image_size
        self.labelled, self.family = random_labels(rng, taxonomy, num_local)
        C, S = taxonomy.num_concepts, image_size
        blobs = rng.random((num_local, C, S, S)) < 0.3
        blobs[:, :, : S // 2] |= rng.random((num_local, C, 1, 1)) < 0.3  # some large masks
        self.masks = blobs & self.labelled[:, :, None, None]
        if global_sizes is None:
            global_sizes = {f.name: [2 + g for g in range(f.num_groups)] for f in taxonomy.global_families}
        self._groups = {
            name: np.concatenate([np.full(n, g, np.int32) for g, n in enumerate(sizes)]) for name, sizes in global_sizes.items()
        }

    @property
    def num_local(self):
        return int(self.labelled.shape[0])

    def identity(self):
        return {"kind": "fake", "num_local": self.num_local}

    def local_batches(self, batch_size, *, with_masks=True, start=0, stop=None, process_index=0, process_count=1):
        stop = self.num_local if stop is None else stop
        for s in range(start, stop, batch_size):
            e = min(s + batch_size, stop)
            idx = np.arange(s, e)
            yield self._LocalBatch(
                images=np.zeros((e - s, self.image_size, self.image_size, 3), np.uint8),
                masks=self.masks[s:e] if with_masks else None,
                labelled=self.labelled[s:e],
                family=self.family[s:e],
                index=idx,
            )

    def global_groups(self, family):
        return self.taxonomy.global_family(family).groups

    def global_group_of(self, family):
        return self._groups[family]
