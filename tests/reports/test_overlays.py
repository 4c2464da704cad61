"""Top-image tiles: the upsampling and threshold follow DESIGN.md §2, the drawing is where it should be."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from reports_fixture import FakeDictionary, write_fixture_run

from hnd_jax.errors import HndError
from hnd_jax.reports.overlays import (
    ACTIVATION_RGB,
    CONCEPT_RGB,
    DIM_OUTSIDE,
    outline,
    render_tile,
    render_unit_tiles,
    upsample_bilinear,
)
from hnd_jax.reports.results_view import load_run


def loop_bilinear(a: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear with edge clamping, one output pixel at a time."""
    h, w = a.shape
    out = np.zeros((size, size))
    for i in range(size):
        y = min(max((i + 0.5) * h / size - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        for j in range(size):
            x = min(max((j + 0.5) * w / size - 0.5, 0.0), w - 1)
            x0 = int(np.floor(x))
            x1 = min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * a[y0, x0] + fx * a[y0, x1])
                         + fy * ((1 - fx) * a[y1, x0] + fx * a[y1, x1]))
    return out


@pytest.mark.parametrize("hw,size", [((3, 5), 16), ((7, 7), 24), ((1, 4), 9), ((4, 4), 4)])
def test_upsample_matches_loop_and_pil(hw, size):
    rng = np.random.default_rng(0)
    a = rng.normal(size=hw).astype(np.float32)
    got = upsample_bilinear(a, size)
    np.testing.assert_allclose(got, loop_bilinear(a, size), rtol=1e-5, atol=1e-5)
    # PIL's BILINEAR on float images uses the same convention when enlarging (independent code).
    pil = np.asarray(Image.fromarray(a, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(got, pil, rtol=1e-4, atol=1e-4)


def test_upsample_batches():
    a = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    got = upsample_bilinear(a, 10)
    assert got.shape == (2, 3, 10, 10)
    np.testing.assert_allclose(got[1, 2], loop_bilinear(a[1, 2], 10), atol=1e-5)


def test_outline_of_a_square():
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True
    edge = outline(m)
    assert edge.sum() == 12 and not edge[3:5, 3:5].any() and edge[2, 2:6].all()
    full = np.ones((4, 4), bool)
    assert outline(full).sum() == 12  # the image border counts as outside
    assert not outline(np.zeros((4, 4), bool)).any()


def test_tile_dims_outside_activation_and_draws_outlines():
    s = 96  # tile size == image size: no resampling, so pixels can be checked exactly
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(s, s, 3), dtype=np.uint8)
    active = np.zeros((s, s), bool)
    active[10:50, 10:50] = True
    concept = np.zeros((s, s), bool)
    concept[60:90, 55:90] = True
    tile = render_tile(img, active, concept, size=s)
    np.testing.assert_array_equal(tile[20:40, 20:40], img[20:40, 20:40])  # inside: untouched
    outside = np.rint(img[70:80, 5:40].astype(np.float32) * DIM_OUTSIDE)
    np.testing.assert_array_equal(tile[70:80, 5:40], outside.astype(np.uint8))
    assert (tile[10, 10:50] == ACTIVATION_RGB).all()
    assert (tile[60, 55:90] == CONCEPT_RGB).all() and (tile[89, 55:90] == CONCEPT_RGB).all()
    plain = render_tile(img, None, None, size=s)
    np.testing.assert_array_equal(plain, img)


def test_unit_tiles_threshold_the_upsampled_map(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 5}, image_size=12, num_images=9, seed=5)
    layer = load_run(run.out).layers[0]
    dic = FakeDictionary(run.taxonomy, 12, 9)
    tiles = render_unit_tiles(layer, dic, [0, 3, 4], chunk=4)
    assert sorted(tiles) == [0, 3, 4]
    fetched = np.concatenate(dic.calls)
    assert len(fetched) == len(set(fetched.tolist()))  # each image fetched once
    assert set(fetched.tolist()) == set(layer.top_images[[0, 3, 4]].ravel().tolist())
    for u, t in tiles.items():
        assert t.tiles.shape == (4, 96, 96, 3) and t.tiles.dtype == np.uint8
        assert t.strip().shape == (96, 4 * 96 + 3 * 2, 3)
        np.testing.assert_array_equal(t.indices, layer.top_images[u])
        for k in range(4):
            ref = loop_bilinear(layer.top_maps[u, k].astype(np.float64), 12) > layer.thresholds[u]
            assert t.active_fraction[k] == pytest.approx(ref.mean())


def test_unit_tiles_reject_foreign_dictionary(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 3}, image_size=12, num_images=9)
    layer = load_run(run.out).layers[0]
    with pytest.raises(HndError, match="refers to image"):
        render_unit_tiles(layer, FakeDictionary(run.taxonomy, 12, 2), [0, 1, 2])
    from reports_fixture import small_taxonomy

    with pytest.raises(HndError, match="concepts differ"):
        render_unit_tiles(layer, FakeDictionary(small_taxonomy(), 12, 9), [0])
