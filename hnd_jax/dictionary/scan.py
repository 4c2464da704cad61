"""Full validation of a published-layout dictionary: decode every image and mask once.

``hnd dictionary check`` runs this, and so does opening a dictionary with ``skip_bad=True`` (the
bad rows must be known before image indices are handed out, or the dictionary order would shift
mid-run). Decoding runs in a small thread pool (PIL releases the GIL while decoding), but results
are consumed in dictionary order, so the first error reported is always the same one.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from hnd_jax.dictionary.decode import decode_image, decode_mask
from hnd_jax.dictionary.layout import DictionaryLayout, GlobalRecord, LocalRecord
from hnd_jax.errors import BadInputError

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Decoder threads: a few, never more than the CPUs (the machine may be shared)."""
    return max(1, min(8, os.cpu_count() or 1))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], num_workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on a thread pool, results in input order."""
    items = list(items)
    workers = default_workers() if num_workers is None else max(1, int(num_workers))
    if workers == 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


@dataclass
class ScanResult:
    """The layout with bad entries removed (or an exception raised) plus native image sizes."""

    layout: DictionaryLayout
    local_sizes: list[tuple[int, int]]  # (width, height) per kept local image
    global_sizes: dict[str, list[tuple[int, int]]]

    def size_range(self) -> dict[str, list[int]] | None:
        """{"width": [min, max], "height": [min, max]} over local and global images."""
        sizes = list(self.local_sizes) + [s for v in self.global_sizes.values() for s in v]
        if not sizes:
            return None
        ws, hs = [s[0] for s in sizes], [s[1] for s in sizes]
        return {"width": [min(ws), max(ws)], "height": [min(hs), max(hs)]}


def _check_local(layout: DictionaryLayout, record: LocalRecord) -> tuple[int, int] | BadInputError:
    try:
        im = decode_image(layout.root / record.image)
        for mask in record.masks:
            decode_mask(layout.root / mask, im.size)
        return im.size
    except BadInputError as err:
        return err


def _check_global(layout: DictionaryLayout, record: GlobalRecord) -> tuple[int, int] | BadInputError:
    try:
        return decode_image(layout.root / record.image, kind_prefix="global_").size
    except BadInputError as err:
        return err


def scan_files(layout: DictionaryLayout, *, num_workers: int | None = None) -> ScanResult:
    """Decode every file of ``layout``; drop bad entries (skip_bad) or raise the first problem.

    A global group whose images are all bad counts as an empty global group as well.
    """
    problems = layout.problems
    kept: list[LocalRecord] = []
    local_sizes: list[tuple[int, int]] = []
    results = ordered_map(lambda r: _check_local(layout, r), layout.local, num_workers)
    for record, res in zip(layout.local, results):
        if isinstance(res, BadInputError):
            problems.report(res)
        else:
            kept.append(record)
            local_sizes.append(res)

    global_kept: dict[str, list[GlobalRecord]] = {}
    global_sizes: dict[str, list[tuple[int, int]]] = {}
    for fam in layout.taxonomy.global_families:
        recs = layout.global_images.get(fam.name, [])
        results = ordered_map(lambda r: _check_global(layout, r), recs, num_workers)
        keep = [(r, s) for r, s in zip(recs, results) if not isinstance(s, BadInputError)]
        for res in results:
            if isinstance(res, BadInputError):
                problems.report(res)
        had = {r.group for r in recs}
        left = {r.group for r, _ in keep}
        for g in sorted(had - left):
            folder = layout.root / layout.taxonomy.global_root / fam.name / fam.groups[g]
            problems.report(BadInputError(f"{folder}: no readable image left in global group", kind="empty_global_group"))
        global_kept[fam.name] = [r for r, _ in keep]
        global_sizes[fam.name] = [s for _, s in keep]
    return ScanResult(
        layout=dataclasses.replace(layout, local=kept, global_images=global_kept),
        local_sizes=local_sizes,
        global_sizes=global_sizes,
    )
