"""What identifies a run, so that an interrupted run is only resumed by the SAME run.

The fingerprint is a JSON-able dict stored with every checkpoint: scoring settings, model identity
(card, and the weights file's sha256 or the parameter hash: :mod:`.model_source`), dictionary
identity, taxonomy fingerprint, layers, batch size, device layout and hnd-jax version.
:func:`fingerprint_differences` lists what changed in readable ``key: old -> new`` form for the
one-line refusal message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def sha256_arrays(leaves: list[tuple[str, np.ndarray]]) -> str:
    """sha256 over named arrays (name, dtype, shape, bytes): the identity of in-memory parameters."""
    digest = hashlib.sha256()
    for name, arr in sorted(leaves, key=lambda kv: kv[0]):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def canonical(obj: Any) -> Any:
    """JSON round trip (tuples -> lists, numpy scalars -> numbers) so stored and fresh dicts compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_default))


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` of every leaf that differs, in sorted key order."""
    found: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found.extend(differing_keys(a, b, prefix=f"{name}."))
        elif a != b:
            found.append((name, a, b))
    return found


def fingerprint_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Readable differences ``'scoring.quantile: 0.005 -> 0.01'`` between two fingerprints (dotted keys)."""
    return [f"{name}: {short_value(a)} -> {short_value(b)}" for name, a, b in differing_keys(old, new)]


def short_value(value: Any, limit: int = 40) -> str:
    """A setting's value for a one-line message (JSON; a sha256 cut to its first 12 digits)."""
    text = json.dumps(value) if not isinstance(value, str) else value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256: the prefix is enough to see it changed
    return text if len(text) <= limit else text[: limit - 3] + "..."
