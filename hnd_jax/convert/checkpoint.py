"""Convert a checkpoint to a Flax model saved with orbax, and load a model from either form.

A *converted folder* (what ``hnd convert`` writes) holds::

    OUT/card.toml       a copy of the model card the weights were converted for
    OUT/manifest.json   architecture, head, outputs, and the source file's name, format and sha256
    OUT/state/          an orbax checkpoint of the model's variables (params and BatchNorm stats)

It is written under a temporary name and renamed when complete, so an interrupted conversion never
leaves a folder that looks valid. Every command that takes ``--weights`` accepts the original file
or such a folder (:func:`load_model`). Converting checks strictly that every tensor of the file is
used and every shape matches (the error lists missing, unexpected and mismatched keys).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from hnd_jax import __version__
from hnd_jax.atomic import atomic_dir
from hnd_jax.cards import ModelCard, load_card
from hnd_jax.convert.torch_pickle import is_torch_zip
from hnd_jax.convert.weights_io import read_state_dict
from hnd_jax.errors import HndError, nested_too_deeply

__all__ = [
    "MANIFEST",
    "CARD_COPY",
    "STATE_DIR",
    "build_from_card",
    "convert_checkpoint",
    "save_model",
    "load_model",
    "load_weights_into",
    "with_head_size",
    "is_converted_dir",
    "read_manifest",
    "weights_identity",
    "file_sha256",
    "detect_format",
]

MANIFEST = "manifest.json"
CARD_COPY = "card.toml"
STATE_DIR = "state"
FORMAT_NAME = "hnd-jax-converted-checkpoint"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: str | Path) -> str:
    """``pytorch-zip``, ``pytorch-legacy``, ``safetensors`` or ``npz`` (what the reader will use)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".npz":
        return "npz"
    if zipfile.is_zipfile(path) and is_torch_zip(path):
        return "pytorch-zip"
    return "pytorch-legacy"


def is_converted_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`save_model` / ``hnd convert``."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a converted folder (one-line error when it is not one)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise HndError(f"{folder}: not a converted checkpoint folder (no {MANIFEST}); convert with `hnd convert`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HndError(f"{manifest_path}: corrupt manifest ({exc.__class__.__name__})") from None
    except RecursionError:
        raise nested_too_deeply(manifest_path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise HndError(f"{manifest_path}: not an hnd-jax converted checkpoint manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise HndError(
            f"{manifest_path}: format version {manifest.get('format_version')!r}; this hnd-jax reads version "
            f"{FORMAT_VERSION} (convert the original file again)"
        )
    return manifest


def _model_identity(card: ModelCard) -> dict[str, Any]:
    """What a converted folder must agree on with the card it is loaded for."""
    return {
        "architecture": card.architecture,
        "head": card.head,
        "num_outputs": card.num_outputs,
        "model_kwargs": dict(card.model_kwargs),
    }


def weights_identity(weights: str | Path | None, card: ModelCard | None = None) -> dict[str, Any]:
    """How a run names its weights (for fingerprints and dissection.json).

    Original file: its path, format and sha256. Converted folder: the sha256 of the file it was
    converted from, so both forms of the same weights have the same identity. ``None``: the
    packaged file of the card when there is one, else ``random init``.
    """
    if weights is None:
        packaged = card.weights.packaged_file() if card is not None else None
        if packaged is None:
            return {"kind": "random init"}
        weights = packaged
    path = Path(weights)
    if path.is_dir():
        manifest = read_manifest(path)
        source = manifest.get("source", {})
        return {"kind": "converted", "path": str(path), "sha256": source.get("sha256"), "format": source.get("format")}
    if not path.is_file():
        raise HndError(f"{path}: weights file not found")
    return {"kind": "file", "path": str(path), "sha256": file_sha256(path), "format": detect_format(path)}


# --------------------------------------------------------------------------------------------
# Building and filling models.
# --------------------------------------------------------------------------------------------


def build_from_card(card: ModelCard, *, seed: int = 0) -> nnx.Module:
    """A randomly initialised model with the card's architecture, head and options."""
    from hnd_jax.models.registry import build_model

    return build_model(card.architecture, rngs=nnx.Rngs(seed), **card.build_kwargs())


def with_head_size(card: ModelCard, num_outputs: int | None) -> ModelCard:
    """``card`` with ``num_outputs`` filled in when the card leaves it out (a built-in ``resnet50``
    card loading a fine-tuned head); a card that states it is returned unchanged (a mismatch then
    fails the strict load with the shapes named)."""
    if card.num_outputs is not None or num_outputs is None:
        return card
    import dataclasses

    return dataclasses.replace(card, num_outputs=int(num_outputs))


def _mapped_state(card: ModelCard, weights_file: str | Path) -> dict[str, Any]:
    return card.weights.map_keys(read_state_dict(weights_file))


def load_weights_into(model: nnx.Module, card: ModelCard, weights_file: str | Path,
                      state: dict[str, Any] | None = None) -> None:
    """Read an original weights file, map its key names per the card, load strictly into ``model``.

    ``state``: the file's already-read, already-mapped state dict (read once by :func:`load_model`).
    """
    from hnd_jax.models.torch_mapping import load_torch_state_dict

    state = _mapped_state(card, weights_file) if state is None else state
    try:
        load_torch_state_dict(model, state, strict=True)
    except HndError as exc:
        raise HndError(f"{weights_file}: does not match model card '{card.name}' ({card.architecture}): {exc}") from None


def _pure_state(model: nnx.Module) -> Any:
    return nnx.to_pure_dict(nnx.state(model))


def _orbax():
    import orbax.checkpoint as ocp

    return ocp


def save_model(
    model: nnx.Module,
    card: ModelCard | str,
    out_dir: str | Path,
    *,
    source: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (built for ``card``) as a converted folder at ``out_dir``, atomically.

    ``out_dir`` may be new or a previous converted folder (replaced as a whole); anything else that
    exists there is refused, so a mistyped ``--out`` never deletes a user's folder.
    """
    card = load_card(card)
    out = Path(out_dir).absolute()
    if out.exists() and not is_converted_dir(out) and not (out.is_dir() and not any(out.iterdir())):
        raise HndError(f"{out}: exists and is not a converted checkpoint folder; choose a new --out")
    ocp = _orbax()
    pure = _pure_state(model)
    with atomic_dir(out) as tmp:
        tmp = Path(tmp).absolute()
        checkpointer = ocp.StandardCheckpointer()
        try:
            checkpointer.save(tmp / STATE_DIR, pure)
            checkpointer.wait_until_finished()
        finally:
            checkpointer.close()
        if card.path is not None:
            shutil.copyfile(card.path, tmp / CARD_COPY)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "card": card.name,
            **_model_identity(card),
            "input_size": card.input_size,
            "source": source or {"format": "hnd-jax model"},
            "num_arrays": len(_leaves(pure)),
            "created_by": f"hnd-jax {__version__}",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def _leaves(tree: Any) -> list[Any]:
    import jax

    return jax.tree_util.tree_leaves(tree)


def _restore_into(model: nnx.Module, folder: Path) -> None:
    ocp = _orbax()
    state = nnx.state(model)
    target = nnx.to_pure_dict(state)
    checkpointer = ocp.StandardCheckpointer()
    try:
        restored = checkpointer.restore(folder.absolute() / STATE_DIR, target)
    except Exception as exc:  # orbax raises many types for a damaged or foreign tree
        raise HndError(f"{folder}: cannot restore the converted weights ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:200]})") from None
    finally:
        checkpointer.close()
    for got, want in zip(_leaves(restored), _leaves(target)):
        if np.shape(got) != np.shape(want):
            raise HndError(f"{folder}: converted weights have shape {np.shape(got)} where the model needs {np.shape(want)}")
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def _check_folder_matches(folder: Path, manifest: dict[str, Any], card: ModelCard) -> None:
    want = _model_identity(card)
    have = {k: manifest.get(k) for k in want}
    have["model_kwargs"] = dict(have["model_kwargs"] or {})
    if have != want:
        diffs = [f"{k} {have[k]!r} (card '{card.name}' needs {want[k]!r})" for k in want if have[k] != want[k]]
        raise HndError(
            f"{folder}: converted for model '{manifest.get('card')}' with " + ", ".join(diffs)
            + f"; convert the original file with --model {card.name}"
        )


def load_model(
    card_or_name: ModelCard | str | Path | None,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
) -> tuple[nnx.Module, ModelCard]:
    """Build a card's model and fill it with weights; returns ``(model, card)``.

    ``weights``: an original file (``.pt/.pth/.bin/.safetensors/.npz``), a converted folder, or None.
    A card without ``num_outputs`` gets the head size the file stores (``fc.weight`` of a
    fine-tuned torchvision ResNet; :func:`hnd_jax.models.registry.infer_num_outputs`), and the
    returned card says it; a converted folder records it in its manifest.
    With None, a card whose weights ship inside an installed package (MTCNN) loads them from there;
    otherwise ``random_init=True`` keeps the random initialisation (demo/tests) and anything else is
    an HndError telling where to get the weights. ``card_or_name`` may be None when ``weights`` is a
    converted folder (its card copy is used).
    """
    folder = Path(weights) if weights is not None and Path(weights).is_dir() else None
    if card_or_name is None:
        if folder is None:
            raise HndError("no model given: pass --model NAME (or --weights pointing to a converted folder)")
        read_manifest(folder)
        card = load_card(folder / CARD_COPY)
    else:
        card = load_card(card_or_name)
    if folder is not None:
        manifest = read_manifest(folder)
        card = with_head_size(card, manifest.get("num_outputs"))  # as read from the original file's head
        _check_folder_matches(folder, manifest, card)
        model = build_from_card(card, seed=seed)
        _restore_into(model, folder)
        return model, card
    if weights is None:
        weights = card.weights.packaged_file()
        if weights is None and not random_init:
            raise HndError(card.missing_weights_message())  # before building: big models take seconds
    elif not Path(weights).is_file():
        raise HndError(f"{weights}: weights file not found")
    state = None
    if weights is not None:
        from hnd_jax.models.registry import infer_num_outputs

        state = _mapped_state(card, weights)
        card = with_head_size(card, infer_num_outputs(card.architecture, card.head, state))
    model = build_from_card(card, seed=seed)
    if weights is not None:
        load_weights_into(model, card, weights, state)
    return model, card


def convert_checkpoint(card: ModelCard | str, weights_path: str | Path, out_dir: str | Path) -> Path:
    """Convert an original weights file for ``card`` into a converted folder at ``out_dir``."""
    card = load_card(card)
    weights_path = Path(weights_path)
    if weights_path.is_dir():
        if is_converted_dir(weights_path):
            raise HndError(f"{weights_path}: already a converted folder; nothing to convert")
        raise HndError(f"{weights_path}: is a folder; expected a weights file (.pt/.pth/.bin/.safetensors/.npz)")
    if not weights_path.is_file():
        raise HndError(f"{weights_path}: weights file not found")
    model, card = load_model(card, weights_path)
    source = {
        "file": weights_path.name,
        "format": detect_format(weights_path),
        "sha256": file_sha256(weights_path),
        "bytes": weights_path.stat().st_size,
    }
    return save_model(model, card, out_dir, source=source)
