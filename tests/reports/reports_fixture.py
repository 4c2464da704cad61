"""Tiny, random but plausible dissection results in the DESIGN.md §4 format, and a fake dictionary.

The report tests must not depend on the scoring engine or a real dictionary, so this module writes
``OUT/dissection.json`` and ``OUT/<layer>/scores.npz`` itself, following the public schema, and
provides an in-memory :class:`FakeDictionary` with the ``get_local`` random access the reports use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hnd_jax.dictionary.base import LocalBatch
from hnd_jax.taxonomy import Taxonomy, default_taxonomy, taxonomy_from_dict

NASTY_MODEL_NAME = 'fixture <script>alert("x")</script> & co'


def small_taxonomy() -> Taxonomy:
    """A user taxonomy unlike the default: 2 regions, 5 concepts, 2 types, one 3-group family."""
    return taxonomy_from_dict(
        {
            "name": "tiny-user",
            "regions": ["Top", "Bottom"],
            "local_families": [
                {"name": "marks", "index_file": "Marks.csv", "type": "mark",
                 "concepts": {"freckle": "Top", "scar": "Bottom", "mole": "Top"}},
                {"name": "zones", "index_file": "Zones.csv", "type": "zone",
                 "concepts": {"forehead": "Top", "jaw": "Bottom"}},
            ],
            "global_families": [{"name": "Light", "groups": ["dim", "mid", "bright"]}],
        },
        source="<test taxonomy>",
    )


@dataclass
class FixtureLayer:
    """What was written for one layer (the arrays as saved, for independent checks)."""

    name: str
    arrays: dict[str, np.ndarray]


@dataclass
class FixtureRun:
    out: Path
    taxonomy: Taxonomy
    image_size: int
    num_images: int
    layers: list[FixtureLayer] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def layer_arrays(
    tax: Taxonomy,
    num_units: int,
    rng: np.random.Generator,
    *,
    map_hw: tuple[int, int] = (4, 4),
    num_images: int = 20,
    top: bool = True,
    with_paired: bool = True,
    pair_factor: float = 1.5,
    with_significance: bool = True,
) -> dict[str, np.ndarray]:
    """Random arrays with the §4 schema and the spec's internal consistency (region from top concept...)."""
    c = tax.num_concepts
    u = num_units
    concept_region = np.array([x.region for x in tax.concepts])
    concept_type = np.array([x.type for x in tax.concepts])
    iou = rng.uniform(0.0, 0.15, size=(u, c)).astype(np.float32)
    iou[rng.uniform(size=(u, c)) < 0.15] = np.nan  # concepts without support
    iou[0, :] = np.nan  # a unit with no support at all
    if u > 2:
        iou[1, :] = 0.01  # a dead-ish unit: supported everywhere, never localizable
        iou[2, :] = 0.09  # ties: argmax takes the first
    if u > 3:
        iou[3, :] = 0.0  # fires nowhere on any concept: best IoU 0, no top concept (-1)
    filled = np.where(np.isnan(iou), -np.inf, iou)
    top_concept = np.where(filled.max(axis=1) > 0, filled.argmax(axis=1), -1).astype(np.int64)
    best = np.where(top_concept >= 0, filled.max(axis=1), np.nan)
    localizable = np.nan_to_num(best, nan=0.0) >= 0.04
    region = np.where(localizable, concept_region[np.maximum(top_concept, 0)], "")
    local_probs = np.zeros((u, c), dtype=np.float32)
    for i in range(u):
        if localizable[i]:
            members = np.flatnonzero(concept_region == region[i])
            local_probs[i, members] = rng.dirichlet(np.full(len(members), 0.6))
    arrays = {
        "concepts": np.array(tax.concept_names),
        "concept_region": concept_region,
        "concept_type": concept_type,
        "thresholds": rng.uniform(0.2, 0.8, size=u).astype(np.float32),
        "iou": iou,
        "top_concept": top_concept,
        "localizable": localizable,
        "region": region.astype(str),
        "local_probs": local_probs,
    }
    if with_paired:
        size = np.array([(concept_region == r).sum() if r else 1 for r in region])
        arrays["paired"] = (concept_region[None, :] == region[:, None]) & (local_probs > pair_factor / size[:, None])
    for fam in tax.global_families:
        g = fam.num_groups
        probs = rng.dirichlet(np.full(g, 0.5), size=u).astype(np.float32)
        arrays[f"global_groups_{fam.name}"] = np.array(fam.groups)
        arrays[f"global_probs_{fam.name}"] = probs
        arrays[f"biased_{fam.name}"] = probs >= fam.bias_cutoff
    if with_significance:  # own generator: the arrays above stay what they were before significance existed
        srng = np.random.default_rng([u, c, 14])
        paired = arrays.get("paired", np.zeros((u, c), bool))
        arrays["auc"] = srng.uniform(0.3, 1.0, size=(u, c)).astype(np.float32)
        arrays["auc_pvalues"] = srng.uniform(0.0, 1.0, size=(u, c)).astype(np.float32)
        arrays["paired_significant"] = paired & (srng.uniform(size=(u, c)) < 0.6)
        for fam in tax.global_families:
            biased = arrays[f"biased_{fam.name}"]
            arrays[f"global_pvalues_{fam.name}"] = srng.uniform(0.0, 1.0, size=biased.shape).astype(np.float32)
            arrays[f"biased_significant_{fam.name}"] = biased & (srng.uniform(size=biased.shape) < 0.5)
    if top:
        arrays["top_images"] = rng.integers(0, num_images, size=(u, 4)).astype(np.int64)
        arrays["top_maps"] = rng.uniform(0.0, 1.0, size=(u, 4, *map_hw)).astype(np.float32)
    return arrays


def write_fixture_run(
    out: Path,
    layers: dict[str, int],
    *,
    taxonomy: Taxonomy | None = None,
    seed: int = 0,
    image_size: int = 16,
    num_images: int = 20,
    top: bool | dict[str, bool] = True,
    with_paired: bool = True,
    pair_factor: float = 1.5,
    model_name: str = NASTY_MODEL_NAME,
    with_significance: bool = True,
    settings: dict | None = None,
    dictionary: dict | None = None,
) -> FixtureRun:
    """Write a finished-looking run with the given {layer name: units}."""
    tax = taxonomy or default_taxonomy()
    rng = np.random.default_rng(seed)
    run = FixtureRun(out=out, taxonomy=tax, image_size=image_size, num_images=num_images)
    for name, units in layers.items():
        want_top = top.get(name, True) if isinstance(top, dict) else top
        arrays = layer_arrays(tax, units, rng, num_images=num_images, top=want_top,
                              with_paired=with_paired, pair_factor=pair_factor, with_significance=with_significance)
        (out / name).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / name / "scores.npz", **arrays)
        run.layers.append(FixtureLayer(name, arrays))
    run.meta = {
        "layers": list(layers),
        "dictionary": dictionary or {"kind": "synthetic", "spec": f"synthetic:{num_images}:{seed}", "num_local": num_images},
        "image_size": image_size,
        "settings": settings or {"image_size": image_size, "iou_threshold": 0.04, "pair_factor": pair_factor,
                                 "quantile": 0.005},
        "model": {"name": model_name},
    }
    (out / "dissection.json").write_text(json.dumps(run.meta))
    return run


class FakeDictionary:
    """In-memory dictionary: deterministic random images, one rectangle mask per labelled concept."""

    def __init__(self, taxonomy: Taxonomy, image_size: int, num_images: int, seed: int = 0):
        self.taxonomy = taxonomy
        self.image_size = image_size
        rng = np.random.default_rng(seed)
        c = taxonomy.num_concepts
        s = image_size
        self.labelled = rng.uniform(size=(num_images, c)) < 0.5
        self.family = np.zeros(num_images, dtype=np.int32)
        self._images = rng.integers(0, 256, size=(num_images, s, s, 3), dtype=np.uint8)
        self._masks = np.zeros((num_images, c, s, s), dtype=bool)
        for n in range(num_images):
            for k in np.flatnonzero(self.labelled[n]):
                y0, x0 = rng.integers(0, s // 2, size=2)
                h, w = rng.integers(2, s // 2, size=2)
                self._masks[n, k, y0 : y0 + h, x0 : x0 + w] = True
        self.calls: list[np.ndarray] = []

    @property
    def num_local(self) -> int:
        return int(self.labelled.shape[0])

    def identity(self) -> dict:
        return {"kind": "fake", "num_local": self.num_local}

    def mask(self, index: int, concept: int) -> np.ndarray:
        return self._masks[index, concept]

    def image(self, index: int) -> np.ndarray:
        return self._images[index]

    def get_local(self, indices: np.ndarray, *, with_masks: bool = True) -> LocalBatch:
        idx = np.asarray(indices, dtype=np.int64)
        self.calls.append(idx.copy())
        return LocalBatch(
            images=self._images[idx],
            masks=self._masks[idx] if with_masks else None,
            labelled=self.labelled[idx],
            family=self.family[idx],
            index=idx,
        )
