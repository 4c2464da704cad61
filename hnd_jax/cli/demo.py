"""`hnd demo` (placeholder until the end-to-end demo lands)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="(not yet available) the end-to-end planted-bias demo")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=_not_yet)


def _not_yet(args) -> int:
    print("hnd demo: not available yet in this version of hnd-jax (it lands with the end-to-end pipeline).")
    return 0
