"""The model zoo's table of architectures and ``build_model`` (what cards and CLIs call).

An architecture name (``resnet50``, ``inception_resnet_v1``, ``mtcnn_onet``, ``demo_cnn``...) plus a
head and an output count give a randomly initialised NNX module in PyTorch's module layout; real
weights are then assigned by :func:`hnd_jax.models.torch_mapping.load_torch_state_dict` or restored
from a converted checkpoint.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.demo_cnn import DEMO_IMAGE_SIZE, DemoCNN
from hnd_jax.models.inception_resnet_v1 import MIN_IMAGE_SIZE as IRV1_MIN_SIZE
from hnd_jax.models.inception_resnet_v1 import InceptionResnetV1
from hnd_jax.models.mtcnn import ONET_INPUT, RNET_INPUT, ONet, PNet, RNet
from hnd_jax.models.resnet import RESNET_HEADS, build_resnet


@dataclass(frozen=True)
class Architecture:
    """One buildable architecture.

    heads:               the ``head=`` values it accepts; ``heads[0]`` is the default.
    default_num_outputs: used when ``num_outputs`` is not given (None: no output count applies or
                         the head works without one).
    default_image_size:  the input side the model is usually run at (fixed for RNet/ONet).
    min_image_size:      the smallest input side the trunk accepts.
    build:               ``build(head=..., num_outputs=..., rngs=..., **kw) -> nnx.Module``.
    """

    name: str
    description: str
    heads: tuple[str, ...]
    default_num_outputs: int | None
    default_image_size: int
    min_image_size: int
    build: Callable[..., nnx.Module]


def _resnet(arch: str) -> Callable[..., nnx.Module]:
    def build(*, head: str, num_outputs: int | None, rngs: nnx.Rngs, image_size: int | None = None) -> nnx.Module:
        n = 0 if (head == "embedding" and num_outputs is None) else num_outputs
        return build_resnet(arch, head=head, num_outputs=1000 if n is None else n, image_size=image_size, rngs=rngs)

    return build


def _inception_resnet_v1(*, head: str, num_outputs: int | None, rngs: nnx.Rngs) -> nnx.Module:
    return InceptionResnetV1(classify=head == "logits", num_classes=num_outputs, rngs=rngs)


def _fixed(cls: type[nnx.Module]) -> Callable[..., nnx.Module]:
    def build(*, head: str, num_outputs: int | None, rngs: nnx.Rngs) -> nnx.Module:
        if num_outputs is not None:
            raise HndError(f"{cls.__name__} has fixed outputs; do not pass num_outputs")
        return cls(rngs=rngs)

    return build


def _demo_cnn(*, head: str, num_outputs: int | None, rngs: nnx.Rngs, use_batch_norm: bool = True) -> nnx.Module:
    if num_outputs == 0:
        raise HndError("demo_cnn needs num_outputs >= 1")
    return DemoCNN(2 if num_outputs is None else num_outputs, use_batch_norm=use_batch_norm, rngs=rngs)


_RESNET_TEXT = "torchvision-layout {} (heads: fc = avgpool+fc; mlp = flatten->2048->512->64->n; embedding = flatten->128 L2x10 + classifier)"

ARCHITECTURES: dict[str, Architecture] = {
    **{
        name: Architecture(name, _RESNET_TEXT.format(name), RESNET_HEADS, 1000, 224, 32, _resnet(name))
        for name in ("resnet18", "resnet34", "resnet50", "resnet101")
    },
    "inception_resnet_v1": Architecture(
        "inception_resnet_v1",
        "facenet-pytorch InceptionResnetV1 (heads: embedding = normalised 512-d; logits = classifier)",
        ("embedding", "logits"), None, 160, IRV1_MIN_SIZE, _inception_resnet_v1,
    ),
    "mtcnn_pnet": Architecture("mtcnn_pnet", "facenet-pytorch MTCNN PNet (proposal net)", ("detector",), None, 12, 12, _fixed(PNet)),
    "mtcnn_rnet": Architecture("mtcnn_rnet", "facenet-pytorch MTCNN RNet (24x24 refinement net)", ("detector",), None, RNET_INPUT, RNET_INPUT, _fixed(RNet)),
    "mtcnn_onet": Architecture("mtcnn_onet", "facenet-pytorch MTCNN ONet (48x48 output net)", ("detector",), None, ONET_INPUT, ONET_INPUT, _fixed(ONet)),
    "demo_cnn": Architecture("demo_cnn", "small 4-block CNN for the demo (conv1..conv4, fc)", ("fc",), 2, DEMO_IMAGE_SIZE, 8, _demo_cnn),
}


def get_architecture(arch: str) -> Architecture:
    """The table entry for ``arch``; HndError listing the known names (closest first) otherwise."""
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(arch), list(ARCHITECTURES), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise HndError(f"unknown architecture {arch!r}{hint}; known: {', '.join(ARCHITECTURES)}") from None


def build_model(
    arch: str,
    *,
    head: str | None = None,
    num_outputs: int | None = None,
    rngs: nnx.Rngs | None = None,
    **kw: Any,
) -> nnx.Module:
    """Build ``arch`` with ``head`` (default: the architecture's first head) and ``num_outputs``.

    Extra keywords go to the architecture: ``image_size`` for ResNet heads that flatten layer4
    (``mlp``, ``embedding``), ``use_batch_norm`` for ``demo_cnn``. Parameters are drawn like
    PyTorch's defaults from ``rngs`` (default ``nnx.Rngs(0)``); load real weights afterwards.
    """
    spec = get_architecture(arch)
    head = spec.heads[0] if head is None else head
    if head not in spec.heads:
        raise HndError(f"unknown head {head!r} for {arch}; expected one of {', '.join(spec.heads)}")
    if num_outputs is not None:
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 0:
            raise HndError(f"num_outputs must be a non-negative integer, got {num_outputs!r}")
    accepted = set(inspect.signature(spec.build).parameters) - {"head", "num_outputs", "rngs"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        allowed = ", ".join(sorted(accepted)) or "none"
        raise HndError(f"{arch} does not take option(s) {', '.join(unknown)}; it takes: {allowed}")
    return spec.build(head=head, num_outputs=num_outputs, rngs=rngs if rngs is not None else nnx.Rngs(0), **kw)
