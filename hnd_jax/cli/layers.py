"""hnd layers: every layer of a model card's architecture whose output is a map, with its activation shape.

No weights are needed: the model's shapes are traced, not computed (nothing is allocated). Shapes are
printed the PyTorch way, channels x height x width, for one image. A layer whose map is empty at this
size (0 units, or 0 x 0 pixels: the input is too small for its strides) is marked 'nothing to dissect',
with hnd dissect's reason: hnd dissect refuses it.
"""

from __future__ import annotations

import argparse
import json

from hnd_jax.cli.help import HelpFormatter

NOTHING = "nothing to dissect"  # the mark of a layer whose map is empty at this size (hnd dissect's wording)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "layers",
        help="list the dissectable layers of a model and their activation shapes",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="NAME", help="a model card name (hnd card list shows them) or the path of a card .toml file")
    p.add_argument("--image-size", type=int, metavar="S", help="input side in pixels (default: the card's input size)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: [{name, channels, height, width, dissectable[, reason]}, ...]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flax import nnx

    from hnd_jax.cards import load_card
    from hnd_jax.convert.checkpoint import build_from_card
    from hnd_jax.errors import HndError
    from hnd_jax.models.capture import list_layers, module_names, nothing_to_dissect
    from hnd_jax.scoring.tally import MAX_IMAGE_SIZE  # hnd dissect's bound, so that layers shows only what it takes

    card = load_card(args.model)
    size = card.input_size if args.image_size is None else args.image_size
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise HndError(f"--image-size {size}: expected 1..{MAX_IMAGE_SIZE} (the sizes hnd dissect takes)")
    order: list[str] = []

    def build():
        model = build_from_card(card)
        order.extend(module_names(model))  # definition order, which the abstract model below has lost
        return model

    model = nnx.eval_shape(build)  # shapes only: no parameter is allocated (a large head costs nothing)
    rank = {name: i for i, name in enumerate(order)}
    rows = []
    for name, (h, w, c) in sorted(list_layers(model, size), key=lambda info: rank.get(info.name, len(rank))):
        reason = nothing_to_dissect((h, w, c), size)
        rows.append({"name": name, "channels": c, "height": h, "width": w, "dissectable": reason is None,
                     **({} if reason is None else {"reason": reason})})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    defaults = set(card.default_layers)
    empty = [r for r in rows if not r["dissectable"]]
    width = max([len(r["name"]) for r in rows] + [5])
    shapes = [f"{r['channels']} x {r['height']} x {r['width']}" for r in rows]
    shape_width = max([len(s) for s in shapes] + [9])
    count = f"{len(rows) - len(empty)} dissectable layers" + (f" of {len(rows)}" if empty else "")
    print(f"{card.name}: {card.architecture} at {size}x{size}, {count} (* = card default)")
    print(f"  {'layer':<{width}}  C x H x W")
    for r, shape in zip(rows, shapes):
        mark = "*" if r["name"] in defaults else " "
        note = "" if r["dissectable"] else f"  {NOTHING}"
        print(f"{mark} {r['name']:<{width}}  {shape:<{shape_width}}{note}".rstrip())
    if empty:
        print(f"{len(empty)} layer{'s' if len(empty) != 1 else ''} marked '{NOTHING}' (hnd dissect refuses them), e.g. "
              f"{empty[0]['name']}: {empty[0]['reason']}")
    return 0
