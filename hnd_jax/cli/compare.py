"""hnd compare OUT1 OUT2 ... --out CMP: compare dissected models (fractions of units, grouped bars).

Writes CMP/compare.html (figures and a table linking back to each model's report), CMP/compare.json
and the figures as PNGs. Every run must use the same taxonomy.
"""

from __future__ import annotations

import argparse

from hnd_jax.cli.help import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare the dissections of several models (per region, concept type, global subgroup)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("outs", nargs="+", metavar="OUT", help="hnd dissect output folders (two or more)")
    p.add_argument("--out", required=True, metavar="CMP", help="folder for compare.html, compare.json and the plots (created)")
    p.add_argument("--labels", metavar="A,B,...", default=None, help="one label per OUT, comma-separated (default: the folder names)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="compare runs with different dictionaries, image sizes or scoring settings (marked as mixed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.reports.compare import compare_runs

    labels = None if args.labels is None else args.labels.split(",")
    out = compare_runs(args.outs, args.out, labels=labels, allow_mixed=args.allow_mixed)
    print(f"wrote {out / 'compare.html'}, compare.json and the comparison plots")
    return 0
