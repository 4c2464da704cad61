"""Significance (DESIGN.md §2c) against independent references: a plain NumPy loop over the same
permutations for the global test, scipy.stats.mannwhitneyu for the AUC test, and
scipy.stats.false_discovery_control for BH; calibration on noise and recovery of planted effects."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st

import reference as ref
from hnd_jax.scoring.significance import (
    TIE_TOLERANCE,
    auc_test,
    benjamini_hochberg,
    global_permutation_test,
    midranks,
    permutation_indices,
)


# ---------------------------------------------------------------- global permutation test


def loop_pvalues(image_max, group, G, lo, hi, n_perm, seed):
    """Reference: the same permutations, P recomputed per permutation by reference.global_probs."""
    observed, _ = ref.global_probs(image_max, group, G, lo, hi, 0.5)
    perms = permutation_indices(len(group), n_perm, seed)
    count = np.zeros_like(observed)
    total = np.zeros_like(observed)
    for k in range(n_perm):
        p, _ = ref.global_probs(image_max, group[perms[k]], G, lo, hi, 0.5)
        count += p >= observed - TIE_TOLERANCE
        total += p
    return observed, (1 + count) / (1 + n_perm), observed - total / n_perm


def test_permutations_are_seeded_permutations():
    a = permutation_indices(9, 20, [3, 1])
    assert a.shape == (20, 9)
    np.testing.assert_array_equal(np.sort(a, axis=1), np.tile(np.arange(9), (20, 1)))
    np.testing.assert_array_equal(a, permutation_indices(9, 20, [3, 1]))
    assert not np.array_equal(a, permutation_indices(9, 20, [3, 2]))
    assert len({tuple(r) for r in a}) > 15  # not one permutation repeated


@pytest.mark.parametrize(
    "G,sizes,kind,block",
    [
        (2, [7, 5], "normal", None),
        (4, [6, 1, 4, 5], "normal", 7),  # a group with one image; a block size that leaves padding
        (4, [3, 3, 0, 4], "ties", 5),  # an empty group; ties everywhere
        (2, [1, 9], "ties", None),
    ],
)
def test_global_pvalues_equal_numpy_loop(G, sizes, kind, block):
    rng = np.random.default_rng(sum(sizes) + G)
    group = rng.permutation(np.repeat(np.arange(G), sizes))
    n, U = group.size, 6
    m = rng.normal(size=(n, U)).astype(np.float32)
    if kind == "ties":
        m = np.round(m).astype(np.float32)
    m[:, 0] = 1.5  # constant unit
    m[:, 1] += 1.5 * (group == 0)  # an effect
    lo, hi = m.min(0), m.max(0)
    n_perm = 60
    observed, want_p, want_effect = loop_pvalues(m, group, G, lo, hi, n_perm, [4, 2])
    got_p, got_effect = global_permutation_test(m, group, G, lo, hi, observed, n_perm, [4, 2], block=block)
    np.testing.assert_array_equal(got_p, want_p)
    np.testing.assert_allclose(got_effect, want_effect, atol=1e-6)
    np.testing.assert_array_equal(got_p[0], np.ones(G))  # constant unit: p = 1, not NaN
    for g in np.flatnonzero(np.asarray(sizes) == 0):
        np.testing.assert_array_equal(got_p[:, g], 1.0)  # empty group never beats P = 0... and ties it
    assert got_p.min() >= 1 / (1 + n_perm) and np.isfinite(got_effect).all()


def test_global_test_rejects_bad_arguments():
    m = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="num_permutations"):
        global_permutation_test(m, np.array([0, 0, 1, 1]), 2, m.min(0), m.max(0), np.zeros((2, 2)), 0, 0)
    with pytest.raises(ValueError, match="expected"):
        global_permutation_test(m, np.array([0, 1, 1]), 2, m.min(0), m.max(0), np.zeros((2, 2)), 5, 0)


def _global_noise_and_planted(G, seed, planted_units=(), n_perm=199):
    rng = np.random.default_rng(seed)
    n, U = 48, 300
    group = rng.permutation(np.repeat(np.arange(G), n // G))
    m = rng.normal(size=(n, U)).astype(np.float32)
    for u in planted_units:
        m[:, u] += 2.0 * (group == 0)
    observed, _ = _observed(m, group, G)
    p, effect = global_permutation_test(m, group, G, m.min(0), m.max(0), observed, n_perm, seed)
    return p, effect


def _observed(m, group, G):
    from hnd_jax.scoring.hierarchy import global_probabilities

    return global_probabilities(m, group, G, m.min(0), m.max(0), 0.5, dtype=np.float64)


@pytest.mark.parametrize("G", [2, 4])
def test_global_noise_is_calibrated(G):
    p, _ = _global_noise_and_planted(G, seed=10 + G)
    U = p.shape[0]
    # Units are independent under noise: the count of p <= alpha for one group is at most
    # Binomial(U, alpha) (the p-value is valid: (1 + 9) / 200 = 0.05 is attainable). Four standard
    # deviations either side: a p-value without the "+1", one-sided the wrong way round, or stuck
    # at 1 breaks it.
    alpha = 0.05
    for g in range(G):
        k = int((p[:, g] <= alpha).sum())
        sd = np.sqrt(U * alpha * (1 - alpha))
        assert U * alpha - 4 * sd <= k <= U * alpha + 4 * sd, (g, k)
    _, sig = benjamini_hochberg(p, alpha)
    assert sig.mean() <= alpha  # under the complete null BH rejects (almost) nothing


def test_global_planted_effects_are_found():
    planted = list(range(0, 300, 10))
    # BH can reject k of m tests only if some p <= k alpha / m: with 1200 tests and 30 planted,
    # p must reach 0.00125, so the test needs more than 800 permutations (min p = 1 / (1 + n_perm)).
    p, effect = _global_noise_and_planted(4, seed=3, planted_units=planted, n_perm=1999)
    _, sig = benjamini_hochberg(p, 0.05)
    assert sig[planted, 0].all()
    others = np.setdiff1d(np.arange(300), planted)
    assert sig[others].sum() <= 3
    assert effect[planted, 0].min() > 3 * np.abs(effect[others]).mean()


# ---------------------------------------------------------------- AUC / Mann-Whitney


def test_midranks_match_scipy():
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=(40, 5)), 1)
    v[:, 0] = 2.0
    ranks, tie = midranks(v)
    np.testing.assert_array_equal(ranks, st.rankdata(v, axis=0, method="average"))
    for u in range(5):
        t = np.unique(v[:, u], return_counts=True)[1].astype(float)
        assert tie[u] == pytest.approx((t**3 - t).sum())


def _local_case(seed, ties=False):
    """Three local families: 0 has concepts 0-2, 1 has concept 3 (labelled on every image: untestable)
    and 4 (one image), 2 has concept 5 (no image: empty)."""
    rng = np.random.default_rng(seed)
    N, U = 60, 7
    family = np.repeat([0, 1, 2], [30, 20, 10])
    concept_family = np.array([0, 0, 0, 1, 1, 2])
    lab = np.zeros((N, 6), bool)
    lab[:30, :3] = rng.random((30, 3)) < 0.4
    lab[30:50, 3] = True
    lab[35, 4] = True
    m = rng.normal(size=(N, U))
    if ties:
        m = np.round(m)
    m[:, 0] = 3.0  # constant unit
    m[:30, 1] += 1.0 * lab[:30, 0]  # an effect for concept 0
    return m.astype(np.float32), lab, family, concept_family


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_auc_and_pvalues_match_scipy(seed, ties):
    m, lab, family, concept_family = _local_case(seed, ties)
    auc, p, tested = auc_test(m, lab, family, concept_family)
    U, C = auc.shape
    for c in range(C):
        rows = family == concept_family[c]
        x1, x0 = m[rows & lab[:, c]], m[rows & ~lab[:, c]]
        n1, n0 = len(x1), len(x0)
        assert tested[:, c].all() == (n1 > 0 and n0 > 0)
        if not tested[0, c]:
            assert np.isnan(auc[:, c]).all() and (p[:, c] == 1).all()
            continue
        for u in range(U):
            res = st.mannwhitneyu(x1[:, u].astype(np.float64), x0[:, u].astype(np.float64),
                                  alternative="greater", method="asymptotic")
            assert auc[u, c] == pytest.approx(res.statistic / (n1 * n0), abs=1e-12)
            want = 1.0 if np.isnan(res.pvalue) else res.pvalue
            assert p[u, c] == pytest.approx(want, rel=1e-9, abs=1e-300), (u, c)
    assert tested[:, 4].all() and not tested[:, 3].any() and not tested[:, 5].any()
    np.testing.assert_array_equal(p[0], 1.0)  # constant unit
    np.testing.assert_array_equal(auc[0, tested[0]], 0.5)
    assert not np.isnan(p).any()


@pytest.mark.parametrize("block_units", [1, 3, 6])
def test_auc_in_blocks_of_units_is_bit_identical(block_units, monkeypatch):
    # auc_test ranks the units in blocks (bounded memory); blocks that do not divide U (7), over
    # families of 30, 20 and 10 images, must give the one-block result bit for bit.
    import hnd_jax.scoring.significance as sig

    m, lab, family, concept_family = _local_case(1, ties=True)
    whole = auc_test(m, lab, family, concept_family)
    monkeypatch.setattr(sig, "AUC_BLOCK_VALUES", 30 * block_units)  # the largest family: block_units per block
    blocked = sig.auc_test(m, lab, family, concept_family)
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)


def test_auc_all_tied_gives_p_one():
    m = np.ones((10, 2), np.float32)
    lab = np.zeros((10, 1), bool)
    lab[:4] = True
    auc, p, tested = auc_test(m, lab, np.zeros(10, int), np.zeros(1, int))
    assert tested.all() and (auc == 0.5).all() and (p == 1).all()


@pytest.mark.parametrize("ties", [False, True])
def test_auc_noise_is_calibrated_and_planted_found(ties):
    rng = np.random.default_rng(7)
    N, U, C = 400, 250, 4
    lab = rng.random((N, C)) < 0.3
    m = rng.normal(size=(N, U))
    if ties:
        m = np.round(m * 2)  # about 10 distinct values: ties everywhere
    planted = np.arange(0, U, 25)
    m[:, planted] += 1.5 * lab[:, [0]]
    auc, p, tested = auc_test(m.astype(np.float32), lab, np.zeros(N, int), np.zeros(C, int))
    alpha = 0.05
    null = np.ones((U, C), bool)
    null[planted, 0] = False
    k, n = int((p[null] <= alpha).sum()), int(null.sum())
    sd = np.sqrt(n * alpha * (1 - alpha))
    # The continuity correction makes the test slightly conservative; a two-sided p, a missing tie
    # correction with ties, or a z without the square root would leave this band.
    assert n * alpha - 4 * sd <= k <= n * alpha + 4 * sd, k
    _, sig = benjamini_hochberg(p, alpha, tested)
    assert sig[planted, 0].all()
    assert sig[null].mean() <= alpha
    assert (auc[planted, 0] > 0.6).all() and abs(auc[null].mean() - 0.5) < 0.01


# ---------------------------------------------------------------- Benjamini-Hochberg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bh_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.random(50) ** 3, [0.0, 1.0, 0.01, 0.01, 0.01]]).reshape(5, 11)
    adj, sig = benjamini_hochberg(p, 0.05)
    np.testing.assert_allclose(adj, st.false_discovery_control(p.ravel(), method="bh").reshape(p.shape), rtol=1e-12)
    np.testing.assert_array_equal(sig, adj <= 0.05)
    tested = rng.random(p.shape) < 0.6
    adj, sig = benjamini_hochberg(p, 0.05, tested)
    np.testing.assert_allclose(adj[tested], st.false_discovery_control(p[tested], method="bh"), rtol=1e-12)
    assert (adj[~tested] == 1).all() and not sig[~tested].any()
    assert benjamini_hochberg(np.ones((0, 3)), 0.05)[0].shape == (0, 3)


@pytest.mark.parametrize("n,U,G", [(258, 45, 4), (78, 59, 2)])
def test_permutation_test_sharded_over_8_devices_equals_one(n, U, G):
    """The permutations of a block are sharded over the mesh: p-values and effect sizes identical
    on 1 and 8 devices (exact counts; per-position partial sums added on the host)."""
    import jax

    from hnd_jax.scoring.hierarchy import global_probabilities
    from hnd_jax.sharding import make_data_mesh

    assert len(jax.devices()) == 8, "conftest sets 8 virtual CPU devices"
    rng = np.random.default_rng(n)
    m = rng.normal(size=(n, U)).astype(np.float32)
    m[:, : U // 3] = np.round(m[:, : U // 3])  # ties
    group = rng.integers(0, G, size=n)
    lo, hi = m.min(0), m.max(0)
    p64, _ = global_probabilities(m, group, G, lo, hi, 0.3, dtype=np.float64)
    one = global_permutation_test(m, group, G, lo, hi, p64, 300, [1, 2], mesh=make_data_mesh(1))
    eight = global_permutation_test(m, group, G, lo, hi, p64, 300, [1, 2], mesh=make_data_mesh(8))
    np.testing.assert_array_equal(one[0], eight[0])
    np.testing.assert_array_equal(one[1], eight[1])


@pytest.mark.parametrize("chunk_values,devices", [(64 * 13, 1), (3 * 64 * 13, 1), (2 * 64 * 13, 8)])
def test_permutations_drawn_in_chunks_give_the_same_results(monkeypatch, chunk_values, devices):
    """Memory does not grow with --permutations: the labels are drawn and counted a chunk of blocks
    at a time. Chunks of 1, 2 or 3 blocks (a padded last chunk) give bit for bit what one chunk gives,
    on 1 and 8 devices, and the p-values of the NumPy loop over permutation_indices."""
    import jax

    from hnd_jax.scoring import significance
    from hnd_jax.sharding import make_data_mesh

    rng = np.random.default_rng(chunk_values)
    G, n, U, n_perm = 3, 13, 5, 64 * 7 - 5  # 7 blocks of 64, the last one padded
    group = rng.permutation(np.arange(n) % G)
    m = rng.normal(size=(n, U)).astype(np.float32)
    m[:, 1] += group == 0
    lo, hi = m.min(0), m.max(0)
    observed, want_p, want_effect = loop_pvalues(m, group, G, lo, hi, n_perm, [5, 1])
    mesh = make_data_mesh(devices) if devices > 1 else None
    whole = global_permutation_test(m, group, G, lo, hi, observed, n_perm, [5, 1], block=64, mesh=mesh)
    calls = []
    kernel = significance._permutation_counts
    counted = lambda *a, **k: calls.append(a[1].shape) or kernel(*a, **k)  # noqa: E731
    monkeypatch.setattr(significance, "_permutation_counts", counted)
    monkeypatch.setattr(significance, "CHUNK_VALUES", chunk_values)
    chunked = global_permutation_test(m, group, G, lo, hi, observed, n_perm, [5, 1], block=64, mesh=mesh)
    blocks_per_chunk = {1: 1, 3: 3, 2: 2}[chunk_values // (64 * 13)]
    assert len(calls) == -(-7 // blocks_per_chunk) > 1 and calls[0][0] == blocks_per_chunk, calls
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_array_equal(chunked[0], want_p)
    np.testing.assert_allclose(chunked[1], want_effect, atol=1e-6)
    assert len(jax.devices()) == 8
