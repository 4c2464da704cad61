"""Argument helpers shared by several subcommands (so every command spells them the same way)."""

from __future__ import annotations

import argparse


def add_taxonomy_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--taxonomy",
        metavar="FILE",
        default=None,
        help="taxonomy JSON with your own concepts, regions and families (default: the Face Dictionary)",
    )


def add_dictionary_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--dictionary",
        metavar="ROOT|PREP|synthetic",
        required=required,
        help="a Face Dictionary root (published layout), a prepared dataset, or 'synthetic'",
    )


def not_yet(feature: str):
    """A placeholder command body for a feature that has not landed yet (clear message, exit 2)."""

    def run(args: argparse.Namespace) -> int:
        from hnd_jax.errors import HndError

        raise HndError(f"'{feature}' is not available yet in this version of hnd-jax")

    return run
