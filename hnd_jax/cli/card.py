"""hnd card: model cards. hnd card new writes an editable card for any known architecture;
hnd card list shows the cards found (built-in, or $HND_MODELS_DIR) and the architectures.

    hnd card new --arch resnet50 --out my_resnet.toml
    hnd card new --arch iresnet50 --num-outputs 512 --out my_arcface.toml
    hnd card new --arch vit_small_patch16_224 --preprocess imagenet --layer blocks.11 --out my_vit.toml
    hnd layers  --model my_resnet.toml

Presets of --preprocess (see hnd_jax/card_template.py): unit, imagenet, signed, clip, facenet.
"""

from __future__ import annotations

import argparse

from hnd_jax.cards import MAX_INPUT_SIZE, MAX_NUM_OUTPUTS
from hnd_jax.cli.help import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "card",
        help="write a new model card for an architecture, or list the known cards",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="card_command", metavar="ACTION")
    new = sub.add_parser("new", help="write an editable model card (.toml)", formatter_class=HelpFormatter,
                         description="Write a model card for a known architecture: input size, head, preprocessing "
                                     "and default layers, checked by building the model before it is written.")
    new.add_argument("--arch", required=True, metavar="ARCH", help="architecture name (see `hnd card list`)")
    new.add_argument("--out", required=True, metavar="CARD.toml", help="file to write (refused if it exists)")
    new.add_argument("--name", metavar="NAME", help="card name (default: the file name without .toml)")
    new.add_argument("--input-size", type=int, metavar="S",
                     help=f"input side in pixels, at most {MAX_INPUT_SIZE} (default: the architecture's)")
    new.add_argument("--head", metavar="HEAD", help="head variant (default: the architecture's first)")
    new.add_argument("--num-outputs", type=int, metavar="N",
                     help=f"head outputs, at most {MAX_NUM_OUTPUTS} "
                          "(default: read from the checkpoint's head when it has one)")
    new.add_argument("--preprocess", metavar="PRESET",
                     help="unit | imagenet | signed | clip | facenet (default: the architecture's usual one)")
    new.add_argument("--resize", metavar="FILTER", help="PIL resize filter (default: the preset's)")
    new.add_argument("--layer", action="append", metavar="L", help="default layer to dissect (repeatable)")
    new.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    new.set_defaults(func=run)
    lst = sub.add_parser("list", help="list the model cards found and the architectures", formatter_class=HelpFormatter,
                         description="List the model cards found (built in, or in $HND_MODELS_DIR) and every "
                                     "architecture hnd card new can write a card for.")
    lst.set_defaults(func=run)
    p.set_defaults(func=run, card_command=None)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.errors import HndError

    if args.card_command == "new":
        return _new(args)
    if args.card_command == "list":
        return _list()
    raise HndError("hnd card: give an action, `new` or `list` (see `hnd card --help`)")


def _new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hnd_jax.card_template import card_text, write_card

    out = Path(args.out)
    name = args.name or out.stem
    text = card_text(name, args.arch, input_size=args.input_size, head=args.head, num_outputs=args.num_outputs,
                     preprocess=args.preprocess, resize=args.resize, layers=args.layer)
    write_card(out, text, force=args.force)
    print(f"wrote {out}: edit trained_for and [weights], then `hnd layers --model {out}`")
    return 0


def _list() -> int:
    from hnd_jax.cards import cards_dir, list_cards
    from hnd_jax.models.registry import ARCHITECTURES

    cards = list_cards()
    print(f"model cards in {cards_dir()} ({len(cards)}):")
    width = max([len(c.name) for c in cards] + [4])
    for card in cards:
        print(f"  {card.name:<{width}}  {card.architecture} at {card.input_size} px, default layer {card.default_layers[0]}")
    print("architectures (for `hnd card new --arch`):")
    for name, spec in ARCHITECTURES.items():
        print(f"  {name:<{width}}  {spec.description}")
    return 0
