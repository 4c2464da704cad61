r"""Parse a Face Dictionary in the published on-disk layout (DESIGN.md §1) into records.

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

Untrusted content (DESIGN.md §7):

* index files are UTF-8 (a BOM is allowed) with any line ending (``\n``, ``\r\n``, old-Mac ``\r``);
  a file over :data:`MAX_INDEX_BYTES`, a field over the CSV field limit, a NUL byte or bytes that
  are not UTF-8 are refused in one line naming the file (and line), never quoting its content;
* paths may use ``\`` (written on Windows) or ``/``; every path must resolve inside ROOT after
  following symlinks -- no ``..`` escape, no absolute path, no symlink leading out -- unless
  ``allow_outside_root`` is given (``kind='outside_root'``). Global images are checked the same way;
* global images are every file PIL can open by its extension (:data:`GLOBAL_IMAGE_SUFFIXES`);
  other files in a global group folder are counted (``ignored_global_files``), never silently lost.

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
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Mapping

from hnd_jax.errors import BadInputError, HndError
from hnd_jax.taxonomy import Taxonomy

def _pil_read_suffixes() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


#: File name endings of global images: every format PIL can read (.png .jpg .jpe .webp .bmp .tif ...).
GLOBAL_IMAGE_SUFFIXES: tuple[str, ...] = _pil_read_suffixes()
INDEX_HEADER = ("image", "labels")
#: Largest index file read (bytes): the published Attributes.csv is about 20 MB.
MAX_INDEX_BYTES = 1 << 30

_allow_outside_root_default = False


def set_allow_outside_root(allow: bool) -> None:
    """Process-wide default of ``allow_outside_root`` (the CLI's ``--allow-outside-root`` sets it)."""
    global _allow_outside_root_default
    _allow_outside_root_default = bool(allow)


def allow_outside_root_default() -> bool:
    """The current process-wide default (False unless :func:`set_allow_outside_root` changed it)."""
    return _allow_outside_root_default


def shown(text: str, limit: int = 200) -> str:
    """A path from a file, safe to put in a one-line message: printable, at most ``limit`` chars."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalise_relpath(raw: str) -> str:
    """A path as written in an index, with Windows ``\\`` separators turned into ``/``."""
    return raw.strip().replace("\\", "/")


class RootGuard:
    """Checks that relative paths resolve inside ROOT after symlinks (DESIGN.md §7).

    Parent folders are resolved once and cached (many masks share a folder), the last component is
    checked with one ``lstat``. ``allow`` turns every check off (``--allow-outside-root``).
    """

    def __init__(self, root: Path, allow: bool):
        self.root = root
        self.allow = allow
        self.real_root = Path(os.path.realpath(root))
        self._dirs: dict[str, bool] = {}

    def _inside(self, real: str) -> bool:
        base = str(self.real_root)
        return real == base or real.startswith(base.rstrip(os.sep) + os.sep)

    def check(self, rel: str, where: str, what: str) -> None:
        """Raise BadInputError(kind='outside_root') unless ROOT/rel stays inside ROOT."""
        if self.allow:
            return
        posix = PurePosixPath(rel)
        if posix.is_absolute() or PureWindowsPath(rel).drive or ".." in posix.parts:
            self._refuse(rel, where, what)
        parent = str(posix.parent)
        ok = self._dirs.get(parent)
        if ok is None:
            ok = self._dirs[parent] = self._inside(os.path.realpath(self.root / parent))
        if not ok:
            self._refuse(rel, where, what)
        full = self.root / rel
        if full.is_symlink() and not self._inside(os.path.realpath(full)):
            self._refuse(rel, where, what)

    def _refuse(self, rel: str, where: str, what: str) -> None:
        raise BadInputError(
            f"{where}: {what} path {shown(rel)!r} leads outside the dictionary root {self.root} "
            "(.., an absolute path or a symlink); pass --allow-outside-root if that is intended",
            kind="outside_root",
        )


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
    ignored_global_files: int = 0  # files in global group folders that PIL cannot read by extension

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
    """(line number, [image, labels]) rows of one index file, or None if the file is unusable.

    Messages name the file and line but never quote its content (it may be any file a symlink
    points to).
    """
    if not path.is_file():
        problems.report(BadInputError(f"{path}: index file of family {family!r} not found", kind="missing_index"))
        return None
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        problems.report(BadInputError(
            f"{path}: index file is {size} bytes, more than the {MAX_INDEX_BYTES} an index may have", kind="bad_index"))
        return None
    with open(path, "rb") as fh:
        data = fh.read(size)  # read(n) allocates n bytes up front: ask for what the file holds
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.report(BadInputError(
            f"{path}: index file is not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8",
            kind="bad_index"))
        return None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        problems.report(BadInputError(f"{path}: line {line} holds a NUL byte: not a text index file", kind="bad_index"))
        return None
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": \r, \n and \r\n all end a row
    rows = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        reason = str(exc)
        if "field larger" in reason:
            reason = f"a field is longer than {csv.field_size_limit()} characters"
        elif "NUL" in reason:
            reason = "it contains a NUL byte (not a text file)"
        else:
            reason = shown(reason, 120)
        problems.report(BadInputError(f"{path}:{reader.line_num}: unreadable CSV: {reason}", kind="bad_index"))
        return None
    if not rows:
        problems.report(BadInputError(f"{path}: index file is empty (expected header 'image,labels' and rows)", kind="empty_index"))
        return None
    header = tuple(c.strip().lower() for c in rows[0][1])
    if header != INDEX_HEADER:
        problems.report(BadInputError(
            f"{path}: line {rows[0][0]} is not the header 'image,labels' ({len(rows[0][1])} columns, not those "
            "names); is this an index file?", kind="bad_index"))
        return None
    if len(rows) == 1:
        problems.report(BadInputError(f"{path}: index file has a header but no rows", kind="empty_index"))
        return None
    return rows[1:], data


def special_file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode``."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def unreadable_reason(path: Path) -> str | None:
    """None when ``path`` is a regular file (symlinks followed); else why it is not one, in words
    that follow the file's role (``image file not found``, ``image is not a regular file (a FIFO)``)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "file not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return None if stat.S_ISREG(mode) else f"is not a regular file ({special_file_kind(mode)})"


def _parse_row(
    root: Path,
    taxonomy: Taxonomy,
    family_idx: int,
    index_path: Path,
    line: int,
    row: list[str],
    guard: RootGuard | None = None,
) -> tuple[LocalRecord, int]:
    """One CSV row -> (record, number of visualisation labels ignored). Raises BadInputError."""
    family = taxonomy.local_families[family_idx]
    where = f"{index_path}:{line}"
    if len(row) != 2:
        raise BadInputError(f"{where}: expected 2 columns (image,labels), found {len(row)}", kind="bad_row")
    image, labels = normalise_relpath(row[0]), row[1].strip()
    if not image:
        raise BadInputError(f"{where}: empty image path", kind="bad_row")
    guard = guard or RootGuard(root, allow_outside_root_default())
    guard.check(image, where, "image")
    reason = unreadable_reason(root / image)
    if reason:
        raise BadInputError(f"{root}/{shown(image)}: image {reason} (listed at {where})", kind="missing_image")
    allowed = set(family.concepts)
    found: dict[int, str] = {}
    ignored = 0
    for label in (normalise_relpath(s) for s in labels.split(";")):
        if not label:
            continue
        if is_visualisation(label):
            ignored += 1
            continue
        concept = PurePosixPath(label).stem
        if concept not in allowed:
            owner = next((f.name for f in taxonomy.local_families if concept in f.concepts), None)
            detail = f"it belongs to family {owner!r}" if owner else "it is not in the taxonomy"
            raise BadInputError(
                f"{where}: unknown concept {shown(concept, 80)!r} (mask {shown(label)}) for family "
                f"{family.name!r}: {detail}",
                kind="unknown_concept",
            )
        idx = taxonomy.concept_index[concept]
        if idx in found:
            raise BadInputError(f"{where}: concept {concept!r} is listed twice", kind="duplicate_concept")
        guard.check(label, where, "mask")
        reason = unreadable_reason(root / label)
        if reason:
            raise BadInputError(f"{root}/{shown(label)}: mask {reason} (listed at {where})", kind="missing_mask")
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


def _list_global(
    root: Path, taxonomy: Taxonomy, problems: Problems, guard: RootGuard
) -> tuple[dict[str, list[GlobalRecord]], int]:
    """Global records per family, and the number of other (non-image) files left out."""
    out: dict[str, list[GlobalRecord]] = {}
    ignored = 0
    base = root / taxonomy.global_root
    for fam in taxonomy.global_families:
        recs: list[GlobalRecord] = []
        for g, group in enumerate(fam.groups):
            folder = base / fam.name / group
            rel = folder.relative_to(root).as_posix()
            names = []
            if folder.is_dir():
                for n in sorted(os.listdir(folder)):
                    if n.startswith(".") or not (folder / n).is_file():
                        continue
                    if not n.lower().endswith(GLOBAL_IMAGE_SUFFIXES):
                        ignored += 1
                        continue
                    try:
                        guard.check(f"{rel}/{n}", str(folder), "global image")
                    except BadInputError as err:
                        problems.report(err)
                        continue
                    names.append(n)
            if not names:
                state = "has no images" if folder.is_dir() else "is missing"
                problems.report(BadInputError(
                    f"{folder}: global group folder {state} (expected image files PIL can read: .png, .jpg, ...)",
                    kind="empty_global_group",
                ))
                continue
            recs.extend(GlobalRecord(f"{rel}/{n}", g) for n in names)
        out[fam.name] = recs
    return out, ignored


def read_layout(
    root: str | Path,
    taxonomy: Taxonomy,
    *,
    index_files: Mapping[str, str] | None = None,
    skip_bad: bool = False,
    allow_outside_root: bool | None = None,
) -> DictionaryLayout:
    """Parse the index files and global folders of a published-layout root.

    Checks structure, that every listed file exists and that it lies inside ROOT (unless
    ``allow_outside_root``; None means the process default, see :func:`set_allow_outside_root`);
    pixel-level checks (corrupt files, mask sizes) are in :func:`hnd_jax.dictionary.scan.scan_files`.
    """
    root = Path(root)
    guard = RootGuard(root, allow_outside_root_default() if allow_outside_root is None else allow_outside_root)
    if not root.is_dir():
        raise HndError(f"{root}: Face Dictionary folder not found")
    problems = Problems(skip_bad=skip_bad)
    paths = resolve_index_files(root, taxonomy, index_files)
    records: list[LocalRecord] = []
    ignored = 0
    digest = hashlib.sha256()
    overridden = set(index_files or {})  # named by the user on the command line: trusted
    for fam_idx, fam in enumerate(taxonomy.local_families):
        path = paths[fam.name]
        if fam.name not in overridden and path.is_symlink():
            try:  # a default index that is a symlink out of ROOT (to a system file?) is never read
                guard.check(path.name, str(path), "index file")
            except BadInputError as err:
                problems.report(BadInputError(str(err), kind="outside_root"))
                digest.update(f"{fam.name}:<none>\n".encode())
                continue
        parsed = _read_index_rows(path, fam.name, problems)
        if parsed is None:
            digest.update(f"{fam.name}:<none>\n".encode())
            continue
        rows, data = parsed
        digest.update(f"{fam.name}:{len(data)}:".encode() + data)
        seen: dict[str, int] = {}
        for line, row in rows:
            try:
                image = normalise_relpath(row[0]) if row else ""
                if image and image in seen:
                    raise BadInputError(
                        f"{path}:{line}: duplicate row: image {shown(image)} already listed at line {seen[image]}",
                        kind="duplicate_row",
                    )
                record, n_ignored = _parse_row(root, taxonomy, fam_idx, path, line, row, guard)
            except BadInputError as err:
                problems.report(err)
                continue
            seen[record.image] = line
            ignored += n_ignored
            records.append(record)
    globals_, ignored_global = _list_global(root, taxonomy, problems, guard)
    return DictionaryLayout(
        root=root,
        taxonomy=taxonomy,
        local=records,
        global_images=globals_,
        index_paths=paths,
        problems=problems,
        ignored_visualisations=ignored,
        index_digest=digest.hexdigest(),
        ignored_global_files=ignored_global,
    )
