"""Read a checkpoint file of any supported format into a flat ``{name: np.ndarray}`` state dict.

Formats, chosen by extension (anything unknown is tried as a PyTorch pickle):

* ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``: PyTorch, read safely by :mod:`hnd_jax.convert.torch_pickle`
  (no torch, no pickled code executed);
* ``.safetensors``: parsed and validated by the ``safetensors`` library (``deserialize``); the
  element types NumPy lacks come from ``ml_dtypes`` (bfloat16, float8);
* ``.npz``: NumPy archive, every member's header checked against its size before it is inflated
  (:mod:`hnd_jax.npyfile`), never unpickled.

float8 tensors (``float8_e4m3fn``, ``float8_e5m2``, from either format) are upcast to float32, which
holds every float8 value exactly.

People rarely save a bare ``state_dict``. :func:`unwrap_state_dict` accepts the usual wrappers: a
training checkpoint dict holding the weights under ``state_dict`` / ``model_state_dict`` / ``model``
/ ``net`` (other entries such as ``epoch`` or ``optimizer`` are ignored), and the key prefixes
that wrappers put in front of every key: ``module.`` (``nn.DataParallel`` /
``DistributedDataParallel``), ``_orig_mod.`` (``torch.compile``) and their combinations
(``_orig_mod.module.``, ``module._orig_mod.``). A file that holds something else says how to
re-save it (``torch.save(model.state_dict(), f)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from hnd_jax.convert.torch_pickle import RESAVE_HINT, load_torch_file
from hnd_jax.errors import HndError, one_line

__all__ = ["read_state_dict", "unwrap_state_dict", "WRAPPER_KEYS", "TORCH_SUFFIXES"]

#: Keys under which training scripts commonly store the model weights, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
#: Prefixes added by wrappers: data/distributed parallel (``module.``) and ``torch.compile`` (``_orig_mod.``).
#: Stripped repeatedly while every key has one, so any nesting of the two is undone.
PARALLEL_PREFIXES = ("module.", "_orig_mod.")
#: float8 element types (ml_dtypes) that are upcast to float32 when read.
FLOAT8_DTYPES = tuple(
    np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2fnuz)
)
#: safetensors dtype names -> NumPy element types.
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
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
        raise HndError(f"{source}: no state dict found: {_describe(obj)}; {RESAVE_HINT}")
    state = {str(k): _upcast_float8(np.asarray(v)) for k, v in found.items()}
    if not state:
        raise HndError(f"{source}: the state dict is empty")
    return strip_wrapper_prefixes(state)


def strip_wrapper_prefixes(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove ``module.`` / ``_orig_mod.`` (in any nesting) while every key starts with one of them."""
    changed = True
    while changed:
        changed = False
        for prefix in PARALLEL_PREFIXES:
            if state and all(k.startswith(prefix) and len(k) > len(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _upcast_float8(arr: np.ndarray) -> np.ndarray:
    """float8 (e4m3fn, e5m2, ...) -> float32, exact; anything else unchanged."""
    return arr.astype(np.float32) if arr.dtype in FLOAT8_DTYPES else arr


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
        shown = ", ".join(_key_repr(k) for k in keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
        non_arrays = [k for k, v in obj.items() if not isinstance(v, np.ndarray)][:3]
        detail = f"; non-tensor entries: {', '.join(_key_repr(k) for k in non_arrays)}" if non_arrays else ""
        return (
            f"a dict with keys [{shown}]{detail}; expected name -> tensor entries, or the weights under one of "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS)}"
        )
    return f"the file holds a {type(obj).__name__}, expected a dict of tensors (a state_dict)"


def _key_repr(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    from hnd_jax.npyfile import load_npz

    return load_npz(path)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file, in the file's data order.

    The library validates the header and the data offsets; the file is read whole (its size is
    what it holds). Element types come from :data:`SAFETENSORS_DTYPES`; an unknown one is refused.
    """
    from safetensors import SafetensorError, deserialize

    try:
        entries = deserialize(path.read_bytes())
    except (SafetensorError, OSError, ValueError, TypeError, KeyError, MemoryError, OverflowError) as exc:
        raise HndError(f"{path}: cannot read the safetensors file ({one_line(exc)})") from None
    out: dict[str, np.ndarray] = {}
    for name, entry in sorted(entries, key=lambda e: e[0]):
        dtype = SAFETENSORS_DTYPES.get(str(entry.get("dtype")))
        if dtype is None:
            raise HndError(
                f"{path}: tensor {_key_repr(name)} has element type {str(entry.get('dtype'))[:20]}, which hnd-jax "
                f"cannot read (supported: {', '.join(SAFETENSORS_DTYPES)}); save it as float32"
            )
        shape = tuple(int(d) for d in entry["shape"])
        data = entry["data"]
        if len(data) != int(np.prod(shape, dtype=object)) * dtype.itemsize:
            raise HndError(f"{path}: tensor {_key_repr(name)} holds {len(data)} bytes, not {shape} of {dtype}")
        out[str(name)] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return out

