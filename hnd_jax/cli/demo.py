"""hnd demo: the planted-bias experiment end to end (offline, a few minutes on 2 CPU cores)."""

from __future__ import annotations

import argparse

from hnd_jax.cli.common import add_no_progress
from hnd_jax.cli.help import HelpFormatter
from hnd_jax.demo.settings import DemoSettings

_DEFAULTS = DemoSettings()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train a biased and a control face CNN on synthetic faces, dissect both, compare",
        description=(
            "Generate a synthetic Face Dictionary and a training set with a planted bias (the task's\n"
            "positives mostly wear eyeglasses and carry a synthetic group cue), train the demo CNN on it\n"
            "and a control on unbiased faces, dissect both and write OUT/report.html, OUT/compare/,\n"
            "OUT/summary.json and OUT/index.html (every report here). Afterwards, hnd report OUT rewrites\n"
            "the models' reports and OUT/index.html."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (new, empty, or an earlier demo's; default runs/demo)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, metavar="S",
                   help=f"seed of every random choice (default {_DEFAULTS.seed})")
    p.add_argument("--train-images", type=int, default=_DEFAULTS.train_images, metavar="N",
                   help=f"training images per model (default {_DEFAULTS.train_images})")
    p.add_argument("--dictionary-images", type=int, default=_DEFAULTS.dictionary_images, metavar="N",
                   help=f"synthetic dictionary size (default {_DEFAULTS.dictionary_images})")
    p.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, metavar="E",
                   help=f"training epochs (default {_DEFAULTS.epochs})")
    p.add_argument("--replicates", type=int, default=_DEFAULTS.replicates, metavar="K",
                   help="biased/control pairs trained from seeds S, S+1, ...; the summary reports their spread")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hnd_jax.demo import run_demo

    settings = DemoSettings(
        seed=args.seed, train_images=args.train_images, dictionary_images=args.dictionary_images, epochs=args.epochs,
        replicates=args.replicates,
    )
    summary = run_demo(args.out, settings, progress=not args.no_progress)
    p, f = summary["planted"], summary["finding"]
    print()
    print(f"planted: task {p['task']}; concept {p['concept']} ({p['concept_bias']:.0%}); "
          f"subgroup {p['family']}={p['group']} ({p['group_bias']:.0%})")
    print(f"{'of ' + str(f['units']) + ' units':34s}{'biased':>8s}{'control':>9s}{'z':>8s}"
          f"{'significant':>13s}{'z':>8s}")
    for key, label in (("paired_with_planted_concept", f"paired with {p['concept']}"),
                       ("biased_toward_planted_group", f"biased toward {p['family']}={p['group']}")):
        r = f[key]
        sig = f"{r.get('biased_significant', 0)} vs {r.get('control_significant', 0)}"
        print(f"{label:34s}{r['biased']:8d}{r['control']:9d}{r['z']:8.2f}{sig:>13s}{r.get('z_significant', 0.0):8.2f}")
    verdict = "reproduced" if f["reproduced"] else "NOT reproduced"
    print(f"planted bias {verdict} ({f['criterion']}); {summary['timings']['total']:.0f} s")
    print(f"open {args.out}/report.html")
    return 0
