"""The HND scoring engine: streaming accumulators and jit'ed, sharded kernels (DESIGN.md §2-3).

The engine never sees a model: it consumes activation batches (NHWC float32, ``[B, h, w, U]``)
together with dictionary batches, so Flax models and external ``--activations`` files share it.
"""

from hnd_jax.scoring.config import IOU_MODES, ScoringConfig

__all__ = ["IOU_MODES", "ScoringConfig"]
