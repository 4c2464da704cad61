"""The procedural synthetic Face Dictionary (``synthetic[:N[:SEED]]``) and the demo's biased training sets.

- :mod:`.generate`: writes a dictionary in the published layout (:func:`write_synthetic_dictionary`);
- :mod:`.face`: one synthetic face with exact masks for every local concept and visible global cues;
- :mod:`.shapes` / :mod:`.draw`: the geometry and rasterisation the faces are drawn with;
- :mod:`.png`: a deterministic PNG encoder (byte-identical files for a seed);
- :mod:`.bias`: training sets with a planted concept/subgroup shortcut (the demo).
"""

from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary

__all__ = ["write_synthetic_dictionary"]
