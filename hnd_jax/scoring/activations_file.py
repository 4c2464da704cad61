"""Score activations computed elsewhere (any framework): ``hnd dissect --activations FILE``.

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
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.errors import HndError
from hnd_jax.results import DISSECTION_FILE, layer_dir, write_dissection_json, write_layer_results
from hnd_jax.scoring.config import ScoringConfig
from hnd_jax.scoring.engine import TOP_IMAGES, LayerScorer, pad_batch, padded_batch_size
from hnd_jax.sharding import make_data_mesh
from hnd_jax.taxonomy import Taxonomy, resolve_taxonomy

LOCAL_KEY = "local"


class ActivationFile:
    """An opened activations file: ``local`` ``[N, U, h, w]`` and the global group arrays by key."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._npz = None
        self._cached: tuple[str | None, Any] = (None, None)
        suffix = self.path.suffix.lower()
        if suffix not in (".npy", ".npz"):
            raise HndError(f"{self.path}: expected an activations file ending in .npy or .npz")
        if not self.path.is_file():
            raise HndError(f"{self.path}: activations file not found")
        self.format = suffix[1:]
        try:
            if suffix == ".npy":
                self.local = np.load(self.path, mmap_mode="r", allow_pickle=False)
                self.keys: tuple[str, ...] = (LOCAL_KEY,)
            else:
                self._npz = np.load(self.path, allow_pickle=False)
                self.keys = tuple(self._npz.files)
                if LOCAL_KEY not in self.keys:
                    raise HndError(f"{self.path}: no '{LOCAL_KEY}' array (found: {', '.join(self.keys) or 'none'})")
                self.check_array(LOCAL_KEY, _Shape(*self.header(LOCAL_KEY)))
                self.local = self._read(LOCAL_KEY)
        except HndError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise HndError(f"{self.path}: not a readable NumPy {suffix} file ({_one_line(exc)})") from None
        self.check_array(LOCAL_KEY, self.local)
        self.num_images, self.num_units, self.h, self.w = (int(d) for d in self.local.shape)

    def _read(self, key: str) -> np.ndarray:
        try:
            return self._npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise HndError(f"{self.path}: array '{key}' is not readable ({_one_line(exc)})") from None

    def check_array(self, key: str, arr: np.ndarray, rows: int | None = None) -> None:
        """Rank 4, float dtype, non-empty, and (for group arrays) the same U, h, w as ``local``."""
        where = f"{self.path}" if self.format == "npy" else f"{self.path}: array '{key}'"
        if arr.ndim != 4:
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

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of an ``.npz`` member read from its header, without loading the data."""
        try:
            with self._npz.zip.open(f"{key}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise HndError(f"{self.path}: array '{key}' is not readable ({_one_line(exc)})") from None
        return tuple(shape), np.dtype(dtype)

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
                shape, dtype = self.header(key)
                self.check_array(key, _Shape(shape, dtype), rows=int(counts[g]))

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop`` of an array as float32 NHWC, after checking they are finite."""
        if key == LOCAL_KEY:
            arr = self.local
        else:  # keep the group array being streamed loaded (an .npz member is read whole)
            if self._cached[0] != key:
                self._cached = (key, self._read(key))
            arr = self._cached[1]
        block = np.asarray(arr[start:stop], dtype=np.float32)
        finite = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if not finite.all():
            bad = start + int(np.argmin(finite))
            what = f"{self.path}" if key == LOCAL_KEY else f"{self.path}: array '{key}'"
            raise HndError(f"{what} has NaN or inf values (first at image {bad})")
        return np.ascontiguousarray(block.transpose(0, 2, 3, 1))

    def close(self) -> None:
        self._cached = (None, None)
        if self._npz is not None:
            self._npz.close()


class _Shape:
    """Stands in for an array when only its header (shape, dtype) is known."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _open_dictionary(dictionary: Any, config: ScoringConfig, taxonomy: Any) -> FaceDictionary:
    if isinstance(dictionary, (str, Path)):
        from hnd_jax.dictionary import open_dictionary

        tax = taxonomy if isinstance(taxonomy, Taxonomy) else resolve_taxonomy(taxonomy)
        return open_dictionary(str(dictionary), config.image_size, taxonomy=tax)
    if dictionary.image_size != config.image_size:
        raise HndError(f"the dictionary was opened at size {dictionary.image_size}, not --image-size {config.image_size}")
    return dictionary


def _chunks(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(start, stop, size):
        yield s, min(s + size, stop)


def dissect_activations(
    path: str | Path,
    *,
    dictionary: str | Path | FaceDictionary,
    layer: str,
    out: str | Path,
    scoring: Mapping[str, Any],
    taxonomy: str | Path | Taxonomy | None = None,
    batch_size: int = 32,
    mesh: Mesh | None = None,
    tally_factory=None,
) -> Path:
    """Score the activations in ``path`` against the dictionary; write ``OUT/<layer>`` and dissection.json.

    ``dictionary`` is a spec for :func:`hnd_jax.dictionary.open_dictionary` (ROOT, PREP or
    ``synthetic``) or an opened :class:`FaceDictionary`; ``scoring`` holds the
    :class:`ScoringConfig` fields. Returns the layer's result folder.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    config = ScoringConfig(**dict(scoring))
    layer_dir(out, layer)  # reject a bad layer name before any work
    if batch_size <= 0:
        raise HndError(f"batch size {batch_size}: expected a positive integer")
    source = ActivationFile(path)
    try:
        dic = _open_dictionary(dictionary, config, taxonomy)
        tax = dic.taxonomy
        N = int(dic.num_local)
        if source.num_images != N:
            raise HndError(
                f"{source.path} has {source.num_images} rows but the dictionary has {N} local images "
                "(rows must follow dictionary order)"
            )
        groups_in_file = source.group_arrays(tax)
        group_of = {name: np.asarray(dic.global_group_of(name), np.int32) for name in groups_in_file}
        source.check_groups(tax, group_of)
        timings["open"] = time.perf_counter() - t_start

        mesh = mesh if mesh is not None else make_data_mesh()
        size = padded_batch_size(batch_size, mesh)
        U, hw = source.num_units, (source.h, source.w)
        scorer = LayerScorer(tax, dic.labelled, dic.family, U, hw, config, mesh=mesh, tally_factory=tally_factory)

        # Pass 1: thresholds, lo/hi, per-image max (streams the memory-mapped rows).
        t = time.perf_counter()
        state = scorer.pass1.init()
        for s, e in _chunks(0, N, batch_size):
            (acts, index), valid = pad_batch(size, source.rows(LOCAL_KEY, s, e), np.arange(s, e))
            state = scorer.pass1.update(state, acts, index, valid)
        pass1 = scorer.pass1.finalize(state)
        timings["pass1"] = time.perf_counter() - t

        # Pass 2: IoU counts; also gather the raw maps of every unit's top images for reports.
        t = time.perf_counter()
        from hnd_jax.scoring.hierarchy import top_images

        tops = top_images(pass1["image_max"], TOP_IMAGES)
        top_maps = np.zeros((U, tops.shape[1], *hw), np.float32)
        tally = scorer.pass2(pass1["thresholds"])
        state = tally.init()
        for batch in dic.local_batches(batch_size, with_masks=True):
            idx = np.asarray(batch.index)
            s, e = int(idx[0]), int(idx[-1]) + 1
            if not np.array_equal(idx, np.arange(s, e)):
                raise HndError("the dictionary yielded images out of order; cannot match activation rows")
            acts_nhwc = source.rows(LOCAL_KEY, s, e)
            uu, jj = np.nonzero((tops >= s) & (tops < e))
            top_maps[uu, jj] = acts_nhwc[tops[uu, jj] - s, :, :, uu]
            (acts, masks, labelled, family), valid = pad_batch(
                size, acts_nhwc, np.asarray(batch.masks, bool), np.asarray(batch.labelled, bool), np.asarray(batch.family, np.int32)
            )
            state = tally.update(state, acts, masks, labelled, family, valid)
        pass2 = tally.finalize(state)
        timings["pass2"] = time.perf_counter() - t

        # Global families present in the file.
        t = time.perf_counter()
        global_results: dict[str, dict[str, np.ndarray]] = {}
        skipped: dict[str, str] = {}
        for fam in tax.global_families:
            keys = groups_in_file.get(fam.name)
            if not keys:
                skipped[fam.name] = f"no '{fam.name}/<group>' arrays in {source.path.name}"
                continue
            fam_groups = group_of[fam.name]
            stats = scorer.global_stats(int(fam_groups.size))
            gstate = stats.init()
            for g, gname in enumerate(fam.groups):
                positions = np.flatnonzero(fam_groups == g)
                key = keys.get(gname)
                if key is None:  # check_groups made sure the group is empty
                    continue
                for s, e in _chunks(0, positions.size, batch_size):
                    (acts, index), valid = pad_batch(size, source.rows(key, s, e), positions[s:e])
                    gstate = stats.update(gstate, acts, index, valid)
            global_results[fam.name] = {**stats.finalize(gstate), "group": fam_groups}
        timings["global"] = time.perf_counter() - t

        t = time.perf_counter()
        arrays = scorer.finalize(pass1, pass2, global_results)
        arrays["top_images"] = tops
        arrays["top_maps"] = top_maps
        timings["finalize"] = time.perf_counter() - t

        # Write: the layer (atomic files), then dissection.json last as the completion marker.
        t = time.perf_counter()
        stale = Path(out) / DISSECTION_FILE
        if stale.exists():
            stale.unlink()
        folder = write_layer_results(out, layer, arrays, tax)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        identity = dict(dic.identity())
        identity.setdefault("spec", str(dictionary) if isinstance(dictionary, (str, Path)) else None)
        write_dissection_json(
            out,
            {
                "layers": [layer],
                "source": "activations",
                "model": {
                    "kind": "external activations",
                    "file": str(source.path.resolve()),
                    "format": source.format,
                    "shape": [source.num_images, U, source.h, source.w],
                    "dtype": str(source.local.dtype),
                    "bytes": source.path.stat().st_size,
                },
                "dictionary": identity,
                "image_size": config.image_size,
                "settings": config.to_dict(),
                "taxonomy": {"name": tax.name, "fingerprint": tax.fingerprint, "source": tax.source},
                "global_families": {"scored": sorted(global_results), "skipped": skipped},
                "units": {layer: U},
                "map_hw": {layer: list(hw)},
                "batch_size": batch_size,
                "devices": {"count": int(mesh.devices.size), "kind": jax.devices()[0].device_kind},
                "timings": timings,
            },
        )
        return folder
    finally:
        source.close()
