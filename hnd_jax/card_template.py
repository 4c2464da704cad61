"""Write a new, editable model card for any architecture of the registry (``hnd card new``).

The text is a complete card in the format of :mod:`hnd_jax.cards`, with comments telling the user
what to fill in; before it is written it is parsed back (:func:`hnd_jax.cards.load_card`) and its
model is traced at the input size with its default layers (:func:`check_card_runs`), so a card
written here always loads and runs.

Preprocessing presets (``--preprocess``): how uint8 pixels become the model's input, per the
library the weights come from.

=============  ===========  ===================================================  ==========================
preset         resize       values                                               typical source
=============  ===========  ===================================================  ==========================
``unit``       bicubic      x / 255                                              HND paper models, demo
``imagenet``   bilinear     (x/255 - [0.485,0.456,0.406]) / [0.229,0.224,0.225]  torchvision
``signed``     bicubic      (x - 127.5) / 127.5                                  arcface_torch, timm ViT
                                                                                 (augreg: mean=std=0.5)
``clip``       bicubic      (x/255 - [0.4815,0.4578,0.4082]) / [0.2686,0.2613,   OpenAI CLIP, open_clip,
                            0.2758]                                              FaRL
``facenet``    box          (x - 127.5) / 128                                    facenet-pytorch
=============  ===========  ===================================================  ==========================
"""

from __future__ import annotations

import json
import numbers
import re
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence

from hnd_jax.errors import HndError

__all__ = ["PRESETS", "Preset", "card_text", "check_card_runs", "write_card"]


class Preset(NamedTuple):
    resize: str
    divide_by: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    text: str


PRESETS: dict[str, Preset] = {
    "unit": Preset("bicubic", 255.0, (), (), "x / 255 (transforms.ToTensor() only)"),
    "imagenet": Preset("bilinear", 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                       "torchvision's ImageNet normalisation"),
    "signed": Preset("bicubic", 1.0, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5),
                     "(x - 127.5) / 127.5, i.e. Normalize(mean=0.5, std=0.5) after ToTensor (arcface_torch, timm ViT augreg)"),
    "clip": Preset("bicubic", 255.0, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711),
                   "OpenAI CLIP's normalisation (also open_clip and FaRL)"),
    "facenet": Preset("box", 1.0, (127.5, 127.5, 127.5), (128.0, 128.0, 128.0),
                      "facenet-pytorch's fixed_image_standardization, (x - 127.5) / 128"),
}

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _floats(values: Sequence[float]) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def card_text(
    name: str,
    architecture: str,
    *,
    input_size: int | None = None,
    head: str | None = None,
    num_outputs: int | None = None,
    preprocess: str | None = None,
    resize: str | None = None,
    layers: Sequence[str] | None = None,
) -> str:
    """The TOML text of a new card (defaults: the architecture's head, input size, layer, preset).

    ``num_outputs`` None leaves the key out: the head's size is then read from the checkpoint
    when it says (``fc.weight``, ``head.weight``...), else the architecture's default is used.
    Raises HndError for an unknown architecture, head, preset or a bad size/name.
    """
    from hnd_jax.models.registry import get_architecture

    spec = get_architecture(architecture)
    if not _NAME.match(name or ""):
        raise HndError(f"card name {name!r}: use letters, digits, '_', '-', '.' only")
    head = spec.heads[0] if head is None else head
    if head not in spec.heads:
        raise HndError(f"--head {head!r}: {architecture} has heads {', '.join(spec.heads)}")
    from hnd_jax.cards import MAX_INPUT_SIZE, MAX_NUM_OUTPUTS, RESIZE_FILTERS, size_bound_error

    size = spec.default_image_size if input_size is None else input_size
    size = int(size) if isinstance(size, numbers.Integral) and not isinstance(size, bool) else size
    bad = size_bound_error("--input-size", size, MAX_INPUT_SIZE, " px", option=True)
    if bad is not None:
        raise bad
    if size < spec.min_image_size:
        raise HndError(f"--input-size {size}: {architecture} needs at least {spec.min_image_size} pixels")
    preset_name = spec.preprocess if preprocess is None else preprocess
    if preset_name not in PRESETS:
        raise HndError(f"--preprocess {preset_name!r}: expected one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    layers = list(layers) if layers else [spec.default_layer]
    if num_outputs is not None:  # refused here, naming the option; the card parser would name a temporary file
        bad = size_bound_error("--num-outputs", num_outputs, MAX_NUM_OUTPUTS, option=True)
        if bad is not None:
            raise bad
    if resize is not None and resize.lower() not in RESIZE_FILTERS:
        raise HndError(f"--resize {resize!r}: expected one of {', '.join(RESIZE_FILTERS)}")

    kwargs = {}
    if spec.name.startswith(("resnet",)) and head != "fc":
        kwargs["image_size"] = size  # heads that flatten layer4 need the size at build time
    if spec.name.startswith(("vit_", "clip_vit")) and size != spec.default_image_size:
        kwargs["image_size"] = size  # the position embedding has one entry per patch
    lines = [
        f"# Model card written by `hnd card new --arch {architecture}`: edit it, then use --model {name}.toml",
        "# (format: hnd_jax/cards.py; every key is checked when the card is loaded).",
        f"name = {json.dumps(name)}",
        f"architecture = {json.dumps(architecture)}   # {spec.description}",
        f"head = {json.dumps(head)}",
    ]
    if num_outputs is not None:
        lines.append(f"num_outputs = {int(num_outputs)}")
    else:
        lines.append("# num_outputs = N   # left out: read from the checkpoint's head when it has one, else "
                     f"{spec.default_num_outputs}")
    lines += [
        f"input_size = {size}",
        f"default_layers = {json.dumps(layers)}   # see `hnd layers --model {name}.toml`",
        'source_format = "PyTorch state_dict (.pt/.pth/.bin), .safetensors or .npz with this architecture\'s '
        'PyTorch module names"',
        'trained_for = "FILL IN: what the checkpoint was trained for"',
        'citation = ""',
        'notes = ""',
    ]
    if kwargs:
        lines += ["", "[model_kwargs]"] + [f"{k} = {v}" for k, v in kwargs.items()]
    lines += [
        "",
        f"[preprocessing]   # preset {preset_name!r}: {preset.text}",
        f"resize = {json.dumps(resize or preset.resize)}",
        f"divide_by = {preset.divide_by!r}",
    ]
    if preset.mean:
        lines += [f"mean = {_floats(preset.mean)}", f"std = {_floats(preset.std)}"]
    lines += [
        'face_crop = "none"',
        "",
        "[weights]",
        'file = ""          # the checkpoint file name, for messages',
        'instructions = ""  # where the weights come from (hnd-jax never downloads anything)',
        "# rename = [[\"^backbone\\\\.\", \"\"]]   # regex rules mapping the file's key names onto ours",
        "# ignore = [\"^head_arcface\\\\.\"]     # regexes of keys the model does not use",
        "",
    ]
    return "\n".join(lines)


def check_card_runs(card) -> None:
    """HndError unless the card's model runs at its input size, has its default layers and at most
    :data:`hnd_jax.cards.MAX_PARAMETERS` parameters.

    Shapes only (``nnx.eval_shape`` / ``jax.eval_shape``): nothing is allocated or computed, so a
    ViT-B or IResNet-100 is checked in a second or two.
    """
    import math

    import jax
    from flax import nnx

    from hnd_jax.cards import MAX_PARAMETERS
    from hnd_jax.convert.checkpoint import build_from_card
    from hnd_jax.models.capture import list_layers, module_names
    from hnd_jax.pipeline.sizes import format_size

    model = nnx.eval_shape(lambda: build_from_card(card))
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model)))
    if count > MAX_PARAMETERS:
        outputs = "" if card.num_outputs is None else f"--num-outputs {card.num_outputs} "
        raise HndError(f"{card.architecture} {outputs}at --input-size {card.input_size} would have {count:.2e} "
                       f"parameters ({format_size(4 * count)} of float32), more than {MAX_PARAMETERS:.2e} (far more "
                       f"than any face model; see hnd_jax/cards.py): a smaller --num-outputs or --input-size")
    dissectable = {info.name for info in list_layers(model, card.input_size)}
    for layer in card.default_layers:
        if layer not in dissectable:
            kind = "not a conv-like map" if layer in set(module_names(model)) else "not a layer"
            raise HndError(f"--layer {layer}: {kind} of {card.architecture} at {card.input_size} px "
                           f"(list them with: hnd layers --model CARD.toml)")


def write_card(out: str | Path, text: str, *, force: bool = False) -> Path:
    """Check ``text`` is a card whose model runs (:func:`check_card_runs`), then write it.

    Refuses to overwrite an existing file unless ``force``.
    """
    from hnd_jax.cards import load_card

    out = Path(out)
    if out.suffix != ".toml":
        raise HndError(f"{out}: a model card file must end in .toml")
    if out.exists() and not force:
        raise HndError(f"{out}: exists; choose another --out or pass --force")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / out.name
        probe.write_text(text, encoding="utf-8")
        check_card_runs(load_card(probe))  # HndError if the template and the parser ever disagree too
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
