"""Keep activations between the two passes when they fit a budget (else pass 2 recomputes them).

Pass 2 needs the same activations as pass 1 (it thresholds them with the pass-1 thresholds). A second
forward costs as much as the first; keeping the activations costs ``N * h * w * U * 4`` bytes per layer.
:func:`plan_cache` decides once per run, and the decision is recorded in ``dissection.json``:

* ``recompute``: the activations do not fit ``--cache-budget`` (or it is 0): run the model again;
* ``ram``: they fit the budget AND a share of the machine's available memory: a host array per layer;
* ``disk``: they fit the budget but not the RAM share: ``np.memmap`` files under ``OUT/.cache/``
  (the page cache keeps what fits; written pages survive a ``kill -9`` of the process).

The cache also remembers which images it holds, so a resumed run that lost part of it (a RAM cache
after a kill) recomputes exactly the missing batches and reads the rest.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

RAM_SHARE = 0.4  # at most this share of the available memory is used for a RAM cache


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory size."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 0


@dataclass(frozen=True)
class CachePlan:
    """The cache decision of a run (stored in ``dissection.json`` under ``cache``)."""

    mode: str  # 'ram' | 'disk' | 'recompute'
    needed_bytes: int
    budget_bytes: int
    ram_limit_bytes: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def activation_bytes(layer_shapes: dict[str, tuple[int, int, int]], num_images: int) -> int:
    """Bytes of float32 activations of all layers for ``num_images`` images."""
    return int(sum(num_images * h * w * u * 4 for h, w, u in layer_shapes.values()))


def plan_cache(layer_shapes: dict[str, tuple[int, int, int]], num_images: int, budget_bytes: int,
               ram_limit_bytes: int | None = None) -> CachePlan:
    """Choose ram / disk / recompute (see module docstring)."""
    needed = activation_bytes(layer_shapes, num_images)
    ram_limit = int(RAM_SHARE * available_memory_bytes()) if ram_limit_bytes is None else int(ram_limit_bytes)
    if budget_bytes <= 0:
        return CachePlan("recompute", needed, budget_bytes, ram_limit, "cache budget is 0")
    if needed > budget_bytes:
        return CachePlan("recompute", needed, budget_bytes, ram_limit, "activations exceed the cache budget")
    if needed <= ram_limit:
        return CachePlan("ram", needed, budget_bytes, ram_limit, "activations fit the budget and memory")
    return CachePlan("disk", needed, budget_bytes, ram_limit, "activations fit the budget but not memory: memmap")


class ActivationCache:
    """Activations of this process's local images ``[start, stop)`` for every layer, filled batch by batch."""

    def __init__(self, plan: CachePlan, layer_shapes: dict[str, tuple[int, int, int]], start: int, stop: int,
                 directory: Path | None = None, *, reuse_disk: bool = False):
        self.plan = plan
        self.start, self.stop = int(start), int(stop)
        self.filled = np.zeros(max(self.stop - self.start, 0), dtype=bool)
        self.arrays: dict[str, np.ndarray] = {}
        self.directory = directory
        n = self.stop - self.start
        if plan.mode == "ram":
            self.arrays = {name: np.empty((n, *shape), np.float32) for name, shape in layer_shapes.items()}
        elif plan.mode == "disk":
            assert directory is not None, "a disk cache needs a directory"
            directory.mkdir(parents=True, exist_ok=True)
            for i, (name, shape) in enumerate(layer_shapes.items()):
                path = directory / f"layer_{i:03d}_{self.start}_{self.stop}.f32"
                expected = n * int(np.prod(shape)) * 4
                mode = "r+" if reuse_disk and path.exists() and path.stat().st_size == expected else "w+"
                self.arrays[name] = np.memmap(path, dtype=np.float32, mode=mode, shape=(n, *shape))

    @property
    def enabled(self) -> bool:
        return self.plan.mode != "recompute"

    def mark_filled(self, index_from: int, index_to: int) -> None:
        """Declare images ``[index_from, index_to)`` (dictionary positions) present (a reused disk cache)."""
        self.filled[max(index_from - self.start, 0): max(index_to - self.start, 0)] = True

    def store(self, index: np.ndarray, acts: dict[str, np.ndarray]) -> None:
        """Keep the activations of the images at dictionary positions ``index`` (rows of ``acts``)."""
        if not self.enabled:
            return
        rows = np.asarray(index) - self.start
        for name, value in acts.items():
            self.arrays[name][rows] = value
        self.filled[rows] = True

    def has(self, index: np.ndarray) -> bool:
        rows = np.asarray(index) - self.start
        return self.enabled and bool(self.filled[rows].all())

    def get(self, index: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        rows = np.asarray(index) - self.start
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo == len(rows):  # contiguous: a view, no copy
            return {name: np.asarray(self.arrays[name][lo:hi]) for name in layers}
        return {name: np.asarray(self.arrays[name][rows]) for name in layers}

    def flush(self) -> None:
        for value in self.arrays.values():
            if isinstance(value, np.memmap):
                value.flush()

    def close(self, remove: bool = True) -> None:
        self.flush()
        self.arrays.clear()
        if remove and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
