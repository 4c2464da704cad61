"""The model zoo's table of architectures and ``build_model`` (what cards and CLIs call).

An architecture name (``resnet50``, ``iresnet50``, ``vit_small_patch16_224``, ``clip_vit_b16``,
``inception_resnet_v1``, ``mtcnn_onet``, ``demo_cnn``...) plus a head and an output count give a
randomly initialised NNX module in PyTorch's module layout; real weights are then assigned by
:func:`hnd_jax.models.torch_mapping.load_torch_state_dict` or restored from a converted checkpoint.

:func:`infer_num_outputs` reads the output count of a checkpoint's head from its state dict (a
fine-tuned torchvision ResNet's ``fc.weight`` is [num_classes, 2048]), so a card may leave
``num_outputs`` out.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.demo_cnn import DEMO_IMAGE_SIZE, DemoCNN
from hnd_jax.models.inception_resnet_v1 import MIN_IMAGE_SIZE as IRV1_MIN_SIZE
from hnd_jax.models.inception_resnet_v1 import InceptionResnetV1
from hnd_jax.models.mtcnn import ONET_INPUT, RNET_INPUT, ONet, PNet, RNet
from hnd_jax.models.iresnet import IRESNET_INPUT, IRESNET_LAYERS, build_iresnet
from hnd_jax.models.resnet import RESNET_DEPTHS, RESNET_HEADS, build_resnet
from hnd_jax.models.vit import CLIP_VITS, TIMM_VITS, VIT_INPUT, build_clip_vit, build_vit


@dataclass(frozen=True)
class Architecture:
    """One buildable architecture.

    heads:               the ``head=`` values it accepts; ``heads[0]`` is the default.
    default_num_outputs: used when ``num_outputs`` is not given (None: no output count applies or
                         the head works without one).
    default_image_size:  the input side the model is usually run at (fixed for RNet/ONet).
    min_image_size:      the smallest input side the trunk accepts.
    build:               ``build(head=..., num_outputs=..., rngs=..., **kw) -> nnx.Module``.
    outputs_key:         ``{head: (PyTorch tensor name, axis)}``: where a checkpoint stores the
                         head's output count (:func:`infer_num_outputs`).
    default_layer:       the layer a new card (``hnd card new``) dissects by default.
    preprocess:          the preprocessing preset a new card gets (:mod:`hnd_jax.card_template`).
    """

    name: str
    description: str
    heads: tuple[str, ...]
    default_num_outputs: int | None
    default_image_size: int
    min_image_size: int
    build: Callable[..., nnx.Module]
    outputs_key: Mapping[str, tuple[str, int]] | None = None
    default_layer: str = ""
    preprocess: str = "unit"


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


def _iresnet(arch: str) -> Callable[..., nnx.Module]:
    def build(*, head: str, num_outputs: int | None, rngs: nnx.Rngs) -> nnx.Module:
        return build_iresnet(arch, num_features=512 if num_outputs is None else num_outputs, rngs=rngs)

    return build


def _vit(arch: str) -> Callable[..., nnx.Module]:
    def build(*, head: str, num_outputs: int | None, rngs: nnx.Rngs, image_size: int = VIT_INPUT) -> nnx.Module:
        return build_vit(arch, num_classes=1000 if num_outputs is None else num_outputs, image_size=image_size, rngs=rngs)

    return build


def _clip_vit(arch: str) -> Callable[..., nnx.Module]:
    def build(*, head: str, num_outputs: int | None, rngs: nnx.Rngs, image_size: int = VIT_INPUT,
              quick_gelu: bool = True) -> nnx.Module:
        return build_clip_vit(arch, output_dim=num_outputs, image_size=image_size, quick_gelu=quick_gelu, rngs=rngs)

    return build


def _last_block(counts: tuple[int, ...]) -> str:
    return f"layer4.{counts[-1] - 1}"


_RESNET_TEXT = "torchvision-layout {} (heads: fc = avgpool+fc; mlp = flatten->2048->512->64->n; embedding = flatten->128 L2x10 + classifier)"

ARCHITECTURES: dict[str, Architecture] = {
    **{
        name: Architecture(name, _RESNET_TEXT.format(name), RESNET_HEADS, 1000, 224, 32, _resnet(name),
                           outputs_key={"fc": ("fc.weight", 0)}, default_layer=_last_block(RESNET_DEPTHS[name][1]),
                           preprocess="imagenet")
        for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    },
    **{
        name: Architecture(name, f"insightface arcface_torch {name} (IBasicBlock; embedding = bn2, flatten, fc, "
                           "features BatchNorm1d)", ("embedding",), 512, IRESNET_INPUT, IRESNET_INPUT, _iresnet(name),
                           outputs_key={"embedding": ("fc.weight", 0)}, default_layer=_last_block(counts) + ".conv2",
                           preprocess="signed")
        for name, counts in IRESNET_LAYERS.items()
    },
    **{
        name: Architecture(name, f"timm {name} (class token; head = Linear on the final class token)", ("fc",), 1000,
                           VIT_INPUT, 16, _vit(name), outputs_key={"fc": ("head.weight", 0)},
                           default_layer=f"blocks.{depth - 1}", preprocess="signed")
        for name, (_, depth, _) in TIMM_VITS.items()
    },
    **{
        name: Architecture(name, f"CLIP {name} image tower, OpenAI/open_clip layout (embedding = ln_post(class "
                           "token) @ proj)", ("embedding",), out, VIT_INPUT, 16, _clip_vit(name),
                           outputs_key={"embedding": ("proj", 1)}, default_layer=f"transformer.resblocks.{layers - 1}",
                           preprocess="clip")
        for name, ((_, layers, _), out) in CLIP_VITS.items()
    },
    "inception_resnet_v1": Architecture(
        "inception_resnet_v1",
        "facenet-pytorch InceptionResnetV1 (heads: embedding = normalised 512-d; logits = classifier)",
        ("embedding", "logits"), None, 160, IRV1_MIN_SIZE, _inception_resnet_v1,
        outputs_key={"logits": ("logits.weight", 0)}, default_layer="block8.branch1", preprocess="facenet",
    ),
    "mtcnn_pnet": Architecture("mtcnn_pnet", "facenet-pytorch MTCNN PNet (proposal net)", ("detector",), None, 12, 12, _fixed(PNet),
                               default_layer="conv3", preprocess="facenet"),
    "mtcnn_rnet": Architecture("mtcnn_rnet", "facenet-pytorch MTCNN RNet (24x24 refinement net)", ("detector",), None, RNET_INPUT, RNET_INPUT, _fixed(RNet),
                               default_layer="conv3", preprocess="facenet"),
    "mtcnn_onet": Architecture("mtcnn_onet", "facenet-pytorch MTCNN ONet (48x48 output net)", ("detector",), None, ONET_INPUT, ONET_INPUT, _fixed(ONet),
                               default_layer="conv4", preprocess="facenet"),
    "demo_cnn": Architecture("demo_cnn", "small 4-block CNN for the demo (conv1..conv4, fc)", ("fc",), 2, DEMO_IMAGE_SIZE, 8, _demo_cnn,
                             outputs_key={"fc": ("fc.weight", 0)}, default_layer="conv4"),
}


def infer_num_outputs(arch: str, head: str | None, state: Mapping[str, Any]) -> int | None:
    """The head's output count stored in a PyTorch state dict, or None when it does not say.

    Reads the tensor named by the architecture's ``outputs_key`` for ``head`` (default head when
    None), e.g. ``fc.weight`` [num_classes, 2048] of a fine-tuned torchvision ResNet-50. Keys must
    already be mapped to our names (a card's ``weights.rename``).
    """
    spec = get_architecture(arch)
    key_axis = (spec.outputs_key or {}).get(spec.heads[0] if head is None else head)
    if key_axis is None or key_axis[0] not in state:
        return None
    shape = getattr(state[key_axis[0]], "shape", ())
    return int(shape[key_axis[1]]) if len(shape) > key_axis[1] else None


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
