"""Parse human byte sizes (``512MiB``, ``2GiB``, ``0``) for ``--cache-budget``."""

from __future__ import annotations

import re

from hnd_jax.errors import HndError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, *, what: str = "--cache-budget") -> int:
    """``'2GiB'`` -> 2147483648. Decimal (kB, MB, GB) and binary (KiB, MiB, GiB) units; plain numbers are bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise HndError(f"{what} {text}: expected a size >= 0")
        return text
    match = _PATTERN.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise HndError(f"{what} {text!r}: expected a size such as 0, 512MiB, 2GiB or 1.5GB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(num_bytes: int) -> str:
    """2147483648 -> '2.0 GiB' (for messages and dissection.json)."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover
