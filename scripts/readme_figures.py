#!/usr/bin/env python
"""Print (or write into README.md) the README's generated figures: the demo's and the benchmarks'.

    python scripts/readme_figures.py                                     # Markdown of both on stdout
    python scripts/readme_figures.py benchmarks/measured/demo_summary.json --write README.md
    python scripts/readme_figures.py benchmarks/measured/demo_summary.json --check README.md

The positional arguments are demos' OUT folders or their summary.json (default
benchmarks/measured/demo_summary.json); the benchmark table is read from the JSON files in
``--measured`` (default benchmarks/measured/). ``--write`` replaces the README's blocks between the
demo-figures and the bench-figures markers; ``--check`` exits 1 when either block differs from what
the files give. The formatting is :mod:`hnd_jax.demo.figures` and :mod:`hnd_jax.demo.bench_figures`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hnd_jax.demo.bench_figures import bench_table, replace_bench_block
from hnd_jax.demo.figures import demo_tables, load_summary, replace_block
from hnd_jax.errors import HndError

MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "measured"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="*", metavar="OUT|summary.json", default=[str(MEASURED / "demo_summary.json")],
                   help="demo output folders or summary files (default: benchmarks/measured/demo_summary.json)")
    p.add_argument("--measured", metavar="DIR", default=str(MEASURED),
                   help="folder of the benchmarks' measured JSON (default: benchmarks/measured/)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="README",
                      help="replace the demo- and bench-figures blocks of this Markdown file")
    mode.add_argument("--check", metavar="README", help="exit 1 when either generated block of this file is stale")
    args = p.parse_args(argv)
    try:
        tables = demo_tables(load_summary(s) for s in args.summaries)
        bench = bench_table(args.measured)
        if not (args.write or args.check):
            sys.stdout.write(tables + "\n" + bench)
            return 0
        path = Path(args.write or args.check)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HndError(f"{path}: cannot read ({exc})") from None
        new = replace_bench_block(replace_block(text, tables), bench)
        if args.check:
            stale = [what for what, old, fresh in (
                (f"the demo figures differ from {', '.join(args.summaries)}", text, replace_block(text, tables)),
                (f"the benchmark figures differ from {args.measured}", text, replace_bench_block(text, bench)),
            ) if old != fresh]
            if stale:
                print(f"{path}: {'; '.join(stale)}; rerun with --write {path}", file=sys.stderr)
                return 1
            return 0
        path.write_text(new, encoding="utf-8")
        print(f"wrote the demo and benchmark figures into {path}", file=sys.stderr)
        return 0
    except HndError as exc:
        print(f"readme_figures: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
