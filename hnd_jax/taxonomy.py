"""The Face Dictionary taxonomy as data: concepts, their types, regions and annotating families.

Every part of hnd-jax (readers, the synthetic generator, the scoring engine, reports) reads the
concept list from one :class:`Taxonomy` instead of hard-coding names, so a user can dissect on
their own concepts by passing their own taxonomy JSON file (same schema as
``hnd_jax/taxonomy_default.json``).

Axis conventions that the rest of the code relies on:

* the **concept axis** (``C``) lists local concepts family by family, in the order of
  ``local_families`` and, inside a family, in the order of its ``concepts`` mapping;
* the **image order** of a dictionary is the order of ``local_families`` (Attributes.csv, then
  Action_Units.csv, then Parts.csv for the default taxonomy), rows in file order;
* global families keep their listed order, and groups keep theirs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hnd_jax.errors import HndError, nested_too_deeply

DEFAULT_TAXONOMY_RESOURCE = "taxonomy_default.json"


@dataclass(frozen=True)
class LocalConcept:
    """A concept with a mask: its name (the mask file stem), type, facial region and family."""

    name: str
    type: str
    region: str
    family: str


@dataclass(frozen=True)
class LocalFamily:
    """A source of local annotations: one index CSV whose rows list the masks of present concepts."""

    name: str
    index_file: str
    type: str
    concepts: tuple[str, ...]


@dataclass(frozen=True)
class GlobalFamily:
    """A concept family without location (Age, Gender, ...): images grouped by subgroup folder."""

    name: str
    groups: tuple[str, ...]
    bias_cutoff: float

    @property
    def num_groups(self) -> int:
        return len(self.groups)


def default_bias_cutoff(num_groups: int, cutoffs: Mapping[int, float] | None = None) -> float:
    """The paper's cut-offs: 0.3 for 4-group families, 0.55 for 2-group ones, else 1.2/G."""
    table = {2: 0.55, 4: 0.3} if cutoffs is None else dict(cutoffs)
    return float(table.get(num_groups, 1.2 / num_groups))


@dataclass(frozen=True)
class Taxonomy:
    """The whole concept taxonomy. Build it with :func:`default_taxonomy` or :func:`load_taxonomy`."""

    name: str
    regions: tuple[str, ...]
    local_families: tuple[LocalFamily, ...]
    global_families: tuple[GlobalFamily, ...]
    global_root: str = "non_localizable"
    source: str = field(default="<built-in>", compare=False)

    # ----------------------------------------------------------------------------- concept axis
    @cached_property
    def concepts(self) -> tuple[LocalConcept, ...]:
        """Every local concept in concept-axis order."""
        raw = self._raw_regions
        return tuple(
            LocalConcept(name=c, type=f.type, region=raw[c], family=f.name)
            for f in self.local_families
            for c in f.concepts
        )

    @property
    def _raw_regions(self) -> dict[str, str]:
        return dict(self._concept_regions)

    _concept_regions: tuple[tuple[str, str], ...] = ()

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    @cached_property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.concepts)

    @cached_property
    def concept_index(self) -> dict[str, int]:
        """Exact name -> position on the concept axis (no substring matching, ever)."""
        return {c.name: i for i, c in enumerate(self.concepts)}

    @cached_property
    def concept_regions(self) -> np.ndarray:
        """[C] str array: the region of each concept."""
        return np.array([c.region for c in self.concepts])

    @cached_property
    def concept_types(self) -> np.ndarray:
        """[C] str array: the type of each concept (action_unit, part, attribute, ...)."""
        return np.array([c.type for c in self.concepts])

    @cached_property
    def concept_region_index(self) -> np.ndarray:
        """[C] int32: index into ``regions`` of each concept."""
        pos = {r: i for i, r in enumerate(self.regions)}
        return np.array([pos[c.region] for c in self.concepts], dtype=np.int32)

    @cached_property
    def concept_family_index(self) -> np.ndarray:
        """[C] int32: index into ``local_families`` of the family that annotates each concept."""
        pos = {f.name: i for i, f in enumerate(self.local_families)}
        return np.array([pos[c.family] for c in self.concepts], dtype=np.int32)

    @cached_property
    def region_members(self) -> np.ndarray:
        """[R, C] bool: ``region_members[r, c]`` is true when concept c belongs to region r."""
        out = np.zeros((len(self.regions), self.num_concepts), dtype=bool)
        out[self.concept_region_index, np.arange(self.num_concepts)] = True
        return out

    def concepts_in_region(self, region: str) -> list[int]:
        return [i for i, c in enumerate(self.concepts) if c.region == region]

    @cached_property
    def concept_types_order(self) -> tuple[str, ...]:
        """The distinct concept types, in family order (for reports)."""
        seen: dict[str, None] = {}
        for f in self.local_families:
            seen.setdefault(f.type, None)
        return tuple(seen)

    # ----------------------------------------------------------------------------- families
    def global_family(self, name: str) -> GlobalFamily:
        for fam in self.global_families:
            if fam.name == name:
                return fam
        raise HndError(f"unknown global family {name!r}; known: {', '.join(f.name for f in self.global_families)}")

    # ----------------------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        """The JSON form (same schema as ``taxonomy_default.json``)."""
        regions = self._raw_regions
        return {
            "name": self.name,
            "regions": list(self.regions),
            "local_families": [
                {
                    "name": f.name,
                    "index_file": f.index_file,
                    "type": f.type,
                    "concepts": {c: regions[c] for c in f.concepts},
                }
                for f in self.local_families
            ],
            "global_root": self.global_root,
            "global_families": [
                {"name": g.name, "groups": list(g.groups), "bias_cutoff": g.bias_cutoff}
                for g in self.global_families
            ],
        }

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the taxonomy content, for run fingerprints and result metadata."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _fail(source: str, msg: str) -> HndError:
    return HndError(f"{source}: invalid taxonomy: {msg}")


def taxonomy_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Taxonomy:
    """Validate and build a :class:`Taxonomy` from its JSON form. Errors name ``source``."""
    if not isinstance(data, Mapping):
        raise _fail(source, "top level must be a JSON object")
    try:
        regions = tuple(str(r) for r in data["regions"])
        fam_specs = data["local_families"]
        glob_specs = data.get("global_families", [])
    except KeyError as exc:
        raise _fail(source, f"missing key {exc.args[0]!r}") from None
    if len(set(regions)) != len(regions) or not regions:
        raise _fail(source, "'regions' must be a non-empty list of distinct names")
    raw_cutoffs = data.get("bias_cutoffs") or {}
    try:
        cutoffs = {int(k): float(v) for k, v in raw_cutoffs.items()}
    except (TypeError, ValueError, AttributeError):
        raise _fail(source, "'bias_cutoffs' must map group counts to numbers") from None

    families: list[LocalFamily] = []
    concept_regions: dict[str, str] = {}
    for spec in fam_specs:
        try:
            name, index_file, ctype, concepts = spec["name"], spec["index_file"], spec["type"], spec["concepts"]
        except (KeyError, TypeError):
            raise _fail(source, f"local family {spec!r} needs name, index_file, type and concepts") from None
        if not isinstance(concepts, Mapping) or not concepts:
            raise _fail(source, f"family {name!r}: 'concepts' must map concept name -> region")
        for cname, region in concepts.items():
            if cname in concept_regions:
                raise _fail(source, f"concept {cname!r} is listed twice")
            if region not in regions:
                raise _fail(source, f"concept {cname!r} has unknown region {region!r}")
            concept_regions[str(cname)] = str(region)
        families.append(LocalFamily(str(name), str(index_file), str(ctype), tuple(str(c) for c in concepts)))
    if not families:
        raise _fail(source, "'local_families' is empty")
    if len({f.name for f in families}) != len(families):
        raise _fail(source, "local family names must be distinct")
    if len({f.index_file for f in families}) != len(families):
        raise _fail(source, "local family index files must be distinct")

    globals_: list[GlobalFamily] = []
    for spec in glob_specs:
        try:
            gname, groups = str(spec["name"]), tuple(str(g) for g in spec["groups"])
        except (KeyError, TypeError):
            raise _fail(source, f"global family {spec!r} needs name and groups") from None
        if len(groups) < 2 or len(set(groups)) != len(groups):
            raise _fail(source, f"global family {gname!r} needs at least two distinct groups")
        cutoff = spec.get("bias_cutoff")
        cutoff = default_bias_cutoff(len(groups), cutoffs or None) if cutoff is None else float(cutoff)
        globals_.append(GlobalFamily(gname, groups, cutoff))
    if len({g.name for g in globals_}) != len(globals_):
        raise _fail(source, "global family names must be distinct")

    return Taxonomy(
        name=str(data.get("name", "custom")),
        regions=regions,
        local_families=tuple(families),
        global_families=tuple(globals_),
        global_root=str(data.get("global_root", "non_localizable")),
        source=source,
        _concept_regions=tuple(concept_regions.items()),
    )


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read a user taxonomy JSON file (schema of ``hnd_jax/taxonomy_default.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HndError(f"{path}: taxonomy file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HndError(f"{path}: taxonomy is not valid JSON ({exc})") from None
    except RecursionError:
        raise nested_too_deeply(path) from None
    return taxonomy_from_dict(data, source=str(path))


_DEFAULT: Taxonomy | None = None


def default_taxonomy() -> Taxonomy:
    """The published Face Dictionary taxonomy (38 local concepts, 4 global families)."""
    global _DEFAULT
    if _DEFAULT is None:
        text = resources.files("hnd_jax").joinpath(DEFAULT_TAXONOMY_RESOURCE).read_text()
        _DEFAULT = taxonomy_from_dict(json.loads(text), source="<built-in face dictionary>")
    return _DEFAULT


def resolve_taxonomy(path: str | Path | None) -> Taxonomy:
    """The taxonomy a command should use: the user's file if given, else the default."""
    return default_taxonomy() if path is None else load_taxonomy(path)
