"""The prepared Face Dictionary: a tensorflow-datasets dataset in array_record format, no TensorFlow.

``hnd dictionary prepare`` (see ``prepare.py``) decodes and resizes every image and mask once and
writes them here; reading is then a random-access array_record lookup plus ``np.unpackbits``,
through ``tfds.builder_from_directory(...).as_data_source()`` (the TF-free tfds reading path that
grain also uses).

On-disk layout of a PREP folder::

    PREP/hnd_prepared.json   marker + metadata: size, resample, taxonomy, source identity, paths
    PREP/labels.npz          labelled [N, C], family [N], global_group_<F> [n_F] (small, read at open)
    PREP/tfds/               the tfds dataset: dataset_info.json, features.json, *.array_record-*

The tfds dataset has two splits sharing one feature dict (tfds requires one per dataset):

* ``local``: ``image`` uint8 [S, S, 3]; ``mask_bits`` uint8 [k * ceil(S*S/8)]: the masks of the
  k labelled concepts (concept-axis order), each ``np.packbits`` of its S*S pixels (row-major);
  ``labelled`` bool [C]; ``family`` int32 (local family); ``group`` = -1; ``index`` int64
  (dictionary position, checked on read).
* ``global``: every global family one after the other (taxonomy order); ``family`` is the global
  family's index, ``group`` its group, ``index`` the position in the family, ``mask_bits`` empty.

Features are ``tfds.features.Tensor`` / ``Scalar`` because ``tfds.features.Image`` needs TensorFlow
to encode; images are stored raw (already decoded and resized, so reading costs no PNG decode).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hnd_jax.dictionary.batching import RecordDictionary
from hnd_jax.dictionary.decode import check_image_size, resample_filter
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import Taxonomy, taxonomy_from_dict

PREPARED_MARKER = "hnd_prepared.json"
PREPARED_LABELS = "labels.npz"
PREPARED_TFDS_DIR = "tfds"
PREPARED_FORMAT = "hnd-face-dictionary-prepared"
PREPARED_FORMAT_VERSION = 1
LOCAL_SPLIT = "local"
GLOBAL_SPLIT = "global"


def is_prepared(path: str | Path) -> bool:
    """True when ``path`` is a folder written by ``hnd dictionary prepare``."""
    return (Path(path) / PREPARED_MARKER).is_file()


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """bool [k, S, S] -> flat uint8 [k * ceil(S*S/8)] (row-major bits, one row of bytes per mask)."""
    k = masks.shape[0]
    return np.packbits(masks.reshape(k, masks.shape[1] * masks.shape[2]), axis=-1).reshape(-1)


def unpack_masks(bits: np.ndarray, k: int, size: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: flat uint8 -> bool [k, S, S]."""
    nbytes = -(-size * size // 8)
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
    if meta.get("format") != PREPARED_FORMAT:
        raise HndError(f"{path}: not a hnd-jax prepared dictionary (format {meta.get('format')!r})")
    if meta.get("format_version") != PREPARED_FORMAT_VERSION:
        raise HndError(
            f"{path}: prepared format version {meta.get('format_version')} is not supported "
            f"(expected {PREPARED_FORMAT_VERSION}); run 'hnd dictionary prepare' again"
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
        import tensorflow_datasets as tfds  # slow import: only when a PREP is really opened

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
        try:
            builder = tfds.builder_from_directory(str(self.root / PREPARED_TFDS_DIR))
            self._local = builder.as_data_source(split=LOCAL_SPLIT)
            self._global = builder.as_data_source(split=GLOBAL_SPLIT) if meta["num_global"] else None
        except Exception as exc:  # tfds raises many types for a damaged folder
            raise HndError(f"{self.root / PREPARED_TFDS_DIR}: unreadable prepared dataset ({type(exc).__name__}: {exc})") from None
        if len(self._local) != self.num_local:
            raise HndError(f"{self.root}: {len(self._local)} local records but labels list {self.num_local}")

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
        for name in (PREPARED_MARKER, f"{PREPARED_TFDS_DIR}/dataset_info.json"):
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
    def _decode_local(self, rec: dict[str, Any], index: int, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if int(rec["index"]) != index:
            raise HndError(f"{self.root}: local record {index} holds index {int(rec['index'])} (damaged PREP)")
        image = np.asarray(rec["image"], dtype=np.uint8)
        if not with_masks:
            return image, None
        k = int(np.count_nonzero(self.labelled[index]))
        return image, unpack_masks(np.asarray(rec["mask_bits"], dtype=np.uint8), k, self.image_size)

    def _load_local(self, index: int, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return self._decode_local(self._local[index], index, with_masks)

    def _load_local_many(self, indices: Sequence[int], with_masks: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if not indices:
            return []
        recs = self._local.__getitems__(list(indices))
        return [self._decode_local(r, i, with_masks) for r, i in zip(recs, indices)]

    def _load_global(self, family: str, index: int) -> np.ndarray:
        return self._load_global_many(family, [index])[0]

    def _load_global_many(self, family: str, indices: Sequence[int]) -> list[np.ndarray]:
        if not indices:
            return []
        offset = self._global_offset[family]
        recs = self._global.__getitems__([offset + i for i in indices])
        out = []
        for r, i in zip(recs, indices):
            if int(r["index"]) != i:
                raise HndError(f"{self.root}: global record {family}[{i}] holds index {int(r['index'])} (damaged PREP)")
            out.append(np.asarray(r["image"], dtype=np.uint8))
        return out
