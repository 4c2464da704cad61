"""End-to-end ``hnd dissect --model`` benchmark: activations cached between the passes vs recomputed.

Default config (issue 5): ResNet-50 (random init; the weights do not change the cost) ``layer4.2.conv1``
at 128 px on a synthetic Face Dictionary of 2,000 local images (plus its global images). Every mode
runs in its own subprocess so that its peak memory (ru_maxrss) is its own. Per mode it reports
end-to-end local images/s, unit-concept pairs/s, peak RSS, the per-stage split (setup, pass 1, pass 2,
global families, finalize, write; and inside the passes: data loading, forward, scoring, checkpoints)
and the cache decision.

Baseline (run in this parent process): the same jit'ed forward per batch, then the naive NumPy
scoring of ``benchmarks/naive_baseline.py`` (numpy.quantile thresholds, per image / per unit /
per label tally). It is timed on ``--baseline-images`` images and extrapolated linearly to N local
images (stated in the output); global families are not part of the baseline (so the ratio is
conservative: the pipeline also scores them).

    python benchmarks/bench_dissect.py --quick        # smoke run, about a minute on 2 cores
    python benchmarks/bench_dissect.py                # the 2,000-image config
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results"
MODES = {"cached": "64GiB", "recomputed": "0"}


def config(args) -> dict:
    if args.quick:
        return {"name": "quick", "card": "age", "layer": "layer4.2.conv1", "image_size": 128, "images": 64,
                "batch_size": 16}
    return {"name": "full", "card": "age", "layer": "layer4.2.conv1", "image_size": args.image_size,
            "images": args.images, "batch_size": args.batch_size}


def child(mode: str, cfg: dict, out: Path, result_file: Path) -> None:
    """One dissection (in a fresh process): write its figures to ``result_file``."""
    import jax

    from hnd_jax.pipeline.dissect import dissect_model

    from hnd_jax.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # as hnd dissect does: a second run loads the compiled forward and kernels
    t0 = time.perf_counter()
    dissect_model(cfg["card"], layers=[cfg["layer"]], dictionary=cfg.get("dictionary") or f"synthetic:{cfg['images']}",
                  out=out, scoring={"image_size": cfg["image_size"]}, random_init=True,
                  run={"batch_size": cfg["batch_size"], "fresh": True, "cache_budget": MODES[mode], "progress": "none",
                       "checkpoint_every": 50, "tally": cfg.get("tally", "auto"), "prefetch": cfg.get("prefetch", 2)})
    wall = time.perf_counter() - t0
    meta = json.loads((out / "dissection.json").read_text())
    n = cfg["images"]
    units = meta["units"][cfg["layer"]]
    with np.load(out / cfg["layer"] / "scores.npz") as data:
        num_concepts = int(data["iou"].shape[1])
    row = {
        "mode": mode,
        "wall_s": wall,
        "local_images_per_s": n / wall,
        "pass2_images_per_s": n / meta["timings"]["pass2"],  # steady state: the forward is compiled by then
        "tally": meta.get("tally"),
        "unit_concept_pairs_per_s": n * units * num_concepts / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timings": meta["timings"],
        "cache": meta["cache"],
        "device_kind": meta["devices"]["kind"],
        "device_count": meta["devices"]["count"],
        "units": units,
        "num_concepts": num_concepts,
    }
    try:
        stats = jax.devices()[0].memory_stats() or {}
        row["device_peak_mib"] = stats.get("peak_bytes_in_use", 0) / 2**20 or None
    except Exception:  # CPU devices have no memory stats
        row["device_peak_mib"] = None
    result_file.write_text(json.dumps(row))


def baseline(cfg: dict, n_images: int) -> dict:
    """Forward (same jit) + naive NumPy scoring on ``n_images``; seconds per local image."""
    import jax

    from hnd_jax.convert.checkpoint import load_model
    from hnd_jax.dictionary import open_dictionary
    from hnd_jax.models.capture import forward_with_layers
    from hnd_jax.preprocess import preprocess_uint8
    from naive_baseline import naive_tally, naive_thresholds

    model, card = load_model(cfg["card"], None, random_init=True)
    model.eval()
    dic = open_dictionary(cfg.get("dictionary") or f"synthetic:{cfg['images']}", cfg["image_size"],
                          image_resample=card.preprocessing.resize)
    batch = dic.get_local(np.arange(n_images), with_masks=True)
    x = preprocess_uint8(batch.images, card)
    for i in range(0, n_images, cfg["batch_size"]):  # compile every batch shape outside the timing
        jax.block_until_ready(forward_with_layers(model, x[i: i + cfg["batch_size"]], [cfg["layer"]])[1])
    t0 = time.perf_counter()
    acts = []
    for i in range(0, n_images, cfg["batch_size"]):
        chunk = x[i: i + cfg["batch_size"]]
        _, a = forward_with_layers(model, chunk, [cfg["layer"]])
        acts.append(np.asarray(jax.block_until_ready(a[cfg["layer"]])))
    t_forward = time.perf_counter() - t0
    acts = np.concatenate(acts)
    t0 = time.perf_counter()
    thr = naive_thresholds(acts, 0.005)
    t_thr = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_tally(acts, batch.masks, batch.labelled, batch.family, dic.taxonomy.concept_family_index, thr,
                cfg["image_size"])
    t_tally = time.perf_counter() - t0
    per_image = (t_forward + t_thr + t_tally) / n_images
    return {"images_timed": n_images, "forward_s": t_forward, "thresholds_s": t_thr, "tally_s": t_tally,
            "seconds_per_image": per_image, "extrapolated_wall_s": per_image * cfg["images"],
            "note": f"timed on {n_images} images, extrapolated linearly to {cfg['images']}; no global families"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke config")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--baseline-images", type=int, default=64)
    p.add_argument("--modes", default="cached,recomputed")
    p.add_argument("--dictionary", help="ROOT or prepared PREP at --image-size (default: synthetic:IMAGES); "
                   "its local image count replaces --images")
    p.add_argument("--tally", default="auto", help="pass-2 kernel (hnd dissect --tally)")
    p.add_argument("--prefetch", type=int, default=2, help="batches read ahead (hnd dissect --prefetch)")
    p.add_argument("--child", nargs=3, metavar=("MODE", "OUT", "RESULT"), help=argparse.SUPPRESS)
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], json.loads(args.config_json), Path(args.child[1]), Path(args.child[2]))
        return 0

    cfg = config(args)
    from hnd_jax.dictionary import open_dictionary

    cfg.update(tally=args.tally, prefetch=args.prefetch, dictionary=args.dictionary)
    t0 = time.perf_counter()
    opened = open_dictionary(args.dictionary or f"synthetic:{cfg['images']}", cfg["image_size"])  # generated once
    cfg["images"] = int(opened.num_local)
    generate_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            result = Path(tmp) / f"{mode}.json"
            cmd = [sys.executable, __file__, "--child", mode, str(Path(tmp) / mode), str(result),
                   "--config-json", json.dumps(cfg)]
            subprocess.run(cmd, check=True)
            rows.append(json.loads(result.read_text()))
    base = baseline(cfg, min(args.baseline_images, cfg["images"]))
    for row in rows:
        row["speedup_vs_naive"] = base["extrapolated_wall_s"] / row["wall_s"]
    doc = {"benchmark": "bench_dissect", "config": cfg, "synthetic_generation_or_open_s": generate_s,
           "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "rows": rows, "naive_baseline": base}
    print_table(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    kind = rows[0]["device_kind"].replace(" ", "_") if rows else "none"
    path = RESULTS / f"dissect_{cfg['name']}_{kind}_{rows[0]['tally'] if rows else 'none'}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"saved {path.relative_to(ROOT)}")
    return 0


def print_table(doc: dict) -> None:
    cfg = doc["config"]
    print(f"\nbench_dissect [{cfg['name']}]: {cfg['card']} {cfg['layer']} at {cfg['image_size']} px, "
          f"{cfg['images']} local images, batch {cfg['batch_size']}, load {doc['load_average'][0]:.2f} "
          f"on {doc['cpu_count']} CPUs")
    head = f"{'mode':<11}{'img/s':>8}{'p2 img/s':>9}{'pairs/s':>12}{'wall s':>9}{'setup':>7}{'pass1':>7}{'pass2':>7}" \
           f"{'global':>7}{'fwd':>7}{'score':>7}{'data':>7}{'wait':>7}{'RSS MiB':>9}{'x naive':>9}  device"
    print(head)
    for r in doc["rows"]:
        t = r["timings"]
        s = t["split"]
        print(f"{r['mode']:<11}{r['local_images_per_s']:>8.1f}{r['pass2_images_per_s']:>9.1f}"
              f"{r['unit_concept_pairs_per_s']:>12.3g}{r['wall_s']:>9.1f}"
              f"{t['setup']:>7.1f}{t['pass1']:>7.1f}{t['pass2']:>7.1f}{t['global']:>7.1f}{s['forward']:>7.1f}"
              f"{s['score']:>7.1f}{s['data']:>7.1f}{s.get('input_wait', float('nan')):>7.1f}{r['peak_rss_mib']:>9.0f}"
              f"{r['speedup_vs_naive']:>9.1f}  {r['device_kind']} x{r['device_count']} (cache: {r['cache']['mode']}, "
              f"tally: {r['tally']})")
    b = doc["naive_baseline"]
    print(f"naive baseline: {b['seconds_per_image']:.3f} s/image (forward {b['forward_s']:.1f} s, thresholds "
          f"{b['thresholds_s']:.2f} s, tally {b['tally_s']:.1f} s on {b['images_timed']} images) -> "
          f"{b['extrapolated_wall_s']:.0f} s for {cfg['images']} ({b['note']})")


import numpy as np  # noqa: E402  (after the sys.path set-up; children import it too)

if __name__ == "__main__":
    sys.exit(main())
