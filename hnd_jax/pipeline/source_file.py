"""Activations computed elsewhere (any framework): the source of ``hnd dissect --activations FILE``.

Accepted files (rows in dictionary order, see :mod:`hnd_jax.dictionary.base`):

* ``.npy`` ``[N, U, h, w]`` float (NCHW, what a PyTorch forward hook gives), N = the number of local
  dictionary images. It is memory-mapped and streamed in batches, so it may exceed RAM.
* ``.npz`` with ``local`` (the same ``[N, U, h, w]`` array) and optionally, per global family F and
  group g, ``F/g`` ``[n_g, U, h, w]``: the activations of that group's images in sorted file-name
  order. A family is scored only when the file holds its arrays (then every non-empty group needs
  one); families without arrays are listed as skipped in ``dissection.json``. Arrays of an ``.npz``
  are loaded whole, one at a time: use ``.npy`` for very large local sets.

Every problem with FILE is a one-line :class:`~hnd_jax.errors.HndError` naming the file (wrong rank,
row count, non-float dtype, NaN/inf with the first bad image, missing ``local``, unknown or
mis-sized group arrays); nothing is written before the whole computation succeeded.

:class:`FileActivations` serves the rows to the driver (:mod:`hnd_jax.pipeline.dissect`), which
gives this path the same resume, multi-process, progress and results code as a model's forward.
Pass 1 reads only the file; pass 2 walks the dictionary for the masks and takes the matching rows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.errors import HndError
from hnd_jax.npyfile import NpzReader, finite_float32, load_npy, read_fully, read_npy_header
from hnd_jax.pipeline.prefetch import Prefetch
from hnd_jax.pipeline.sources import SourceBatch
from hnd_jax.scoring.accumulator import aligned_empty
from hnd_jax.taxonomy import Taxonomy

LOCAL_KEY = "local"
#: Rows are read and converted to float32 NHWC in pieces of at most this many bytes (at least one image).
READ_CHUNK_BYTES = 16 << 20


class ActivationFile:
    """An opened activations file: ``local`` ``[N, U, h, w]`` and the global group arrays by key.

    Headers are checked against the file before anything is read (:mod:`hnd_jax.npyfile`: a header
    claiming more data than the file holds is refused), an ``.npy`` is memory-mapped, and ``.npz``
    members are inflated one at a time, exactly to their checked size.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._npz: NpzReader | None = None
        self._loaded: dict[str, np.ndarray] = {}  # group arrays of the family being read
        suffix = self.path.suffix.lower()
        if suffix not in (".npy", ".npz"):
            raise HndError(f"{self.path}: expected an activations file ending in .npy or .npz")
        if not self.path.exists():
            raise HndError(f"{self.path}: activations file not found")
        if not self.path.is_file():  # a folder, a device such as /dev/zero, a FIFO
            raise HndError(f"{self.path}: not a regular file (an activations file is a .npy or .npz file)")
        self.format = suffix[1:]
        self._fd: int | None = None
        if suffix == ".npy":
            header = read_npy_header(self.path)
            self.check_array(LOCAL_KEY, header)
            self.local = load_npy(self.path, mmap_mode="r")
            self.keys: tuple[str, ...] = (LOCAL_KEY,)
            if not header.fortran_order:  # rows are contiguous bytes: read them, see rows()
                self._header = header
                self._fd = os.open(self.path, os.O_RDONLY)
        else:
            self._npz = NpzReader(self.path)
            self.keys = self._npz.keys
            if LOCAL_KEY not in self.keys:
                raise HndError(f"{self.path}: no '{LOCAL_KEY}' array (found: {', '.join(self.keys) or 'none'})")
            self.check_array(LOCAL_KEY, self._npz.header(LOCAL_KEY))
            self.local = self._npz.read(LOCAL_KEY)
        self.num_images, self.num_units, self.h, self.w = (int(d) for d in self.local.shape)

    def check_array(self, key: str, arr: Any, rows: int | None = None) -> None:
        """Rank 4, float dtype, non-empty, and (for group arrays) the same U, h, w as ``local``.

        ``arr`` is an array or an :class:`~hnd_jax.npyfile.ArrayHeader` (shape and dtype only)."""
        where = f"{self.path}" if self.format == "npy" else f"{self.path}: array '{key}'"
        if len(arr.shape) != 4:
            raise HndError(f"{where} has shape {tuple(arr.shape)}: expected 4 dimensions [N, U, h, w] (NCHW)")
        if arr.dtype.kind != "f":
            raise HndError(f"{where} has dtype {arr.dtype}: expected floating point (float16/32/64)")
        if key == LOCAL_KEY:
            if min(arr.shape) == 0:
                raise HndError(f"{where} has shape {tuple(arr.shape)}: expected no empty dimension")
            return
        if tuple(arr.shape[1:]) != (self.num_units, self.h, self.w):
            raise HndError(
                f"{where} has shape {tuple(arr.shape)}: expected [n, {self.num_units}, {self.h}, {self.w}] like '{LOCAL_KEY}'"
            )
        if rows is not None and arr.shape[0] != rows:
            raise HndError(f"{where} has {arr.shape[0]} rows but the dictionary has {rows} images in that group")

    def group_arrays(self, taxonomy: Taxonomy) -> dict[str, dict[str, str]]:
        """family -> {group: key} for every ``F/g`` key; unknown keys are an error."""
        out: dict[str, dict[str, str]] = {}
        families = {f.name: f for f in taxonomy.global_families}
        for key in self.keys:
            if key == LOCAL_KEY:
                continue
            fam, _, group = key.partition("/")
            if fam not in families or group not in families[fam].groups:
                known = ", ".join(f"{f.name}/<{'|'.join(f.groups)}>" for f in taxonomy.global_families)
                raise HndError(f"{self.path}: unexpected array '{key}' (expected '{LOCAL_KEY}' or one of {known})")
            out.setdefault(fam, {})[group] = key
        return out

    def check_groups(self, taxonomy: Taxonomy, group_of: Mapping[str, np.ndarray]) -> None:
        """Check every ``F/g`` array's shape, dtype and row count against the dictionary, up front."""
        for fam_name, keys in self.group_arrays(taxonomy).items():
            fam = taxonomy.global_family(fam_name)
            counts = np.bincount(group_of[fam_name], minlength=fam.num_groups)
            for g, gname in enumerate(fam.groups):
                key = keys.get(gname)
                if key is None:
                    if counts[g]:
                        raise HndError(
                            f"{self.path}: has arrays for global family {fam_name} but none for "
                            f"'{fam_name}/{gname}' ({counts[g]} images)"
                        )
                    continue
                self.check_array(key, self._npz.header(key), rows=int(counts[g]))

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop`` of an array as float32 NHWC ``[n, h, w, U]``; HndError naming the
        first image with a NaN, an inf or a value that overflows float32.

        Memory: the float32 result and at most ``READ_CHUNK_BYTES`` (or one image) of the file's
        rows at a time, nothing of the file beyond them. A C-order ``.npy`` is read with ``os.pread`` into a fresh buffer instead of through the
        memory map: every page of a map that was read stays in this process's resident set until
        unmapped, so streaming a whole file through it made the RSS grow by the file's size."""
        if key == LOCAL_KEY:
            arr = self.local
            read = self._read_local if self._fd is not None else lambda s, e: arr[s:e]
        else:  # keep the family's group arrays loaded while it is read (an .npz member is read whole)
            if key not in self._loaded:
                self._loaded[key] = self._npz.read(key)
            arr = self._loaded[key]
            read = lambda s, e: arr[s:e]  # noqa: E731 (views of the loaded member)
        what = f"{self.path}" if key == LOCAL_KEY else f"{self.path}: array '{key}'"
        n, U, h, w = stop - start, *(int(d) for d in arr.shape[1:])
        out = aligned_empty((n, h, w, U), np.float32)  # used in place by a jitted pass on the CPU
        # A few images at a time: the rows in the file's layout never take more than READ_CHUNK_BYTES.
        step = max(1, READ_CHUNK_BYTES // max(1, U * h * w * arr.dtype.itemsize))
        for s in range(start, stop, step):
            e = min(s + step, stop)
            raw = read(s, e)
            part = out[s - start : e - start]
            with np.errstate(over="ignore", invalid="ignore"):
                part[...] = raw.transpose(0, 2, 3, 1)  # one converting copy, straight into NHWC
            if not np.isfinite(part).all():
                finite_float32(raw, what, first_index=s)  # names the first bad image and what is wrong
                raise HndError(f"{what} has values that are not finite float32 numbers (images {s}..{e - 1})")
        return out

    def _read_local(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop`` of a C-order ``.npy``, in its dtype, read into a new array."""
        header = self._header
        row_bytes = header.nbytes // max(1, header.shape[0])
        buf = np.empty((stop - start, *header.shape[1:]), header.dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        offset = header.data_offset + start * row_bytes
        try:
            got = read_fully(view, lambda rest, done: os.preadv(self._fd, [rest], offset + done))
        except OSError as exc:
            raise HndError(f"{self.path}: not readable ({exc.strerror or exc})") from None
        if got != view.nbytes:
            raise HndError(f"{self.path}: ends before image {start + got // max(1, row_bytes)} (the file was truncated)")
        return buf

    def release(self) -> None:
        """Forget the loaded group arrays (a family is done)."""
        self._loaded.clear()

    def close(self) -> None:
        self.release()
        if self._npz is not None:
            self._npz.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileActivations:
    """The :class:`~hnd_jax.pipeline.sources.ActivationSource` of an activations file.

    path: the ``.npy``/``.npz`` file; layer: the name its results are written under; dic: the
    dictionary whose order the rows follow (N rows = its local images; group arrays = its global
    families); prefetch: batches read (rows, masks) ahead of the scoring by a background thread
    (:mod:`hnd_jax.pipeline.prefetch`; 0: none). Raises HndError when the file does not match the
    dictionary.
    """

    def __init__(self, path: str | Path, layer: str, dic: FaceDictionary, *, prefetch: int = 2):
        self.prefetch = int(prefetch)
        self.file = ActivationFile(path)
        try:
            self.dic = dic
            tax = dic.taxonomy
            if self.file.num_images != int(dic.num_local):
                raise HndError(
                    f"{self.file.path} has {self.file.num_images} rows but the dictionary has {dic.num_local} local "
                    "images (rows must follow dictionary order)"
                )
            self.groups_in_file = self.file.group_arrays(tax)
            self.group_of = {name: np.asarray(dic.global_group_of(name), np.int32) for name in self.groups_in_file}
            self.file.check_groups(tax, self.group_of)
        except BaseException:
            self.file.close()
            raise
        f = self.file
        self.layers = (layer,)
        self.shapes = {layer: (f.h, f.w, f.num_units)}
        self.identity = {
            "kind": "external activations",
            "file": str(f.path.resolve()),
            "format": f.format,
            "shape": [f.num_images, f.num_units, f.h, f.w],
            "dtype": str(f.local.dtype),
            "bytes": f.path.stat().st_size,
        }
        self.split = {"data": 0.0, "forward": 0.0, "input_wait": 0.0}

    def _ahead(self, reads: Iterator[SourceBatch]) -> Iterator[SourceBatch]:
        """``reads`` run ``self.prefetch`` batches ahead in a background thread; the consumer's wait
        for them adds to ``split['input_wait']``."""
        ahead = Prefetch(reads, self.prefetch, name="hnd-read-file")
        try:
            yield from ahead
        finally:
            ahead.close()
            self.split["input_wait"] += ahead.wait

    def local_batches(self, start: int, stop: int, batch_size: int, *, stage: str) -> Iterator[SourceBatch]:
        return self._ahead(self._read_local(start, stop, batch_size, stage))

    def _read_local(self, start: int, stop: int, batch_size: int, stage: str) -> Iterator[SourceBatch]:
        (layer,) = self.layers
        if stage != "pass2":  # pass 1 needs no masks: read the rows alone
            for s in range(start, stop, batch_size):
                e = min(s + batch_size, stop)
                t = time.perf_counter()
                rows = self.file.rows(LOCAL_KEY, s, e)
                self.split["data"] += time.perf_counter() - t
                yield SourceBatch(np.arange(s, e, dtype=np.int64), {layer: rows})
            return
        batches = self.dic.local_batches(batch_size, with_masks=True, start=start, stop=stop)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                self.split["data"] += time.perf_counter() - t
                return
            idx = np.asarray(batch.index, np.int64)
            s, e = int(idx[0]), int(idx[-1]) + 1
            if not np.array_equal(idx, np.arange(s, e)):
                raise HndError("the dictionary yielded images out of order; cannot match activation rows")
            rows = self.file.rows(LOCAL_KEY, s, e)
            self.split["data"] += time.perf_counter() - t
            yield SourceBatch(idx, {layer: rows}, np.asarray(batch.masks, bool), np.asarray(batch.labelled, bool),
                              np.asarray(batch.family, np.int32))

    def npz_bytes(self) -> tuple[int, dict[str, int]]:
        """Bytes an ``.npz`` holds in memory when read: ``local`` (for the whole run) and, per
        family in the file, its group arrays together (during its stage); ``(0, {})`` for a ``.npy``
        (memory-mapped and read in pieces)."""
        f = self.file
        if f.format != "npz":
            return 0, {}
        fams = {fam: sum(f._npz.header(key).nbytes for key in keys.values())
                for fam, keys in self.groups_in_file.items()}
        return int(f.local.nbytes), fams

    def family_skip_reason(self, family: str) -> str | None:
        if family not in self.groups_in_file:
            return f"no '{family}/<group>' arrays in {self.file.path.name}"
        if not len(self.group_of[family]):
            return "no images"
        return None

    def family_batches(self, family: str, lo: int, hi: int, batch_size: int, first: int) -> Iterator[SourceBatch]:
        """Positions ``[lo, hi)`` of the family; position p is row (rank of p within its group) of
        the group's array (group arrays list their images in family order)."""
        return self._ahead(self._read_family(family, lo, hi, batch_size, first))

    def _read_family(self, family: str, lo: int, hi: int, batch_size: int, first: int) -> Iterator[SourceBatch]:
        (layer,) = self.layers
        fam = self.dic.taxonomy.global_family(family)
        groups = self.group_of[family]
        rank = np.zeros(groups.size, np.int64)
        for g in range(fam.num_groups):
            members = np.flatnonzero(groups == g)
            rank[members] = np.arange(members.size)
        keys = self.groups_in_file[family]
        for s in range(lo + first * batch_size, hi, batch_size):
            e = min(s + batch_size, hi)
            t = time.perf_counter()
            positions = np.arange(s, e, dtype=np.int64)
            rows = aligned_empty((e - s, self.file.h, self.file.w, self.file.num_units), np.float32)
            for g in np.unique(groups[s:e]):  # contiguous runs of one group read as one slice
                sel = np.flatnonzero(groups[s:e] == g)
                r = rank[s + sel]
                block = self.file.rows(keys[fam.groups[int(g)]], int(r.min()), int(r.max()) + 1)
                rows[sel] = block[r - r.min()]
            self.split["data"] += time.perf_counter() - t
            yield SourceBatch(positions, {layer: rows})
        self.file.release()

    def metadata(self) -> dict[str, Any]:
        return {}

    def close(self, *, completed: bool) -> None:
        self.file.close()
