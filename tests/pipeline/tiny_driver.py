"""Run dissect_model on the tiny test dictionary and model (a subprocess for the kill -9 resume test).

Usage: python tests/pipeline/tiny_driver.py OUT [--fresh] [--quantile Q] [--model-seed K]
User errors print ``hnd: error: ...`` and exit 2, like the CLI.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hnd_jax.errors import HndError  # noqa: E402
from hnd_jax.pipeline.dissect import dissect_model  # noqa: E402
from tests.pipeline.fakes import TinyDictionary, TinyNet  # noqa: E402

LAYERS = ("conv1", "conv2")
BATCH = 4


def run(out, *, fresh=False, quantile=0.05, model_seed=0, cache_budget="1MiB", mesh=None, progress="none",
        scoring=None, **kw):
    return dissect_model(
        TinyNet(seed=model_seed), layers=LAYERS, dictionary=TinyDictionary(), out=out,
        scoring={"image_size": 12, "quantile": quantile, **(scoring or {})}, mesh=mesh,
        run={"batch_size": BATCH, "fresh": fresh, "cache_budget": cache_budget, "checkpoint_every": 1,
             "progress": progress}, **kw,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--quantile", type=float, default=0.05)
    p.add_argument("--model-seed", type=int, default=0)
    a = p.parse_args()
    try:
        run(a.out, fresh=a.fresh, quantile=a.quantile, model_seed=a.model_seed)
    except HndError as exc:
        print(f"hnd: error: {exc}", file=sys.stderr)
        sys.exit(2)
