"""The cell-sparse tally (DESIGN.md §2b) and the float64 decision (DESIGN.md §2), against the others.

Every kernel ('cells', 'runs', 'dense') must give the per-pixel NumPy reference's counts
(tests/scoring/reference_tally.py, written from the spec) on: pixels within one float32 step of
T_u (the float64 decision), values equal to T at cell corners, constant maps, h == S, non-integer
scale factors (7 -> 128, 13 -> 224), 1x1, 1xw and hx1 maps, subnormals, padded batches, 1 vs 8
devices, a mixed-cell capacity far below the number of mixed cells (the overflow path), and
hypothesis-generated small cases with many ties.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import reference_tally as ref
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.errors import HndError
from hnd_jax.scoring.tally import IoUTally, auto_method, tally_factory_for
from hnd_jax.scoring.tally_cells import CellTally, axis_cells
from hnd_jax.sharding import make_data_mesh
from test_tally import MODES, random_data

KERNELS = ("cells", "runs", "dense")


def one_device():
    return make_data_mesh(devices=jax.devices()[:1])


def all_devices():
    return make_data_mesh(devices=jax.devices())


def counts(method, data, mode, mesh=None, capacity=None, batches=None):
    acts, masks, lab, fam, cf, T, S, valid = data
    t = IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, mode, mesh=mesh or one_device(), method=method, capacity=capacity)
    state = t.init()
    for sl in batches or [slice(0, acts.shape[0])]:
        state = t.update(state, Batch(acts[sl], valid[sl], masks=masks[sl], labelled=lab[sl], family=fam[sl]))
    return t.finalize(state), t


def assert_kernels_match_reference(data, modes=MODES, kernels=KERNELS, reference=True, **kw):
    acts, masks, lab, fam, cf, T, S, valid = data
    for mode in modes:
        if reference:
            want_i, want_u = ref.tally(acts, masks, lab, fam, cf, T, S, mode, valid)
        else:
            got, _ = counts("runs", data, mode)
            want_i, want_u = got["intersection"], got["union"]
        for method in kernels:
            got, _ = counts(method, data, mode, **kw)
            np.testing.assert_array_equal(got["intersection"], want_i, err_msg=f"{method} {mode} intersection")
            np.testing.assert_array_equal(got["union"], want_u, err_msg=f"{method} {mode} union")


def one_family_data(acts, T, S, masks=None, seed=0):
    """Wrap maps [N, h, w, U] in one family, every concept labelled, random masks (or the given)."""
    N = acts.shape[0]
    rng = np.random.default_rng(seed)
    if masks is None:
        masks = rng.random((N, 3, S, S)) < 0.4
    C = masks.shape[1]
    return (acts.astype(np.float32), masks, np.ones((N, C), bool), np.zeros(N, np.int32), np.zeros(C, np.int32),
            np.asarray(T, np.float32), S, np.ones(N, bool))


# ------------------------------------------------------------------ the float64 decision
def test_a_pixel_less_than_one_float32_step_above_T_fires():
    """1x2 map (1, next float32 after 1) to S=4: pixel x=1 is 0.75*1 + 0.25*(1 + 2**-23) = 1 + 2**-25,
    which float32 rounds to 1.0 == T (dropped by a rounding kernel); in float64 it lies above T."""
    one = np.float32(1.0)
    acts = np.array([one, np.nextafter(one, np.float32(2))], np.float32).reshape(1, 1, 2, 1)
    v = ref.upsample(acts[0, :, :, 0], 4)[0]
    assert v[1] == 1.0 + 2.0**-25 and np.float32(v[1]) == one  # the case is real
    import reference as plain_float64  # the other reference: plain float64 bilinear, its own operation order

    assert plain_float64.upsample(acts[0, :, :, 0], 4)[0, 1] > 1.0
    masks = np.zeros((1, 2, 4, 4), bool)
    masks[0, 0, :, 1] = True  # exactly the column of the pixel in question
    masks[0, 1, :, 0] = True  # the column at exactly T (never fires)
    data = one_family_data(acts, [one], 4, masks)
    assert_kernels_match_reference(data)
    for method in KERNELS:
        got, _ = counts(method, data, "family")
        assert got["intersection"][0, 0] == 4 and got["intersection"][0, 1] == 0, method


def test_values_within_one_float32_step_of_T_random():
    """T_u = float32(V) for an interpolated V: where float32 rounded V down, V > T fires in float64
    (a float32-rounding kernel would not count it); where it rounded up, V < T does not fire."""
    rng = np.random.default_rng(3)
    N, h, w, U, S = 3, 3, 4, 24, 13
    acts = rng.standard_normal((N, h, w, U)).astype(np.float32)
    T = np.empty(U, np.float32)
    above = below = 0
    for u in range(U):
        up = ref.upsample(acts[u % N, :, :, u], S)
        y, x = rng.integers(1, S - 1, size=2)
        T[u] = np.float32(up[y, x])
        above += int(up[y, x] > T[u])
        below += int(up[y, x] < T[u])
    assert above >= 3 and below >= 3, (above, below)
    data = one_family_data(acts, T, S, seed=4)
    # The float64 decision and a float32-rounded one differ on these data: the test can fail.
    ups = np.stack([[ref.upsample(acts[n, :, :, u], S) for u in range(U)] for n in range(N)])
    assert ((ups > T[None, :, None, None]) != (ups.astype(np.float32) > T[None, :, None, None])).sum() >= above
    assert_kernels_match_reference(data, modes=("labeled", "official"))


# ------------------------------------------------------------------ the cell grid
def test_cells_partition_the_pixels():
    for n, S in [(7, 128), (13, 224), (1, 5), (4, 4), (3, 10), (5, 2)]:
        c = axis_cells(n, S)
        inside = np.sort(c.pix[c.pix < S])
        np.testing.assert_array_equal(inside, np.arange(S))  # every pixel in exactly one cell
        assert c.count <= n + 1 and (c.length >= 1).all()
        assert ((c.w0 + c.w1)[c.pix < S] == 1).all()


# ------------------------------------------------------------------ adversarial inputs
def test_corners_equal_to_T_constant_maps_and_infinities():
    S, h, w = 9, 3, 3
    rng = np.random.default_rng(7)
    acts = rng.standard_normal((2, h, w, 7)).astype(np.float32)
    T = np.zeros(7, np.float32)
    acts[..., 0] = np.where(rng.random((2, h, w)) < 0.5, np.float32(0.25), np.float32(-1))  # corners at T or below
    T[0] = 0.25
    acts[..., 1] = np.where(rng.random((2, h, w)) < 0.5, np.float32(0.25), np.float32(3))  # corners at T or above
    T[1] = 0.25
    acts[..., 2] = np.float32(0.5)  # constant at T: never fires
    T[2] = 0.5
    acts[..., 3] = np.float32(0.5)  # constant just above T: always fires (every cell full)
    T[3] = np.nextafter(np.float32(0.5), np.float32(0))
    T[4], T[5] = np.inf, -np.inf
    T[6] = np.sort(acts[..., 6].ravel())[8]  # a raw value in the middle: ties at corners
    data = one_family_data(acts, T, S, seed=8)
    assert_kernels_match_reference(data)


@pytest.mark.parametrize("h,w,S", [(1, 1, 6), (1, 5, 11), (4, 1, 9), (6, 6, 6), (2, 3, 2)])
def test_degenerate_shapes(h, w, S):
    """1x1 and 1xw / hx1 maps (one cell row or column), h == S (one pixel per cell), S < h."""
    data = random_data(20 + h * w + S, N=4, h=h, w=w, S=S, U=4, q=0.6)
    assert_kernels_match_reference(data)


@pytest.mark.parametrize("h,S", [(7, 128), (13, 224)])
def test_non_integer_scale_factors(h, S):
    """7 -> 128 (18.3 pixels per input) and 13 -> 224 (17.2): cells of unequal sizes."""
    rng = np.random.default_rng(h)
    acts = rng.standard_normal((2, h, h, 2)).astype(np.float32)
    T = np.quantile(acts.reshape(-1, 2), 0.8, axis=0).astype(np.float32)
    yy, xx = np.mgrid[:S, :S] / S
    masks = np.stack([np.stack([(yy - rng.uniform()) ** 2 + (xx - rng.uniform()) ** 2 < rng.uniform(0.01, 0.1)
                                for _ in range(2)]) for _ in range(2)])
    data = one_family_data(acts, T, S, masks)
    assert_kernels_match_reference(data, modes=("family", "official"))


def test_subnormals_count_as_zero():
    rng = np.random.default_rng(11)
    acts = (rng.standard_normal((3, 3, 3, 4)) * 3e-38).astype(np.float32)
    acts[0, 0, 0, :] = np.float32(1e-45)
    acts[1, 1, 1, :] = np.float32(-1e-44)
    T = np.array([0.0, 1e-45, -1e-45, 2e-38], np.float32)  # two subnormal thresholds (count as 0)
    data = one_family_data(acts, T, 8, seed=12)
    assert_kernels_match_reference(data)


# ------------------------------------------------------------------ static shapes: the overflow path
@pytest.mark.parametrize("capacity", [1, 3, 64])
def test_capacity_smaller_than_the_mixed_cells_is_exact(capacity):
    data = random_data(31, N=6, h=4, w=4, U=6, S=14, q=0.7)
    want, _ = counts("runs", data, "official")
    got, t = counts("cells", data, "official", capacity=capacity)
    assert t.capacity == capacity and t.mixed_cells > 3 * 3  # several chunks for capacities 1 and 3
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_overflow_path_on_eight_devices_and_padding():
    assert len(jax.devices()) == 8
    data = list(random_data(32, N=16, h=3, w=3, U=5, S=10, q=0.7))
    valid = np.ones(16, bool)
    valid[[3, 9, 15]] = False
    data[0] = data[0].copy()
    data[0][~valid] = 1e6  # padding rows that would fire everywhere
    data[7] = valid
    data = tuple(data)
    want = ref.tally(*data[:5], data[5], data[6], "family", valid)
    for mesh in (one_device(), all_devices()):
        for capacity in (2, None):
            got, _ = counts("cells", data, "family", mesh=mesh, capacity=capacity, batches=[slice(0, 8), slice(8, 16)])
            np.testing.assert_array_equal(got["intersection"], want[0])
            np.testing.assert_array_equal(got["union"], want[1])


def test_one_compiled_program_for_batches_with_different_mixed_counts():
    """Batches with few and many mixed cells reuse one program (static shapes)."""
    from hnd_jax.scoring import tally_cells

    data = random_data(33, N=8, h=3, w=3, U=4, S=9, q=0.5)
    acts, masks, lab, fam, cf, T, S, valid = data
    t = CellTally(4, cf, S, (3, 3), T, "family", mesh=one_device(), capacity=2)
    state = t.init()
    quiet = np.full_like(acts[:4], -10.0)  # no mixed cell at all
    with jax.enable_x64(True):
        before = tally_cells.build_cell_kernel.cache_info().misses
        state = t.update(state, Batch(quiet, valid[:4], masks=masks[:4], labelled=lab[:4], family=fam[:4]))
        state = t.update(state, Batch(acts[4:], valid[4:], masks=masks[4:], labelled=lab[4:], family=fam[4:]))
        kernel = tally_cells.build_cell_kernel(t.mesh, 4, (3, 3), 4, len(cf), S, False, 2)
    assert tally_cells.build_cell_kernel.cache_info().misses - before == 1
    assert kernel._cache_size() == 1


# ------------------------------------------------------------------ fuzzing
VALUES = [-1.0, 0.0, 0.25, 0.5, 0.5000001, 1.0, 3.0, 1e-45]


#: A few shapes only: every new shape compiles a kernel (about a second), values are what is fuzzed.
FUZZ_SHAPES = [(1, 3, 5), (2, 2, 7), (3, 4, 9), (4, 2, 3), (2, 1, 1)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from(FUZZ_SHAPES), seed=st.integers(0, 2**16), mode=st.sampled_from(MODES))
def test_fuzz_small_cases_with_ties(shape, seed, mode):
    h, w, S = shape
    U, N = 3, 2
    rng = np.random.default_rng(seed)
    acts = rng.choice(np.array(VALUES, np.float32), size=(N, h, w, U))
    T = rng.choice(np.array(VALUES + [np.inf, -np.inf], np.float32), size=U)
    masks = rng.random((N, 2, S, S)) < rng.uniform(0, 1)
    data = one_family_data(acts, T, S, masks)
    want_i, want_u = ref.tally(*data[:5], T, S, mode, data[7])
    for method in ("cells", "runs"):
        got, _ = counts(method, data, mode, capacity=2)
        np.testing.assert_array_equal(got["intersection"], want_i, err_msg=method)
        np.testing.assert_array_equal(got["union"], want_u, err_msg=method)


# ------------------------------------------------------------------ selection
def test_selector_and_auto():
    data = random_data(34, N=4)
    acts, masks, lab, fam, cf, T, S, valid = data
    assert auto_method("cpu") == "runs" and auto_method("gpu") == "cells" and auto_method("tpu") == "cells"
    for kind in ("auto", "cells", "runs", "dense"):
        t = tally_factory_for(kind)(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", mesh=one_device())
        assert t.method == (auto_method("cpu") if kind == "auto" else kind)
    with pytest.raises(HndError, match="--tally 'magic'"):
        tally_factory_for("magic")
    with pytest.raises(HndError, match="capacity"):
        IoUTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family", method="cells", capacity=0)
    assert CellTally(acts.shape[-1], cf, S, acts.shape[1:3], T, "family").method == "cells"
