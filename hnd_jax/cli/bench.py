"""hnd bench: throughput of a whole dissection on synthetic inputs of a named shape.

Works anywhere hnd-jax is installed (no checkout, no download): the synthetic Face Dictionary and a
model card's architecture with random parameters. Every stage is timed on its own (dictionary
read, preprocessing + forward, pass 1, IoU tally, global families, finalize, end to end).

  hnd bench                                   # cpu-small: under two minutes on 2 CPU cores
  hnd bench --config gpu-large --tally dense --json bench.json
  hnd bench --config gpu-large --distributed --out /shared/bench   # on every host of a pod

Several processes: every process runs its slice, process 0 prints the aggregate and per-device
rates (OUT must then be a folder all processes share).
"""

from __future__ import annotations

import argparse
import json
import sys

from hnd_jax.cli.help import HelpFormatter
from hnd_jax.distributed import add_distributed_options, joined, options_from_args


def register(subparsers) -> None:
    from hnd_jax.bench import CONFIGS, DEFAULT_CONFIG, TALLY_KERNELS

    p = subparsers.add_parser("bench", help="throughput of a whole dissection on synthetic inputs (every stage timed)",
                              description=__doc__, formatter_class=HelpFormatter)
    shapes = "; ".join(f"{c.name}: {c.model} {c.layer} at {c.image_size}px, {c.images} images, batch {c.batch}"
                       for c in CONFIGS.values())
    p.add_argument("--config", choices=sorted(CONFIGS), default=DEFAULT_CONFIG,
                   help=f"named shape ({shapes}) (default: {DEFAULT_CONFIG})")
    p.add_argument("--tally", choices=TALLY_KERNELS, default="auto",
                   help="IoU tally kernel (auto: runs on CPUs, cells on accelerators) (default: auto)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where the run writes (default: a temporary folder; several processes: a shared folder)")
    add_distributed_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with joined(options_from_args(args)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import jax

    from hnd_jax.atomic import atomic_path
    from hnd_jax.bench import CONFIGS, format_table, run_bench

    from hnd_jax.distributed import agree_across_processes

    agree_across_processes({"config": args.config, "tally": args.tally, "out": args.out})
    report = run_bench(CONFIGS[args.config], tally=args.tally, out=args.out)
    if jax.process_index() != 0:
        print(f"hnd: process {jax.process_index()} done; process 0 prints the report"
              + (f" and writes {args.json}" if args.json else ""), file=sys.stderr)
        return 0
    print(format_table(report))
    if args.json:
        with atomic_path(args.json, suffix=".json") as tmp:
            with open(tmp, "w") as fh:
                json.dump(report, fh, indent=2, default=float)
                fh.write("\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
