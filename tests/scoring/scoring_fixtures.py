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
