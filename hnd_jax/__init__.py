"""hnd-jax: Hierarchical Network Dissection of face models in JAX.

Import what you need from the submodules; the most used names are re-exported here lazily so that
``import hnd_jax`` stays cheap (it does not import JAX).
"""

from __future__ import annotations

from hnd_jax.errors import BadInputError, HndError
from hnd_jax.taxonomy import Taxonomy, default_taxonomy, load_taxonomy

__version__ = "0.1.0"

__all__ = ["BadInputError", "HndError", "Taxonomy", "default_taxonomy", "load_taxonomy", "__version__"]
