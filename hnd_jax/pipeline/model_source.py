"""Turn what the caller named (a card name, or an NNX module) into a model ready for dissection.

A card name is loaded with :func:`hnd_jax.convert.checkpoint.load_model` (weights file or converted
folder); its card gives the input size, the preprocessing, the resize filter and default layers. A
module passed by a library user (or the demo) needs either a card or an explicit image size; its
preprocessing then defaults to scaling uint8 pixels to [0, 1].

The model identity recorded in ``dissection.json`` and in resume fingerprints holds one sha256 of
the weights, so a different checkpoint can never resume a run, and the weights are hashed once per
run. A weights file (given with ``weights`` or packaged with the card) is identified by the sha256
of its bytes (``weights.sha256``): the parameters are read from those bytes by the card's
architecture mapping, and the card name, architecture and hnd-jax version are in the fingerprint
too. Anything else is identified by ``params_sha256``, the sha256 of the parameter values actually
used: a converted folder (its ``weights.sha256`` is the original file's, read from its manifest,
not recomputed), a module, random init.

Random initialisation (``random_init=True``; ``hnd dissect --random-init --seed S``): the card's
architecture is built with ``nnx.Rngs(seed)`` and no weights are loaded, not even weights shipped
inside a package. The untrained network is the standard control of dissection studies (Bau et al.,
Network Dissection, CVPR 2017, dissect randomly initialised networks beside trained ones): what a
unit "detects" by architecture alone. The same seed gives bit-identical parameters (every
initialiser draws from the seed's keys), so a control run is reproducible; the identity records
``{"kind": "random init", "seed": S}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.pipeline.fingerprint import sha256_arrays

Preprocess = Callable[[np.ndarray], np.ndarray]


@dataclass
class ModelSource:
    """A model ready to run: the module, how to preprocess uint8 images, and its identity."""

    module: nnx.Module
    preprocess: Preprocess
    input_size: int | None
    resample: str
    default_layers: tuple[str, ...]
    identity: dict[str, Any]
    card: Any = None


def params_sha256(module: nnx.Module) -> str:
    """sha256 over every array of the module's state (names, dtypes, shapes, values)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.state(module))
    named = [(jax.tree_util.keystr(path), np.asarray(jax.device_get(x))) for path, x in leaves]
    return sha256_arrays(named)


def scale_to_unit(images: np.ndarray) -> np.ndarray:
    """Default preprocessing for a bare module: uint8 -> float32 in [0, 1]."""
    return np.asarray(images, np.float32) / np.float32(255.0)


def random_model(card_name: Any, seed: int = 0) -> tuple[nnx.Module, Any]:
    """``(model, card)``: the card's architecture with parameters drawn from ``nnx.Rngs(seed)``.

    Deterministic: the same card and seed give the same parameters, bit for bit, on any machine
    (initialisers draw with NumPy from the seed's JAX keys; see hnd_jax.models.layers).
    """
    from hnd_jax.cards import load_card
    from hnd_jax.convert.checkpoint import build_from_card

    card = load_card(card_name)
    return build_from_card(card, seed=int(seed)), card


def resolve_model(
    model: str | nnx.Module,
    weights: str | None = None,
    *,
    card: Any = None,
    preprocess: Preprocess | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> ModelSource:
    """Load or wrap ``model`` (see the module docstring).

    model:       a card name or ``.toml`` path, or an ``nnx.Module`` (used as it is).
    weights:     original weights file or converted folder for a card (None: packaged weights, if any).
    random_init: build the card's architecture with random parameters drawn from ``seed`` and load
                 no weights; HndError when ``weights`` is also given.
    seed:        the random-init seed (a non-negative integer); ignored without ``random_init``.
    """
    from hnd_jax.preprocess import preprocess_uint8

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HndError(f"--seed {seed!r}: expected a non-negative integer")
    if random_init and weights is not None:
        raise HndError(f"--random-init dissects an untrained network: do not also pass --weights ({weights})")

    if isinstance(model, nnx.Module):
        if card is not None:
            from hnd_jax.cards import load_card

            card = load_card(card)
        module = model
        identity: dict[str, Any] = {
            "kind": "module",
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "card": getattr(card, "name", None),
            "weights": {"kind": "in-memory parameters"},
        }
    elif isinstance(model, str) and random_init:
        module, card = random_model(model, seed)
        identity = {
            "kind": "card",
            "card": card.name,
            "architecture": card.architecture,
            "weights": {"kind": "random init", "seed": int(seed)},
        }
    elif isinstance(model, str):
        from hnd_jax.convert.checkpoint import load_model, weights_identity

        module, card = load_model(model, weights, random_init=random_init)
        identity = {
            "kind": "card",
            "card": card.name,
            "architecture": card.architecture,
            "weights": weights_identity(weights, card),
        }
    else:
        raise HndError(f"model {model!r}: expected a model card name or a flax.nnx.Module")
    if identity["weights"].get("kind") != "file":  # a file's bytes are already hashed: once is enough
        identity["params_sha256"] = params_sha256(module)
    if preprocess is None:
        preprocess = (lambda x, _card=card: preprocess_uint8(x, _card)) if card is not None else scale_to_unit
    return ModelSource(
        module=module,
        preprocess=preprocess,
        input_size=int(card.input_size) if card is not None else None,
        resample=card.preprocessing.resize if card is not None else "bicubic",
        default_layers=tuple(card.default_layers) if card is not None else (),
        identity=identity,
        card=card,
    )
