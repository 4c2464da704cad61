"""Write the prepared Face Dictionary (``hnd dictionary prepare``): memory-mapped NumPy arrays.

The images and masks are decoded and resized once, by the same code the PNG reader uses
(:class:`~hnd_jax.dictionary.published.PublishedDictionary`), so a PREP delivers exactly the
batches the ROOT would at that size and resample filter. Batches are written straight into
preallocated ``.npy`` files (``np.lib.format.open_memmap``: their sizes are known from the labels),
in a temporary folder renamed onto PREP only when complete. The format is described in ``prepared.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from hnd_jax import __version__
from hnd_jax.atomic import atomic_dir, write_json
from hnd_jax.dictionary.decode import DEFAULT_RESAMPLE
from hnd_jax.dictionary.prepared import (
    GLOBAL_IMAGES,
    LOCAL_IMAGES,
    LOCAL_MASKS,
    PREPARED_ARRAYS_DIR,
    PREPARED_FORMAT,
    PREPARED_FORMAT_VERSION,
    PREPARED_LABELS,
    PREPARED_MARKER,
    is_prepared,
    mask_row_bytes,
    pack_masks,
)
from hnd_jax.dictionary.published import PublishedDictionary
from hnd_jax.errors import HndError
from hnd_jax.pipeline.progress import StageProgress
from hnd_jax.taxonomy import Taxonomy

_BATCH = 32


def _write_arrays(source: PublishedDictionary, folder: Path, progress: StageProgress) -> dict[str, dict[str, int]]:
    """Write the three arrays of ``prepared.py`` into ``folder``; returns the global families' offsets."""
    S = source.image_size
    N = source.num_local
    folder.mkdir()
    open_memmap = np.lib.format.open_memmap
    images = open_memmap(folder / LOCAL_IMAGES, mode="w+", dtype=np.uint8, shape=(N, S, S, 3))
    k_total = int(np.count_nonzero(source.labelled))
    masks = open_memmap(folder / LOCAL_MASKS, mode="w+", dtype=np.uint8, shape=(k_total, mask_row_bytes(S)))
    row = 0
    for batch in source.local_batches(_BATCH, with_masks=True):
        images[batch.index] = batch.images
        for b in range(len(batch)):
            packed = pack_masks(batch.masks[b][batch.labelled[b]]).reshape(-1, mask_row_bytes(S))
            masks[row : row + packed.shape[0]] = packed
            row += packed.shape[0]
        progress.update(len(batch))
    if row != k_total:
        raise HndError(f"{source.root}: {row} masks read but the labels list {k_total}")
    offsets, total = {}, 0
    families = source.taxonomy.global_families
    for fam in families:
        n = int(len(source.global_group_of(fam.name)))
        offsets[fam.name] = {"offset": total, "count": n}
        total += n
    if total:
        glob = open_memmap(folder / GLOBAL_IMAGES, mode="w+", dtype=np.uint8, shape=(total, S, S, 3))
        for fam in families:
            base = offsets[fam.name]["offset"]
            for batch in source.global_batches(fam.name, _BATCH):
                glob[base + batch.index] = batch.images
                progress.update(len(batch))
        glob.flush()
        del glob
    images.flush()
    masks.flush()
    del images, masks
    return offsets


def prepare_dictionary(
    root: str | Path,
    out: str | Path,
    image_size: int,
    *,
    taxonomy: Taxonomy | None = None,
    image_resample: str = DEFAULT_RESAMPLE,
    skip_bad: bool = False,
    index_files: Mapping[str, str] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    progress: str | bool = "none",
) -> Path:
    """Decode, resize and write the dictionary at ``root`` as a PREP folder at ``out``.

    Every file is validated first (a full scan, like ``hnd dictionary check``), so a bad file stops
    the run before anything is written (or is skipped and counted with ``skip_bad``). ``out`` is
    replaced atomically; an existing ``out`` is only replaced when it is a PREP and ``overwrite``.
    ``progress``: a mode of :mod:`hnd_jax.pipeline.progress` for writing the images (on stderr).
    """
    out = Path(out)
    if out.exists() and not (overwrite and is_prepared(out)):
        what = "a prepared dictionary (use --overwrite)" if is_prepared(out) else "not a prepared dictionary"
        raise HndError(f"{out}: already exists and is {what}; choose another --out")
    if Path(root).resolve() == out.resolve():
        raise HndError(f"{out}: --out must differ from the dictionary root")
    source = PublishedDictionary(
        root,
        image_size,
        taxonomy=taxonomy,
        image_resample=image_resample,
        skip_bad=skip_bad,
        validate=True,
        index_files=index_files,
        num_workers=num_workers,
    )
    if source.num_local == 0:
        raise HndError(f"{root}: no local images left to prepare")
    say = log or (lambda _msg: None)
    say(f"validated {source.num_local} local images; writing {out} at {source.image_size}x{source.image_size}")

    tax = source.taxonomy
    with atomic_dir(out) as tmp:
        total = source.num_local + sum(len(source.global_group_of(f.name)) for f in tax.global_families)
        with StageProgress("prepare", total, mode=progress) as bar:  # an interruption says where it stopped
            offsets = _write_arrays(source, tmp / PREPARED_ARRAYS_DIR, bar)
        labels = {"labelled": source.labelled, "family": source.family}
        for i, fam in enumerate(tax.global_families):
            labels[f"global_group_{i}"] = source.global_group_of(fam.name)
        offset = sum(v["count"] for v in offsets.values())
        np.savez_compressed(tmp / PREPARED_LABELS, **labels)
        scan = source.scan
        write_json(tmp / PREPARED_MARKER, {
            "format": PREPARED_FORMAT,
            "format_version": PREPARED_FORMAT_VERSION,
            "created_by": f"hnd-jax {__version__}",
            "image_size": source.image_size,
            "image_resample": source.image_resample,
            "mask_packing": "np.packbits per labelled concept, row-major S*S bits, image then concept-axis order",
            "arrays": {"local_images": LOCAL_IMAGES, "local_masks": LOCAL_MASKS, "global_images": GLOBAL_IMAGES},
            "taxonomy": tax.to_dict(),
            "taxonomy_fingerprint": tax.fingerprint,
            "source": {
                "path": str(Path(root).resolve()),
                "content_sha256": source.identity()["content_sha256"],
                "skipped": source.skipped,
                "problems": list(source.layout.problems.messages),
                "ignored_visualisations": source.layout.ignored_visualisations,
                "image_size_range": scan.size_range() if scan else None,
            },
            "num_local": source.num_local,
            "num_global": offset,
            "global_families": offsets,
            "local_images": source.local_image_paths,
            "global_images": {f.name: source.global_image_paths(f.name) for f in tax.global_families},
        })
    say(f"wrote {out}")
    return out
