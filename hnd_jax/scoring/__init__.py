"""The HND scoring engine: streaming accumulators and jit'ed, sharded kernels (DESIGN.md §2-3).

The engine never sees a model: it consumes activation batches (NHWC float32, ``[B, h, w, U]``)
together with dictionary batches, so Flax models and external ``--activations`` files share it.

Modules (imported on demand, so that ``import hnd_jax.scoring`` stays light):

* :mod:`~hnd_jax.scoring.config`: :class:`ScoringConfig`, the settings.
* :mod:`~hnd_jax.scoring.unit_stats`: pass 1, exact thresholds (running top-k), lo/hi, per-image max.
* :mod:`~hnd_jax.scoring.tally`: pass 2, the IoU intersection/union counts.
* :mod:`~hnd_jax.scoring.hierarchy`: finalization, IoU, top concept, local and global probabilities.
* :mod:`~hnd_jax.scoring.engine`: :class:`~hnd_jax.scoring.engine.LayerScorer`, one layer end to end.
* :mod:`~hnd_jax.scoring.accumulator`: the protocol every statistic follows and the one :class:`Batch` type.
* :mod:`~hnd_jax.scoring.top_maps`: the raw maps of every unit's top images (for the reports).
"""

from hnd_jax.scoring.config import IOU_MODES, ScoringConfig

__all__ = ["IOU_MODES", "ScoringConfig"]
