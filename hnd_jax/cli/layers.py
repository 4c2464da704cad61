"""hnd layers: every dissectable layer of a model card's architecture, with its activation shape.

No weights are needed: the model is built with random parameters and its shapes are traced, not
computed. Shapes are printed the PyTorch way, channels x height x width, for one image.
"""

from __future__ import annotations

import argparse
import json

from hnd_jax.cli.help import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "layers",
        help="list the dissectable layers of a model and their activation shapes",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="NAME", help="a model card name (hnd card list shows them) or the path of a card .toml file")
    p.add_argument("--image-size", type=int, metavar="S", help="input side in pixels (default: the card's input size)")
    p.add_argument("--json", action="store_true", help="print JSON: [{name, channels, height, width}, ...]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.cards import load_card
    from hnd_jax.convert.checkpoint import build_from_card
    from hnd_jax.errors import HndError
    from hnd_jax.models.capture import list_layers

    card = load_card(args.model)
    size = card.input_size if args.image_size is None else args.image_size
    if size <= 0:
        raise HndError(f"--image-size {size}: expected a positive integer")
    layers = list_layers(build_from_card(card), size)
    rows = [{"name": name, "channels": c, "height": h, "width": w} for name, (h, w, c) in layers]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    defaults = set(card.default_layers)
    width = max([len(r["name"]) for r in rows] + [5])
    print(f"{card.name}: {card.architecture} at {size}x{size}, {len(rows)} dissectable layers (* = card default)")
    print(f"  {'layer':<{width}}  C x H x W")
    for r in rows:
        mark = "*" if r["name"] in defaults else " "
        print(f"{mark} {r['name']:<{width}}  {r['channels']} x {r['height']} x {r['width']}")
    return 0
