"""Pass-1 statistics against the NumPy reference: exact thresholds, lo/hi, per-image max, sharding."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.errors import HndError
from hnd_jax.sharding import padded_size as padded_batch_size
from hnd_jax.scoring.unit_stats import UnitStats, quantile_from_topk, topk_size
from scoring_fixtures import all_device_mesh, one_device_mesh


def run_stats(acts, q, mesh, batch=7, order=None):
    N, h, w, U = acts.shape
    stats = UnitStats(U, N, (h, w), q, mesh)
    state = stats.init()
    size = padded_batch_size(batch, mesh)
    order = np.arange(N) if order is None else order
    for s in range(0, N, batch):
        idx = order[s : s + batch]
        step = Batch.padded(size, acts[idx], idx)
        state = stats.update(state, step)
    return stats.finalize(state)


def adversarial_acts(rng, N=23, h=3, w=4, U=6):
    acts = rng.normal(size=(N, h, w, U)).astype(np.float32)
    acts[..., 1] = np.round(acts[..., 1])  # heavy ties around every quantile
    acts[..., 2] = 1.25  # constant (dead) unit
    acts[..., 3] = 0.0  # never fires
    acts[..., 4] = np.where(rng.random((N, h, w)) < 0.97, 2.0, 5.0)  # ties exactly at the top
    acts[..., 5] *= 1e6  # large magnitudes
    return acts


@pytest.mark.parametrize("q", [0.005, 0.05, 0.5, 1 / 3])
def test_thresholds_equal_numpy_quantile(q):
    rng = np.random.default_rng(int(q * 1000))
    acts = adversarial_acts(rng)
    out = run_stats(acts, q, one_device_mesh())
    np.testing.assert_array_equal(out["thresholds"], ref.thresholds(acts, q))


def test_topk_size_covers_both_interpolation_points():
    # n = 1 and values where (n-1)(1-q) is an exact integer.
    assert topk_size(1, 0.005) == 1
    assert topk_size(11, 0.1) == 2  # p = 9 exactly: needs sorted[9] and sorted[10]
    vals = np.arange(11, dtype=np.float32)[None, ::-1][:, :2]
    assert quantile_from_topk(np.ascontiguousarray(vals), 11, 0.1)[0] == np.quantile(np.arange(11, dtype=np.float32), 0.9)


def test_single_value_and_tiny_sets():
    acts = np.array([[[[3.0, -1.0]]]], np.float32)  # N=1, 1x1 map
    out = run_stats(acts, 0.005, one_device_mesh())
    np.testing.assert_array_equal(out["thresholds"], [3.0, -1.0])


def test_lo_hi_image_max_with_shuffled_batches():
    rng = np.random.default_rng(1)
    acts = adversarial_acts(rng)
    order = rng.permutation(acts.shape[0])
    out = run_stats(acts, 0.01, one_device_mesh(), batch=5, order=order)
    lo, hi = ref.lo_hi(acts)
    np.testing.assert_array_equal(out["lo"], lo)
    np.testing.assert_array_equal(out["hi"], hi)
    np.testing.assert_array_equal(out["image_max"], ref.image_max(acts))
    np.testing.assert_array_equal(out["thresholds"], ref.thresholds(acts, 0.01))


def test_one_and_eight_devices_identical():
    rng = np.random.default_rng(2)
    acts = adversarial_acts(rng, N=29)
    a = run_stats(acts, 0.02, one_device_mesh(), batch=6)
    b = run_stats(acts, 0.02, all_device_mesh(), batch=6)
    for key in ("thresholds", "lo", "hi", "image_max"):
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(b["thresholds"], ref.thresholds(acts, 0.02))


@pytest.mark.parametrize("mesh_of", [one_device_mesh, all_device_mesh])
def test_top_k_in_unit_chunks_equals_numpy_quantile(monkeypatch, mesh_of):
    # A chunk budget that splits 7 units into chunks of 3 (the last chunk overlaps the one before),
    # on adversarial values: the bounded-memory path must give NumPy's quantile bit for bit.
    import hnd_jax.scoring.unit_stats as us

    rng = np.random.default_rng(11)
    acts = np.concatenate([adversarial_acts(rng, N=21), rng.normal(size=(21, 3, 4, 1)).astype(np.float32)], axis=3)
    N, h, w, U = acts.shape
    k = topk_size(N * h * w, 0.05)
    row = padded_batch_size(5, mesh_of()) // int(mesh_of().devices.size) * h * w + k
    monkeypatch.setattr(us, "TOPK_CHUNK_VALUES", 3 * row)
    assert us.topk_unit_chunk(U, row) == 3
    out = run_stats(acts, 0.05, mesh_of(), batch=5)
    np.testing.assert_array_equal(out["thresholds"], ref.thresholds(acts, 0.05))
    np.testing.assert_array_equal(out["image_max"], ref.image_max(acts))


def test_nonfinite_values_are_counted_one_by_one_on_every_device():
    # The count is made per image (bounded memory); it must still count every bad value of every
    # real row, on every device, and none of the padding rows.
    mesh = all_device_mesh()
    size = padded_batch_size(3, mesh)
    stats = UnitStats(2, 3, (2, 2), 0.1, mesh)
    acts = np.zeros((size, 2, 2, 2), np.float32)
    acts[0, 0, 0, 0] = np.nan
    acts[2, 1, 1] = np.inf  # two values
    acts[3:] = np.nan  # padding rows
    valid = np.arange(size) < 3
    state = stats.update(stats.init(), Batch(acts, valid, index=np.minimum(np.arange(size), 2)))
    assert int(state["nonfinite"]) == 3
    with pytest.raises(HndError, match="3 NaN or inf"):
        stats.finalize(state)


def test_padding_rows_do_not_count():
    # Padding rows hold huge values: they must not move thresholds, hi or any image's max.
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(5, 2, 2, 3)).astype(np.float32)
    mesh = one_device_mesh()
    stats = UnitStats(3, 5, (2, 2), 0.1, mesh)
    state = stats.init()
    padded = np.concatenate([acts, np.full((3, 2, 2, 3), 1e9, np.float32)])
    index = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    valid = np.arange(8) < 5
    state = stats.update(state, Batch(padded, valid, index=index))
    out = stats.finalize(state)
    np.testing.assert_array_equal(out["hi"], ref.lo_hi(acts)[1])
    np.testing.assert_array_equal(out["image_max"], ref.image_max(acts))
    np.testing.assert_array_equal(out["thresholds"], ref.thresholds(acts, 0.1))


def test_merge_of_two_halves_equals_one_pass():
    rng = np.random.default_rng(4)
    acts = adversarial_acts(rng, N=12)
    mesh = all_device_mesh()
    stats = UnitStats(acts.shape[-1], 12, acts.shape[1:3], 0.05, mesh)
    size = padded_batch_size(6, mesh)
    halves = []
    for lo_i in (0, 6):
        idx = np.arange(lo_i, lo_i + 6)
        step = Batch.padded(size, acts[idx], idx)
        halves.append(stats.update(stats.init(), step))
    merged = stats.finalize(stats.merge(*halves))
    whole = run_stats(acts, 0.05, mesh, batch=4)
    for key in whole:
        np.testing.assert_array_equal(merged[key], whole[key])


def test_global_stats_have_no_thresholds():
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(4, 2, 3, 2)).astype(np.float32)
    stats = UnitStats(2, 4, (2, 3), None, one_device_mesh())
    state = stats.update(stats.init(), Batch(acts, np.ones(4, bool), index=np.arange(4)))
    out = stats.finalize(state)
    assert "thresholds" not in out and stats.k == 0
    np.testing.assert_array_equal(out["image_max"], ref.image_max(acts))


def test_missing_images_are_an_error():
    acts = np.zeros((3, 1, 1, 2), np.float32)
    stats = UnitStats(2, 4, (1, 1), 0.1, one_device_mesh())
    state = stats.update(stats.init(), Batch(acts, np.ones(3, bool), index=np.arange(3)))
    with pytest.raises(HndError, match="saw 3 image"):
        stats.finalize(state)


def test_nan_or_inf_activations_are_an_error_but_padding_may_hold_them():
    stats = UnitStats(2, 2, (1, 2), 0.1, one_device_mesh())
    acts = np.zeros((3, 1, 2, 2), np.float32)
    acts[2] = np.nan  # padding row: ignored
    state = stats.update(stats.init(), Batch(acts, np.array([True, True, False]), index=np.array([0, 1, 0])))
    assert stats.finalize(state)["thresholds"].tolist() == [0.0, 0.0]
    acts[1, 0, 1, 0] = np.inf
    state = stats.update(stats.init(), Batch(acts, np.array([True, True, False]), index=np.array([0, 1, 0])))
    with pytest.raises(HndError, match="1 NaN or inf"):
        stats.finalize(state)


def test_state_round_trips_through_orbax(tmp_path):
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(8)
    acts = adversarial_acts(rng, N=10)
    U = acts.shape[-1]
    mesh = all_device_mesh()
    stats = UnitStats(U, 10, acts.shape[1:3], 0.05, mesh)
    state = stats.update(stats.init(), Batch(acts[:8], np.ones(8, bool), index=np.arange(8)))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "state", state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "state", stats.init())
    step = Batch.padded(8, acts[8:], np.arange(8, 10))
    out = stats.finalize(stats.update(restored, step))
    np.testing.assert_array_equal(out["thresholds"], ref.thresholds(acts, 0.05))
    np.testing.assert_array_equal(out["image_max"], ref.image_max(acts))
