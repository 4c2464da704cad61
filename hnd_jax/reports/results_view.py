"""Read a finished dissection (``OUT/dissection.json`` + ``OUT/<layer>/scores.npz``) for the reports.

The reports only read the public results format (DESIGN.md §4); they never import the scoring
engine. This module turns the files into small typed records and checks what the reports rely on
(keys, shapes, agreeing concept axes), so a broken or foreign folder gives one clear line naming the
file instead of a traceback deep inside the HTML writer.

The concept taxonomy is taken from the results themselves (``concepts``, ``concept_region``,
``concept_type``), not from the built-in default, so runs made with a user taxonomy report correctly.
When ``paired`` is absent it is derived as the spec says: ``local_probs > pair_factor / |R|`` with
|R| the number of concepts of the unit's region and ``pair_factor`` from the run's settings (1.5
when unrecorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hnd_jax.errors import HndError, nested_too_deeply
from hnd_jax.npyfile import load_npz
from hnd_jax.results import CHECKPOINTS_DIR, REQUIRED_KEYS, layer_dir

DISSECTION_JSON = "dissection.json"
SCORES_NPZ = "scores.npz"
DEFAULT_PAIR_FACTOR = 1.5
GLOBAL_GROUPS_PREFIX = "global_groups_"



@dataclass(frozen=True)
class GlobalFamilyResult:
    """One global family of one layer: its subgroups, P(g|u) [U,G] and the biased flags [U,G].

    ``pvalues`` [U,G] f32 and ``biased_significant`` [U,G] bool (DESIGN.md §2c) are None for results
    written before significance existed.
    """

    name: str
    groups: tuple[str, ...]
    probs: np.ndarray
    biased: np.ndarray
    pvalues: np.ndarray | None = None
    biased_significant: np.ndarray | None = None


@dataclass(frozen=True)
class LayerResults:
    """The arrays of one dissected layer, validated (see DESIGN.md §4 for their meaning).

    ``paired`` is always present (derived when the file lacks it). ``top_images`` [U,K] int64 and
    ``top_maps`` [U,K,h,w] float32 are optional extras written by the pipeline for the reports.
    ``auc``/``auc_pvalues`` [U,C] f32 and ``paired_significant`` [U,C] bool (DESIGN.md §2c) are None
    for results written before significance existed. ``top_concept`` is -1 for a unit without one.
    """

    name: str
    path: Path
    concepts: tuple[str, ...]
    concept_region: tuple[str, ...]
    concept_type: tuple[str, ...]
    thresholds: np.ndarray
    iou: np.ndarray
    top_concept: np.ndarray
    localizable: np.ndarray
    region: np.ndarray
    local_probs: np.ndarray
    paired: np.ndarray
    global_families: tuple[GlobalFamilyResult, ...]
    top_images: np.ndarray | None = None
    top_maps: np.ndarray | None = None
    auc: np.ndarray | None = None
    auc_pvalues: np.ndarray | None = None
    paired_significant: np.ndarray | None = None

    @property
    def has_significance(self) -> bool:
        """Whether the results carry the §2c significance arrays (local and every global family)."""
        return self.paired_significant is not None and all(
            f.biased_significant is not None for f in self.global_families
        )

    @property
    def num_units(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    def taxonomy_signature(self) -> tuple:
        """What must agree between runs that are compared (concept axis, regions, types, global groups)."""
        return (
            self.concepts,
            self.concept_region,
            self.concept_type,
            tuple((f.name, f.groups) for f in self.global_families),
        )


@dataclass(frozen=True)
class RunResults:
    """A dissection output folder: its metadata and every layer found in it."""

    out_dir: Path
    meta: dict[str, Any]
    layers: tuple[LayerResults, ...] = field(default_factory=tuple)

    @property
    def pair_factor(self) -> float:
        return pair_factor_of(self.meta)


def _setting(meta: dict[str, Any], key: str) -> Any:
    """A scoring setting from ``settings`` (or a nested ``settings.scoring``), None when unrecorded."""
    settings = meta.get("settings")
    if not isinstance(settings, dict):
        return None
    if key in settings:
        return settings[key]
    nested = settings.get("scoring")
    return nested.get(key) if isinstance(nested, dict) else None


def pair_factor_of(meta: dict[str, Any]) -> float:
    """The run's pairing factor (1.5, the paper's, when not recorded)."""
    value = _setting(meta, "pair_factor")
    return DEFAULT_PAIR_FACTOR if value is None else float(value)


def iou_threshold_of(meta: dict[str, Any]) -> float | None:
    """The run's localizability cut-off, when recorded."""
    value = _setting(meta, "iou_threshold")
    return None if value is None else float(value)


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """Read ``OUT/dissection.json``; a missing or unreadable file is a one-line :class:`HndError`."""
    out_dir = Path(out_dir)
    path = out_dir / DISSECTION_JSON
    if not out_dir.is_dir():
        raise HndError(f"{out_dir}: not a folder (expected a dissection output folder with {DISSECTION_JSON})")
    if not path.is_file():
        if (out_dir / CHECKPOINTS_DIR).is_dir():  # a run was stopped before it finished
            raise HndError(f"{out_dir}: the dissection here did not finish (no {DISSECTION_JSON}, a checkpoint is "
                           "here): rerun the same `hnd dissect` command to resume it")
        raise HndError(f"{out_dir}: no {DISSECTION_JSON} here (not a finished `hnd dissect` output folder)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HndError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise nested_too_deeply(path) from None
    if not isinstance(meta, dict):
        raise HndError(f"{path}: expected a JSON object at the top level")
    return meta


def layer_names(meta: dict[str, Any], out_dir: Path) -> list[str]:
    """The dissected layers in the order the run lists them.

    ``layers`` may be a list of names, a list of objects with a ``name``, or an object keyed by name;
    without it, every sub-folder holding a ``scores.npz`` is a layer (sorted by name).
    """
    raw = meta.get("layers")
    names: list[str] = []
    if isinstance(raw, dict):
        names = [str(k) for k in raw]
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict) and "name" in item:
                names.append(str(item["name"]))
    if not names:
        names = sorted(p.parent.name for p in out_dir.glob(f"*/{SCORES_NPZ}"))
    if not names:
        raise HndError(f"{out_dir / DISSECTION_JSON}: lists no layers and no <layer>/{SCORES_NPZ} was found")
    for name in names:  # a name becomes a folder to read and to write plots in: never outside OUT
        try:
            layer_dir(out_dir, name)
        except HndError as exc:
            raise HndError(f"{out_dir / DISSECTION_JSON}: {exc}") from None
    return names


def load_run(out_dir: str | Path) -> RunResults:
    """Load every layer of a dissection output folder (validated; errors name the file)."""
    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
    factor = pair_factor_of(meta)
    layers = tuple(load_layer(out_dir / name / SCORES_NPZ, name, pair_factor=factor) for name in layer_names(meta, out_dir))
    first = layers[0]
    for layer in layers[1:]:
        if layer.concepts != first.concepts:
            raise HndError(f"{layer.path}: concept axis differs from layer {first.name!r} of the same run")
    return RunResults(out_dir=out_dir, meta=meta, layers=layers)


def _strings(arr: np.ndarray) -> tuple[str, ...]:
    return tuple(str(x) for x in np.asarray(arr).reshape(-1))


def load_layer(path: str | Path, name: str, *, pair_factor: float = DEFAULT_PAIR_FACTOR) -> LayerResults:
    """Read and check one ``scores.npz`` (no pickles are ever loaded)."""
    path = Path(path)
    if not path.is_file():
        raise HndError(f"{path}: missing (layer {name!r} is listed but has no {SCORES_NPZ})")
    data = load_npz(path)  # headers checked before anything is inflated, no pickles, memory bounded
    for key, arr in data.items():
        if arr.dtype.kind not in "biufUS":  # complex, datetime, void...: nothing our writer produces
            raise HndError(f"{path}: {key!r} has dtype {arr.dtype}, expected real numbers or strings")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise HndError(f"{path}: missing key(s) {', '.join(missing)} (expected the results format of docs/algorithm.md)")

    concepts = _strings(data["concepts"])
    c = len(concepts)
    thresholds = np.asarray(data["thresholds"], dtype=np.float32).reshape(-1)
    u = thresholds.shape[0]

    def shaped(key: str, shape: tuple[int, ...]) -> np.ndarray:
        arr = data[key]
        if arr.shape != shape:
            raise HndError(f"{path}: {key!r} has shape {arr.shape}, expected {shape} (U={u}, C={c})")
        return arr

    def optional(key: str, shape: tuple[int, ...], dtype) -> np.ndarray | None:
        return shaped(key, shape).astype(dtype) if key in data else None

    concept_region = _strings(shaped("concept_region", (c,)))
    concept_type = _strings(shaped("concept_type", (c,)))
    iou = shaped("iou", (u, c)).astype(np.float32)
    top_concept = shaped("top_concept", (u,)).astype(np.int64)
    if np.any((top_concept < -1) | (top_concept >= c)):
        raise HndError(f"{path}: 'top_concept' has values outside -1..{c - 1}")
    localizable = shaped("localizable", (u,)).astype(bool)
    region = np.array(_strings(shaped("region", (u,))), dtype=str) if u else np.zeros((0,), dtype=str)
    local_probs = shaped("local_probs", (u, c)).astype(np.float32)
    if "paired" in data:
        paired = shaped("paired", (u, c)).astype(bool)
    else:
        paired = derive_paired(local_probs, region, concept_region, pair_factor)

    families = []
    for key in data:
        if not key.startswith(GLOBAL_GROUPS_PREFIX):
            continue
        fam = key[len(GLOBAL_GROUPS_PREFIX):]
        groups = _strings(data[key])
        for part in ("global_probs_", "biased_"):
            if f"{part}{fam}" not in data:
                raise HndError(f"{path}: has {key!r} but no {part}{fam!r}")
        probs = shaped(f"global_probs_{fam}", (u, len(groups))).astype(np.float32)
        biased = shaped(f"biased_{fam}", (u, len(groups))).astype(bool)
        pvalues = optional(f"global_pvalues_{fam}", (u, len(groups)), np.float32)
        biased_sig = optional(f"biased_significant_{fam}", (u, len(groups)), bool)
        families.append(GlobalFamilyResult(fam, groups, probs, biased, pvalues, biased_sig))

    top_images = data.get("top_images")
    if top_images is not None:
        if top_images.ndim != 2 or top_images.shape[0] != u:
            raise HndError(f"{path}: 'top_images' has shape {top_images.shape}, expected [U={u}, K]")
        top_images = top_images.astype(np.int64)
    top_maps = data.get("top_maps")
    if top_maps is not None:
        want_k = None if top_images is None else top_images.shape[1]
        if top_maps.ndim != 4 or top_maps.shape[0] != u or (want_k is not None and top_maps.shape[1] != want_k):
            raise HndError(f"{path}: 'top_maps' has shape {top_maps.shape}, expected [U={u}, K, h, w]")
        top_maps = top_maps.astype(np.float32)

    return LayerResults(
        name=name,
        path=path,
        concepts=concepts,
        concept_region=concept_region,
        concept_type=concept_type,
        thresholds=thresholds,
        iou=iou,
        top_concept=top_concept,
        localizable=localizable,
        region=region,
        local_probs=local_probs,
        paired=paired,
        global_families=tuple(families),
        top_images=top_images,
        top_maps=top_maps,
        auc=optional("auc", (u, c), np.float32),
        auc_pvalues=optional("auc_pvalues", (u, c), np.float32),
        paired_significant=optional("paired_significant", (u, c), bool),
    )


def derive_paired(
    local_probs: np.ndarray, region: np.ndarray, concept_region: tuple[str, ...], pair_factor: float
) -> np.ndarray:
    """paired[u,c] = P(c|u) > pair_factor/|R_u| for c in the unit's region R_u (False elsewhere)."""
    concept_region_arr = np.asarray(concept_region, dtype=str)
    region = np.asarray(region, dtype=str)
    in_region = region[:, None] == concept_region_arr[None, :]
    size = in_region.sum(axis=1, keepdims=True)
    cut = np.where(size > 0, pair_factor / np.maximum(size, 1), np.inf)
    return in_region & (np.asarray(local_probs) > cut)
