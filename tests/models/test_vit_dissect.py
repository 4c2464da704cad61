"""A vision transformer dissects end to end (random init, synthetic dictionary, `--random-init` path).

The pipeline sees the patch-grid maps: per-unit results have one row per channel (192 for
ViT-Ti's residual stream, 768 for its MLP hidden units) and the stored top maps are 14x14. The
per-image maxima the pipeline recorded equal the maxima of the maps extracted independently with
``extract_activations`` (the `hnd extract` path) from the same dictionary images: the class token
is not part of any unit's map.
"""

from __future__ import annotations

import json

import numpy as np

from hnd_jax.cards import load_card
from hnd_jax.convert.extract import batches_from_dictionary, extract_activations
from hnd_jax.pipeline.dissect import dissect_model
from hnd_jax.pipeline.model_source import random_model


def test_vit_tiny_random_init_dissects_over_the_patch_grid(tmp_path):
    layers = ["blocks.11", "blocks.11.mlp.fc1"]
    out = dissect_model("vit_tiny_patch16_224", layers=layers, dictionary="synthetic:8", out=tmp_path / "run",
                        run={"batch_size": 4, "progress": "none", "fresh": True}, random_init=True)
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["model"]["weights"] == {"kind": "random init", "seed": 0}
    model, card = random_model("vit_tiny_patch16_224", 0)
    maps = extract_activations(model, layers, batches_from_dictionary("synthetic:8", load_card(card), 4))
    for layer, units in zip(layers, (192, 768)):
        with np.load(out / layer / "scores.npz") as z:
            assert z["thresholds"].shape == (units,)
            assert z["top_maps"].shape[0] == units and z["top_maps"].shape[2:] == (14, 14)
            image_max = z["image_max"]
        assert maps[layer].shape == (8, units, 14, 14)
        np.testing.assert_allclose(image_max, maps[layer].max(axis=(2, 3)), rtol=1e-4, atol=1e-5)
