"""Face Dictionary sources: the published layout, the prepared tfds format and the synthetic one.

Use :func:`open_dictionary` to get a :class:`~hnd_jax.dictionary.base.FaceDictionary` from a root
folder, a prepared dataset, or the word ``synthetic``.
"""

from hnd_jax.dictionary.base import FaceDictionary, GlobalBatch, LocalBatch

__all__ = ["FaceDictionary", "GlobalBatch", "LocalBatch", "open_dictionary"]


def open_dictionary(*args, **kwargs) -> FaceDictionary:
    """Open ROOT (published layout), PREP (prepared tfds) or ``synthetic``. See ``opening.py``."""
    from hnd_jax.dictionary.opening import open_dictionary as _open

    return _open(*args, **kwargs)
