"""``hnd demo``: train a CNN on faces with a planted bias and a control, dissect both, compare.

Public API: :func:`run_demo` and :class:`DemoSettings` (the pieces: :mod:`.experiment` trains and
probes, :mod:`.measure` counts planted units from the results, :mod:`.page` writes the summary page).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"run_demo": "hnd_jax.demo.run", "DemoSettings": "hnd_jax.demo.settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import lazily: ``hnd demo --help`` reads :class:`DemoSettings` without loading flax or optax."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hnd_jax.demo' has no attribute {name!r}")
