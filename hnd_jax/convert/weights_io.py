"""Read a checkpoint file of any supported format into a flat ``{name: np.ndarray}`` state dict.

Formats, chosen by extension (anything unknown is tried as a PyTorch pickle):

* ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``: PyTorch, read safely by :mod:`hnd_jax.convert.torch_pickle`
  (no torch, no pickled code executed);
* ``.safetensors``: via the ``safetensors`` library (bfloat16 included);
* ``.npz``: NumPy archive, read with ``allow_pickle=False``.

People rarely save a bare ``state_dict``. :func:`unwrap_state_dict` accepts the usual wrappers: a
training checkpoint dict holding the weights under ``state_dict`` / ``model_state_dict`` / ``model``
/ ``net`` (other entries such as ``epoch`` or ``optimizer`` are ignored), and the ``module.`` prefix
that ``nn.DataParallel`` / ``DistributedDataParallel`` put in front of every key.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hnd_jax.convert.torch_pickle import load_torch_file
from hnd_jax.errors import HndError

__all__ = ["read_state_dict", "unwrap_state_dict", "WRAPPER_KEYS", "TORCH_SUFFIXES"]

#: Keys under which training scripts commonly store the model weights, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
#: Prefixes added by data/distributed-parallel wrappers.
PARALLEL_PREFIXES = ("module.",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint file as ``{pytorch_name: array}`` (wrappers removed, order kept)."""
    path = Path(path)
    if not path.exists():
        raise HndError(f"{path}: weights file not found")
    if path.is_dir():
        raise HndError(f"{path}: is a folder; expected a weights file (.pt/.pth/.bin/.safetensors/.npz)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        raw: Any = _read_safetensors(path)
    elif suffix == ".npz":
        raw = _read_npz(path)
    else:
        raw = load_torch_file(path)
    return unwrap_state_dict(raw, source=str(path))


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Find the state dict inside ``obj`` and strip a parallel-wrapper prefix.

    A mapping whose values are all arrays is a state dict. Otherwise the first of
    :data:`WRAPPER_KEYS` that holds one (looked for up to two levels deep, e.g.
    ``{"model": {"state_dict": ...}}``) is used.
    """
    found = _find_state_dict(obj, depth=0)
    if found is None:
        raise HndError(f"{source}: no state dict found: {_describe(obj)}")
    state = {str(k): np.asarray(v) for k, v in found.items()}
    if not state:
        raise HndError(f"{source}: the state dict is empty")
    for prefix in PARALLEL_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, np.ndarray) for v in obj.values())


def _find_state_dict(obj: Any, depth: int) -> Mapping[str, np.ndarray] | None:
    if _is_state_dict(obj):
        return obj
    if not isinstance(obj, Mapping) or depth >= 2:
        return None
    for key in WRAPPER_KEYS:
        if key in obj:
            inner = _find_state_dict(obj[key], depth + 1)
            if inner is not None:
                return inner
    return None


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        shown = ", ".join(repr(k) for k in keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
        non_arrays = [k for k, v in obj.items() if not isinstance(v, np.ndarray)][:3]
        detail = f"; non-tensor entries: {', '.join(repr(k) for k in non_arrays)}" if non_arrays else ""
        return (
            f"a dict with keys [{shown}]{detail}; expected name -> tensor entries, or the weights under one of "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS)}"
        )
    return f"the file holds a {type(obj).__name__}, expected a dict of tensors (a state_dict)"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise HndError(f"{path}: cannot read the .npz archive ({_one_line(exc)})") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except KeyError:
        # safetensors.numpy has no bfloat16 (NumPy lacks it); read through the Flax backend, whose
        # arrays convert to ml_dtypes.bfloat16 NumPy arrays.
        from safetensors import safe_open

        try:
            out = {}
            with safe_open(str(path), framework="flax") as fh:
                for key in fh.keys():
                    out[key] = np.asarray(fh.get_tensor(key))
            return out
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise HndError(f"{path}: cannot read the safetensors file ({_one_line(exc)})") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise HndError(f"{path}: cannot read the safetensors file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
