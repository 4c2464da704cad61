"""Bilinear upsampling of activation maps with ONE float formula shared by every tally path.

The spec (DESIGN.md §2) is ``B_u(x) = [up(A_u(x)) > T_u]`` with ``up`` bilinear to ``S x S``, half-pixel
centres and edge clamping (OpenCV ``INTER_LINEAR``, ``jax.image.resize(..., 'linear')`` when
enlarging). A pixel whose value lands within one rounding of ``T_u`` is decided by the last bit of
the arithmetic, so the dense (XLA) path, the run-length (NumPy) path and the tests' reference must
round identically. They do not if the formula is evaluated in float32: XLA contracts ``a*w + b``
into a fused multiply-add on CPUs and GPUs that have one, NumPy never does (measured here: 21% of
random float32 ``a + f*d`` differ in the last bit between ``jax.jit`` and NumPy).

The formula, per axis and for output index ``o`` of ``S`` from ``n`` inputs::

    src = (o + 0.5) * n / S - 0.5                        (float64)
    k   = floor(src);  i0 = clip(k, 0, n-1);  i1 = clip(k + 1, 0, n-1)
    w1  = round(src - k, to multiples of 2**-24);  w0 = 1 - w1      (both exact in 24 bits)
    lerp64(a, b) = float64(w0) * float64(a) + float64(w1) * float64(b)     (one float64 rounding)

applied along rows first, rounded to float32 (``R[y, j] = float32(lerp64(A[i0(y), j], A[i1(y), j]))``),
then along columns, **kept in float64** (``V[y, x] = lerp64(R[y, i0(x)], R[y, i1(x)])``), and a
pixel fires when ``V > float64(T_u)`` (DESIGN.md §2: the decision is made on the float64 value of
the interpolation, never after rounding it to float32; a final float32 rounding would drop pixels
lying less than one float32 step above ``T_u``, which the published code, resizing float64 maps,
counts). Both stages multiply a weight on the 2**-24 grid by a float32 value, so both products
are exact in float64 and the single float64 rounding of the sum is the same with or without a
fused multiply-add: every backend gives the same bits, and the decision is deterministic.
Consequences the tests rely on: a constant map stays exactly constant (``w0*c + w1*c == c``),
clamped borders and ``h == S`` (identity) reproduce raw values exactly, ``V`` is monotone in
``x`` between two column centres (what lets the run-length path search instead of scan), and
every ``V`` of a cell lies between the smallest and largest of its four raw corners (what lets
the cell-sparse path skip cells, DESIGN.md §2b).

Float32 subnormals (magnitude below ``2**-126``) count as zero everywhere: in the raw maps, in
interpolated values (the float32 rows, and final float64 values below ``2**-126`` in magnitude)
and in thresholds. XLA's CPU and GPU backends flush them (FTZ/DAZ), NumPy does
not, so the rule is applied explicitly on both sides; no real activation is that small.

**TPUs** have no native float64: under ``jax_enable_x64`` XLA rewrites float64 arithmetic on a TPU
into pairs of float32 (an emulation with float32's exponent range and its own rounding, not IEEE
binary64), so the last-bit argument above does not hold there: a pixel within about one float64
step of ``T_u``, or a map with values near the float32 underflow, may be decided differently than
on a CPU or GPU. The cell-sparse tally confines that arithmetic to its mixed cells
(``tally_cells.py``); ``benchmarks/check_accelerator.py`` compares a device's counts with the
CPU's, which is the check to run before trusting a TPU's counts bit for bit.

Compared with ``jax.image.resize(method='linear')`` (float32 triangle-kernel weights, normalised)
the values agree to a few float32 ulps; they are not bit-identical, which is why the engine does
not use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

#: The interpolation weights are rounded to this grid so that weight x float32 is exact in float64.
WEIGHT_BITS = 24


@dataclass(frozen=True)
class AxisWeights:
    """Where output index ``o`` reads from (``i0``, ``i1``) and with which weights (``w0 + w1 == 1``).

    i0, i1: int32 [S]; w0, w1: float64 [S] (each a multiple of 2**-24, exact in float32 too).
    """

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray

    @property
    def size(self) -> int:
        return int(self.i0.shape[0])


def axis_weights(n_in: int, size: int) -> AxisWeights:
    """Half-pixel-centre, edge-clamped linear weights from ``n_in`` inputs to ``size`` outputs."""
    if n_in < 1 or size < 1:
        raise ValueError(f"cannot resample {n_in} -> {size} positions")
    o = np.arange(size, dtype=np.float64)
    src = (o + 0.5) * n_in / size - 0.5
    k = np.floor(src)
    frac = np.round((src - k) * 2.0**WEIGHT_BITS) / 2.0**WEIGHT_BITS
    # frac may round up to exactly 1.0: then the sample is the next input, with weight 1.
    k = k + (frac >= 1.0)
    frac = np.where(frac >= 1.0, 0.0, frac)
    i0 = np.clip(k, 0, n_in - 1).astype(np.int32)
    i1 = np.clip(k + 1, 0, n_in - 1).astype(np.int32)
    return AxisWeights(i0=i0, i1=i1, w0=1.0 - frac, w1=frac)


#: Smallest normal float32; anything smaller in magnitude is flushed to zero (see the module docstring).
TINY = np.float32(np.finfo(np.float32).tiny)


def flush_np(x: np.ndarray) -> np.ndarray:
    """float32 with subnormals replaced by zero (what XLA's flush-to-zero does)."""
    x = np.asarray(x, np.float32)
    return np.where(np.abs(x) < TINY, np.float32(0), x)


def flush64_np(v: np.ndarray) -> np.ndarray:
    """float64 values below the smallest normal float32 in magnitude replaced by zero."""
    v = np.asarray(v, np.float64)
    return np.where(np.abs(v) < np.float64(TINY), 0.0, v)


def lerp64_np(a: np.ndarray, b: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """The shared formula's final stage in NumPy: ``flush(w0*a + w1*b)`` in float64 (not rounded to float32)."""
    v = np.asarray(w0, np.float64) * np.asarray(a, np.float64) + np.asarray(w1, np.float64) * np.asarray(b, np.float64)
    return flush64_np(v)


def lerp_np(a: np.ndarray, b: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """The shared formula's row stage in NumPy: ``flush(float32(w0*a + w1*b))`` with float64 products and sum."""
    v = np.asarray(w0, np.float64) * np.asarray(a, np.float64) + np.asarray(w1, np.float64) * np.asarray(b, np.float64)
    return flush_np(v.astype(np.float32))


def upsample_rows_np(maps: np.ndarray, size: int) -> np.ndarray:
    """First stage in NumPy: ``[..., h, w]`` float32 -> ``[..., S, w]`` float32 (interpolate along h)."""
    ay = axis_weights(maps.shape[-2], size)
    top = maps[..., ay.i0, :]
    bot = maps[..., ay.i1, :]
    return lerp_np(top, bot, ay.w0[:, None], ay.w1[:, None])


def upsample_np(maps: np.ndarray, size: int) -> np.ndarray:
    """Both stages in NumPy: ``[..., h, w]`` float32 -> ``[..., S, S]`` float64, the values compared with T."""
    rows = upsample_rows_np(flush_np(maps), size)
    ax = axis_weights(maps.shape[-1], size)
    return lerp64_np(rows[..., ax.i0], rows[..., ax.i1], ax.w0, ax.w1)


def upsample_nhwc_jax(acts: jax.Array, size: int) -> jax.Array:
    """Both stages in JAX on NHWC maps: ``[B, h, w, U]`` float32 -> ``[B, S, S, U]`` float64.

    The float64 result is the value the tally compares with ``float64(T_u)`` (module docstring).

    Must be traced and run under ``jax.enable_x64(True)`` (the formula needs float64); the tally
    wraps its jitted kernels accordingly.
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError("upsample_nhwc_jax needs jax.enable_x64(True): the shared formula is float64")
    _, h, w, _ = acts.shape
    ay = axis_weights(h, size)
    ax = axis_weights(w, size)
    a = _flush_jax(acts.astype(jnp.float32)).astype(jnp.float64)
    wy0 = jnp.asarray(ay.w0)[None, :, None, None]
    wy1 = jnp.asarray(ay.w1)[None, :, None, None]
    rows = _flush_jax((wy0 * a[:, ay.i0] + wy1 * a[:, ay.i1]).astype(jnp.float32)).astype(jnp.float64)  # [B, S, w, U]
    wx0 = jnp.asarray(ax.w0)[None, None, :, None]
    wx1 = jnp.asarray(ax.w1)[None, None, :, None]
    return flush64_jax(wx0 * rows[:, :, ax.i0] + wx1 * rows[:, :, ax.i1])


def _flush_jax(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(x) < TINY, jnp.float32(0), x)


def flush64_jax(x: jax.Array) -> jax.Array:
    """float64 values below the smallest normal float32 in magnitude replaced by zero."""
    return jnp.where(jnp.abs(x) < jnp.float64(TINY), jnp.float64(0), x)
