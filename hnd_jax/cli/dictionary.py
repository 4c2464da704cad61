"""`hnd dictionary check|prepare|synth`: inspect, convert and generate Face Dictionaries.

* ``check ROOT|PREP|synthetic[:N[:SEED]] [--json] [--skip-bad]``: decode every file and print what
  the dictionary holds (images per family, concept and global subgroup, image size range, problems);
* ``prepare ROOT --size S --out PREP [--resample bicubic]``: decode and resize once into a
  prepared dataset (format 2: raw images and bit-packed masks) that every command accepts for ROOT;
* ``synth OUT [--images N] [--seed S]``: write the procedural Face Dictionary in the published layout.

Thin layer over :mod:`hnd_jax.dictionary`.
"""

from __future__ import annotations

import argparse
import json
import sys

from hnd_jax.cli.common import add_no_progress, add_taxonomy_arg, add_untrusted_input_args, progress_mode
from hnd_jax.errors import HndError

DESCRIPTION = """\
Inspect, convert and generate Face Dictionaries.

  check ROOT|PREP|synthetic[:N[:SEED]]   decode every file and print what the dictionary holds
                                         (images per family, concept and subgroup, sizes, problems)
  prepare ROOT --size S --out PREP       decode and resize once into a prepared dataset (raw
                                         images, bit-packed masks) that every command accepts for ROOT
  synth OUT [--images N] [--seed S]      write the synthetic Face Dictionary in the published layout

'synthetic' alone means 600 images, seed 0.
"""


def _index_files(pairs: list[str] | None) -> dict[str, str] | None:
    """``--index-file FAMILY=FILE`` (repeatable) -> {family: file}."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        family, sep, file = pair.partition("=")
        if not sep or not family or not file:
            raise HndError(f"--index-file {pair!r}: expected FAMILY=FILE, e.g. parts=MyParts.csv")
        out[family] = file
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows/files/groups and count them instead of stopping")
    p.add_argument(
        "--index-file",
        action="append",
        metavar="FAMILY=FILE",
        help="use another index CSV for a local family, e.g. parts=MyParts.csv (repeatable)",
    )
    p.add_argument("--workers", type=int, default=None, metavar="N", help="decoder threads (default: up to 8)")
    add_taxonomy_arg(p)
    add_untrusted_input_args(p)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dictionary",
        help="check, prepare or generate a Face Dictionary",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="dictionary_command", metavar="ACTION")

    c = sub.add_parser("check", help="validate a Face Dictionary and summarise it",
                       description="Decode every file of a Face Dictionary and print what it holds: images per "
                       "family, concept and global subgroup, the image size range, and every problem found.")
    c.add_argument("dictionary", metavar="ROOT|PREP", help="published-layout root, prepared folder, or synthetic[:N[:SEED]]")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_common(c)
    c.set_defaults(func=run_check)

    r = sub.add_parser("prepare", help="decode and resize once into a prepared dataset (fast to read)",
                       description="Decode and resize a Face Dictionary once into a prepared dataset (PREP: raw "
                       "uint8 images and bit-packed masks, memory-mapped) that every command accepts in place of ROOT.")
    r.add_argument("dictionary", metavar="ROOT", help="published-layout root or synthetic[:N[:SEED]]")
    r.add_argument("--size", type=int, required=True, metavar="S", help="analysis size S (the model's input size)")
    r.add_argument("--out", required=True, metavar="PREP", help="output folder (written atomically)")
    r.add_argument("--resample", default="bicubic", metavar="FILTER", help="image resample filter of the model card (default bicubic)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder at --out")
    add_no_progress(r)
    _add_common(r)
    r.set_defaults(func=run_prepare)

    s = sub.add_parser("synth", help="write the synthetic Face Dictionary in the published layout",
                       description="Write the procedural (synthetic) Face Dictionary as files in the published "
                       "layout: index CSVs, images, masks and non_localizable/ global images.")
    s.add_argument("out", metavar="OUT", help="output folder")
    s.add_argument("--images", type=int, default=600, metavar="N", help="number of local images (default 600)")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    add_no_progress(s)
    add_taxonomy_arg(s)
    s.set_defaults(func=run_synth)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _skipped_line(skipped: dict[str, int]) -> str:
    return "skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) if skipped else "skipped: none"


def run_check(args: argparse.Namespace) -> int:
    from hnd_jax.dictionary.check import check_dictionary, format_summary
    from hnd_jax.taxonomy import resolve_taxonomy

    summary = check_dictionary(
        args.dictionary,
        taxonomy=resolve_taxonomy(args.taxonomy) if args.taxonomy else None,
        skip_bad=args.skip_bad,
        index_files=_index_files(args.index_file),
        num_workers=args.workers,
        allow_outside_root=bool(args.allow_outside_root),
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from hnd_jax.dictionary.opening import parse_synthetic_spec, synthetic_root
    from hnd_jax.dictionary.prepare import prepare_dictionary
    from hnd_jax.taxonomy import resolve_taxonomy

    taxonomy = resolve_taxonomy(args.taxonomy)
    root = args.dictionary
    synthetic = parse_synthetic_spec(root)
    if synthetic is not None:
        root = synthetic_root(*synthetic, taxonomy=taxonomy)
    out = prepare_dictionary(
        root,
        args.out,
        args.size,
        taxonomy=taxonomy,
        image_resample=args.resample,
        skip_bad=args.skip_bad,
        index_files=_index_files(args.index_file),
        num_workers=args.workers,
        overwrite=args.overwrite,
        log=lambda msg: print(msg, file=sys.stderr),
        progress=progress_mode(args),
    )
    from hnd_jax.dictionary.prepared import read_metadata

    meta = read_metadata(out)
    print(f"prepared {meta['num_local']} local and {meta['num_global']} global images at {args.size}x{args.size} in {out}")
    if args.skip_bad:
        print(_skipped_line(meta["source"]["skipped"]))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from hnd_jax.taxonomy import resolve_taxonomy

    try:
        from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary
    except ImportError as exc:
        raise HndError(f"the synthetic Face Dictionary generator is not available in this version ({exc})") from None
    if args.images < 1:
        raise HndError(f"--images {args.images}: must be at least 1")
    if args.seed < 0:
        raise HndError(f"--seed {args.seed}: must be >= 0")
    write_synthetic_dictionary(args.out, num_images=args.images, seed=args.seed, taxonomy=resolve_taxonomy(args.taxonomy),
                               progress=progress_mode(args))
    print(f"wrote a synthetic Face Dictionary with {args.images} local images (seed {args.seed}) to {args.out}")
    return 0
