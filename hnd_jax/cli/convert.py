"""hnd convert: turn an original checkpoint into a Flax model saved with orbax, beside its card.

The file is read without torch and without executing pickles; every tensor must be used and every
shape must match the card's architecture (the error lists missing, unexpected and mismatched keys).
The folder it writes is accepted by every command that takes --weights.
"""

from __future__ import annotations

import argparse

from hnd_jax.cli.help import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a PyTorch/safetensors/npz checkpoint into a Flax (orbax) folder with its model card",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="NAME", help="a model card name (hnd card list shows them) or the path of a card .toml file")
    p.add_argument("--weights", required=True, metavar="FILE", help="original weights: .pt/.pth/.bin/.safetensors/.npz")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new, or a folder an earlier hnd convert wrote)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.convert.checkpoint import convert_checkpoint, read_manifest

    out = convert_checkpoint(args.model, args.weights, args.out)
    manifest = read_manifest(out)
    source = manifest["source"]
    print(
        f"converted {source['file']} ({source['format']}, sha256 {source['sha256'][:12]}...) for model "
        f"'{manifest['card']}' ({manifest['architecture']}, {manifest['num_arrays']} arrays) -> {out}"
    )
    return 0
