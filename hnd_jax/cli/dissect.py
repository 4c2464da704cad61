"""`hnd dissect`: score the units of a layer against the Face Dictionary.

Two sources of activations, one engine:

* ``--model NAME [--weights W] [--layer L ...]`` runs a Flax model over the dictionary
  (:func:`hnd_jax.pipeline.dissect.dissect_model`);
* ``--activations FILE --layer NAME --image-size S`` scores activations computed elsewhere, by any
  framework (:func:`hnd_jax.scoring.activations_file.dissect_activations`).
"""

from __future__ import annotations

import argparse
import sys

from hnd_jax.cli.common import add_dictionary_arg, add_taxonomy_arg
from hnd_jax.errors import HndError
from hnd_jax.scoring.config import IOU_MODES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dissect",
        help="pair every unit of a layer with Face Dictionary concepts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="model card name (see models/)")
    src.add_argument(
        "--activations",
        metavar="FILE",
        help=".npy [N,U,h,w] NCHW float in dictionary order, or .npz with 'local' and '<Family>/<group>' arrays",
    )
    add_dictionary_arg(p)
    p.add_argument("--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--layer", action="append", metavar="NAME", help="layer to dissect (repeatable)")
    p.add_argument("--weights", metavar="W", help="checkpoint: original .pt/.pth/.safetensors/.npz or a converted folder")
    p.add_argument("--image-size", type=int, metavar="S", help="analysis size S (default: the model's input size)")
    p.add_argument("--iou-mode", choices=IOU_MODES, default="family")
    p.add_argument("--quantile", type=float, default=0.005, metavar="Q")
    p.add_argument("--iou-threshold", type=float, default=0.04, metavar="T")
    p.add_argument("--pair-factor", type=float, default=1.5, metavar="F", help="pair when P(c|u) > F/|R|")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--fresh", action="store_true", help="ignore a previous interrupted run and start over")
    p.add_argument(
        "--cache-budget",
        default="2GiB",
        metavar="SIZE",
        help="keep activations between the passes when they fit this budget, else recompute (e.g. 512MiB, 0)",
    )
    p.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html and OUT/plots/ (write them later with 'hnd report OUT')")
    add_taxonomy_arg(p)
    p.set_defaults(func=run)


def scoring_options(args: argparse.Namespace) -> dict:
    """The ScoringConfig fields given on the command line (image_size may still be None)."""
    return dict(
        image_size=args.image_size,
        quantile=args.quantile,
        iou_threshold=args.iou_threshold,
        iou_mode=args.iou_mode,
        pair_factor=args.pair_factor,
    )


def run(args: argparse.Namespace) -> int:
    if args.batch_size <= 0:
        raise HndError(f"--batch-size {args.batch_size}: expected a positive integer")
    if args.activations:
        if not args.layer or len(args.layer) != 1:
            raise HndError("--activations needs exactly one --layer NAME (the name used for OUT/<layer>/)")
        if args.image_size is None:
            raise HndError("--activations needs --image-size S (the analysis size the masks are resized to)")
        from hnd_jax.scoring.activations_file import dissect_activations

        dissect_activations(
            args.activations,
            dictionary=args.dictionary,
            layer=args.layer[0],
            out=args.out,
            scoring=scoring_options(args),
            taxonomy=args.taxonomy,
            batch_size=args.batch_size,
        )
        return _report(args)

    from hnd_jax.pipeline.dissect import dissect_model

    dissect_model(
        model=args.model,
        weights=args.weights,
        layers=args.layer,
        dictionary=args.dictionary,
        out=args.out,
        scoring=scoring_options(args),
        taxonomy=args.taxonomy,
        batch_size=args.batch_size,
        fresh=args.fresh,
        cache_budget=args.cache_budget,
    )
    return _report(args)


def _report(args: argparse.Namespace) -> int:
    """The results are complete at this point; the report is a view of them, written after."""
    if args.no_report:
        print(f"results in {args.out} (report skipped: hnd report {args.out})")
        return 0
    from hnd_jax.reports.build import build_report

    outcome = build_report(args.out, dictionary=args.dictionary, taxonomy=args.taxonomy)
    for note in outcome.notes:
        print(f"hnd: note: {note}", file=sys.stderr)
    print(f"results in {args.out}; report {outcome.html}")
    return 0
