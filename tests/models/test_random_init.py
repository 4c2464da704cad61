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


# ---------------------------------------------------------------- drawn in the parameter's dtype


def _old_uniform(key, shape):
    """The initialiser before draw_numpy: one float64 draw of the whole shape, cast (the values to keep)."""
    import math

    import jax

    bound = 1.0 / math.sqrt(max(math.prod(shape[:-1]), 1))
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return np.random.default_rng(seed).uniform(-bound, bound, shape).astype(np.float32)


def _old_normal(key, shape, std):
    import jax

    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return np.random.default_rng(seed).normal(0.0, std, shape).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
@pytest.mark.parametrize("shape", [(3, 3, 5, 11), (40, 9), (1,)])
def test_parameters_keep_their_values_per_seed_when_drawn_in_chunks(monkeypatch, chunk, shape):
    """Values pinned per seed: the chunked float32 draw equals the former whole float64 draw, cast."""
    import jax

    from hnd_jax.models import layers
    from hnd_jax.models.vit import _normal_init

    monkeypatch.setattr(layers, "DRAW_CHUNK", chunk)
    for seed in (0, 3):
        key = jax.random.key(seed)
        got = np.asarray(layers.torch_default_kernel_init(key, shape))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, _old_uniform(key, shape))
        normal = np.asarray(_normal_init(0.02)(key, shape))
        assert normal.dtype == np.float32
        np.testing.assert_array_equal(normal, _old_normal(key, shape, 0.02))
    a, b = (np.asarray(layers.torch_default_kernel_init(jax.random.key(s), shape)) for s in (0, 3))
    assert shape == (1,) or not np.array_equal(a, b)


def test_a_large_parameter_is_never_held_in_float64():
    """The break test at a small scale: `hnd card new ... --num-outputs 2097152` then --random-init
    asked for 32 GiB in float64 for a 16 GiB float32 kernel. Peak host memory while drawing 4M values
    is now the float32 parameter plus one 8 MiB float64 chunk (numpy reports to tracemalloc)."""
    import tracemalloc

    import jax

    from hnd_jax.models import layers

    shape = (1024, 4096)  # 16 MiB in float32, 32 MiB in float64
    key = jax.random.key(1)
    tracemalloc.start()
    try:
        values = layers.torch_default_kernel_init(key, shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert values.dtype == np.float32 and values.shape == shape
    assert peak < values.nbytes + 2 * 8 * (1 << 20), peak  # before: 48 MiB (the float64 draw and its cast)


def test_random_init_values_are_pinned_per_seed():
    """The parameters of `--random-init --seed 3` are those hnd-jax has always drawn for that seed
    (sha256 recorded before the draws were chunked into float32; it changes only if NumPy's
    Generator streams or JAX's key splitting change, which would make old control runs unrepeatable)."""
    got = resolve_model("iresnet18", random_init=True, seed=3).identity["params_sha256"]
    assert got == "f23d8179badb78cb9ba94fcddd985892c2994099e425e85ef54bb7441f47db69"
