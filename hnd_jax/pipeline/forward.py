"""ONE jit-compiled, data-sharded forward per batch that returns every requested layer.

The model is split once into its graph definition and its state (``nnx.split``); the state is
replicated over the mesh and the batch is sharded over the ``data`` axis, so XLA runs the forward on
all local devices. Every batch is padded to the same size (a multiple of the device count) so the
function compiles once per run and per image size, not once per ragged last batch. Padded rows are
zero images; the caller's ``valid`` mask keeps them out of every statistic.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from hnd_jax.sharding import data_sharding, replicated

LayerCapture = Callable[[nnx.Module, jax.Array, Sequence[str]], tuple[object, dict[str, jax.Array]]]


def default_capture() -> LayerCapture:
    """The model zoo's ``forward_with_layers`` (nnx.capture based; works on any NNX module)."""
    from hnd_jax.models.capture import forward_with_layers

    return forward_with_layers


class LayerForward:
    """``forward(images f32 [B, S, S, 3]) -> {layer: NHWC activations sharded over 'data'}``.

    model:    an NNX module (BatchNorm etc. are switched to inference mode with ``model.eval()``).
    layers:   dotted layer paths, PyTorch style (``layer4.2.conv1``).
    mesh:     the data mesh.
    capture:  ``forward_with_layers``-like function; default: :func:`default_capture`.
    """

    def __init__(self, model: nnx.Module, layers: Sequence[str], mesh: Mesh, capture: LayerCapture | None = None):
        if hasattr(model, "eval"):
            model.eval()
        self.layers = tuple(layers)
        self.mesh = mesh
        capture = capture or default_capture()
        graphdef, state = nnx.split(model)
        self._state = jax.device_put(state, replicated(mesh))
        layers_t = self.layers

        def run(state, x):
            module = nnx.merge(graphdef, state)
            _, acts = capture(module, x, layers_t)
            return {name: jnp.asarray(acts[name], jnp.float32) for name in layers_t}

        self._x_sharding = data_sharding(mesh, 4)
        out_sh = {name: data_sharding(mesh, 4) for name in layers_t}
        self._run = jax.jit(run, in_shardings=(replicated(mesh), self._x_sharding), out_shardings=out_sh)

    def put(self, images: np.ndarray) -> jax.Array:
        """Copy float32 NHWC images (padded to a multiple of the device count) to the devices, sharded
        over 'data' as the forward expects (asynchronous: the prefetch thread calls it ahead)."""
        return jax.device_put(np.asarray(images, np.float32), self._x_sharding)

    def __call__(self, images: np.ndarray | jax.Array) -> dict[str, jax.Array]:
        """images: float32 NHWC (host, or the result of :meth:`put`), leading axis already padded to a
        multiple of the device count."""
        x = images if isinstance(images, jax.Array) else self.put(images)
        return self._run(self._state, x)

    def shapes(self, image_size: int, batch: int | None = None) -> dict[str, tuple[int, int, int]]:
        """{layer: (h, w, U)} for images of side ``image_size`` (no real compute: ``jax.eval_shape``)."""
        b = batch or int(self.mesh.devices.size)
        x = jax.ShapeDtypeStruct((b, image_size, image_size, 3), jnp.float32)
        out = jax.eval_shape(self._run, self._state, x)
        return {name: tuple(int(d) for d in out[name].shape[1:]) for name in self.layers}
