"""hnd report OUT: write OUT/report.html and OUT/plots/ for a finished dissection (offline).

OUT is a hnd dissect output folder (it holds dissection.json). On a folder that holds several
dissections in sub-folders instead (the output of hnd demo, a sweep over models), every one of them
gets its report and FOLDER/index.html links them all.

The top images are dictionary positions, so the dictionary opened must be the one the run used: one
whose identity (content hash, image count, taxonomy) differs from dissection.json's is refused.
"""

from __future__ import annotations

import argparse
import sys

from hnd_jax.cli.common import add_taxonomy_arg, add_untrusted_input_args
from hnd_jax.cli.help import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write the HTML report and plots of a finished dissection",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="a hnd dissect output folder (holds dissection.json), or a folder of several such as a hnd demo output",
    )
    p.add_argument(
        "--dictionary",
        metavar="ROOT|PREP|synthetic",
        default=None,
        help="the Face Dictionary for the top images (default: the one recorded in dissection.json); it must be"
        " the run's dictionary: one whose content differs from what dissection.json records is refused",
    )
    p.add_argument(
        "--no-images",
        action="store_true",
        help="do not open the dictionary; unit cards without images (when the run's dictionary is gone or changed)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not (re)write OUT/plots/")
    p.add_argument(
        "--max-units",
        type=int,
        default=None,
        metavar="N",
        help="at most N unit cards per layer, those with the highest IoU (default: every unit)",
    )
    add_taxonomy_arg(p)
    add_untrusted_input_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.reports.build import FolderOutcome, build_reports

    outcome = build_reports(
        args.out,
        dictionary=args.dictionary,
        taxonomy=args.taxonomy,
        images=not args.no_images,
        plots=not args.no_plots,
        max_units=args.max_units,
    )
    for one in outcome.reports if isinstance(outcome, FolderOutcome) else [outcome]:
        for note in one.notes:
            print(f"hnd: note: {note}", file=sys.stderr)
        print(f"wrote {one.html}" + (f" and {len(one.plots)} plots" if one.plots else ""))
    if isinstance(outcome, FolderOutcome):
        print(f"wrote {outcome.index} (links the {len(outcome.reports)} reports)")
    return 0
