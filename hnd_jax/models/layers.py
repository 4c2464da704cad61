"""Small NNX building blocks that mirror PyTorch modules one to one.

Why our own blocks: a layer is named by its module path (``layer4.2.conv1``), exactly as a PyTorch
user sees it in ``named_modules()``, and :mod:`hnd_jax.models.capture` records the output of every
module's ``__call__``. So every PyTorch module that produces an activation someone may want to
dissect (ReLU, pooling, softmax, ``nn.Sequential``) is a module here too, with the same name.

Layout: activations are NHWC inside (XLA's preferred layout on every backend); PyTorch is NCHW.
The weight layouts are converted by :mod:`hnd_jax.models.torch_mapping`.

Conventions shared by all architectures:
- convolutions are :class:`flax.nnx.Conv` with explicit PyTorch-style padding (never ``'SAME'``);
- BatchNorm is :class:`flax.nnx.BatchNorm` built in inference mode (running statistics); switch a
  model to training with ``nnx.view(model, use_running_average=False)``;
- a Linear fed by a flattened conv output carries ``torch_input_layout`` (see
  :func:`mark_flattened_input`) so the weight mapper can permute its input features.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnd_jax.errors import HndError

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def torch_default_kernel_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """PyTorch's default Conv/Linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn with numpy.

    Why: (1) a randomly initialised model behaves like its PyTorch twin (the demo trains like one);
    (2) drawing with jax.random compiles one RNG kernel per distinct weight shape, which made
    building InceptionResnetV1 take ~20 s on a CPU; numpy seeded from the jax key takes well under
    a second and is still reproducible from ``nnx.Rngs``. fan_in = prod(shape[:-1]) (HWI or I).
    Inside a jax trace (a model built under jit) it falls back to ``jax.random.uniform``.
    """
    shape = tuple(int(d) for d in shape)
    bound = 1.0 / math.sqrt(max(math.prod(shape[:-1]), 1))
    if isinstance(key, jax.core.Tracer):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return jax.device_put(draw_numpy(key, shape, dtype, lambda rng, n: rng.uniform(-bound, bound, n)))


#: float64 values drawn at a time by :func:`draw_numpy` (8 MiB of scratch, whatever the parameter's size).
DRAW_CHUNK = 1 << 20


def draw_numpy(
    key: jax.Array, shape: Sequence[int], dtype: Any, draw: Callable[[np.random.Generator, int], np.ndarray]
) -> np.ndarray:
    """A parameter of ``shape`` and ``dtype`` filled with ``draw(rng, n)`` (n float64 values each call)
    from ``np.random.default_rng`` seeded with the key's data, :data:`DRAW_CHUNK` values at a time.

    The values are those of one float64 draw of the whole shape cast to ``dtype`` (what the
    initialisers did before): a Generator's ``uniform`` and ``normal`` take one value after the other
    from one stream, however the draws are split, and each is cast alone. Only the parameter's dtype
    is ever held in full: a float64 copy of a 2048 x 2,097,152 head was 32 GiB. Callers hand the
    result to ``jax.device_put`` (one device copy; ``jnp.asarray`` made a second, transient one).
    """
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    rng = np.random.default_rng(seed)
    out = np.empty(math.prod(shape), np.dtype(dtype))
    for start in range(0, out.size, DRAW_CHUNK):
        stop = min(out.size, start + DRAW_CHUNK)
        out[start:stop] = draw(rng, stop - start)
    return out.reshape(tuple(shape))


def _numpy_constant(value: float):
    """An initializer returning a constant array built in numpy (no per-shape XLA compilation)."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jnp.asarray(np.full(tuple(shape), value, np.dtype(dtype)))

    return init


zeros_init = _numpy_constant(0.0)
ones_init = _numpy_constant(1.0)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    bias: bool = True,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """``nn.Conv2d(in, out, kernel_size, stride, padding, bias)`` as an NNX conv (kernel HWIO)."""
    ph, pw = _pair(padding)
    return nnx.Conv(
        in_channels,
        out_channels,
        _pair(kernel_size),
        strides=_pair(stride),
        padding=((ph, ph), (pw, pw)),
        use_bias=bias,
        kernel_init=torch_default_kernel_init,
        bias_init=zeros_init,
        rngs=rngs,
    )


def batch_norm(num_features: int, *, eps: float = 1e-5, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """``nn.BatchNorm2d/1d(num_features, eps, momentum=0.1)`` in inference mode.

    PyTorch's momentum 0.1 weighs the new batch; Flax's momentum weighs the old running value,
    hence 0.9. Only matters when a model is trained (the demo CNN).
    """
    return nnx.BatchNorm(
        num_features, use_running_average=True, momentum=0.9, epsilon=eps,
        scale_init=ones_init, bias_init=zeros_init, rngs=rngs,
    )


def linear(in_features: int, out_features: int, *, bias: bool = True, rngs: nnx.Rngs) -> nnx.Linear:
    """``nn.Linear(in, out, bias)`` (kernel stored [in, out])."""
    return nnx.Linear(
        in_features, out_features, use_bias=bias,
        kernel_init=torch_default_kernel_init, bias_init=zeros_init, rngs=rngs,
    )


def mark_flattened_input(layer: nnx.Linear, torch_order: str, hwc: tuple[int, int, int]) -> nnx.Linear:
    """Record how PyTorch flattened this Linear's input, so the mapper can permute its weight.

    ``hwc`` is the (H, W, C) shape of the conv activation that is flattened; ``torch_order`` is the
    axis order PyTorch's flatten saw, as letters: ``"CHW"`` for ``x.view(N, -1)`` of an NCHW tensor,
    ``"WHC"`` for MTCNN's ``x.permute(0, 3, 2, 1)`` first. Our models always flatten NHWC, i.e. in
    ``"HWC"`` order. Stored as a static (hashable) attribute of the Linear module.
    """
    if sorted(torch_order) != ["C", "H", "W"]:
        raise ValueError(f"torch_order must be a permutation of 'CHW', got {torch_order!r}")
    h, w, c = (int(v) for v in hwc)
    if layer.in_features != h * w * c:
        raise ValueError(f"Linear has {layer.in_features} inputs, flatten of {hwc} gives {h * w * c}")
    layer.torch_input_layout = (torch_order, (h, w, c))
    return layer


class Sequential(nnx.Module):
    """``nn.Sequential``: children named ``"0"``, ``"1"``, ... so paths read ``layer4.2.conv1``.

    Why not ``nnx.Sequential``/``nnx.List``: the former nests children under ``.layers`` (the path
    would not be PyTorch's), and integer keys next to the ``__call__`` key of a callable list break
    the sorting of ``nnx.capture``'s state in flax 0.12.
    """

    def __init__(self, *modules: nnx.Module):
        self.num_children = len(modules)
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __len__(self) -> int:
        return self.num_children

    def __getitem__(self, index: int) -> nnx.Module:
        if not -self.num_children <= index < self.num_children:
            raise IndexError(index)
        return getattr(self, str(index % self.num_children))

    def __iter__(self):
        return (self[i] for i in range(self.num_children))

    def __call__(self, x: jax.Array) -> jax.Array:
        for module in self:
            x = module(x)
        return x


class ReLU(nnx.Module):
    """``nn.ReLU`` (a module so that its output has a name, as in PyTorch)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class PReLU(nnx.Module):
    """``nn.PReLU(num_parameters)``: one slope per channel (the last axis here)."""

    def __init__(self, num_parameters: int, *, init: float = 0.25):
        self.weight = nnx.Param(jnp.asarray(np.full((num_parameters,), init, np.float32)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(x >= 0, x, x * self.weight[...])


class Softmax(nnx.Module):
    """``nn.Softmax(dim=1)`` of an NCHW/NC tensor: the channel axis, which is the last axis here."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(x, axis=-1)


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output length (``torch.nn.MaxPool2d`` docs), including its ceil-mode rule.

    With ``ceil_mode`` a last, partial window is kept, unless it would start inside the right
    padding (PyTorch drops that one).
    """
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    if ceil_mode:
        out = math.ceil(span / stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return span // stride + 1


class MaxPool2d(nnx.Module):
    """``nn.MaxPool2d(kernel_size, stride, padding, ceil_mode)`` on NHWC, exactly.

    Padding is ``-inf`` (as in PyTorch); ceil mode is emulated by extra ``-inf`` padding on the
    bottom/right so that the last partial window is computed over its real pixels only.
    """

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False):
        self.kernel_size = int(kernel_size)
        self.stride = int(stride if stride is not None else kernel_size)
        self.padding = int(padding)
        self.ceil_mode = bool(ceil_mode)

    def _pads(self, size: int) -> tuple[int, int]:
        out = pool_output_size(size, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        needed = (out - 1) * self.stride + self.kernel_size  # input length the windows cover
        return self.padding, max(needed - size - self.padding, 0)

    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        pads = ((0, 0), self._pads(x.shape[1]), self._pads(x.shape[2]), (0, 0))
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), pads)


class AdaptiveAvgPool2d(nnx.Module):
    """``nn.AdaptiveAvgPool2d(1)``: global average, keeps the 1x1 spatial axes ([N, 1, 1, C])."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2), keepdims=True)


def flatten_nhwc(x: jax.Array) -> jax.Array:
    """Flatten [N, H, W, C] -> [N, H*W*C] (H, W, C order; see :func:`mark_flattened_input`)."""
    return x.reshape(x.shape[0], -1)


#: Why a model with a flattening head takes one input size only (the default ``fixed_by`` below).
FLATTENING_HEAD = "its head flattens a fixed feature map"


def check_image_batch(x: jax.Array, model_name: str, *, channels: int = 3, size: Sequence[int] | None = None,
                      fixed_by: str = FLATTENING_HEAD) -> None:
    """Raise a one-line HndError unless ``x`` is an NHWC batch the model can take.

    Catches the usual mistakes early, at trace time: NCHW input, a single image without the batch
    axis, a wrong size for a model built for one input size (``size``, (H, W) pixels). ``fixed_by``
    says why the size is fixed, in the error: a flattening head by default; a vision transformer
    passes its fixed patch grid and position embeddings.
    """
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[-1] != channels:
        raise HndError(
            f"{model_name} expects an NHWC float batch [N, H, W, {channels}], got shape {shape}"
        )
    if size is not None and tuple(shape[1:3]) != tuple(size):
        raise HndError(
            f"{model_name} was built for {size[0]}x{size[1]} inputs ({fixed_by}), got {shape[1]}x{shape[2]}"
        )
