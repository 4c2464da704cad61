"""The counts every report shows, computed once from a layer's results (HTML, plots and compare agree).

Definitions (the report's vocabulary; DESIGN.md §2 says everything is computed for every unit and
"interpretable" only filters what is highlighted):

* **localizable**: ``localizable[u]`` (best IoU >= the run's IoU threshold).
* **paired with c**: a localizable unit with ``paired[u, c]`` (P(c|u) > pair_factor / |R|).
* **interpretable**: a localizable unit paired with at least one concept.
* **per region R**: localizable units whose region is R, and interpretable ones among them.
* **per concept type t**: localizable units whose top concept has type t; interpretable units paired
  with at least one concept of type t (a unit paired with concepts of two types counts in both).
* **biased toward g** (global family F): ``biased_F[u, g]``, over all units (global concepts have no
  location, so localizability does not filter them).
* **significant** (DESIGN.md §2c): the same counts restricted to ``paired_significant`` /
  ``biased_significant_F`` (BH-significant at the run's alpha). Every ``*_significant*`` field is
  None when the results predate significance.

Orders follow the taxonomy carried by the results: regions and types in order of first appearance
on the concept axis, except that when the results use exactly the built-in Face Dictionary concepts
the built-in region order (Eye, Cheek, Nose, Mouth, Chin) is used, as in the paper's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hnd_jax.reports.results_view import LayerResults


@dataclass(frozen=True)
class LayerSummary:
    """Counts of one layer (plain Python numbers, ready for JSON, tables and bar charts)."""

    layer: str
    num_units: int
    localizable: int
    interpretable: int
    regions: tuple[str, ...]
    concept_types: tuple[str, ...]
    localizable_per_region: dict[str, int]
    interpretable_per_region: dict[str, int]
    localizable_per_type: dict[str, int]
    interpretable_per_type: dict[str, int]
    paired_per_concept: dict[str, int]
    biased_per_group: dict[str, dict[str, int]]
    biased_per_family: dict[str, int]
    interpretable_significant: int | None = None
    paired_significant_per_concept: dict[str, int] | None = None
    biased_significant_per_group: dict[str, dict[str, int]] | None = None
    biased_significant_per_family: dict[str, int] | None = None

    @property
    def has_significance(self) -> bool:
        return self.interpretable_significant is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "num_units": self.num_units,
            "localizable": self.localizable,
            "interpretable": self.interpretable,
            "regions": list(self.regions),
            "concept_types": list(self.concept_types),
            "localizable_per_region": self.localizable_per_region,
            "interpretable_per_region": self.interpretable_per_region,
            "localizable_per_type": self.localizable_per_type,
            "interpretable_per_type": self.interpretable_per_type,
            "paired_per_concept": self.paired_per_concept,
            "biased_per_group": self.biased_per_group,
            "biased_per_family": self.biased_per_family,
            "interpretable_significant": self.interpretable_significant,
            "paired_significant_per_concept": self.paired_significant_per_concept,
            "biased_significant_per_group": self.biased_significant_per_group,
            "biased_significant_per_family": self.biased_significant_per_family,
        }


def _first_appearance(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def region_order(layer: LayerResults) -> tuple[str, ...]:
    """Regions for display: the built-in order for the built-in taxonomy, else first appearance."""
    found = _first_appearance(layer.concept_region)
    try:
        from hnd_jax.taxonomy import default_taxonomy

        tax = default_taxonomy()
        if tuple(tax.concept_names) == layer.concepts and tuple(tax.concept_regions) == layer.concept_region:
            return tuple(tax.regions)
    except Exception:  # the default taxonomy is only a display preference, never a requirement
        pass
    return found


def summarize_layer(layer: LayerResults) -> LayerSummary:
    """Count localizable, interpretable, paired and biased units of one layer (definitions above)."""
    loc = layer.localizable
    paired = layer.paired & loc[:, None]
    interpretable = paired.any(axis=1)
    regions = region_order(layer)
    types = _first_appearance(layer.concept_type)
    concept_type = np.asarray(layer.concept_type, dtype=str)
    top_type = np.where(layer.top_concept >= 0, concept_type[np.maximum(layer.top_concept, 0)], "")

    loc_region = {r: int(np.sum(loc & (layer.region == r))) for r in regions}
    int_region = {r: int(np.sum(interpretable & (layer.region == r))) for r in regions}
    loc_type = {t: int(np.sum(loc & (top_type == t))) for t in types}
    int_type = {t: int(np.sum(paired[:, concept_type == t].any(axis=1))) for t in types}
    per_concept = {c: int(n) for c, n in zip(layer.concepts, paired.sum(axis=0))}
    biased_group = {
        f.name: {g: int(n) for g, n in zip(f.groups, f.biased.sum(axis=0))} for f in layer.global_families
    }
    biased_family = {f.name: int(f.biased.any(axis=1).sum()) for f in layer.global_families}
    sig: dict[str, Any] = {}
    if layer.has_significance:
        psig = layer.paired_significant & layer.paired & loc[:, None]
        sig = {
            "interpretable_significant": int(psig.any(axis=1).sum()),
            "paired_significant_per_concept": {c: int(n) for c, n in zip(layer.concepts, psig.sum(axis=0))},
            "biased_significant_per_group": {
                f.name: {g: int(n) for g, n in zip(f.groups, (f.biased_significant & f.biased).sum(axis=0))}
                for f in layer.global_families
            },
            "biased_significant_per_family": {
                f.name: int((f.biased_significant & f.biased).any(axis=1).sum()) for f in layer.global_families
            },
        }
    return LayerSummary(
        layer=layer.name,
        num_units=layer.num_units,
        localizable=int(loc.sum()),
        interpretable=int(interpretable.sum()),
        regions=regions,
        concept_types=types,
        localizable_per_region=loc_region,
        interpretable_per_region=int_region,
        localizable_per_type=loc_type,
        interpretable_per_type=int_type,
        paired_per_concept=per_concept,
        biased_per_group=biased_group,
        biased_per_family=biased_family,
        **sig,
    )


def interpretable_mask(layer: LayerResults) -> np.ndarray:
    """bool [U]: localizable and paired with at least one concept."""
    return layer.localizable & (layer.paired & layer.localizable[:, None]).any(axis=1)
