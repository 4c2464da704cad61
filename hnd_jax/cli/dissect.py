"""hnd dissect: pair every unit of a layer with Face Dictionary concepts.

Two sources of activations, one driver (resume, several processes, progress and results alike):

  --model NAME|CARD.toml [--weights W] [--layer L ...]
      runs a Flax model over the dictionary (one forward per batch for all layers);
  --activations FILE --layer NAME --image-size S
      scores activations computed elsewhere, by any framework: .npy [N, U, h, w] float in
      dictionary order, or .npz with 'local' and '<Family>/<group>' arrays (hnd extract --for-dissect).

Rerunning the same command after an interruption resumes where it stopped (--fresh starts over).
Results: OUT/<layer>/scores.npz and units.csv, OUT/dissection.json (written last), OUT/report.html.
"""

from __future__ import annotations

import argparse
import sys

from hnd_jax.cli.common import add_config_options, add_dictionary_arg, add_taxonomy_arg, config_values
from hnd_jax.cli.help import HelpFormatter
from hnd_jax.distributed import add_distributed_options, joined, options_from_args
from hnd_jax.errors import HndError
from hnd_jax.pipeline.config import RunConfig
from hnd_jax.scoring.config import ScoringConfig

SCORING_OPTIONS = ("image_size", "quantile", "iou_threshold", "iou_mode", "pair_factor", "permutations", "alpha", "seed")
IMAGE_SIZE_HELP = (
    "analysis size S in pixels: masks and upsampled maps are S x S; with --model it is also the model's input "
    "size (the dictionary images are resized to S x S before the forward pass; default: the card's input size)"
)
RUN_OPTIONS = ("batch_size", "cache_budget", "checkpoint_every", "devices", "progress", "fresh", "tally", "prefetch")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dissect",
        help="pair every unit of a layer with Face Dictionary concepts",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME|CARD.toml",
                     help="a model card name (hnd card list shows them) or the path of a card .toml")
    src.add_argument(
        "--activations",
        metavar="FILE",
        help=".npy [N,U,h,w] NCHW float in dictionary order, or .npz with 'local' and '<Family>/<group>' arrays",
    )
    add_dictionary_arg(p)
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output folder: new, empty, or an earlier hnd dissect's (a rerun replaces its results)")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="layer to dissect (repeatable; default with --model: the card's default layers)")
    p.add_argument("--weights", metavar="W",
                   help="checkpoint: original .pt/.pth/.bin/.safetensors/.npz or a folder written by hnd convert")
    p.add_argument("--random-init", action="store_true",
                   help="dissect the card's architecture with random parameters (the untrained control); no --weights")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="seed of --random-init's parameters")
    add_config_options(p, ScoringConfig, SCORING_OPTIONS, helps={"image_size": IMAGE_SIZE_HELP})
    add_config_options(p, RunConfig, RUN_OPTIONS)
    p.add_argument("--no-progress", dest="progress", action="store_const", const="none",
                   help="no progress output (same as --progress none)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html and OUT/plots/ (write them later with 'hnd report OUT')")
    add_taxonomy_arg(p)
    add_distributed_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with joined(options_from_args(args)):  # several processes: DESIGN.md §6
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from hnd_jax.compile_cache import enable_compilation_cache

    scoring = config_values(args, ScoringConfig, SCORING_OPTIONS)
    run_config = RunConfig(**config_values(args, RunConfig, RUN_OPTIONS))  # checked before any work
    enable_compilation_cache()  # a rerun loads the compiled kernels instead of compiling them
    if args.activations:
        if not args.layer or len(args.layer) != 1:
            raise HndError("--activations needs exactly one --layer NAME (the name used for OUT/<layer>/)")
        if args.random_init:
            raise HndError("--random-init goes with --model (an activations file has no parameters)")
        if args.image_size is None:
            raise HndError("--activations needs --image-size S (the analysis size the masks are resized to)")
        from hnd_jax.pipeline.dissect import dissect_activations

        dissect_activations(args.activations, dictionary=args.dictionary, layer=args.layer[0], out=args.out,
                            scoring=scoring, run=run_config, taxonomy=args.taxonomy)
        return _report(args)
    ScoringConfig(**{**scoring, "image_size": scoring["image_size"] or 1})  # range checks before the model loads

    from hnd_jax.pipeline.dissect import dissect_model

    dissect_model(args.model, weights=args.weights, layers=args.layer, dictionary=args.dictionary, out=args.out,
                  scoring=scoring, run=run_config, taxonomy=args.taxonomy, random_init=args.random_init,
                  seed=args.seed)
    return _report(args)


def _report(args: argparse.Namespace) -> int:
    """The results are complete at this point; the report is a view of them, written after
    (by process 0, which wrote them). The results are read once: the report's loaded results
    are what the summary is printed from."""
    import jax

    if jax.process_index() != 0:
        print(f"hnd: process {jax.process_index()} done; process 0 wrote {args.out}", file=sys.stderr)
        return 0
    from hnd_jax.reports.console import console_summary

    if args.no_report:
        print(console_summary(args.out))
        return 0
    from hnd_jax.reports.build import build_report

    outcome = build_report(args.out, dictionary=args.dictionary, taxonomy=args.taxonomy)
    for note in outcome.notes:
        print(f"hnd: note: {note}", file=sys.stderr)
    print(console_summary(args.out, run=outcome.run))
    return 0
