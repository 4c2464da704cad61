"""The whole ``hnd dissect --activations`` process against the published tally, side by side in one run.

    python benchmarks/bench_activations_e2e.py                      # cpu-medium shape (the issue's figure)
    python benchmarks/bench_activations_e2e.py --baseline-images 250   # time the baseline on 1/10, extrapolate
    python benchmarks/bench_activations_e2e.py --profile            # cProfile of the hnd process (top 25)

The "cpu-medium" shape of issue 11: 2500 local images of the synthetic Face Dictionary prepared at
S=128 (``hnd dictionary prepare``), an activations file ``[2500, 512, 4, 4]`` float32 (NCHW, as a
PyTorch hook writes it), ``--iou-mode official``, ``--no-report``. Preparation (dictionary and
activations) is cached under ``--work`` and never timed.

Timed, in this order, in one run:

1. ``hnd``: the wall time of the whole ``hnd dissect --activations ... --no-report`` subprocess (Python
   start-up, imports, opening the dictionary, both passes, finalize with the significance tests,
   writing the results), ``--repeat`` times; the best and all times are printed, with the best run's
   ``timings`` from ``dissection.json``. With ``--before-root`` the same command from another
   checkout (e.g. the main branch) runs interleaved with these runs, on the same data, and its
   counts are compared with this tree's. (The runs after the first load XLA's compiled kernels from
   the persistent compilation cache when the checkout has one, as a user's second run does.)
2. ``published``: the published tally, reimplemented faithfully (the published code itself is not
   in this repository): per image, per unit, the map resized to S x S in float64 (bilinear, half-pixel
   centres, edge clamping, as separable interpolation matrices), thresholded, and for every labelled
   concept of the image an AND / OR with its mask, in 'official' mode (an image enters a concept's
   union only when the unit fires on it). Thresholds are ``numpy.quantile`` per unit (timed
   separately); the tally itself uses the thresholds of the ``hnd`` run, so its counts can be compared
   with ``hnd``'s entry by entry (printed: how many of the U x C counts differ). The masks are read
   from the prepared dictionary batch by batch outside the timing (the published timing is the
   tally's alone). ``--baseline-images`` < N times the first images and extrapolates linearly.
3. ``naive``: ``benchmarks/naive_baseline.py``'s ``naive_tally``, the yardstick of bench_scoring.py
   (family mode, float32 interpolation matrices, every concept of the image's family per image and
   unit, no skipping of maps that cannot fire), on ``--naive-images`` images, extrapolated.

Results are printed and saved as JSON under ``benchmarks/results/``, with the machine's load.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LAYER = "bench_layer"


def structured_activations(n: int, units: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """float32 ``[n, units, h, w]``: per-unit spatial preference x per-(image, unit) gain + noise.

    Units have a smooth preferred location (so thresholds select image regions, not noise) and
    heavy-tailed per-image gains (a unit fires strongly on some images, as real units do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    cy, cx = rng.uniform(-1, 1, (2, units, 1, 1))
    width = rng.uniform(0.3, 1.2, (units, 1, 1))
    pref = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2)).astype(np.float32)  # [U, h, w]
    out = np.empty((n, units, h, w), np.float32)
    for s in range(0, n, 256):
        e = min(s + 256, n)
        gain = rng.lognormal(0.0, 1.0, (e - s, units, 1, 1)).astype(np.float32)
        noise = rng.normal(0.0, 0.3, (e - s, units, h, w)).astype(np.float32)
        out[s:e] = np.maximum(gain * pref[None] + noise, 0.0)  # ReLU outputs
    return out


def prepare(work: Path, args) -> tuple[Path, Path]:
    prep = work / f"prep{args.size}_{args.images}"
    if not (prep / "dataset_info.json").exists() and not prep.exists():
        cmd = [sys.executable, "-m", "hnd_jax.cli.main", "dictionary", "prepare", f"synthetic:{args.images}",
               "--size", str(args.size), "--out", str(prep)]
        print("preparing:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, env=_env())
    acts = work / f"acts_{args.images}x{args.units}x{args.map}.npy"
    if not acts.exists():
        np.save(acts, structured_activations(args.images, args.units, args.map, args.map))
    return prep, acts


def _env(root: Path = ROOT) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)  # the tree under test, nothing else
    return env


def hnd_command(prep: Path, acts: Path, out: Path, args, profile_to: Path | None = None) -> list[str]:
    head = [sys.executable]
    if profile_to is not None:
        head += ["-m", "cProfile", "-o", str(profile_to)]
    return head + ["-m", "hnd_jax.cli.main", "dissect", "--activations", str(acts), "--dictionary", str(prep),
                   "--layer", LAYER, "--image-size", str(args.size), "--iou-mode", "official", "--out", str(out),
                   "--no-report", "--progress", "none", "--fresh", *args.hnd_args.split()]


def run_hnd_once(prep: Path, acts: Path, out: Path, args, root: Path = ROOT, extra: str | None = None) -> dict:
    """One ``hnd dissect`` subprocess from the checkout ``root``: wall time and dissection.json's timings."""
    saved = args.hnd_args
    if extra is not None:
        args.hnd_args = extra
    try:
        command = hnd_command(prep, acts, out, args)
    finally:
        args.hnd_args = saved
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=_env(root), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"hnd dissect failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    meta = json.loads((out / "dissection.json").read_text())
    return {"root": str(root), "wall_s": wall, "timings": meta["timings"], "tally": meta.get("tally"),
            "command": " ".join(command[1:])}


def best_of(runs: list[dict]) -> dict:
    """The fastest run (its own timings), with every run's wall time."""
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    best["walls_s"] = [r["wall_s"] for r in runs]
    return best


def profile_hnd(prep: Path, acts: Path, out: Path, args, top: int = 25) -> None:
    stats_file = out.parent / "hnd.prof"
    subprocess.run(hnd_command(prep, acts, out, args, profile_to=stats_file), env=_env(), check=True,
                   capture_output=True)
    print(f"\n--- cProfile of the hnd process (cumulative, top {top}) ---")
    pstats.Stats(str(stats_file)).sort_stats("cumulative").print_stats(top)
    print(f"--- (tottime, top {top}) ---")
    pstats.Stats(str(stats_file)).sort_stats("tottime").print_stats(top)


def interpolation_matrix64(n_in: int, size: int) -> np.ndarray:
    """``[size, n_in]`` float64 bilinear weights (naive_baseline's, in float64 like the published code)."""
    from naive_baseline import interpolation_matrix

    return interpolation_matrix(n_in, size, np.float64)


def published_tally(prep: Path, acts_path: Path, thresholds: np.ndarray, args, n_images: int) -> dict:
    """The published per-image / per-unit / per-label loop in 'official' mode (module docstring)."""
    from hnd_jax.dictionary import open_dictionary

    acts = np.load(acts_path, mmap_mode="r")
    dic = open_dictionary(str(prep), args.size)
    N, U, h, w = acts.shape
    C = dic.taxonomy.num_concepts
    wy, wx = interpolation_matrix64(h, args.size), interpolation_matrix64(w, args.size)
    thr = np.asarray(thresholds, np.float64)
    inter = np.zeros((U, C), np.int64)
    union = np.zeros((U, C), np.int64)

    t0 = time.perf_counter()  # the published thresholds: a quantile over every value of each unit
    q = np.quantile(np.asarray(acts[:n_images], np.float64).transpose(1, 0, 2, 3).reshape(U, -1),
                    1 - args.quantile, axis=1)
    quantile_s = (time.perf_counter() - t0) * (N / n_images)
    tally_s = 0.0
    for batch in dic.local_batches(64, with_masks=True, start=0, stop=n_images):
        masks, labelled = np.asarray(batch.masks, bool), np.asarray(batch.labelled, bool)
        block = np.asarray(acts[int(batch.index[0]): int(batch.index[-1]) + 1], np.float64)
        t0 = time.perf_counter()
        for i in range(len(batch.index)):
            labels = np.flatnonzero(labelled[i])
            for u in range(U):
                b = (wy @ block[i, u] @ wx.T) > thr[u]
                if not b.any():  # official mode: no firing pixel, the image is not in the union
                    continue
                for c in labels:
                    m = masks[i, c]
                    inter[u, c] += int(np.count_nonzero(b & m))
                    union[u, c] += int(np.count_nonzero(b | m))
        tally_s += time.perf_counter() - t0
    scale = N / n_images
    return {"images_timed": n_images, "tally_s": tally_s * scale, "quantile_s": quantile_s,
            "wall_s": tally_s * scale, "extrapolated": n_images < N, "inter": inter, "union": union,
            "quantile_thresholds": q}


def naive_baseline_tally(prep: Path, acts_path: Path, thresholds: np.ndarray, args, n_images: int) -> dict:
    """benchmarks/naive_baseline.py's ``naive_tally`` (the yardstick of bench_scoring.py: 'family' IoU mode,
    float32 interpolation, every concept of the image's family per (image, unit)) on the first
    ``n_images`` images, extrapolated linearly to N. Masks are read outside the timing."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from naive_baseline import naive_tally

    from hnd_jax.dictionary import open_dictionary

    acts = np.load(acts_path, mmap_mode="r")
    dic = open_dictionary(str(prep), args.size)
    cf = dic.taxonomy.concept_family_index
    seconds = 0.0
    for batch in dic.local_batches(32, with_masks=True, start=0, stop=n_images):
        block = np.ascontiguousarray(
            np.asarray(acts[int(batch.index[0]): int(batch.index[-1]) + 1], np.float32).transpose(0, 2, 3, 1))
        masks, labelled, family = np.asarray(batch.masks, bool), np.asarray(batch.labelled, bool), batch.family
        t0 = time.perf_counter()
        naive_tally(block, masks, labelled, family, cf, thresholds, args.size)
        seconds += time.perf_counter() - t0
    return {"images_timed": n_images, "tally_s": seconds * acts.shape[0] / n_images,
            "extrapolated": n_images < acts.shape[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "hnd_bench_e2e")
    p.add_argument("--images", type=int, default=2500)
    p.add_argument("--units", type=int, default=512)
    p.add_argument("--map", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--quantile", type=float, default=0.005)
    p.add_argument("--repeat", type=int, default=3, help="hnd runs (the best is the figure)")
    p.add_argument("--baseline-images", type=int, default=None, help="time the published tally on the first N "
                   "images and extrapolate (default: all; 0: skip it)")
    p.add_argument("--naive-images", type=int, default=100, help="also time benchmarks/naive_baseline.py's "
                   "naive_tally (family mode) on this many images, extrapolated (0: skip)")
    p.add_argument("--hnd-args", default="", help="extra options for hnd dissect (e.g. '--tally cells')")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of one hnd process")
    p.add_argument("--label", default="", help="a name for this run in the JSON file")
    p.add_argument("--before-root", type=Path, help="also time the hnd process of another checkout (e.g. the "
                   "main branch before a change) on the same data, interleaved with this tree's runs")
    p.add_argument("--before-args", default=None, help="hnd options for --before-root (default: --hnd-args)")
    args = p.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    prep, acts = prepare(args.work, args)
    out = args.work / "out"
    load_before = os.getloadavg()
    runs, before_runs = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same load from other jobs
        runs.append(run_hnd_once(prep, acts, out, args))
        if args.before_root:
            before_runs.append(run_hnd_once(prep, acts, args.work / "out_before", args,
                                            root=args.before_root.resolve(), extra=args.before_args))
    hnd = best_of(runs)
    before = best_of(before_runs) if before_runs else None
    if args.profile:
        profile_hnd(prep, acts, args.work / "out_profile", args)
    n_base = args.images if args.baseline_images is None else min(args.baseline_images, args.images)
    base = None
    if n_base:
        import numpy.lib.npyio  # noqa: F401  (keep the import out of the timing)

        scores = np.load(out / LAYER / "scores.npz")
        base = published_tally(prep, acts, scores["thresholds"], args, n_base)
        if not base["extrapolated"]:
            diff = (base["inter"] != scores["intersection"]) | (base["union"] != scores["union"])
            base["counts_differing"] = int(diff.sum())
            base["count_cells"] = int(diff.size)
        base["max_threshold_diff_vs_quantile"] = float(np.abs(base["quantile_thresholds"] - scores["thresholds"]).max())
        for k in ("inter", "union", "quantile_thresholds"):
            base.pop(k)
    naive = None
    if args.naive_images:
        scores = np.load(out / LAYER / "scores.npz")
        naive = naive_baseline_tally(prep, acts, scores["thresholds"], args, min(args.naive_images, args.images))
    load_after = os.getloadavg()

    print(f"\nbench_activations_e2e: {args.images} images, {args.units} units, {args.map}x{args.map} maps, "
          f"S={args.size}, --iou-mode official --no-report {args.hnd_args}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after (1-min average)")
    t = hnd["timings"]
    split = t.get("split", {})
    print(f"hnd dissect --activations (whole process): {hnd['wall_s']:.2f} s best of {args.repeat} "
          f"({', '.join(f'{x:.2f}' for x in hnd['walls_s'])}); kernel {hnd['tally']}")
    inner = ", ".join(f"{k} {v:.2f}" for k, v in t.items() if isinstance(v, float))
    print(f"  in-process timings (s): {inner}")
    print(f"  split (s): {', '.join(f'{k} {v:.2f}' for k, v in split.items())}")
    if before:
        print(f"before ({before['root']}): {before['wall_s']:.2f} s best of {args.repeat} "
              f"({', '.join(f'{x:.2f}' for x in before['walls_s'])}); kernel {before['tally']}")
        bt = before["timings"]
        print(f"  in-process timings (s): {', '.join(f'{k} {v:.2f}' for k, v in bt.items() if isinstance(v, float))}")
        b_scores, a_scores = (np.load(d / LAYER / "scores.npz") for d in (args.work / "out_before", out))
        same = all(np.array_equal(b_scores[k], a_scores[k]) for k in ("intersection", "union", "thresholds"))
        print(f"  counts and thresholds identical to this tree's: {same}")
        before["identical_counts"] = same
    if base:
        how = f"extrapolated from {base['images_timed']} images" if base["extrapolated"] else "all images"
        print(f"published tally ({how}): {base['tally_s']:.1f} s (+ numpy.quantile thresholds "
              f"{base['quantile_s']:.2f} s)")
        if "counts_differing" in base:
            print(f"  counts: {base['counts_differing']} of {base['count_cells']} (unit, concept) counts differ "
                  "from hnd's")
        print(f"speed-up, whole hnd process vs published tally alone: {base['tally_s'] / hnd['wall_s']:.1f}x")
    if naive:
        print(f"naive_baseline.naive_tally (family mode, bench_scoring's yardstick; extrapolated from "
              f"{naive['images_timed']} images): {naive['tally_s']:.1f} s -> whole hnd process "
              f"{naive['tally_s'] / hnd['wall_s']:.1f}x faster")
    RESULTS.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from hnd_jax.demo.machine import measured_on

    doc = {"naive_baseline": naive, "benchmark": "bench_activations_e2e", "label": args.label, "shape": vars(args) | {"work": str(args.work)},
           "load_average_before": load_before, "load_average_after": load_after, "cpu_count": os.cpu_count(),
           "machine": measured_on(),
           "hnd": hnd, "before": before, "published": base,
           "speedup": None if not base else base["tally_s"] / hnd["wall_s"]}
    path = RESULTS / f"activations_e2e_{args.images}x{args.units}x{args.map}_S{args.size}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
