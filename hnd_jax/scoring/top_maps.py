"""The raw activation maps of every unit's top images, gathered during pass 2 (for the reports).

The reports overlay each unit's binary map on its ``k`` highest-activating local images (the
``top_images`` of pass 1, ranked by the per-image max ``m_u(x)``, DESIGN.md §2). Their raw maps
pass through pass 2 anyway, so they are picked up there by an accumulator like every other
statistic (:mod:`hnd_jax.scoring.accumulator`) instead of a third pass over the dictionary.

State: ``maps`` float32 ``[U, k, h, w]`` and ``found`` bool ``[U, k]``, host NumPy (a few MB at
most). Each image lives in exactly one process's or one batch's slice, so ``merge`` takes, for every
slot, the side that found it; :meth:`TopMaps.finalize` refuses a slot that no batch filled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hnd_jax.scoring.accumulator import Batch
from hnd_jax.scoring.hierarchy import top_images

State = dict[str, Any]


class TopMaps:
    """Collect ``maps[u, j] = A_u(x)`` for ``x = tops[u, j]``.

    tops: int ``[U, k]`` local-image indices per unit (``hierarchy.top_images`` of pass 1's
    ``image_max``); map_hw: (h, w) of the raw maps.
    """

    def __init__(self, tops: np.ndarray, map_hw: tuple[int, int]):
        self.tops = np.asarray(tops, np.int64)
        if self.tops.ndim != 2:
            raise ValueError(f"tops {self.tops.shape}: expected [U, k]")
        self.map_hw = (int(map_hw[0]), int(map_hw[1]))

    @classmethod
    def from_image_max(cls, image_max: np.ndarray, k: int, map_hw: tuple[int, int]) -> "TopMaps":
        """The accumulator for the ``k`` top images of each unit by ``image_max`` ``[N, U]``."""
        return cls(top_images(image_max, k), map_hw)

    def init(self) -> State:
        return {"maps": np.zeros((*self.tops.shape, *self.map_hw), np.float32),
                "found": np.zeros(self.tops.shape, bool)}

    def update(self, state: State, batch: Batch) -> State:
        """Copy the maps of the top images present in ``batch`` (``index`` + ``activations`` rows)."""
        batch.require("index")
        positions = np.flatnonzero(batch.valid)  # rows of the (padded) batch that are real images
        index = np.asarray(batch.index)[positions]
        hit = np.isin(self.tops, index)
        if not hit.any():
            return state
        row_of = {int(i): int(r) for r, i in zip(positions, index)}
        uu, jj = np.nonzero(hit)
        rows = np.array([row_of[int(i)] for i in self.tops[uu, jj]])
        maps, found = state["maps"].copy(), state["found"].copy()
        # Gather only the [hits, h, w] maps where the activations live (a device array stays there).
        maps[uu, jj] = np.asarray(batch.activations[rows, :, :, uu])
        found[uu, jj] = True
        return {"maps": maps, "found": found}

    def merge(self, a: State, b: State) -> State:
        fa, fb = np.asarray(a["found"]), np.asarray(b["found"])
        return {"maps": np.where(fb[..., None, None], np.asarray(b["maps"]), np.asarray(a["maps"])),
                "found": fa | fb}

    def finalize(self, state: State) -> dict[str, np.ndarray]:
        """``maps`` float32 ``[U, k, h, w]`` and the ``tops`` int64 ``[U, k]`` they belong to;
        ValueError when a top image never came by (a driver bug)."""
        if not np.asarray(state["found"]).all():
            raise ValueError("top maps: some top images were never seen in pass 2")
        return {"maps": np.asarray(state["maps"], np.float32), "tops": self.tops.copy()}
