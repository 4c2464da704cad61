"""Parse a Face Dictionary in the published on-disk layout (DESIGN.md §1) into records.

This module only reads the index CSVs and lists folders; it decodes no pixels (see ``decode.py``
and ``scan.py``). Its output, :class:`DictionaryLayout`, fixes the dictionary order that every
downstream piece relies on:

* local images: families in taxonomy order (Attributes.csv, Action_Units.csv, Parts.csv for the
  default taxonomy), rows in file order;
* global images: per family, groups in taxonomy order, sorted file names inside a group.

Parsing rules:

* index header is ``image,labels``; ``labels`` is a ``;``-joined list of mask paths relative to ROOT
  (an empty ``labels`` cell is an image with no concept present);
* the concept is the mask file **stem**, matched exactly against the taxonomy concepts of that
  row's family (``AU_1`` never matches ``AU_12``);
* ``lm.png`` and ``*_overlap.png`` are visualisations, not labels. They sit in the mask folders, and
  if one is listed in a ``labels`` cell it is ignored too (counted in ``ignored_visualisations``).

Bad input raises :class:`~hnd_jax.errors.BadInputError` with a ``kind``; with ``skip_bad=True``
the offending row / index file / global group is left out instead and counted in ``skipped``.
A row with any bad mask is skipped whole: keeping the image without that mask would silently
turn a present concept into an absent one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping

from hnd_jax.errors import BadInputError, HndError
from hnd_jax.taxonomy import Taxonomy

GLOBAL_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INDEX_HEADER = ("image", "labels")


@dataclass(frozen=True)
class LocalRecord:
    """One row of an index file: an image, its family and the masks of its present concepts.

    ``concepts`` are concept-axis indices in increasing order; ``masks`` are aligned with them.
    ``source`` is ``"Parts.csv:12"`` (file and line), used in error messages.
    """

    image: str
    family: int
    concepts: tuple[int, ...]
    masks: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class GlobalRecord:
    """One global-concept image: its path relative to ROOT and its group index in the family."""

    image: str
    group: int


@dataclass
class Problems:
    """Raise bad input, or (with ``skip_bad``) count it per kind and remember the message."""

    skip_bad: bool = False
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def report(self, error: BadInputError) -> None:
        if not self.skip_bad:
            raise error
        self.skipped[error.kind or "bad_input"] += 1
        self.messages.append(str(error))


@dataclass
class DictionaryLayout:
    """The parsed published layout: records in dictionary order plus what was skipped."""

    root: Path
    taxonomy: Taxonomy
    local: list[LocalRecord]
    global_images: dict[str, list[GlobalRecord]]
    index_paths: dict[str, Path]
    problems: Problems
    ignored_visualisations: int = 0
    index_digest: str = ""

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.problems.skipped)

    def content_hash(self) -> str:
        """sha256 over the index CSV bytes, the kept records and the global file listing.

        It changes when an index file, the set of kept images, or a global folder changes.
        """
        h = hashlib.sha256()
        h.update(self.index_digest.encode())
        h.update(self.taxonomy.fingerprint.encode())
        for r in self.local:
            h.update(f"L|{r.image}|{r.family}|{r.concepts}|{'|'.join(r.masks)}\n".encode())
        for fam, recs in self.global_images.items():
            for r in recs:
                h.update(f"G|{fam}|{r.group}|{r.image}\n".encode())
        return h.hexdigest()


def is_visualisation(path: str) -> bool:
    """``lm.png`` and ``*_overlap.png`` are landmark / overlap drawings, never labels."""
    p = PurePosixPath(path.replace("\\", "/"))
    return p.name == "lm.png" or p.stem.endswith("_overlap")


def resolve_index_files(
    root: Path, taxonomy: Taxonomy, index_files: Mapping[str, str] | None
) -> dict[str, Path]:
    """family name -> index CSV path; ``index_files`` overrides names (keys are family names)."""
    overrides = dict(index_files or {})
    unknown = set(overrides) - {f.name for f in taxonomy.local_families}
    if unknown:
        raise HndError(
            f"index_files names unknown local famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(sorted(unknown))}; known: {', '.join(f.name for f in taxonomy.local_families)}"
        )
    return {f.name: root / overrides.get(f.name, f.index_file) for f in taxonomy.local_families}


def _read_index_rows(path: Path, family: str, problems: Problems) -> tuple[list[tuple[int, list[str]]], bytes] | None:
    """(line number, [image, labels]) rows of one index file, or None if the file is unusable."""
    if not path.is_file():
        problems.report(BadInputError(f"{path}: index file of family {family!r} not found", kind="missing_index"))
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.report(BadInputError(f"{path}: index file is not UTF-8 text", kind="bad_index"))
        return None
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1) if any(c.strip() for c in row)]
    if not rows:
        problems.report(BadInputError(f"{path}: index file is empty (expected header 'image,labels' and rows)", kind="empty_index"))
        return None
    header = tuple(c.strip().lower() for c in rows[0][1])
    if header != INDEX_HEADER:
        problems.report(BadInputError(f"{path}: header is {','.join(rows[0][1])!r}, expected 'image,labels'", kind="bad_index"))
        return None
    if len(rows) == 1:
        problems.report(BadInputError(f"{path}: index file has a header but no rows", kind="empty_index"))
        return None
    return rows[1:], data


def _parse_row(
    root: Path,
    taxonomy: Taxonomy,
    family_idx: int,
    index_path: Path,
    line: int,
    row: list[str],
) -> tuple[LocalRecord, int]:
    """One CSV row -> (record, number of visualisation labels ignored). Raises BadInputError."""
    family = taxonomy.local_families[family_idx]
    where = f"{index_path}:{line}"
    if len(row) != 2:
        raise BadInputError(f"{where}: expected 2 columns (image,labels), found {len(row)}", kind="bad_row")
    image, labels = row[0].strip(), row[1].strip()
    if not image:
        raise BadInputError(f"{where}: empty image path", kind="bad_row")
    if not (root / image).is_file():
        raise BadInputError(f"{root / image}: image file not found (listed at {where})", kind="missing_image")
    allowed = set(family.concepts)
    found: dict[int, str] = {}
    ignored = 0
    for label in (s.strip() for s in labels.split(";")):
        if not label:
            continue
        if is_visualisation(label):
            ignored += 1
            continue
        concept = PurePosixPath(label.replace("\\", "/")).stem
        if concept not in allowed:
            owner = next((f.name for f in taxonomy.local_families if concept in f.concepts), None)
            detail = f"it belongs to family {owner!r}" if owner else "it is not in the taxonomy"
            raise BadInputError(
                f"{where}: unknown concept {concept!r} (mask {label}) for family {family.name!r}: {detail}",
                kind="unknown_concept",
            )
        idx = taxonomy.concept_index[concept]
        if idx in found:
            raise BadInputError(f"{where}: concept {concept!r} is listed twice", kind="duplicate_concept")
        if not (root / label).is_file():
            raise BadInputError(f"{root / label}: mask file not found (listed at {where})", kind="missing_mask")
        found[idx] = label
    order = sorted(found)
    record = LocalRecord(
        image=image,
        family=family_idx,
        concepts=tuple(order),
        masks=tuple(found[i] for i in order),
        source=f"{index_path.name}:{line}",
    )
    return record, ignored


def _list_global(root: Path, taxonomy: Taxonomy, problems: Problems) -> dict[str, list[GlobalRecord]]:
    out: dict[str, list[GlobalRecord]] = {}
    base = root / taxonomy.global_root
    for fam in taxonomy.global_families:
        recs: list[GlobalRecord] = []
        for g, group in enumerate(fam.groups):
            folder = base / fam.name / group
            names = []
            if folder.is_dir():
                names = sorted(
                    n for n in os.listdir(folder)
                    if not n.startswith(".")
                    and n.lower().endswith(GLOBAL_IMAGE_SUFFIXES)
                    and (folder / n).is_file()
                )
            if not names:
                state = "has no images" if folder.is_dir() else "is missing"
                problems.report(BadInputError(
                    f"{folder}: global group folder {state} (expected *.png, *.jpg or *.jpeg files)",
                    kind="empty_global_group",
                ))
                continue
            rel = folder.relative_to(root).as_posix()
            recs.extend(GlobalRecord(f"{rel}/{n}", g) for n in names)
        out[fam.name] = recs
    return out


def read_layout(
    root: str | Path,
    taxonomy: Taxonomy,
    *,
    index_files: Mapping[str, str] | None = None,
    skip_bad: bool = False,
) -> DictionaryLayout:
    """Parse the index files and global folders of a published-layout root.

    Checks structure and that every listed file exists; pixel-level checks (corrupt files, mask
    sizes) are in :func:`hnd_jax.dictionary.scan.scan_files`.
    """
    root = Path(root)
    if not root.is_dir():
        raise HndError(f"{root}: Face Dictionary folder not found")
    problems = Problems(skip_bad=skip_bad)
    paths = resolve_index_files(root, taxonomy, index_files)
    records: list[LocalRecord] = []
    ignored = 0
    digest = hashlib.sha256()
    for fam_idx, fam in enumerate(taxonomy.local_families):
        path = paths[fam.name]
        parsed = _read_index_rows(path, fam.name, problems)
        if parsed is None:
            digest.update(f"{fam.name}:<none>\n".encode())
            continue
        rows, data = parsed
        digest.update(f"{fam.name}:{len(data)}:".encode() + data)
        seen: dict[str, int] = {}
        for line, row in rows:
            try:
                image = row[0].strip() if row else ""
                if image and image in seen:
                    raise BadInputError(
                        f"{path}:{line}: duplicate row: image {image} already listed at line {seen[image]}",
                        kind="duplicate_row",
                    )
                record, n_ignored = _parse_row(root, taxonomy, fam_idx, path, line, row)
            except BadInputError as err:
                problems.report(err)
                continue
            seen[record.image] = line
            ignored += n_ignored
            records.append(record)
    globals_ = _list_global(root, taxonomy, problems)
    return DictionaryLayout(
        root=root,
        taxonomy=taxonomy,
        local=records,
        global_images=globals_,
        index_paths=paths,
        problems=problems,
        ignored_visualisations=ignored,
        index_digest=digest.hexdigest(),
    )
