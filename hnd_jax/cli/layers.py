"""`hnd layers` (placeholder until its feature lands)."""

from __future__ import annotations

from hnd_jax.cli.common import not_yet


def register(subparsers) -> None:
    p = subparsers.add_parser("layers", help="(not yet available)")
    p.set_defaults(func=not_yet("hnd layers"))
