"""Do the accelerator's scoring results equal the CPU's? (run on a lent GPU/TPU; prints a table).

Same synthetic Face-Dictionary-shaped data as bench_scoring.py (N images, U units, h x h maps, S px,
38 concepts). Pass 1 (exact thresholds, lo/hi, per-image max) and pass 2 (IoU counts) run on the
host CPU with the run-length kernel, then on the default backend once per kernel of ``--methods``
(default: the cell-sparse and the dense kernels). Thresholds are selections of input values, so
they must be bit-equal; the counts are integers and every kernel decides a pixel by the same
float64 formula, so they must be equal (a TPU emulates float64, see hnd_jax/scoring/upsample.py:
differences are reported, not hidden: the number of differing pixels and the largest IoU
difference are printed). Each kernel's tally time per batch (median after the compiling batch)
is printed too, and the dense / cells ratio.

    python benchmarks/check_accelerator.py [--images 512] [--units 256] [--map 7] [--size 112] [--methods cells,dense]

Saves benchmarks/results/check_accelerator.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402

from bench_scoring import Config, batch_data, batches, _pad, _pad_all  # noqa: E402
from hnd_jax.scoring.accumulator import Batch
from hnd_jax.scoring.tally import IoUTally  # noqa: E402
from hnd_jax.scoring.unit_stats import UnitStats  # noqa: E402
from hnd_jax.sharding import make_data_mesh  # noqa: E402
from hnd_jax.taxonomy import default_taxonomy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "check_accelerator.json"


def score(cfg: Config, taxonomy, mesh, method: str) -> dict:
    h, U = cfg.map_size, cfg.units
    ndev = int(mesh.devices.size)
    pad_to = -(-cfg.batch // ndev) * ndev
    stats = UnitStats(U, cfg.images, (h, h), cfg.quantile, mesh=mesh)
    state = stats.init()
    t0 = time.perf_counter()
    for start, stop in batches(cfg):
        acts, *_ = batch_data(cfg, taxonomy, start, stop)
        acts_p, valid = _pad(acts, pad_to)
        state = stats.update(state, Batch(acts_p, valid, index=np.arange(start, start + pad_to, dtype=np.int32)))
    p1 = jax.device_get(stats.finalize(state))
    tally = IoUTally(U, taxonomy.concept_family_index, cfg.image_size, (h, h), p1["thresholds"], "family",
                     mesh=mesh, method=method)
    tstate = tally.init()
    per_batch = []
    for start, stop in batches(cfg):
        padded, valid = _pad_all(batch_data(cfg, taxonomy, start, stop), pad_to)
        t1 = time.perf_counter()
        tstate = tally.update(tstate, Batch(padded[0], valid, masks=padded[1], labelled=padded[2], family=padded[3]))
        per_batch.append(time.perf_counter() - t1)  # returns host int64 counts: synchronous
    counts = jax.device_get(tally.finalize(tstate))
    steady = per_batch[1:] or per_batch
    return {"p1": p1, "counts": counts, "method": tally.method, "seconds": time.perf_counter() - t0,
            "platform": mesh.devices.flat[0].platform, "devices": ndev,
            "tally_first_batch_s": per_batch[0], "tally_per_batch_s": float(np.median(steady)),
            "mixed_cells_per_image": tally.mixed_cells / cfg.images if tally.method == "cells" else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--map", type=int, default=7)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--methods", default="cells,dense", help="tally kernels on the default backend, comma-separated")
    args = ap.parse_args(argv)
    cfg = Config("check", images=args.images, units=args.units, map_size=args.map, image_size=args.size, batch=args.batch)
    taxonomy = default_taxonomy()
    host = score(cfg, taxonomy, make_data_mesh(devices=jax.devices("cpu")[:1]), "runs")
    results, ok = {}, True
    for method in [m for m in args.methods.split(",") if m]:
        accel = score(cfg, taxonomy, make_data_mesh(), method)
        rows = compare(accel, host, cfg)
        ok &= all(r["equal"] for r in rows.values() if isinstance(r, dict) and "equal" in r)
        results[method] = rows
    timed = {m: r["timing"]["tally_per_batch_s"] for m, r in results.items()}
    if "cells" in timed and "dense" in timed:
        print(f"dense / cells tally time per batch: {timed['dense'] / timed['cells']:.1f}x")
    kind = jax.devices()[0].device_kind
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"device_kind": kind, "config": vars(args), "methods": results,
                                   "host_tally_per_batch_s": host["tally_per_batch_s"]}, indent=2, default=float) + "\n")
    return 0 if ok else 1


def compare(accel: dict, host: dict, cfg: Config) -> dict:
    """Rows of equal/differing results between one accelerator run and the host run (printed)."""
    rows = {}
    for key in sorted(host["p1"]):
        a, b = np.asarray(accel["p1"][key]), np.asarray(host["p1"][key])
        rows[f"pass1 {key}"] = {"equal": bool(np.array_equal(a, b)), "max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0}
    for key in sorted(host["counts"]):
        a, b = np.asarray(accel["counts"][key]).astype(np.int64), np.asarray(host["counts"][key]).astype(np.int64)
        rows[f"counts {key}"] = {"equal": bool(np.array_equal(a, b)), "pixels_differing": int(np.abs(a - b).sum()),
                                 "total": int(np.abs(b).sum())}
    ia, ua = (np.asarray(accel["counts"][k], np.float64) for k in ("intersection", "union"))
    ih, uh = (np.asarray(host["counts"][k], np.float64) for k in ("intersection", "union"))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou_diff = np.nanmax(np.abs(ia / ua - ih / uh)) if ua.size else 0.0
    kind = jax.devices()[0].device_kind
    print(f"accelerator: {kind} ({accel['platform']}, {accel['devices']} device(s), tally '{accel['method']}', "
          f"{accel['seconds']:.1f} s) vs host CPU (tally '{host['method']}', {host['seconds']:.1f} s)")
    print(f"  tally per batch of {cfg.batch}: {accel['tally_per_batch_s'] * 1e3:.1f} ms (first, with compile: "
          f"{accel['tally_first_batch_s']:.1f} s); host run-length {host['tally_per_batch_s'] * 1e3:.1f} ms"
          + (f"; mixed cells/image {accel['mixed_cells_per_image']:.0f}" if accel["mixed_cells_per_image"] is not None else ""))
    print(f"config: N={cfg.images} U={cfg.units} maps {cfg.map_size}x{cfg.map_size} S={cfg.image_size}")
    for name, row in rows.items():
        print(f"  {name:28s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"  largest |IoU difference|     {float(iou_diff):.3g}")
    rows["max_iou_diff"] = float(iou_diff)
    rows["timing"] = {k: accel[k] for k in ("tally_first_batch_s", "tally_per_batch_s", "mixed_cells_per_image", "seconds")}
    return rows


if __name__ == "__main__":
    sys.exit(main())
