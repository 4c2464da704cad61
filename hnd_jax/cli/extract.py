"""hnd extract: activations of named layers, saved as float32 NCHW (PyTorch's layout).

Inputs (exactly one):
  --inputs X.npy      preprocessed images, float32 [N, H, W, 3] (NHWC); used as they are
  --images DIR        image files in sorted name order, preprocessed as the model card says
  --dictionary SPEC   the local images of a Face Dictionary (ROOT, PREP or 'synthetic') in dictionary
                      order; a one-layer .npy written this way is what `hnd dissect --activations` reads

Output: OUT.npz with one array [N, C, H, W] per layer name (or OUT.npy for a single layer).
With --dictionary and --for-dissect (one layer): OUT.npz holds 'local' and '<Family>/<group>' arrays
for the global families too, the layout `hnd dissect --activations OUT.npz` reads.

Several processes (--distributed, or --coordinator/--num-processes/--process-id): each computes its
contiguous slice of the rows; process 0 writes OUT (the same file one process writes).
"""

from __future__ import annotations

import argparse

from hnd_jax.cli.common import add_no_progress, add_taxonomy_arg, progress_mode
from hnd_jax.cli.help import HelpFormatter
from hnd_jax.distributed import add_distributed_options, joined, options_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="save the activations of named layers (NCHW float32) for images, an array or the dictionary",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="NAME", help="a model card name (hnd card list shows them) or the path of a card .toml")
    p.add_argument("--weights", metavar="W", help="original .pt/.pth/.bin/.safetensors/.npz or a converted folder")
    p.add_argument("--layer", action="append", metavar="L", help="layer name (repeatable; default: the card's)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", metavar="X.npy", help="preprocessed NHWC float32 images [N, H, W, 3]")
    src.add_argument("--images", metavar="DIR", help="folder of image files (sorted by name)")
    src.add_argument("--dictionary", metavar="ROOT|PREP|synthetic", help="Face Dictionary local images")
    p.add_argument("--out", required=True, metavar="ACTS.npz", help="output .npz (or .npy for one layer)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="images per forward")
    p.add_argument(
        "--for-dissect",
        action="store_true",
        help="with --dictionary and one layer: write 'local' and '<Family>/<group>' arrays for hnd dissect",
    )
    add_no_progress(p)
    add_taxonomy_arg(p)
    add_distributed_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with joined(options_from_args(args)):  # several processes: each computes a slice, process 0 writes
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import jax

    from hnd_jax.convert.extract import run_extract
    from hnd_jax.distributed import agree_across_processes

    agree_across_processes({k: getattr(args, k) for k in ("model", "weights", "layer", "inputs", "images", "dictionary",
                                                          "out", "batch_size", "for_dissect", "taxonomy")})

    taxonomy = None
    if args.taxonomy:
        from hnd_jax.taxonomy import load_taxonomy

        taxonomy = load_taxonomy(args.taxonomy)
    out = run_extract(
        args.model,
        args.weights,
        args.layer,
        out=args.out,
        inputs=args.inputs,
        images=args.images,
        dictionary=args.dictionary,
        batch_size=args.batch_size,
        taxonomy=taxonomy,
        for_dissect=args.for_dissect,
        progress=progress_mode(args),
    )
    if jax.process_index() == 0:
        print(f"wrote {out}")
    return 0
