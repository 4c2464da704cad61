"""The prepared Face Dictionary: decoded images and bit-packed masks as memory-mapped NumPy arrays.

``hnd dictionary prepare`` (see ``prepare.py``) decodes and resizes every image and mask once and
writes them here; reading a batch is then a slice of a memory-mapped array plus one
``np.unpackbits`` for all of the batch's masks (no per-record parsing, no TensorFlow, no tfds).

On-disk layout of a PREP folder (format version 2)::

    PREP/hnd_prepared.json          marker + metadata: size, resample, taxonomy, source identity, paths
    PREP/labels.npz                 labelled [N, C], family [N], global_group_<F> [n_F] (read at open)
    PREP/arrays/local_images.npy    uint8 [N, S, S, 3]
    PREP/arrays/local_masks.npy     uint8 [K, ceil(S*S/8)]: one row per (image, labelled concept), in
                                    image order then concept-axis order, each ``np.packbits`` of the
                                    mask's S*S pixels (row-major); K = labelled.sum()
    PREP/arrays/global_images.npy   uint8 [G, S, S, 3]: every global family one after the other
                                    (taxonomy order; offsets in hnd_prepared.json)

Image ``i``'s masks are rows ``offset[i] .. offset[i+1]`` of ``local_masks`` with ``offset`` the
cumulative count of labelled concepts, so any batch is one gather. The arrays are plain ``.npy``
files: any tool reads them (``np.load(..., mmap_mode='r')``), and :meth:`PreparedDictionary.local_source`
is a random-access source for grain. Version 1 (a tfds array_record dataset, one protobuf parse
per record: 643 images/s with masks at S=128 on 2 cores) is refused with a one-line message to
prepare again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hnd_jax.dictionary.base import LocalBatch
from hnd_jax.dictionary.batching import RecordDictionary
from hnd_jax.dictionary.decode import check_image_size, resample_filter
from hnd_jax.errors import HndError, nested_too_deeply
from hnd_jax.taxonomy import Taxonomy, taxonomy_from_dict

PREPARED_MARKER = "hnd_prepared.json"
PREPARED_LABELS = "labels.npz"
PREPARED_ARRAYS_DIR = "arrays"
LOCAL_IMAGES = "local_images.npy"
LOCAL_MASKS = "local_masks.npy"
GLOBAL_IMAGES = "global_images.npy"
PREPARED_FORMAT = "hnd-face-dictionary-prepared"
PREPARED_FORMAT_VERSION = 2


def is_prepared(path: str | Path) -> bool:
    """True when ``path`` is a folder written by ``hnd dictionary prepare``."""
    return (Path(path) / PREPARED_MARKER).is_file()


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """bool [k, S, S] -> flat uint8 [k * ceil(S*S/8)] (row-major bits, one row of bytes per mask)."""
    k = masks.shape[0]
    return np.packbits(masks.reshape(k, masks.shape[1] * masks.shape[2]), axis=-1).reshape(-1)


def mask_row_bytes(size: int) -> int:
    """Bytes of one packed ``size x size`` mask."""
    return -(-size * size // 8)


def unpack_masks(bits: np.ndarray, k: int, size: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: flat uint8 -> bool [k, S, S]."""
    nbytes = mask_row_bytes(size)
    if bits.size != k * nbytes:
        raise HndError(f"prepared mask bits have {bits.size} bytes, expected {k} x {nbytes}")
    if k == 0:
        return np.zeros((0, size, size), dtype=bool)
    return np.unpackbits(bits.reshape(k, nbytes), axis=-1, count=size * size).reshape(k, size, size).astype(bool)


def read_metadata(prep: str | Path) -> dict[str, Any]:
    """The parsed ``hnd_prepared.json`` of a PREP folder (HndError if absent or not ours)."""
    path = Path(prep) / PREPARED_MARKER
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise HndError(f"{prep}: not a prepared Face Dictionary (no {PREPARED_MARKER})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HndError(f"{path}: unreadable prepared metadata ({exc})") from None
    except RecursionError:
        raise nested_too_deeply(path) from None
    if not isinstance(meta, dict):
        raise HndError(f"{path}: not a hnd-jax prepared dictionary (expected a JSON object)")
    if meta.get("format") != PREPARED_FORMAT:
        raise HndError(f"{path}: not a hnd-jax prepared dictionary (format {meta.get('format')!r})")
    if meta.get("format_version") != PREPARED_FORMAT_VERSION:
        raise HndError(
            f"{path}: prepared format version {meta.get('format_version')} is not supported "
            f"(expected {PREPARED_FORMAT_VERSION}); run 'hnd dictionary prepare' again to rewrite it"
        )
    return meta


class PreparedDictionary(RecordDictionary):
    """:class:`~hnd_jax.dictionary.base.FaceDictionary` over a PREP folder.

    The PREP holds images at one size and one resample filter: asking for another is an error
    (prepare again), never a silent second resize that would break PNG/PREP equality.
    ``taxonomy=None`` uses the taxonomy stored in PREP; a given taxonomy must be the same one.
    """

    kind = "prepared"

    def __init__(
        self,
        prep: str | Path,
        image_size: int,
        *,
        taxonomy: Taxonomy | None = None,
        image_resample: str | None = None,
        num_workers: int | None = None,
    ):
        self.root = Path(prep)
        meta = read_metadata(self.root)
        self.meta = meta
        self.image_size = check_image_size(image_size)
        if meta["image_size"] != self.image_size:
            raise HndError(
                f"{self.root}: prepared at size {meta['image_size']} but size {self.image_size} was asked; "
                f"run 'hnd dictionary prepare ROOT --size {self.image_size} --out NEW_PREP'"
            )
        self.image_resample = meta["image_resample"]
        if image_resample is not None:
            resample_filter(image_resample)
            if str(image_resample).lower() != self.image_resample:
                raise HndError(
                    f"{self.root}: prepared with resample {self.image_resample!r} but {image_resample!r} was asked; "
                    f"prepare again with --resample {str(image_resample).lower()}"
                )
        stored = taxonomy_from_dict(meta["taxonomy"], source=str(self.root / PREPARED_MARKER))
        if taxonomy is not None and taxonomy.fingerprint != stored.fingerprint:
            raise HndError(
                f"{self.root}: prepared with taxonomy {stored.name!r} ({stored.fingerprint}) but taxonomy "
                f"{taxonomy.name!r} ({taxonomy.fingerprint}) was given; prepare again with that taxonomy"
            )
        self.taxonomy = taxonomy or stored
        self.num_workers = num_workers
        try:
            with np.load(self.root / PREPARED_LABELS) as z:
                self.labelled = z["labelled"].astype(bool)
                self.family = z["family"].astype(np.int32)
                self._global_group = {
                    f.name: z[f"global_group_{i}"].astype(np.int32) for i, f in enumerate(self.taxonomy.global_families)
                }
        except (OSError, KeyError, ValueError) as exc:
            raise HndError(f"{self.root / PREPARED_LABELS}: unreadable prepared labels ({exc})") from None
        self._global_offset = {f: int(v["offset"]) for f, v in meta["global_families"].items()}
        arrays = self.root / PREPARED_ARRAYS_DIR
        S = self.image_size
        self._images = _open_array(arrays / LOCAL_IMAGES, (self.num_local, S, S, 3))
        k = np.count_nonzero(self.labelled, axis=1)
        self._mask_offset = np.concatenate([[0], np.cumsum(k)]).astype(np.int64)  # [N + 1]
        self._masks = _open_array(arrays / LOCAL_MASKS, None)
        nbytes = mask_row_bytes(S)
        if self._masks.ndim != 2 or self._masks.shape != (int(self._mask_offset[-1]), nbytes):
            raise HndError(
                f"{arrays / LOCAL_MASKS}: prepared masks hold {self._masks.shape} bytes but the labels need "
                f"({int(self._mask_offset[-1])}, {nbytes}) (damaged PREP); run 'hnd dictionary prepare' again"
            )
        n_global = int(meta["num_global"])
        self._global = _open_array(arrays / GLOBAL_IMAGES, (n_global, S, S, 3)) if n_global else None

    @property
    def skipped(self) -> dict[str, int]:
        """What --skip-bad left out when the PREP was written."""
        return dict(self.meta["source"].get("skipped", {}))

    @property
    def local_image_paths(self) -> list[str]:
        return list(self.meta["local_images"])

    def global_image_paths(self, family: str) -> list[str]:
        return list(self.meta["global_images"].get(family, []))

    def identity(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for name in (PREPARED_MARKER, PREPARED_LABELS):
            h.update((self.root / name).read_bytes())
        return {
            "kind": self.kind,
            "path": str(self.root.resolve()),
            "content_sha256": self.meta["source"]["content_sha256"],
            "prepared_sha256": h.hexdigest(),
            "taxonomy": self.taxonomy.fingerprint,
            "image_size": self.image_size,
            "image_resample": self.image_resample,
            "num_local": self.num_local,
            "num_global": {f: int(len(g)) for f, g in self._global_group.items()},
            "skipped": self.skipped,
        }

    # ------------------------------------------------------------------ record access
    def _mask_rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows of ``local_masks`` holding the masks of these images, in order (int64 [sum k])."""
        lo, hi = self._mask_offset[indices], self._mask_offset[indices + 1]
        count = hi - lo
        if indices.size and np.all(indices[1:] == indices[:-1] + 1):  # contiguous batch: one slice
            return np.arange(lo[0], hi[-1])
        starts = np.repeat(lo - (np.cumsum(count) - count), count)
        return starts + np.arange(int(count.sum()))

    def get_local(self, indices: np.ndarray, *, with_masks: bool = True) -> LocalBatch:
        """The local images at these dictionary positions, in the order given (bulk reads)."""
        idx = self._check_indices(indices, self.num_local, "local image")
        S, C = self.image_size, self.taxonomy.num_concepts
        contiguous = idx.size and np.all(idx[1:] == idx[:-1] + 1)
        images = np.array(self._images[idx[0] : idx[-1] + 1] if contiguous else self._images[idx], dtype=np.uint8)
        labelled = self.labelled[idx]
        masks = None
        if with_masks:
            rows = self._mask_rows(idx)
            bits = np.asarray(self._masks[rows[0] : rows[-1] + 1] if contiguous and rows.size else self._masks[rows])
            masks = np.zeros((len(idx), C, S, S), dtype=bool)
            if rows.size:
                unpacked = np.unpackbits(bits, axis=-1, count=S * S).view(bool).reshape(-1, S, S)
                img_row, concept = np.nonzero(labelled)  # image order, then concept order: the storage order
                masks[img_row, concept] = unpacked
        return LocalBatch(images=images, masks=masks, labelled=labelled.copy(),
                          family=self.family[idx].astype(np.int32), index=idx)

    def _load_local(self, index: int, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        image = np.array(self._images[index], dtype=np.uint8)
        if not with_masks:
            return image, None
        lo, hi = self._mask_offset[index], self._mask_offset[index + 1]
        return image, unpack_masks(np.asarray(self._masks[lo:hi]).reshape(-1), int(hi - lo), self.image_size)

    def _load_global(self, family: str, index: int) -> np.ndarray:
        return self._load_global_many(family, [index])[0]

    def _load_global_many(self, family: str, indices: Sequence[int]) -> list[np.ndarray]:
        if not indices:
            return []
        rows = self._global_offset[family] + np.asarray(indices, np.int64)
        return list(np.array(self._global[rows], dtype=np.uint8))

    def local_source(self) -> "LocalSource":
        """A random-access source of local records (``len`` and ``[i]``), e.g. for ``grain.MapDataset.source``."""
        return LocalSource(self)


class LocalSource:
    """Record ``i``: ``{"image": uint8 [S, S, 3], "masks": bool [k, S, S], "labelled": bool [C],
    "family": int, "index": i}`` (the masks of the labelled concepts, concept-axis order)."""

    def __init__(self, dictionary: PreparedDictionary):
        self._d = dictionary

    def __len__(self) -> int:
        return self._d.num_local

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        image, masks = self._d._load_local(i, True)
        return {"image": image, "masks": masks, "labelled": self._d.labelled[i].copy(),
                "family": int(self._d.family[i]), "index": i}


def _open_array(path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    """A read-only memory map of a ``.npy`` uint8 array (HndError naming the file if absent, damaged or misshapen)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise HndError(f"{path}: missing from the prepared dictionary; run 'hnd dictionary prepare' again") from None
    except (OSError, ValueError) as exc:
        raise HndError(f"{path}: unreadable prepared array ({exc}); run 'hnd dictionary prepare' again") from None
    if arr.dtype != np.uint8 or (shape is not None and arr.shape != shape):
        raise HndError(f"{path}: holds {arr.dtype} {arr.shape}, expected uint8 {shape} (damaged PREP)")
    return arr
