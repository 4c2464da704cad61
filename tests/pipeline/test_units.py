"""Small pieces of the pipeline: size parsing, fingerprint differences, the cache decision, top maps."""

from __future__ import annotations

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.pipeline.cache import ActivationCache, plan_cache
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.scoring.top_maps import TopMaps
from hnd_jax.pipeline.fingerprint import fingerprint_differences
from hnd_jax.pipeline.sizes import parse_size


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("10 kib", 10240), (7, 7),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1GiB", "2 parsecs", "1e3"])
def test_parse_size_rejects(text):
    with pytest.raises(HndError, match="--cache-budget"):
        parse_size(text)


def test_fingerprint_differences_name_nested_keys():
    old = {"scoring": {"quantile": 0.005, "iou_mode": "family"}, "layers": ["a"], "model": {"params_sha256": "a" * 64}}
    new = {"scoring": {"quantile": 0.01, "iou_mode": "family"}, "layers": ["a", "b"], "model": {"params_sha256": "b" * 64}}
    diffs = fingerprint_differences(old, new)
    assert "scoring.quantile: 0.005 -> 0.01" in diffs
    assert 'layers: ["a"] -> ["a", "b"]' in diffs
    assert "model.params_sha256: aaaaaaaaaaaa -> bbbbbbbbbbbb" in diffs
    assert fingerprint_differences(old, old) == []


def test_plan_cache_decisions():
    shapes = {"l": (2, 2, 4)}  # 64 bytes per image
    assert plan_cache(shapes, 10, 0, ram_limit_bytes=10**9).mode == "recompute"
    assert plan_cache(shapes, 10, 639, ram_limit_bytes=10**9).mode == "recompute"
    assert plan_cache(shapes, 10, 640, ram_limit_bytes=10**9).mode == "ram"
    assert plan_cache(shapes, 10, 640, ram_limit_bytes=100).mode == "disk"


def test_cache_store_get_and_missing(tmp_path):
    shapes = {"a": (1, 2, 3)}
    plan = plan_cache(shapes, 6, 10**6, ram_limit_bytes=0)  # disk
    cache = ActivationCache(plan, shapes, 10, 16, tmp_path / "c")
    x = np.arange(3 * 6, dtype=np.float32).reshape(3, 1, 2, 3)
    cache.store(np.arange(12, 15), {"a": x})
    assert cache.has(np.arange(12, 15)) and not cache.has(np.arange(14, 16))
    np.testing.assert_array_equal(cache.get(np.arange(12, 15), ["a"])["a"], x)
    cache.close()
    assert not (tmp_path / "c").exists()


def test_gather_top_maps_picks_rows_and_units():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)  # images 5, 6, 7
    tops = np.array([[6, 1], [7, 5], [0, 1], [5, 7]])
    acc = TopMaps(tops, (2, 2))
    state = acc.update(acc.init(), Batch.padded(4, acts, np.array([5, 6, 7])))  # one padding row
    maps, found = state["maps"], state["found"]
    expect_found = np.isin(tops, [5, 6, 7])
    np.testing.assert_array_equal(found, expect_found)
    for u in range(4):
        for j in range(2):
            if expect_found[u, j]:
                np.testing.assert_array_equal(maps[u, j], acts[tops[u, j] - 5, :, :, u])
            else:
                assert not maps[u, j].any()