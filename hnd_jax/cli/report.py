"""`hnd report OUT`: write OUT/report.html and OUT/plots/ for a finished dissection (offline)."""

from __future__ import annotations

import argparse
import sys

from hnd_jax.cli.common import add_taxonomy_arg, add_untrusted_input_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write the HTML report and plots of a finished dissection",
        description=__doc__,
    )
    p.add_argument("out", metavar="OUT", help="a `hnd dissect` output folder (holds dissection.json)")
    p.add_argument(
        "--dictionary",
        metavar="ROOT|PREP|synthetic",
        default=None,
        help="the Face Dictionary for the top images (default: the one recorded in dissection.json)",
    )
    p.add_argument("--no-images", action="store_true", help="do not open the dictionary; cards without images")
    p.add_argument("--no-plots", action="store_true", help="do not (re)write OUT/plots/")
    p.add_argument("--max-units", type=int, default=None, metavar="N", help="at most N unit cards per layer (highest IoU)")
    add_taxonomy_arg(p)
    add_untrusted_input_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.reports.build import build_report

    outcome = build_report(
        args.out,
        dictionary=args.dictionary,
        taxonomy=args.taxonomy,
        images=not args.no_images,
        plots=not args.no_plots,
        max_units=args.max_units,
    )
    for note in outcome.notes:
        print(f"hnd: note: {note}", file=sys.stderr)
    print(f"wrote {outcome.html}" + (f" and {len(outcome.plots)} plots" if outcome.plots else ""))
    return 0
