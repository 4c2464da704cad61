"""``hnd dictionary check``: validate a Face Dictionary fully and summarise what it holds.

For a ROOT (or ``synthetic``) every image and mask is decoded once (``scan.py``); for a PREP every
record is read back and its index and mask bytes are checked against the stored labels. The summary
is a plain dict (the ``--json`` output) with:

* ``family_counts``: local family -> images;
* ``concept_counts``: concept -> images labelled with it;
* ``global_counts``: global family -> group -> images;
* ``image_size_range``: ``{"width": [min, max], "height": [min, max]}`` of the native images;
* ``ignored_global_files``: files in global group folders that are not images PIL can read;
* ``unknown_global_folders``: folders under the global root that the taxonomy does not name (a family
  such as ``non_localizable/Hair``, or a group such as ``non_localizable/Age/ninety_plus``): their
  images are left out, so they are reported as problems (opening the dictionary ignores them);
* ``skipped`` (kind -> count) and ``problems`` (one line each), filled only with ``skip_bad``:
  without it the first problem raises :class:`~hnd_jax.errors.BadInputError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hnd_jax.taxonomy import Taxonomy, default_taxonomy


def _counts(taxonomy: Taxonomy, labelled: np.ndarray, family: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
    per_concept = labelled.sum(axis=0) if labelled.size else np.zeros(taxonomy.num_concepts, dtype=int)
    return {
        "num_local": int(labelled.shape[0]),
        "family_counts": {f.name: int(np.count_nonzero(family == i)) for i, f in enumerate(taxonomy.local_families)},
        "concept_counts": {c: int(n) for c, n in zip(taxonomy.concept_names, per_concept)},
        "global_counts": {
            fam.name: {g: int(np.count_nonzero(groups[fam.name] == k)) for k, g in enumerate(fam.groups)}
            for fam in taxonomy.global_families
        },
    }


def unknown_global_folders(root: str | Path, taxonomy: Taxonomy) -> list[str]:
    """Folders under ``ROOT/<global root>/`` (and under each family folder) that are neither a global
    family nor a group of that family in ``taxonomy``, as sorted ROOT-relative POSIX paths. Hidden
    folders (``.name``) are skipped. Opening the dictionary ignores these folders; check reports them."""
    base = Path(root) / taxonomy.global_root
    groups = {fam.name: set(fam.groups) for fam in taxonomy.global_families}

    def subfolders(folder: Path) -> list[str]:
        try:
            return sorted(n for n in os.listdir(folder) if not n.startswith(".") and (folder / n).is_dir())
        except OSError:  # missing or unreadable: read_layout reports the missing groups
            return []

    unknown = []
    for fam in subfolders(base):
        if fam not in groups:
            unknown.append(f"{taxonomy.global_root}/{fam}")
            continue
        unknown.extend(f"{taxonomy.global_root}/{fam}/{g}" for g in subfolders(base / fam) if g not in groups[fam])
    return unknown


def check_published(
    root: str | Path,
    *,
    taxonomy: Taxonomy | None = None,
    skip_bad: bool = False,
    index_files: Mapping[str, str] | None = None,
    num_workers: int | None = None,
    allow_outside_root: bool | None = None,
) -> dict[str, Any]:
    """Full scan of a published-layout ROOT; returns the summary dict."""
    from hnd_jax.dictionary.layout import read_layout
    from hnd_jax.dictionary.published import layout_arrays
    from hnd_jax.dictionary.scan import scan_files

    tax = taxonomy or default_taxonomy()
    layout = read_layout(root, tax, index_files=index_files, skip_bad=skip_bad, allow_outside_root=allow_outside_root)
    scan = scan_files(layout, num_workers=num_workers)
    layout = scan.layout
    labelled, family, groups = layout_arrays(layout)
    unknown = unknown_global_folders(root, tax)
    return {
        "dictionary": str(root),
        "kind": "published",
        "taxonomy": tax.name,
        **_counts(tax, labelled, family, groups),
        "image_size_range": scan.size_range(),
        "ignored_visualisations": layout.ignored_visualisations,
        "ignored_global_files": layout.ignored_global_files,
        "unknown_global_folders": unknown,
        "content_sha256": layout.content_hash(),
        "skipped": layout.skipped,
        "problems": list(layout.problems.messages),
    }


def check_prepared(prep: str | Path, *, taxonomy: Taxonomy | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Read back every record of a PREP (index, mask bytes) and summarise it."""
    from hnd_jax.dictionary.prepared import PreparedDictionary, read_metadata

    meta = read_metadata(prep)
    d = PreparedDictionary(prep, meta["image_size"], taxonomy=taxonomy)
    for _ in d.local_batches(batch_size, with_masks=True):
        pass
    for fam in d.taxonomy.global_families:
        for _ in d.global_batches(fam.name, batch_size):
            pass
    groups = {f.name: d.global_group_of(f.name) for f in d.taxonomy.global_families}
    source = meta.get("source", {})
    return {
        "dictionary": str(prep),
        "kind": "prepared",
        "taxonomy": d.taxonomy.name,
        **_counts(d.taxonomy, d.labelled, d.family, groups),
        "image_size_range": source.get("image_size_range"),
        "prepared_size": d.image_size,
        "prepared_resample": d.image_resample,
        "ignored_visualisations": source.get("ignored_visualisations", 0),
        "content_sha256": source.get("content_sha256"),
        "skipped": dict(source.get("skipped", {})),
        "problems": list(source.get("problems", [])),
    }


def check_dictionary(
    spec: str | Path,
    *,
    taxonomy: Taxonomy | None = None,
    skip_bad: bool = False,
    index_files: Mapping[str, str] | None = None,
    num_workers: int | None = None,
    allow_outside_root: bool | None = None,
) -> dict[str, Any]:
    """Check a ROOT, a PREP or ``synthetic[:N[:SEED]]``; returns the summary (see module doc)."""
    from hnd_jax.dictionary.opening import MISSING_ROOT_HELP, parse_synthetic_spec, synthetic_root
    from hnd_jax.dictionary.prepared import is_prepared
    from hnd_jax.errors import HndError

    synthetic = parse_synthetic_spec(str(spec))
    if synthetic is not None:
        spec = synthetic_root(*synthetic, taxonomy=taxonomy)
    path = Path(spec).expanduser()
    if not path.exists():
        raise HndError(MISSING_ROOT_HELP.format(path=path))
    if is_prepared(path):
        return check_prepared(path, taxonomy=taxonomy)
    return check_published(path, taxonomy=taxonomy, skip_bad=skip_bad, index_files=index_files,
                           num_workers=num_workers, allow_outside_root=allow_outside_root)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The human-readable form of a check summary."""
    lines = [f"Face Dictionary {summary['dictionary']} ({summary['kind']}, taxonomy {summary['taxonomy']})"]
    lines.append(f"local images: {summary['num_local']}")
    for fam, n in summary["family_counts"].items():
        lines.append(f"  {fam:<24} {n:>8}")
    lines.append("images per concept:")
    for c, n in summary["concept_counts"].items():
        flag = "   (no images)" if n == 0 else ""
        lines.append(f"  {c:<24} {n:>8}{flag}")
    lines.append("global images per subgroup:")
    for fam, groups in summary["global_counts"].items():
        lines.append(f"  {fam}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    rng = summary.get("image_size_range")
    if rng:
        lines.append(f"native image size: width {rng['width'][0]}..{rng['width'][1]}, height {rng['height'][0]}..{rng['height'][1]}")
    if summary.get("prepared_size"):
        lines.append(f"prepared at {summary['prepared_size']}x{summary['prepared_size']} ({summary['prepared_resample']})")
    if summary.get("ignored_visualisations"):
        lines.append(f"ignored visualisations listed as labels (lm.png, *_overlap.png): {summary['ignored_visualisations']}")
    if summary.get("ignored_global_files"):
        lines.append(f"files in global group folders that are not images (left out): {summary['ignored_global_files']}")
    skipped = summary.get("skipped") or {}
    unknown = summary.get("unknown_global_folders") or []
    if skipped:
        lines.append("problems found (skipped): " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
        lines.extend(f"  {msg}" for msg in summary.get("problems", []))
    if unknown:
        lines.append(f"problems found (left out): {len(unknown)} folder{'s' if len(unknown) != 1 else ''} under "
                     "the global root that the taxonomy does not name (not a global family, or not a group "
                     "of its family):")
        lines.extend(f"  {folder}" for folder in unknown)
    if not skipped and not unknown:
        lines.append("problems found: none")
    return "\n".join(lines)
