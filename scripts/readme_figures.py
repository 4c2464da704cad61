#!/usr/bin/env python
"""Print (or write into README.md) the README's demo figures from ``hnd demo`` summaries.

    python scripts/readme_figures.py runs/demo [runs/demo2 ...]          # Markdown on stdout
    python scripts/readme_figures.py benchmarks/measured/demo_summary.json --write README.md
    python scripts/readme_figures.py benchmarks/measured/demo_summary.json --check README.md

Each argument is a demo's OUT folder or its summary.json. ``--write`` replaces the README's block
between the demo-figures markers; ``--check`` exits 1 when that block differs from what the
summaries give. The formatting is :mod:`hnd_jax.demo.figures`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hnd_jax.demo.figures import demo_tables, load_summary, replace_block
from hnd_jax.errors import HndError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="+", metavar="OUT|summary.json", help="demo output folders or summary files")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="README", help="replace the demo-figures block of this Markdown file")
    mode.add_argument("--check", metavar="README", help="exit 1 when this file's demo-figures block is stale")
    args = p.parse_args(argv)
    try:
        tables = demo_tables(load_summary(s) for s in args.summaries)
        if not (args.write or args.check):
            sys.stdout.write(tables)
            return 0
        path = Path(args.write or args.check)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HndError(f"{path}: cannot read ({exc})") from None
        new = replace_block(text, tables)
        if args.check:
            if new != text:
                print(f"{path}: the demo figures differ from {', '.join(args.summaries)}; "
                      f"rerun with --write {path}", file=sys.stderr)
                return 1
            return 0
        path.write_text(new, encoding="utf-8")
        print(f"wrote the demo figures into {path}", file=sys.stderr)
        return 0
    except HndError as exc:
        print(f"readme_figures: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
