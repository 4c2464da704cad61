"""The embedded synthetic Face Dictionary: procedurally drawn faces written in the published layout.

:func:`write_synthetic_dictionary` writes a complete Face Dictionary (DESIGN.md §1) that the normal
published-layout reader serves, so the whole pipeline can run offline, in tests and in ``hnd demo``,
without the real dataset. Faces are drawn by :mod:`hnd_jax.dictionary.synthetic.face` (see its docstring
for every concept's cue and for the global proxies; ``Gender`` and ``Ethnicity`` there are abstract
synthetic stand-ins, not claims about people).

What is written under ``out``::

    Attributes.csv, Action_Units.csv, Parts.csv   header ``image,labels``; labels are ``;``-joined
                                                  mask paths ``<family>/<id>/<Concept>.png``
    <family>/<id>.png                             the image (attributes/parts 178x218; action units
                                                  160-200 wide, varying heights)
    <family>/<id>/<Concept>.png                   masks at the image size, 0/255, mode L or RGB
    <family>/<id>/lm.png, <id>_overlap.png        visualisations in some folders (not data)
    non_localizable/<Family>/<group>/<n>.png      global images, at least 8 per group (Age 200x200 like
                                                  UTKFace, the others 178x218)
    synthetic.json                                what generated it (seed, counts, taxonomy hash)

Label plan: ``num_images`` local images are split over the families (about 40% attributes, 30%
action units, 30% parts). Part concepts are drawn on every face, so every image of a family that
annotates a part carries it; every other concept is put on a fixed quota of its family's images
(about 5 labels per image on average, never fewer than one image per concept), spread so that images
carry similar numbers of labels and no image gets two conflicting cues. A family only draws the cues
it annotates, plus, where ``No_Beard`` is annotated but absent and no other facial hair is, an
unannotated jaw beard so that "not No_Beard" is visible.

Everything is a function of ``seed`` (and ``num_images``): two runs write byte-identical files.
The folder is built under a temporary name beside ``out`` and renamed at the end.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hnd_jax.atomic import atomic_dir
from hnd_jax.dictionary.synthetic.face import (
    DRAWABLE_CONCEPTS,
    GLOBAL_GROUPS,
    PARTS,
    FaceSpec,
    conflicts_with,
    render_face,
    sample_globals,
    sample_jitter,
)
from hnd_jax.dictionary.synthetic.png import write_png
from hnd_jax.errors import HndError
from hnd_jax.pipeline.progress import StageProgress
from hnd_jax.taxonomy import LocalFamily, Taxonomy, default_taxonomy

GENERATOR = "hnd_jax synthetic face dictionary"
GENERATOR_VERSION = 1
MARKER_FILE = "synthetic.json"

#: Share of the local images per family type (normalised over the families present).
FAMILY_SHARES = {"attribute": 0.4, "action_unit": 0.3, "part": 0.3}
#: Average number of (non-part) labels per image, and the largest share of images per concept.
LABELS_PER_IMAGE = 5.0
MAX_CONCEPT_RATE = 0.45
FACIAL_HAIR = ("Goatee", "Mustache", "5_o_Clock_Shadow")
CELEBA_SIZE = (178, 218)
UTK_SIZE = (200, 200)
PNG_LEVEL = 1
RGB_MASK_SHARE = 0.3  # the rest are L

# rng stream ids, so that each kind of draw has its own independent sequence
_STREAM_LABELS, _STREAM_LOCAL, _STREAM_GLOBAL_SIZES, _STREAM_GLOBAL, _STREAM_MASK_MODES = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class LocalItem:
    """One local image to write: family, file id, size (W, H), face spec and labelled concepts."""

    family: LocalFamily
    family_index: int
    name: str
    size: tuple[int, int]
    spec: FaceSpec
    labels: tuple[str, ...]  # in the family's concept order


@dataclass(frozen=True)
class GlobalItem:
    """One global-concept image: family, group, file name, size (W, H) and face spec."""

    family: str
    group: str
    name: str
    size: tuple[int, int]
    spec: FaceSpec


# ----------------------------------------------------------------------------- validation
def check_drawable(taxonomy: Taxonomy) -> None:
    """Raise HndError naming every concept, global family or group the generator cannot draw."""
    bad_concepts = [c for c in taxonomy.concept_names if c not in DRAWABLE_CONCEPTS]
    if bad_concepts:
        raise HndError(
            f"taxonomy {taxonomy.source}: the synthetic generator cannot draw concept"
            f"{'s' if len(bad_concepts) > 1 else ''} {', '.join(bad_concepts)} "
            f"(it draws the 38 Face Dictionary concepts)"
        )
    for fam in taxonomy.global_families:
        known = GLOBAL_GROUPS.get(fam.name)
        if known is None:
            raise HndError(
                f"taxonomy {taxonomy.source}: the synthetic generator has no visible proxy for global family "
                f"{fam.name!r} (it draws {', '.join(GLOBAL_GROUPS)})"
            )
        bad_groups = [g for g in fam.groups if g not in known]
        if bad_groups:
            raise HndError(
                f"taxonomy {taxonomy.source}: the synthetic generator cannot draw group"
                f"{'s' if len(bad_groups) > 1 else ''} {', '.join(bad_groups)} of global family {fam.name!r} "
                f"(it draws {', '.join(known)})"
            )


def _check_args(num_images: int, seed: int, taxonomy: Taxonomy) -> None:
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)):
        raise HndError(f"num_images must be an integer, got {num_images!r}")
    if num_images < len(taxonomy.local_families):
        raise HndError(
            f"num_images={num_images} is too small: need at least one image per local family "
            f"({len(taxonomy.local_families)})"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HndError(f"seed must be a non-negative integer, got {seed!r}")


# ----------------------------------------------------------------------------- planning
def family_counts(taxonomy: Taxonomy, num_images: int) -> list[int]:
    """Local images per family: FAMILY_SHARES by type, largest remainder, at least one each."""
    weights = np.array([FAMILY_SHARES.get(f.type, 0.3) for f in taxonomy.local_families], dtype=float)
    spare = num_images - len(weights)
    raw = weights / weights.sum() * spare
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: spare - counts.sum()]:
        counts[i] += 1
    return (counts + 1).tolist()


def plan_family_labels(family: LocalFamily, n: int, rng: np.random.Generator) -> list[set[str]]:
    """Which concepts each of the ``n`` images of ``family`` carries (see the module docstring)."""
    parts = [c for c in family.concepts if c in PARTS]
    others = [c for c in family.concepts if c not in PARTS]
    labels: list[set[str]] = [set(parts) for _ in range(n)]
    if not others:
        return labels
    rate = min(MAX_CONCEPT_RATE, LABELS_PER_IMAGE / len(others))
    quota = int(min(n, max(1, round(n * rate))))
    for concept in rng.permutation(others).tolist():
        candidates = [i for i in range(n) if not conflicts_with(concept, labels[i])]
        if not candidates:
            # every image conflicts: free the one holding the fewest labels
            i = min(range(n), key=lambda k: len(labels[k]))
            labels[i] = {c for c in labels[i] if not conflicts_with(c, {concept})}
            candidates = [i]
        load = np.array([len(labels[i] - set(parts)) for i in candidates], dtype=float)
        order = np.argsort(load + rng.uniform(0.0, 1.5, size=len(candidates)), kind="stable")
        for k in order[:quota]:
            labels[candidates[k]].add(concept)
    return labels


def _local_size(family: LocalFamily, rng: np.random.Generator) -> tuple[int, int]:
    if family.type == "action_unit":  # EmotioNet-like: varying frames
        w = int(rng.integers(160, 201))
        return w, int(round(w * rng.uniform(1.05, 1.25)))
    return CELEBA_SIZE


def plan_local(taxonomy: Taxonomy, num_images: int, seed: int) -> list[LocalItem]:
    """Every local image in dictionary order (taxonomy family order, then file order)."""
    items: list[LocalItem] = []
    for f_idx, (family, n) in enumerate(zip(taxonomy.local_families, family_counts(taxonomy, num_images))):
        label_sets = plan_family_labels(family, n, np.random.default_rng([seed, _STREAM_LABELS, f_idx]))
        for i, present in enumerate(label_sets):
            rng = np.random.default_rng([seed, _STREAM_LOCAL, f_idx, i])
            size = _local_size(family, rng)
            drawn = frozenset(present)
            beard = (
                "No_Beard" in family.concepts
                and "No_Beard" not in drawn
                and not drawn.intersection(FACIAL_HAIR)
            )
            spec = FaceSpec(concepts=drawn, beard=beard, jitter=sample_jitter(rng), **sample_globals(rng))
            labels = tuple(c for c in family.concepts if c in present)
            items.append(LocalItem(family, f_idx, f"{i + 1:06d}", size, spec, labels))
    return items


def global_group_counts(taxonomy: Taxonomy, num_images: int, seed: int) -> dict[str, list[int]]:
    """Images per group: about num_images/4 in all, groups of somewhat different sizes, >= 8 each."""
    fams = taxonomy.global_families
    if not fams:
        return {}
    per_family = max(1, num_images // 4) / len(fams)
    rng = np.random.default_rng([seed, _STREAM_GLOBAL_SIZES])
    out: dict[str, list[int]] = {}
    for fam in fams:
        w = rng.uniform(0.7, 1.3, size=fam.num_groups)
        out[fam.name] = [max(8, int(round(per_family * x / w.sum()))) for x in w]
    return out


def _random_cues(rng: np.random.Generator, pool: list[str], rate: float) -> frozenset[str]:
    chosen: set[str] = set()
    for c in pool:
        if rng.random() < rate and not conflicts_with(c, chosen):
            chosen.add(c)
    return frozenset(chosen)


def plan_global(taxonomy: Taxonomy, num_images: int, seed: int) -> list[GlobalItem]:
    """Every global image: family by family, group by group (taxonomy order), numbered files."""
    pool = sorted(DRAWABLE_CONCEPTS - set(PARTS))
    items: list[GlobalItem] = []
    counts = global_group_counts(taxonomy, num_images, seed)
    for f_idx, fam in enumerate(taxonomy.global_families):
        size = UTK_SIZE if fam.name == "Age" else CELEBA_SIZE
        for g_idx, (group, n) in enumerate(zip(fam.groups, counts[fam.name])):
            for i in range(n):
                rng = np.random.default_rng([seed, _STREAM_GLOBAL, f_idx, g_idx, i])
                spec = FaceSpec(
                    concepts=_random_cues(rng, pool, 0.1),
                    jitter=sample_jitter(rng),
                    **sample_globals(rng, {fam.name: group}),
                )
                items.append(GlobalItem(fam.name, group, f"{i + 1:05d}.png", size, spec))
    return items


# ----------------------------------------------------------------------------- writing
def _save_png(path: Path, array: np.ndarray) -> None:
    write_png(path, array, PNG_LEVEL)


def _save_mask(path: Path, mask: np.ndarray, rgb: bool) -> None:
    """A 0/255 mask PNG, mode RGB or L (the published dictionary has both)."""
    m = mask.astype(np.uint8) * 255
    write_png(path, np.repeat(m[:, :, None], 3, axis=2) if rgb else m, PNG_LEVEL)


def _landmark_picture(image: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """lm.png: the image with a dot at the centre of each part (a visualisation, not data)."""
    out = image.copy()
    for name in PARTS:
        ys, xs = np.nonzero(masks[name])
        if len(ys):
            y, x = int(ys.mean()), int(xs.mean())
            out[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = (0, 255, 0)
    return out


def _overlap_picture(image: np.ndarray, masks: dict[str, np.ndarray], labels: tuple[str, ...]) -> np.ndarray:
    """<id>_overlap.png: the labelled masks blended over the image (a visualisation, not data)."""
    out = image.astype(np.float32)
    for k, name in enumerate(labels):
        colour = np.array([(97 * k) % 256, (57 * k + 120) % 256, (151 * k + 60) % 256], dtype=np.float32)
        out[masks[name]] = 0.5 * out[masks[name]] + 0.5 * colour
    return out.astype(np.uint8)


def _write_local(root: Path, items: list[LocalItem], seed: int, progress: StageProgress) -> dict[str, list[list[str]]]:
    rows: dict[str, list[list[str]]] = {}
    for item in items:
        fam_dir = root / item.family.name
        folder = fam_dir / item.name
        folder.mkdir(parents=True, exist_ok=True)
        image, masks = render_face(item.spec, item.size)
        image_rel = f"{item.family.name}/{item.name}.png"
        _save_png(root / image_rel, image)
        rng = np.random.default_rng([seed, _STREAM_MASK_MODES, item.family_index, int(item.name)])
        label_paths = []
        for concept in item.labels:
            rel = f"{item.family.name}/{item.name}/{concept}.png"
            _save_mask(root / rel, masks[concept], rgb=bool(rng.random() < RGB_MASK_SHARE))
            label_paths.append(rel)
        if int(item.name) % 4 == 1:
            _save_png(folder / "lm.png", _landmark_picture(image, masks))
        if int(item.name) % 6 == 2 and item.labels:
            _save_png(folder / f"{item.name}_overlap.png", _overlap_picture(image, masks, item.labels))
        rows.setdefault(item.family.name, []).append([image_rel, ";".join(label_paths)])
        progress.update(1)
    return rows


def _write_index(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "labels"])
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _write_global(root: Path, taxonomy: Taxonomy, items: list[GlobalItem], progress: StageProgress) -> None:
    for fam in taxonomy.global_families:
        for group in fam.groups:
            (root / taxonomy.global_root / fam.name / group).mkdir(parents=True, exist_ok=True)
    for item in items:
        image, _ = render_face(item.spec, item.size)
        _save_png(root / taxonomy.global_root / item.family / item.group / item.name, image)
        progress.update(1)


def _refuse_foreign_folder(out: Path) -> None:
    """Never replace a folder that is not an earlier synthetic dictionary (it could be user data)."""
    if out.is_file():
        raise HndError(f"{out}: is a file; expected a folder for the synthetic Face Dictionary")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER_FILE).is_file():
        raise HndError(
            f"{out}: folder exists and is not a synthetic Face Dictionary (no {MARKER_FILE}); "
            f"refusing to overwrite it, choose an empty or new folder"
        )


def write_synthetic_dictionary(
    out: str | Path, *, num_images: int = 600, seed: int = 0, taxonomy: Taxonomy | None = None,
    progress: str | bool = "none",
) -> Path:
    """Write a synthetic Face Dictionary in the published layout to ``out`` and return its path.

    ``num_images`` local images are split over the local families (about 40/30/30 for
    attributes/action units/parts); about ``num_images / 4`` global images go to
    ``non_localizable/`` (at least 8 per group). Deterministic for ``(num_images, seed, taxonomy)``.
    A user ``taxonomy`` may regroup the 38 Face Dictionary concepts and the four global families in
    any way; a concept or global group the generator cannot draw raises :class:`HndError`.
    ``out`` is replaced atomically; an existing non-empty folder is only replaced when it is itself
    a synthetic dictionary. ``progress``: a mode of :mod:`hnd_jax.pipeline.progress` (on stderr).
    """
    taxonomy = default_taxonomy() if taxonomy is None else taxonomy
    check_drawable(taxonomy)
    _check_args(num_images, seed, taxonomy)
    num_images, seed = int(num_images), int(seed)
    out = Path(out)
    _refuse_foreign_folder(out)
    local_items = plan_local(taxonomy, num_images, seed)
    global_items = plan_global(taxonomy, num_images, seed)
    with atomic_dir(out) as tmp:
        with StageProgress("synth", len(local_items) + len(global_items), mode=progress) as bar:
            rows = _write_local(tmp, local_items, seed, bar)
            for family in taxonomy.local_families:
                _write_index(tmp / family.index_file, rows.get(family.name, []))
            _write_global(tmp, taxonomy, global_items, bar)
        concept_counts = {c: 0 for c in taxonomy.concept_names}
        for item in local_items:
            for c in item.labels:
                concept_counts[c] += 1
        meta = {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "num_images": num_images,
            "seed": seed,
            "taxonomy": taxonomy.name,
            "taxonomy_fingerprint": taxonomy.fingerprint,
            "family_counts": {f.name: n for f, n in zip(taxonomy.local_families, family_counts(taxonomy, num_images))},
            "concept_counts": concept_counts,
            "global_counts": {
                fam: dict(zip(taxonomy.global_family(fam).groups, counts))
                for fam, counts in global_group_counts(taxonomy, num_images, seed).items()
            },
            "note": "Procedurally drawn faces. Gender and Ethnicity groups are abstract synthetic stand-ins "
            "(hair silhouette, background hue), not claims about people.",
        }
        (tmp / MARKER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
