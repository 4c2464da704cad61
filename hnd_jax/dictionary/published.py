"""A Face Dictionary read straight from the published layout (index CSVs + PNG masks).

Opening parses the index files and checks that every listed file exists (cheap: no decoding).
Corrupt files and mask sizes are then checked lazily, as batches are decoded, and raise the same
:class:`~hnd_jax.errors.BadInputError` that ``hnd dictionary check`` reports. With
``skip_bad=True`` (or ``validate=True``) every file is decoded once when opening instead, so bad
rows are dropped before image indices are handed out and the dictionary order never shifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hnd_jax.dictionary.batching import RecordDictionary
from hnd_jax.dictionary.decode import (
    DEFAULT_RESAMPLE,
    check_image_size,
    decode_image,
    load_mask,
    resample_filter,
    resize_image,
)
from hnd_jax.dictionary.layout import DictionaryLayout, read_layout
from hnd_jax.dictionary.scan import ScanResult, scan_files
from hnd_jax.taxonomy import Taxonomy, default_taxonomy


def layout_arrays(layout: DictionaryLayout) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(labelled [N, C] bool, family [N] int32, global group index per family) of a layout."""
    tax = layout.taxonomy
    labelled = np.zeros((len(layout.local), tax.num_concepts), dtype=bool)
    for i, r in enumerate(layout.local):
        labelled[i, list(r.concepts)] = True
    family = np.array([r.family for r in layout.local], dtype=np.int32)
    groups = {
        fam.name: np.array([r.group for r in layout.global_images.get(fam.name, [])], dtype=np.int32)
        for fam in tax.global_families
    }
    return labelled, family, groups


class PublishedDictionary(RecordDictionary):
    """:class:`~hnd_jax.dictionary.base.FaceDictionary` over a published-layout ROOT folder.

    ``allow_outside_root``: accept index paths that resolve outside ROOT (None: the process default,
    False unless ``--allow-outside-root`` was given; DESIGN.md §7).
    """

    kind = "published"

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        *,
        taxonomy: Taxonomy | None = None,
        image_resample: str = DEFAULT_RESAMPLE,
        skip_bad: bool = False,
        validate: bool = False,
        index_files: Mapping[str, str] | None = None,
        num_workers: int | None = None,
        allow_outside_root: bool | None = None,
    ):
        self.taxonomy = taxonomy or default_taxonomy()
        self.image_size = check_image_size(image_size)
        resample_filter(image_resample)  # fail early on an unknown name
        self.image_resample = str(image_resample).lower()
        self.num_workers = num_workers
        layout = read_layout(
            root, self.taxonomy, index_files=index_files, skip_bad=skip_bad, allow_outside_root=allow_outside_root
        )
        self.scan: ScanResult | None = None
        if skip_bad or validate:
            self.scan = scan_files(layout, num_workers=num_workers)
            layout = self.scan.layout
        self.layout = layout
        self.root = layout.root
        self.labelled, self.family, self._global_group = layout_arrays(layout)
        self._content_hash = layout.content_hash()

    @property
    def skipped(self) -> dict[str, int]:
        """--skip-bad counts per kind (empty when nothing was skipped)."""
        return self.layout.skipped

    @property
    def local_image_paths(self) -> list[str]:
        """Image paths relative to ROOT, in dictionary order (for reports)."""
        return [r.image for r in self.layout.local]

    def global_image_paths(self, family: str) -> list[str]:
        return [r.image for r in self.layout.global_images.get(family, [])]

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.root.resolve()),
            "content_sha256": self._content_hash,
            "taxonomy": self.taxonomy.fingerprint,
            "image_size": self.image_size,
            "image_resample": self.image_resample,
            "num_local": self.num_local,
            "num_global": {f: int(len(g)) for f, g in self._global_group.items()},
            "skipped": self.skipped,
        }

    def _load_local(self, index: int, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        record = self.layout.local[index]
        im = decode_image(self.root / record.image)
        image = resize_image(im, self.image_size, self.image_resample)
        if not with_masks:
            return image, None
        S = self.image_size
        masks = np.zeros((len(record.masks), S, S), dtype=bool)
        for k, mask in enumerate(record.masks):
            masks[k] = load_mask(self.root / mask, im.size, S)
        return image, masks

    def _load_global(self, family: str, index: int) -> np.ndarray:
        record = self.layout.global_images[family][index]
        im = decode_image(self.root / record.image, kind_prefix="global_")
        return resize_image(im, self.image_size, self.image_resample)
