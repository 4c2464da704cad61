"""IoUTally: cell-sparse == dense == run-length kernel == per-pixel NumPy reference, bit for bit.

Random and adversarial data (ties at the threshold, constant units, units that never fire,
thresholds +-inf, empty/full/border/1-pixel masks, h = w = 1, h = S, non-divisible sizes), the three
IoU modes (official against a case computed by hand below), padding rows, 1 vs 8 devices, merge.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import reference_tally as ref
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.errors import HndError
from hnd_jax.scoring.tally import IoUTally
from hnd_jax.sharding import make_data_mesh

MODES = ("family", "labeled", "official")
KERNELS = ("runs", "dense", "cells")


def one_device():
    return make_data_mesh(devices=jax.devices()[:1])


def all_devices():
    return make_data_mesh(devices=jax.devices())


def run(method, data, mode, mesh=None, batches=None):
    acts, masks, lab, fam, cf, T, S, valid = data
    t = IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, mode, mesh=mesh, method=method)
    state = t.init()
    n = acts.shape[0]
    for sl in batches or [slice(0, n)]:
        state = t.update(state, Batch(acts[sl], valid[sl], masks=masks[sl], labelled=lab[sl], family=fam[sl]))
    return t.finalize(state)


def assert_all_paths_agree(data, modes=MODES):
    acts, masks, lab, fam, cf, T, S, valid = data
    for mode in modes:
        want_i, want_u = ref.tally(acts, masks, lab, fam, cf, T, S, mode, valid)
        assert (want_i <= want_u).all()
        for method in KERNELS:
            got = run(method, data, mode, mesh=one_device())
            assert got["intersection"].dtype == np.int64 and got["union"].dtype == np.int64
            np.testing.assert_array_equal(got["intersection"], want_i, err_msg=f"{method} {mode} intersection")
            np.testing.assert_array_equal(got["union"], want_u, err_msg=f"{method} {mode} union")


def random_data(seed, N=6, h=3, w=4, U=5, S=12, C=5, q=0.85):
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((N, h, w, U)).astype(np.float32)
    cf = np.array([i % 2 for i in range(C)], np.int32)
    fam = rng.integers(0, 2, N).astype(np.int32)
    lab = (cf[None, :] == fam[:, None]) & (rng.random((N, C)) < 0.7)
    masks = np.zeros((N, C, S, S), bool)
    yy, xx = np.mgrid[:S, :S]
    for x, c in zip(*np.nonzero(lab)):  # blobs, sometimes cut by the border
        cy, cx, r = rng.uniform(-2, S + 2), rng.uniform(-2, S + 2), rng.uniform(1, S / 2)
        masks[x, c] = (yy - cy) ** 2 + ((xx - cx) * rng.uniform(0.5, 2)) ** 2 < r * r
    T = np.quantile(acts.reshape(-1, U), q, axis=0).astype(np.float32)
    return acts, masks, lab, fam, cf, T, S, np.ones(N, bool)


@pytest.mark.parametrize("seed,h,w,S", [(0, 3, 4, 12), (1, 4, 4, 16), (2, 2, 3, 7), (3, 5, 5, 11)])
def test_random_data_all_paths_all_modes(seed, h, w, S):
    assert_all_paths_agree(random_data(seed, h=h, w=w, S=S))


def test_wild_magnitudes_and_signs():
    """Values from 1e-30 to 1e30 of both signs, subnormals and zeros: the float64 products stay exact."""
    data = list(random_data(12, h=3, w=3, S=10, U=6, q=0.6))
    rng = np.random.default_rng(13)
    acts = data[0] * (10.0 ** rng.integers(-30, 31, data[0].shape)).astype(np.float32)
    acts[0, 0, 0, :] = np.float32(1e-45)  # subnormal
    acts[1, :, :, 1] = 0.0
    data[0] = acts.astype(np.float32)
    data[5] = np.quantile(data[0].reshape(-1, 6), 0.6, axis=0).astype(np.float32)
    assert_all_paths_agree(tuple(data))


def test_dense_image_chunks(monkeypatch):
    """Batches walked in chunks of 2 images (official mode: per-image areas per chunk) change nothing."""
    from hnd_jax.scoring import tally_dense

    data = random_data(14, U=5)
    want = run("runs", data, "official")
    monkeypatch.setitem(tally_dense.DENSE_CHUNK_ELEMENTS, "cpu", 2 * 5 * data[6] ** 2)
    tally_dense.build_dense_kernel.cache_clear()
    try:
        assert tally_dense.image_chunk(14, data[6], 5, "cpu") == 2
        assert tally_dense.image_chunk(15, data[6], 5, "cpu") == 1  # a divisor of the local batch
        got = run("dense", data, "official", mesh=one_device())
    finally:
        tally_dense.build_dense_kernel.cache_clear()
    for k in ("intersection", "union"):
        np.testing.assert_array_equal(got[k], want[k])


def test_tiny_and_identity_maps():
    """h = w = 1 (every pixel is the raw value) and h = S (no interpolation at all)."""
    assert_all_paths_agree(random_data(10, h=1, w=1, S=5, q=0.5))
    assert_all_paths_agree(random_data(11, h=6, w=6, S=6, q=0.7))


def adversarial_data():
    """Ties exactly at the threshold, constant and silent units, +-inf thresholds, odd masks."""
    S, h, w, N, C = 8, 2, 2, 4, 4
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((N, h, w, 8)).astype(np.float32)
    T = np.zeros(8, np.float32)
    # u0: threshold equal to a raw value: the clamped corner copies it exactly, those pixels are OUT.
    acts[:, 0, 0, 0] = np.float32(0.3)
    acts[:, 1, 1, 0] = np.float32(1.0)
    T[0] = np.float32(0.3)
    # u1: constant unit at its threshold (never fires), u2: constant just above it (always fires).
    acts[..., 1] = np.float32(0.7)
    T[1] = np.float32(0.7)
    acts[..., 2] = np.float32(0.7)
    T[2] = np.nextafter(np.float32(0.7), np.float32(-1))
    # u3: +inf threshold (never), u4: -inf threshold (everything), u5: fires on no image.
    T[3], T[4], T[5] = np.inf, -np.inf, acts[..., 5].max() + 1
    # u6: every value ties with the threshold somewhere: threshold = a raw value in the middle.
    T[6] = np.sort(acts[..., 6].ravel())[N * h * w // 2]
    # u7: tiny differences, many pixels within an ulp of the threshold.
    acts[..., 7] = np.float32(1.0) + rng.integers(-2, 3, (N, h, w)).astype(np.float32) * np.float32(2**-23)
    T[7] = np.float32(1.0)
    masks = np.zeros((N, C, S, S), bool)
    masks[0, 0] = True  # full
    masks[0, 1, :, 0] = masks[0, 1, :, -1] = True  # borders
    masks[1, 0, 3, 4] = True  # one pixel
    masks[1, 1, :, ::2] = True  # 1-pixel runs
    masks[2, 3, 0, :] = masks[2, 3, -1, :] = True  # top and bottom rows
    # image 3: every mask empty, though labelled (the union still counts its binary maps).
    cf = np.array([0, 0, 1, 1], np.int32)
    fam = np.array([0, 0, 1, 1], np.int32)
    lab = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)
    return acts, masks, lab, fam, cf, T, S, np.ones(N, bool)


def test_adversarial_all_paths_all_modes():
    data = adversarial_data()
    acts, masks, lab, fam, cf, T, S, valid = data
    # The cases are real: pixels equal to the threshold exist (and must not fire).
    up0 = ref.upsample(acts[0, :, :, 0], S)
    assert (up0 == T[0]).any() and (up0 > T[0]).any()
    assert not (ref.upsample(acts[0, :, :, 1], S) > T[1]).any()
    assert (ref.upsample(acts[0, :, :, 2], S) > T[2]).all()
    assert_all_paths_agree(data)


def test_ties_at_interpolated_pixels():
    """Thresholds equal to the value of an interior interpolated pixel: that pixel and its equals are
    OUT, neighbours an ulp above are IN. Any kernel whose float formula differs from the reference
    in the last bit (float32 lerp, a fused multiply-add) flips some of these pixels."""
    acts, masks, lab, fam, cf, _, S, valid = random_data(80, N=4, h=3, w=4, U=16, S=11)
    rng = np.random.default_rng(81)
    T = np.empty(16, np.float32)
    for u in range(16):
        up = ref.upsample(acts[u % 4, :, :, u], S)
        y, x = rng.integers(2, S - 2, size=2)
        T[u] = up[y, x]
    assert_all_paths_agree((acts, masks, lab, fam, cf, T, S, valid), modes=("labeled",))


def test_official_mode_hand_computed():
    """S = h = w = 2 (identity), one unit with T = 0.5, two concepts of one family, three images.

    B(0) = {(0,0)}, B(1) = {}, B(2) = {(0,0),(0,1)}.
    c0: labelled on images 0 (M = {(0,0),(1,0)}) and 1 (M = {(1,1)}).
    c1: labelled on images 1 (M = {(0,0)}) and 2 (M = {(0,1),(1,1)}).
    intersection: c0 = 1 (image 0), c1 = 1 (image 2).
    official union (labelled and B non-empty): c0 = |B0 | M| = 2; c1 = |B2 | M| = 3 (image 1 has empty B).
    labeled union: c0 = 2 + 1 = 3; c1 = 1 + 3 = 4.  family union: c0 = 2 + 1 + 2 = 5; c1 = 1 + 1 + 3 = 5.
    """
    acts = np.zeros((3, 2, 2, 1), np.float32)
    acts[0, 0, 0, 0] = 1
    acts[2, 0, :, 0] = 1
    masks = np.zeros((3, 2, 2, 2), bool)
    masks[0, 0, 0, 0] = masks[0, 0, 1, 0] = True
    masks[1, 0, 1, 1] = True
    masks[1, 1, 0, 0] = True
    masks[2, 1, 0, 1] = masks[2, 1, 1, 1] = True
    lab = np.array([[1, 0], [1, 1], [0, 1]], bool)
    data = (acts, masks, lab, np.zeros(3, np.int32), np.zeros(2, np.int32), np.array([0.5], np.float32), 2, np.ones(3, bool))
    expected_union = {"official": [[2, 3]], "labeled": [[3, 4]], "family": [[5, 5]]}
    for mode in MODES:
        for method in KERNELS:
            got = run(method, data, mode)
            np.testing.assert_array_equal(got["intersection"], [[1, 1]])
            np.testing.assert_array_equal(got["union"], expected_union[mode], err_msg=f"{method} {mode}")


@pytest.mark.parametrize("method", KERNELS)
def test_padding_rows_never_count(method):
    data = random_data(20, N=8)
    acts, masks, lab, fam, cf, T, S, valid = data
    valid = np.array([1, 1, 0, 1, 1, 1, 0, 0], bool)
    junk = acts.copy()
    junk[~valid] = 1e6  # padding rows full of "firing" values and full masks
    jmasks = masks.copy()
    jmasks[~valid] = True
    padded = (junk, jmasks, lab, fam, cf, T, S, valid)
    kept = (acts[valid], masks[valid], lab[valid], fam[valid], cf, T, S, np.ones(valid.sum(), bool))
    for mode in MODES:
        a = run(method, padded, mode, mesh=one_device())
        b = run("runs", kept, mode)
        np.testing.assert_array_equal(a["intersection"], b["intersection"])
        np.testing.assert_array_equal(a["union"], b["union"])


def test_one_and_eight_devices_bit_for_bit():
    assert len(jax.devices()) == 8, "conftest sets 8 virtual CPU devices"
    data = random_data(30, N=16, U=6)
    for mode in MODES:
        one = run("dense", data, mode, mesh=one_device(), batches=[slice(0, 8), slice(8, 16)])
        eight = run("dense", data, mode, mesh=all_devices(), batches=[slice(0, 8), slice(8, 16)])
        runs = run("runs", data, mode, mesh=all_devices())
        cells_one = run("cells", data, mode, mesh=one_device(), batches=[slice(0, 8), slice(8, 16)])
        cells_eight = run("cells", data, mode, mesh=all_devices(), batches=[slice(0, 8), slice(8, 16)])
        for k in ("intersection", "union"):
            np.testing.assert_array_equal(one[k], eight[k])
            np.testing.assert_array_equal(one[k], runs[k])
            np.testing.assert_array_equal(cells_one[k], runs[k])
            np.testing.assert_array_equal(cells_eight[k], runs[k])


@pytest.mark.parametrize("method", KERNELS)
def test_merge_of_two_halves_equals_one_pass(method):
    data = random_data(40, N=8)
    acts, masks, lab, fam, cf, T, S, valid = data
    t = IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", mesh=one_device(), method=method)
    a = t.update(t.init(), Batch(acts[:4], valid[:4], masks=masks[:4], labelled=lab[:4], family=fam[:4]))
    b = t.update(t.init(), Batch(acts[4:], valid[4:], masks=masks[4:], labelled=lab[4:], family=fam[4:]))
    whole = t.update(t.init(), Batch(acts, valid, masks=masks, labelled=lab, family=fam))
    merged = t.finalize(t.merge(a, b))
    for k in ("intersection", "union"):
        np.testing.assert_array_equal(merged[k], t.finalize(whole)[k])
    assert t.finalize(a)["union"].sum() > 0 and t.finalize(b)["union"].sum() > 0


def test_counts_are_int64_past_int32():
    """A state already near 2**31 keeps counting exactly (host int64 accumulation)."""
    data = random_data(50)
    acts, masks, lab, fam, cf, T, S, valid = data
    t = IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "labeled", method="runs")
    base = t.init()
    big = {k: v + (2**31 - 5) for k, v in base.items()}
    once = t.finalize(t.update(base, Batch(acts, valid, masks=masks, labelled=lab, family=fam)))
    after = t.finalize(t.update(big, Batch(acts, valid, masks=masks, labelled=lab, family=fam)))
    for k in ("intersection", "union"):
        np.testing.assert_array_equal(after[k] - (2**31 - 5), once[k])
        assert after[k].max() > 2**31 - 5 + 1


def test_state_round_trips_through_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint", reason="orbax is a declared dependency; import failed")
    data = random_data(60)
    acts, masks, lab, fam, cf, T, S, valid = data
    t = IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", method="runs")
    state = t.update(t.init(), Batch(acts, valid, masks=masks, labelled=lab, family=fam))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "tally", state)
        ckpt.wait_until_finished()
        restored = ckpt.restore(tmp_path / "tally", target=t.init())
    for k in ("intersection", "union"):
        np.testing.assert_array_equal(np.asarray(restored[k]), state[k])
        assert np.asarray(restored[k]).dtype == np.int64


def test_auto_picks_runs_on_cpu_and_bad_input_is_refused():
    data = random_data(70)
    acts, masks, lab, fam, cf, T, S, valid = data
    t = IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", mesh=all_devices())
    assert t.method == "runs"
    bad = acts.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(HndError, match="NaN or inf"):
        t.update(t.init(), Batch(bad, valid, masks=masks, labelled=lab, family=fam))
    with pytest.raises(HndError, match="iou mode"):
        IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "fancy")
    with pytest.raises(HndError, match="tally method"):
        IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", method="magic")
    with pytest.raises(ValueError, match="masks"):
        t.update(t.init(), Batch(acts, valid, masks=masks[:, :, :-1], labelled=lab, family=fam))
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", mesh=all_devices(), method="dense").update(t.init(), Batch(acts[:5], valid[:5], masks=masks[:5], labelled=lab[:5], family=fam[:5]))
