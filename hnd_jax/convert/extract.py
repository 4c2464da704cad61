"""Activations of named layers for a set of inputs, saved in PyTorch's NCHW layout (``hnd extract``).

Why NCHW: users compare these arrays with what a PyTorch forward hook gives them, and
``hnd dissect --activations`` reads NCHW ``[N, U, h, w]`` too. The model runs NHWC inside (Flax);
each batch is transposed on the way out.

Three input sources, each yielding float32 NHWC batches in a fixed order:

* :func:`batches_from_array`: an ``.npy`` of already preprocessed NHWC float images (no preprocessing);
* :func:`batches_from_images`: image files of a folder in sorted name order, preprocessed per the card;
* :func:`batches_from_dictionary`: the local images of a Face Dictionary in dictionary order, resized
  by the dictionary reader with the card's filter and scaled per the card. A single-layer ``.npy``
  written from this source is what ``hnd dissect --activations`` reads (local concepts only);
  :func:`dissect_layout_activations` (``--for-dissect``) adds the global families in the ``.npz``
  layout it reads (``local`` and ``<Family>/<group>``).

The last batch is padded to the batch size (and the padding dropped) so that one compiled forward
serves every batch.

Several processes (``hnd extract --distributed`` / ``--coordinator``, DESIGN.md §6): each process
computes a contiguous slice of the rows of every output array (:func:`process_rows`), the slices are
all-gathered in process order (:func:`gather_rows`) and process 0 writes the file, so the output is
the one a single process writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from flax import nnx

from hnd_jax.atomic import atomic_path, write_npz
from hnd_jax.cards import ModelCard
from hnd_jax.errors import HndError
from hnd_jax.pipeline.progress import StageProgress
from hnd_jax.preprocess import list_image_files, preprocess_files, preprocess_uint8

__all__ = [
    "batches_from_array",
    "batches_from_images",
    "batches_from_dictionary",
    "dissect_layout_activations",
    "check_layer_names",
    "extract_activations",
    "write_activations",
    "run_extract",
]


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise HndError(f"--batch-size {batch_size}: expected a positive integer")


def process_rows(n: int) -> tuple[int, int]:
    """``[lo, hi)``: this process's contiguous slice of ``n`` rows (all of them with one process)."""
    import jax

    from hnd_jax.dictionary.batching import process_slice

    return process_slice(0, n, jax.process_index(), jax.process_count())


def gather_rows(part: np.ndarray, n: int) -> np.ndarray:
    """Every process's slice (:func:`process_rows` of ``n``) of an array, concatenated in process
    order: the whole ``[n, ...]`` array. One process: ``part`` unchanged."""
    import jax

    count = jax.process_count()
    if count == 1:
        return part
    from jax.experimental import multihost_utils

    from hnd_jax.dictionary.batching import process_slice
    from hnd_jax.distributed import guarded_collective

    sizes = [b - a for a, b in (process_slice(0, n, i, count) for i in range(count))]
    padded = np.zeros((max(sizes), *part.shape[1:]), part.dtype)
    padded[: part.shape[0]] = part
    gathered = np.asarray(guarded_collective("the gathering of the activations", multihost_utils.process_allgather,
                                             padded, tiled=False))
    return np.concatenate([gathered[i, : sizes[i]] for i in range(count)], axis=0)


def batches_from_array(path: str | Path, batch_size: int) -> Iterator[np.ndarray]:
    """Batches of an ``.npy`` holding preprocessed images ``[N, H, W, 3]`` (NHWC, float)."""
    _check_batch_size(batch_size)
    path = Path(path)
    if not path.is_file():
        raise HndError(f"{path}: inputs file not found")
    if path.suffix.lower() != ".npy":
        raise HndError(f"{path}: expected a .npy file of preprocessed NHWC float32 images")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise HndError(f"{path}: cannot read the .npy file ({' '.join(str(exc).split())})") from None
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise HndError(
            f"{path}: shape {list(arr.shape)}; expected [N, H, W, 3] preprocessed images (NHWC, RGB; "
            "PyTorch's NCHW must be transposed with x.transpose(0, 2, 3, 1))"
        )
    if arr.dtype.kind != "f":
        raise HndError(f"{path}: dtype {arr.dtype}; expected float32 images that are already preprocessed")
    if arr.shape[0] == 0:
        raise HndError(f"{path}: holds no images (N = 0)")
    lo, hi = process_rows(arr.shape[0])
    return (np.asarray(arr[i : min(i + batch_size, hi)], dtype=np.float32) for i in range(lo, hi, batch_size))


def batches_from_images(folder: str | Path, card: ModelCard, batch_size: int) -> Iterator[np.ndarray]:
    """Image files of ``folder`` in sorted name order, preprocessed per the card, in batches."""
    _check_batch_size(batch_size)
    files = list_image_files(folder)
    lo, hi = process_rows(len(files))
    return (preprocess_files(files[i : min(i + batch_size, hi)], card) for i in range(lo, hi, batch_size))


def open_card_dictionary(spec: str, card: ModelCard, *, taxonomy=None):
    """The Face Dictionary at the card's input size, images resized with the card's PIL filter."""
    from hnd_jax.dictionary import open_dictionary

    kwargs = {} if taxonomy is None else {"taxonomy": taxonomy}
    dictionary = open_dictionary(spec, card.input_size, image_resample=card.preprocessing.resize, **kwargs)
    if dictionary.num_local == 0:
        raise HndError(f"{spec}: the dictionary has no local images")
    return dictionary


def batches_from_dictionary(
    spec: str, card: ModelCard, batch_size: int, *, taxonomy=None
) -> Iterator[np.ndarray]:
    """Local images of a Face Dictionary (ROOT, PREP or ``synthetic``) in dictionary order."""
    _check_batch_size(batch_size)
    dictionary = open_card_dictionary(spec, card, taxonomy=taxonomy)
    lo, hi = process_rows(dictionary.num_local)
    return (preprocess_uint8(b.images, card)
            for b in dictionary.local_batches(batch_size, with_masks=False, start=lo, stop=hi))


def dissect_layout_activations(
    model: nnx.Module, layer: str, spec: str, card: ModelCard, batch_size: int, *, taxonomy=None,
    progress: str | bool = "none",
) -> dict[str, np.ndarray]:
    """One layer over the whole dictionary, keyed the way ``hnd dissect --activations`` reads an .npz.

    ``local``: ``[N, U, h, w]`` in dictionary order; ``<Family>/<group>``: ``[n_g, U, h, w]`` for every
    non-empty group of every global family, rows in the family's image order (sorted file names).
    ``progress``: a mode of :mod:`hnd_jax.pipeline.progress` over all these images (on stderr).
    """
    _check_batch_size(batch_size)
    import jax

    dictionary = open_card_dictionary(spec, card, taxonomy=taxonomy)
    families = dictionary.taxonomy.global_families
    lo, hi = process_rows(dictionary.num_local)
    family_rows = [process_rows(len(dictionary.global_group_of(f.name))) for f in families]
    total = (hi - lo) + sum(b - a for a, b in family_rows)  # this process's images
    one_image = (int(dictionary.image_size), int(dictionary.image_size), 3)
    with StageProgress("extract", total, mode=progress) as bar:  # an interruption says where it stopped
        local = (preprocess_uint8(b.images, card)
                 for b in dictionary.local_batches(batch_size, with_masks=False, start=lo, stop=hi))
        out = {"local": gather_rows(extract_activations(model, [layer], local, bar, one_image)[layer],
                                    dictionary.num_local)}
        for family in families:
            group_of = np.asarray(dictionary.global_group_of(family.name))
            if group_of.size == 0:
                continue
            order: list[np.ndarray] = []

            def family_batches(name: str = family.name) -> Iterator[np.ndarray]:
                for b in dictionary.global_batches(name, batch_size, process_index=jax.process_index(),
                                                   process_count=jax.process_count()):
                    order.append(np.asarray(b.index))
                    yield preprocess_uint8(b.images, card)

            part = extract_activations(model, [layer], family_batches(), bar, one_image)[layer]
            f_lo, _ = process_rows(group_of.size)
            by_index = np.empty_like(part)
            if order:
                by_index[np.concatenate(order) - f_lo] = part  # place rows by their position in the family's order
            by_index = gather_rows(by_index, group_of.size)
            for g, group in enumerate(dictionary.global_groups(family.name)):
                rows = np.flatnonzero(group_of == g)
                if rows.size:
                    out[f"{family.name}/{group}"] = by_index[rows]
    return out


def check_layer_names(model: nnx.Module, layers: Sequence[str]) -> None:
    """Fail early (before reading any input) on a layer name the model does not have."""
    import difflib

    from hnd_jax.models.capture import module_names

    known = module_names(model)
    for name in layers:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise HndError(f"unknown layer {name!r} for {type(model).__name__}{hint} (list them with: hnd layers --model MODEL)")


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    if batch.shape[0] == size:
        return batch
    pad = np.zeros((size - batch.shape[0], *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, pad], axis=0)


def extract_activations(
    model: nnx.Module, layers: Sequence[str], batches: Iterable[np.ndarray], progress: StageProgress | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, np.ndarray]:
    """``{layer: float32 [N, C, H, W]}`` for every requested layer, rows in input order.

    A layer whose output is not 4-D (e.g. a Linear) is returned as the module outputs it.
    ``progress`` (optional) is told the images of every batch done. No batch at all is an HndError,
    except in a run of several processes given ``input_shape`` (one image, ``(H, W, 3)``): then the
    arrays have 0 rows (a process whose slice of a small set is empty still takes part in the gather).
    """
    from hnd_jax.models.capture import forward_with_layers
    from hnd_jax.pipeline.stages import _sleep_hook

    if not layers:
        raise HndError("no layer requested: pass --layer NAME (see `hnd layers --model NAME`)")
    names = list(dict.fromkeys(layers))
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    full = None
    for batch in batches:
        n = batch.shape[0]
        if n == 0:
            continue
        full = n if full is None else full
        _, acts = forward_with_layers(model, _pad(batch, max(full, n)), names)
        for name in names:
            a = np.asarray(acts[name], dtype=np.float32)[:n]
            chunks[name].append(np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a)
        if progress is not None:
            progress.update(n)
        _sleep_hook()  # $HND_TEST_SLEEP_PER_BATCH: tests interrupt a run mid-way (no effect otherwise)
    if full is None:
        import jax

        if input_shape is None or jax.process_count() == 1:  # only another process's rows may exist
            raise HndError("no inputs to extract activations from")
        _, acts = forward_with_layers(model, np.zeros((1, *input_shape), np.float32), names)
        empty = {name: np.asarray(acts[name], np.float32)[:0] for name in names}
        return {name: a.transpose(0, 3, 1, 2) if a.ndim == 4 else a for name, a in empty.items()}
    return {name: np.concatenate(parts, axis=0) for name, parts in chunks.items()}


def write_activations(out: str | Path, activations: dict[str, np.ndarray]) -> Path:
    """Save atomically: ``.npz`` with one array per layer name, or ``.npy`` for a single layer."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".npy":
        if len(activations) != 1:
            raise HndError(f"{out}: a .npy holds one layer; {len(activations)} were requested (write a .npz)")
        (array,) = activations.values()
        with atomic_path(out, suffix=".npy") as tmp:
            np.save(tmp, array)
        return out
    if suffix != ".npz":
        raise HndError(f"{out}: expected an output file ending in .npz (or .npy for one layer)")
    write_npz(out, activations, compressed=False)
    return out


def run_extract(
    model: str | ModelCard,
    weights: str | Path | None,
    layers: Sequence[str] | None,
    *,
    out: str | Path,
    inputs: str | Path | None = None,
    images: str | Path | None = None,
    dictionary: str | None = None,
    batch_size: int = 32,
    taxonomy=None,
    random_init: bool = False,
    for_dissect: bool = False,
    progress: str | bool = "none",
) -> Path:
    """What ``hnd extract`` does: load the model, read one input source, write NCHW activations.

    ``for_dissect`` (with ``dictionary`` and one layer): write the ``.npz`` layout of
    :func:`dissect_layout_activations` instead of one array per layer name. ``progress``: a mode of
    :mod:`hnd_jax.pipeline.progress` over the images (on stderr).
    """
    from hnd_jax.convert.checkpoint import load_model

    _check_batch_size(batch_size)
    sources = [s for s in (inputs, images, dictionary) if s is not None]
    if len(sources) != 1:
        raise HndError("give exactly one of --inputs X.npy, --images DIR, --dictionary ROOT|PREP|synthetic")
    out = Path(out)
    if out.suffix.lower() not in (".npz", ".npy"):
        raise HndError(f"{out}: expected an output file ending in .npz (or .npy for one layer)")
    if for_dissect and (dictionary is None or out.suffix.lower() != ".npz"):
        raise HndError("--for-dissect needs --dictionary and an output file ending in .npz")
    net, card = load_model(model, weights, random_init=random_init)
    names = list(layers) if layers else list(card.default_layers)
    check_layer_names(net, names)
    if for_dissect:
        if len(names) != 1:
            raise HndError(f"--for-dissect writes one layer; got {len(names)} ({', '.join(names)})")
        arrays = dissect_layout_activations(net, names[0], str(dictionary), card, batch_size, taxonomy=taxonomy,
                                            progress=progress)
        if _writer():
            write_npz(out, arrays, compressed=False)
        return out
    one_image = (int(card.input_size), int(card.input_size), 3)
    if inputs is not None:
        batches = batches_from_array(inputs, batch_size)
        shape = np.load(inputs, mmap_mode="r", allow_pickle=False).shape
        total, one_image = int(shape[0]), tuple(int(d) for d in shape[1:])
    elif images is not None:
        batches = batches_from_images(images, card, batch_size)
        total = len(list_image_files(images))
    else:
        opened = open_card_dictionary(str(dictionary), card, taxonomy=taxonomy)
        total = opened.num_local
        lo, hi = process_rows(total)
        batches = (preprocess_uint8(b.images, card)
                   for b in opened.local_batches(batch_size, with_masks=False, start=lo, stop=hi))
    lo, hi = process_rows(total)
    with StageProgress("extract", hi - lo, mode=progress) as bar:  # this process's rows; says where a stop came
        acts = extract_activations(net, names, batches, bar, one_image)
    acts = {name: gather_rows(a, total) for name, a in acts.items()}
    return write_activations(out, acts) if _writer() else out


def _writer() -> bool:
    """Process 0 writes (the only process, in a single-process run)."""
    import jax

    return jax.process_index() == 0
