"""XLA's persistent compilation cache for ``hnd`` commands (JAX's ``jax_compilation_cache_dir``).

A dissection compiles a handful of functions (the model's forward, the pass-1 statistics, the tally
kernels): 0.4-0.6 s on a 2-core CPU for the statistics alone, several seconds for a large model's
forward. JAX can keep the compiled executables on disk, keyed by the computation, the backend, the
JAX/XLA version and flags, so a second run with the same shapes loads them instead of compiling.

Where: ``$HND_COMPILATION_CACHE`` if set (``off``/``0`` disables it), else ``$HND_CACHE/xla``, else
``~/.cache/hnd_jax/xla``. A folder that cannot be created disables the cache silently (it only
saves time; results never depend on it). Called by the CLI, not by the library (a library must not
change a process-wide JAX setting behind its caller's back).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "HND_COMPILATION_CACHE"
OFF = ("0", "off", "none", "false", "no")


def compilation_cache_dir() -> Path | None:
    """The folder the cache uses, or None when ``$HND_COMPILATION_CACHE`` turns it off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    root = os.environ.get("HND_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "hnd_jax") / "xla"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at :func:`compilation_cache_dir` (every executable,
    however quick to compile); return the folder, or None when disabled or not writable."""
    path = compilation_cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
