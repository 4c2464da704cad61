"""`hnd dictionary check|synth|prepare` (placeholder until the foundation lands)."""

from __future__ import annotations

from hnd_jax.cli.common import not_yet


def register(subparsers) -> None:
    p = subparsers.add_parser("dictionary", help="(not yet available)")
    p.set_defaults(func=not_yet("hnd dictionary"))
