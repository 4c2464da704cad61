"""`hnd compare OUT1 OUT2 ... --out CMP`: compare dissected models (fractions of units, grouped bars)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare the dissections of several models (per region, concept type, global subgroup)",
        description=__doc__,
    )
    p.add_argument("outs", nargs="+", metavar="OUT", help="`hnd dissect` output folders (two or more)")
    p.add_argument("--out", required=True, metavar="CMP", help="folder for the comparison plots, compare.json/html")
    p.add_argument("--labels", metavar="A,B,...", default=None, help="one label per OUT, comma-separated")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.reports.compare import compare_runs

    labels = None if args.labels is None else args.labels.split(",")
    out = compare_runs(args.outs, args.out, labels=labels)
    print(f"wrote {out / 'compare.html'}, compare.json and the comparison plots")
    return 0
