"""Random initialisation for `hnd dissect --random-init --seed S` (hnd_jax.pipeline.model_source).

Same card + same seed: bit-identical parameters and activations; another seed: different ones.
No weights are loaded, not even packaged ones (MTCNN), and the identity records the seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.models.capture import forward_with_layers
from hnd_jax.pipeline.model_source import params_sha256, resolve_model


@pytest.mark.parametrize("card,layer,size", [("vit_tiny_patch16_224", "blocks.0", 224), ("iresnet18", "layer1.0", 112)])
def test_same_seed_same_model_other_seed_differs(card, layer, size):
    a = resolve_model(card, random_init=True, seed=3)
    b = resolve_model(card, random_init=True, seed=3)
    c = resolve_model(card, random_init=True, seed=4)
    assert a.identity["weights"] == {"kind": "random init", "seed": 3}
    assert a.identity["params_sha256"] == b.identity["params_sha256"] != c.identity["params_sha256"]
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    acts = [np.asarray(forward_with_layers(s.module, x, [layer])[1][layer]) for s in (a, b, c)]
    np.testing.assert_array_equal(acts[0], acts[1])
    assert np.abs(acts[0] - acts[2]).max() > 1e-3 * np.abs(acts[0]).max()


def test_random_init_ignores_packaged_weights():
    import importlib.util

    if importlib.util.find_spec("facenet_pytorch") is None:  # found, never imported (it needs torchvision)
        pytest.skip("the packaged MTCNN weights come with facenet-pytorch, which .ci/run installs")
    packaged = resolve_model("mtcnn_onet")
    random = resolve_model("mtcnn_onet", random_init=True, seed=0)
    assert packaged.identity["weights"]["kind"] == "file"
    assert random.identity["weights"]["kind"] == "random init"
    assert params_sha256(packaged.module) != params_sha256(random.module)


def test_random_init_refuses_weights_and_bad_seeds(tmp_path):
    with pytest.raises(HndError, match="--random-init.*--weights"):
        resolve_model("resnet18", str(tmp_path / "w.pth"), random_init=True)
    for seed in (-1, 1.5, True, "3"):
        with pytest.raises(HndError, match="--seed"):
            resolve_model("resnet18", random_init=True, seed=seed)
