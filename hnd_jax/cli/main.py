"""Entry point of the ``hnd`` console script.

Each subcommand lives in its own module under ``hnd_jax.cli`` with a ``register(subparsers)``
function that adds its parser and sets ``func`` (called with the parsed namespace; returns an exit
code or None). The modules only parse arguments and call the library.

Errors a user can cause are :class:`~hnd_jax.errors.HndError`: printed as one line on stderr,
exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from hnd_jax import __version__
from hnd_jax.errors import HndError

SUBCOMMAND_MODULES = ("demo", "dictionary", "dissect", "layers", "card", "convert", "extract", "report", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hnd",
        description="Hierarchical Network Dissection of face models in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"hnd-jax {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"hnd_jax.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except HndError as exc:
        print(f"hnd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hnd: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
