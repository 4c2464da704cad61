"""Activations of named layers in the same forward pass, and the list of dissectable layers.

How: ``nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)`` records the output
of every module's ``__call__`` under its module path while the forward runs. The forward is
traced under ``jax.jit`` with the graph definition and the requested layer names as static
arguments, so:

- XLA keeps only the requested activations (every other recorded output is dead code);
- one compilation per (model structure, input shape, layer tuple): calling again with new images or
  new weights of the same model reuses it (weights are arguments, not constants);
- no module carries a ``sow`` call: capturing is switched on only inside ``nnx.capture``.

Names are module paths joined by dots, exactly what PyTorch's ``named_modules()`` shows
(``layer4.2.conv1``, ``block8.branch1``, ``repeat_3.4``, ``conv1``). A module called several times
in one forward (torchvision's per-block ``relu``) yields the output of its last call, what a forward
hook that stores its output would keep.

Token models (vision transformers): a model that defines ``token_grid(height, width) -> (prefix,
gh, gw)`` (see :mod:`hnd_jax.models.vit`) has its token activations ``[N, tokens, C]`` returned as
maps over the patch grid, ``[N, gh, gw, C]`` (NHWC, like every conv activation here): the first
``prefix`` tokens (class token, register tokens) are dropped and patch tokens are read in row-major
order (token ``prefix + i * gw + j`` is grid cell ``(i, j)``). A token output without prefix
(``[N, gh*gw, C]``, e.g. timm's ``patch_embed``) is mapped the same way. Anything else (pooled
vectors, logits) is returned as the module outputs it and is not dissectable.

``nnx.capture`` instruments module classes while it runs, so do not trace two captures of the same
classes concurrently from several Python threads.
"""

from __future__ import annotations

import difflib
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hnd_jax.errors import HndError

_CALL = "__call__"


class LayerInfo(NamedTuple):
    """A dissectable layer: its dotted name and the (H, W, C) shape of one image's activation."""

    name: str
    shape: tuple[int, int, int]


def nothing_to_dissect(shape: tuple[int, int, int], image_size: int) -> str | None:
    """Why a layer with activation ``shape`` = (H, W, C) of one image cannot be dissected at
    ``image_size``, or None when it can (at least one unit and one pixel).

    The one wording for ``hnd dissect``'s refusal and ``hnd layers``' listing: a map of 0 units, or
    of 0 x 0 pixels (an input too small for the layer's strides), has no unit to score.
    """
    h, w, units = (int(d) for d in shape)
    if h > 0 and w > 0 and units > 0:
        return None
    return (f"its activation map is {units} x {h} x {w} at --image-size {image_size}: nothing to dissect "
            f"(a larger --image-size, or an earlier layer)")


def module_names(model: nnx.Module) -> list[str]:
    """Dotted paths of every submodule, in definition order, parents before children.

    This is the order of PyTorch's ``named_modules()`` for a model written the same way.
    """
    names: list[str] = []

    def walk(module: nnx.Module, prefix: str) -> None:
        for key, value in vars(module).items():
            if isinstance(value, nnx.Module):
                name = f"{prefix}.{key}" if prefix else str(key)
                names.append(name)
                walk(value, name)

    walk(model, "")
    return names


def _check_layers(model: nnx.Module, layers: Sequence[str]) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = [layers]
    names = tuple(dict.fromkeys(str(name) for name in layers))  # de-duplicated, order kept
    known = module_names(model)
    known_set = set(known)
    for name in names:
        if name not in known_set:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise HndError(f"unknown layer {name!r} in {type(model).__name__}{hint} (list them with: hnd layers --model MODEL)")
    return names


def tokens_to_map(value: Any, prefix: int, gh: int, gw: int) -> Any:
    """``[N, prefix + gh*gw, C]`` (or ``[N, gh*gw, C]``) token activations -> ``[N, gh, gw, C]``.

    Prefix tokens (class/register) are dropped; patch tokens are row-major over the patch grid.
    Any other value (not 3-D, or another token count) is returned unchanged.
    """
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) != 3:
        return value
    n = gh * gw
    if shape[1] == prefix + n:
        value = value[:, prefix:, :]
    elif shape[1] != n:
        return value
    return value.reshape(shape[0], gh, gw, shape[2])


def _captured_outputs(model: nnx.Module, x: jax.Array) -> tuple[Any, dict[str, Any]]:
    """Run the forward under nnx.capture; {dotted module path: last __call__ output}.

    Token activations of a model with ``token_grid`` come back as NHWC maps (module docstring).
    """
    out, intermediates = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
    grid = model.token_grid(int(x.shape[1]), int(x.shape[2])) if hasattr(model, "token_grid") else None
    outputs: dict[str, Any] = {}
    for path, variable in nnx.to_flat_state(intermediates):
        if path and path[-1] == _CALL and len(path) > 1:
            values = variable.get_value()
            value = values[-1]
            outputs[".".join(str(p) for p in path[:-1])] = value if grid is None else tokens_to_map(value, *grid)
    return out, outputs


@partial(jax.jit, static_argnums=(0, 3))
def _forward_jit(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, names: tuple[str, ...]):
    model = nnx.merge(graphdef, state)
    out, outputs = _captured_outputs(model, x)
    missing = [name for name in names if name not in outputs]
    if missing:
        raise HndError(
            f"layer(s) {', '.join(missing)} of {type(model).__name__} are not run by its forward pass "
            "(e.g. an unused head), so they have no activation"
        )
    return out, {name: outputs[name] for name in names}


def forward_with_layers(model: nnx.Module, x: jax.Array, layers: Sequence[str]) -> tuple[Any, dict[str, jax.Array]]:
    """Run ``model(x)`` once; return ``(output, {layer name: activation})``.

    ``x`` is an NHWC float batch; conv activations come back NHWC ([N, H, W, C]), transformer
    token activations as NHWC maps over the patch grid (module docstring), others as the module
    returns them. Works eagerly and inside an outer ``jax.jit`` (the pipeline's sharded
    forward). Unknown names raise HndError with the closest matches. Inference only: BatchNorm
    statistics are not updated.
    """
    names = _check_layers(model, layers)
    graphdef, state = nnx.split(model)
    return _forward_jit(graphdef, state, jnp.asarray(x), names)


def list_layers(model: nnx.Module, image_size: int | tuple[int, int], *, channels: int = 3) -> list[LayerInfo]:
    """Every dissectable layer of ``model`` for square (or (H, W)) inputs of ``image_size``.

    Dissectable = the module's output is one 4-D array (a conv-like map). Shapes come from
    ``jax.eval_shape``: nothing is computed. Order: PyTorch's ``named_modules()`` order.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if h < 1 or w < 1:
        raise HndError(f"image size must be positive, got {image_size!r}")
    graphdef, state = nnx.split(model)

    def shapes(state: nnx.State, x: jax.Array) -> dict[str, Any]:
        return _captured_outputs(nnx.merge(graphdef, state), x)[1]

    try:
        abstract = jax.eval_shape(shapes, state, jax.ShapeDtypeStruct((1, h, w, channels), jnp.float32))
    except HndError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a negative conv output size
        raise HndError(f"{type(model).__name__} cannot run at image size {h}x{w}: {str(e).splitlines()[0]}") from None
    layers = []
    for name in module_names(model):
        value = abstract.get(name)
        if isinstance(value, jax.ShapeDtypeStruct) and len(value.shape) == 4:
            layers.append(LayerInfo(name, tuple(int(d) for d in value.shape[1:])))
    return layers
