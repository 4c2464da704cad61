"""Developer benchmark of the scoring of one layer against the naive baseline, and of the tally kernels.

User-facing throughput (every stage, any machine, JSON) is ``hnd bench``; this script keeps what is
for developers: the speed-up over the naive NumPy baseline with its count agreement, and
``--compare-kernels``. Device peaks and the dense tally's FLOP count come from :mod:`hnd_jax.bench`.

    python benchmarks/bench_scoring.py --config cpu-medium          # the 2-core CPU target
    python benchmarks/bench_scoring.py --config gpu-large           # on a lent accelerator
    python benchmarks/bench_scoring.py --quick                      # smoke test, seconds
    python benchmarks/bench_scoring.py --compare-kernels            # cells vs dense vs runs, "wide" shape
    python benchmarks/bench_scoring.py --compare-kernels --kernels cells,dense --config wide

``--compare-kernels`` runs pass 1 once, then every kernel of ``--kernels`` on the same batches
(default config "wide": 256 units, 7x7 maps, S=224, 38 concepts, 3 batches of 16): per-batch time
after the first (compiling) batch, counts checked identical across kernels, and pixel evaluations
per image (dense: U*S*S; cells: mixed cells x cell pixels; runs: not per pixel, left out).

Data are synthetic but shaped like the Face Dictionary: images split over the three local
families of the default taxonomy (38 concepts), parts images label all 8 parts, attribute and
action-unit images a few concepts each (about 5 labels per image on average), masks are
ellipse blobs of realistic sizes, some cut by the border. Activations have per-(image, unit) gains
so that units fire strongly on some images (as real units do). Data are generated batch by batch
from a seed (never the whole [N, C, S, S] mask array) and generation is not timed.

The naive baseline (benchmarks/naive_baseline.py: per image, per unit, per label NumPy) runs in
the same process on the first ``--baseline-images`` images and is extrapolated linearly to N (it
is far too slow to run in full; the output says so). Its thresholds come from numpy.quantile on the
same subset (also extrapolated). Printed: a table and a JSON file under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402

from hnd_jax.demo.machine import measured_on  # noqa: E402
from hnd_jax.bench import dense_tally_flops, device_peak_tflops as bench_peak_tflops  # noqa: E402
from hnd_jax.scoring.accumulator import Batch  # noqa: E402
from hnd_jax.scoring.tally import IoUTally  # noqa: E402
from hnd_jax.scoring.unit_stats import UnitStats  # noqa: E402
from hnd_jax.sharding import make_data_mesh  # noqa: E402
from hnd_jax.taxonomy import default_taxonomy  # noqa: E402
from naive_baseline import naive_tally, naive_thresholds  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    images: int
    units: int
    map_size: int
    image_size: int
    batch: int
    quantile: float = 0.005


CONFIGS = {
    "quick": Config("quick", images=96, units=32, map_size=4, image_size=32, batch=32),
    "wide": Config("wide", images=48, units=256, map_size=7, image_size=224, batch=16),
    "cpu-medium": Config("cpu-medium", images=2500, units=512, map_size=4, image_size=128, batch=64),
    "gpu-large": Config("gpu-large", images=25000, units=2048, map_size=7, image_size=224, batch=128),
}

# ---------------------------------------------------------------------------------------- data
def batch_data(cfg: Config, taxonomy, start: int, stop: int, seed: int = 0):
    """Activations [B,h,w,U] f32, masks [B,C,S,S] bool, labelled [B,C], family [B] of images start..stop."""
    rng = np.random.default_rng([seed, start])
    B, h, U, S, C = stop - start, cfg.map_size, cfg.units, cfg.image_size, taxonomy.num_concepts
    gain = np.exp(0.6 * rng.standard_normal((B, 1, 1, U)))
    acts = (rng.standard_normal((B, h, h, U)) * gain + 0.3 * rng.standard_normal((1, h, h, U))).astype(np.float32)
    cf = taxonomy.concept_family_index
    num_fam = int(cf.max()) + 1
    family = (np.arange(start, stop) % num_fam).astype(np.int32)
    labelled = np.zeros((B, C), bool)
    masks = np.zeros((B, C, S, S), bool)
    yy, xx = np.mgrid[:S, :S] / S
    for i in range(B):
        members = np.flatnonzero(cf == family[i])
        if members.size <= 8:  # parts: all of them
            chosen = members
        else:  # attributes / action units: a few
            chosen = rng.choice(members, size=min(members.size, rng.integers(2, 8)), replace=False)
        labelled[i, chosen] = True
        for c in chosen:
            cy, cx = rng.uniform(0.1, 0.95, 2)
            ry, rx = rng.uniform(0.04, 0.25, 2)
            masks[i, c] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return acts, masks, labelled, family


def batches(cfg: Config):
    for start in range(0, cfg.images, cfg.batch):
        yield start, min(cfg.images, start + cfg.batch)


# ---------------------------------------------------------------------------------------- runs
def run_library(cfg: Config, taxonomy, mesh, method: str):
    """Pass 1 + pass 2 over all images; returns timings (generation excluded) and the results."""
    U, h = cfg.units, cfg.map_size
    stats = UnitStats(U, cfg.images, (h, h), cfg.quantile, mesh=mesh)
    ndev = int(mesh.devices.size)
    pad_to = -(-cfg.batch // ndev) * ndev
    t_pass1 = 0.0
    state = stats.init()
    for start, stop in batches(cfg):
        acts, *_ = batch_data(cfg, taxonomy, start, stop)
        acts_p, valid = _pad(acts, pad_to)
        index = np.arange(start, start + pad_to, dtype=np.int32)
        t0 = time.perf_counter()
        state = stats.update(state, Batch(acts_p, valid, index=index))
        jax.block_until_ready(state)
        t_pass1 += time.perf_counter() - t0
    t0 = time.perf_counter()
    p1 = stats.finalize(state)
    t_pass1 += time.perf_counter() - t0

    tally = IoUTally(U, taxonomy.concept_family_index, cfg.image_size, (h, h), p1["thresholds"], "family", mesh=mesh, method=method)
    t_tally = 0.0
    tstate = tally.init()
    first_batch_s = None
    active = 0
    for start, stop in batches(cfg):
        acts, masks, lab, fam = batch_data(cfg, taxonomy, start, stop)
        active += int((acts.max(axis=(1, 2)) > p1["thresholds"]).sum())
        padded, valid = _pad_all((acts, masks, lab, fam), pad_to)
        t0 = time.perf_counter()
        tstate = tally.update(tstate, Batch(padded[0], valid, masks=padded[1], labelled=padded[2], family=padded[3]))
        dt = time.perf_counter() - t0
        t_tally += dt
        first_batch_s = dt if first_batch_s is None else first_batch_s
    counts = tally.finalize(tstate)
    return {
        "pass1_s": t_pass1,
        "tally_s": t_tally,
        "tally_first_batch_s": first_batch_s,
        "method": tally.method,
        "active_map_fraction": active / (cfg.images * U),
        "thresholds": p1["thresholds"],
        "counts": counts,
    }


def _pad(x, size):
    if x.shape[0] == size:
        return x, np.ones(size, bool)
    out = np.zeros((size, *x.shape[1:]), x.dtype)
    out[: x.shape[0]] = x
    valid = np.zeros(size, bool)
    valid[: x.shape[0]] = True
    return out, valid


def _pad_all(arrays, size):
    padded = [_pad(a, size)[0] for a in arrays]
    return padded, _pad(arrays[0], size)[1]


def run_baseline(cfg: Config, taxonomy, thresholds, n_images: int):
    """Naive NumPy on the first n_images (thresholds from numpy.quantile on them); wall seconds."""
    acts, masks, lab, fam = batch_data(cfg, taxonomy, 0, min(cfg.batch, n_images))
    parts = [(acts, masks, lab, fam)]
    got = acts.shape[0]
    for start, stop in batches(cfg):
        if start == 0:
            continue
        if got >= n_images:
            break
        parts.append(batch_data(cfg, taxonomy, start, min(stop, start + n_images - got)))
        got += parts[-1][0].shape[0]
    acts, masks, lab, fam = (np.concatenate(p) for p in zip(*parts))
    acts, masks, lab, fam = acts[:n_images], masks[:n_images], lab[:n_images], fam[:n_images]
    t0 = time.perf_counter()
    naive_thresholds(acts, cfg.quantile)
    t_thr = time.perf_counter() - t0
    t0 = time.perf_counter()
    inter, union = naive_tally(acts, masks, lab, fam, taxonomy.concept_family_index, thresholds, cfg.image_size)
    t_tally = time.perf_counter() - t0
    return {"images": int(acts.shape[0]), "thresholds_s": t_thr, "tally_s": t_tally, "inter": inter, "union": union,
            "subset": (acts, masks, lab, fam)}


def compare_kernels(cfg: Config, taxonomy, mesh, kernels: list[str]) -> dict:
    """Every kernel of ``kernels`` on the same batches and thresholds: timings, evaluations, agreement."""
    U, h, S = cfg.units, cfg.map_size, cfg.image_size
    stats = UnitStats(U, cfg.images, (h, h), cfg.quantile, mesh=mesh)
    ndev = int(mesh.devices.size)
    pad_to = -(-cfg.batch // ndev) * ndev
    state = stats.init()
    data = []
    for start, stop in batches(cfg):
        acts, masks, lab, fam = batch_data(cfg, taxonomy, start, stop)
        padded, valid = _pad_all((acts, masks, lab, fam), pad_to)
        state = stats.update(state, Batch(padded[0], valid, index=np.arange(start, start + pad_to, dtype=np.int32)))
        data.append((padded, valid))
    thresholds = stats.finalize(state)["thresholds"]
    out: dict = {"kernels": {}}
    reference = None
    for kind in kernels:
        tally = IoUTally(U, taxonomy.concept_family_index, S, (h, h), thresholds, "family", mesh=mesh, method=kind)
        tstate = tally.init()
        times = []
        for padded, valid in data:
            t0 = time.perf_counter()
            tstate = tally.update(tstate, Batch(padded[0], valid, masks=padded[1], labelled=padded[2], family=padded[3]))
            times.append(time.perf_counter() - t0)
        counts = tally.finalize(tstate)
        steady = times[1:] or times
        row = {
            "first_batch_s_incl_compile": times[0],
            "per_batch_s": float(np.median(steady)),
            "per_image_s": float(np.median(steady)) / cfg.batch,
            "batches_timed": len(steady),
        }
        if kind == "dense":
            row["pixel_evaluations_per_image"] = float(U * S * S)
        elif kind == "cells":
            row["mixed_cells_per_image"] = tally.mixed_cells / cfg.images
            row["cell_pixels"] = tally.cell_pixels
            row["cells_per_map"] = tally.num_cells
            row["capacity"] = tally.capacity
            row["pixel_evaluations_per_image"] = tally.mixed_cells * tally.cell_pixels / cfg.images
        if reference is None:
            reference = (kind, counts)
        else:
            same = all(np.array_equal(counts[k], reference[1][k]) for k in ("intersection", "union"))
            row[f"counts_identical_to_{reference[0]}"] = same
        out["kernels"][kind] = row
    ks = out["kernels"]
    if "cells" in ks and "dense" in ks:
        out["dense_over_cells_time"] = ks["dense"]["per_batch_s"] / ks["cells"]["per_batch_s"]
        out["dense_over_cells_pixel_evaluations"] = ks["dense"]["pixel_evaluations_per_image"] / max(
            1.0, ks["cells"]["pixel_evaluations_per_image"])
    return out


# ---------------------------------------------------------------------------------------- report
def device_peak_tflops(kind: str, override: float | None) -> float | None:
    return override or bench_peak_tflops(kind)


def dense_flops(cfg: Config, num_concepts: int) -> float:
    """Useful FLOPs of the dense tally over the config's images (:func:`hnd_jax.bench.dense_tally_flops`)."""
    return dense_tally_flops(cfg.images, cfg.units, num_concepts, cfg.image_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu-medium")
    ap.add_argument("--quick", action="store_true", help="tiny smoke configuration (same as --config quick)")
    ap.add_argument("--method", choices=("auto", "cells", "dense", "runs"), default="auto")
    ap.add_argument("--compare-kernels", action="store_true", help="time --kernels on the same batches (default config 'wide')")
    ap.add_argument("--kernels", default="cells,dense,runs", help="comma-separated kernels for --compare-kernels")
    ap.add_argument("--batch", type=int, default=None, help="images per batch (default: the config's)")
    ap.add_argument("--images", type=int, default=None, help="override N (e.g. a shorter run)")
    ap.add_argument("--baseline-images", type=int, default=24, help="images the naive baseline runs on (0: skip)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for the FLOP/s fraction")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    if args.compare_kernels and args.config == "cpu-medium" and not args.quick and "--config" not in (argv or sys.argv):
        args.config = "wide"
    cfg = CONFIGS["quick" if args.quick else args.config]
    if args.batch or args.images:
        cfg = Config(cfg.name, args.images or cfg.images, cfg.units, cfg.map_size, cfg.image_size, args.batch or cfg.batch)
    taxonomy = default_taxonomy()
    C = taxonomy.num_concepts
    mesh = make_data_mesh()
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    load_before = os.getloadavg()
    if args.compare_kernels:
        res = compare_kernels(cfg, taxonomy, mesh, [k for k in args.kernels.split(",") if k])
        res.update({"config": asdict(cfg), "concepts": C, "device_kind": kind, "platform": dev.platform,
                    "devices": int(mesh.devices.size), "host": platform.node(), "cpu_count": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "machine": measured_on()})
        print(json.dumps(res, indent=2, default=float))
        out = args.out or ROOT / "benchmarks" / "results" / f"kernels_{cfg.name}_{dev.platform}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, default=float) + "\n")
        print(f"saved {out}")
        return 0

    lib = run_library(cfg, taxonomy, mesh, args.method)
    rss_lib_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mem_stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    total = lib["pass1_s"] + lib["tally_s"]

    row = {
        "config": asdict(cfg),
        "concepts": C,
        "device_kind": kind,
        "platform": dev.platform,
        "devices": int(mesh.devices.size),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "method": lib["method"],
        "pass1_s": lib["pass1_s"],
        "tally_s": lib["tally_s"],
        "tally_first_batch_s_incl_compile": lib["tally_first_batch_s"],
        "total_s": total,
        "images_per_s": cfg.images / total,
        "image_unit_concept_triples_per_s": cfg.images * cfg.units * C / total,
        "active_map_fraction": lib["active_map_fraction"],
        "peak_rss_mb_after_library": rss_lib_mb,
        "jax_peak_bytes": (mem_stats or {}).get("peak_bytes_in_use"),
        "loadavg_before": load_before,
    }
    if lib["method"] == "dense":
        # Steady state: the first batch pays for compilation, so it is left out of the rate.
        rest = cfg.images - min(cfg.batch, cfg.images)
        steady_s = lib["tally_s"] - lib["tally_first_batch_s"]
        flops = dense_flops(cfg, C) * (rest / cfg.images) if rest else dense_flops(cfg, C)
        row["dense_tflops_achieved"] = flops / (steady_s if rest else lib["tally_s"]) / 1e12
        peak = device_peak_tflops(kind, args.peak_tflops)
        row["device_peak_tflops"] = peak
        row["fraction_of_peak"] = None if peak is None else row["dense_tflops_achieved"] / peak

    if args.baseline_images > 0:
        base = run_baseline(cfg, taxonomy, lib["thresholds"], args.baseline_images)
        n = base["images"]
        scale = cfg.images / n
        base_total = (base["thresholds_s"] + base["tally_s"]) * scale
        # Agreement on the subset: the library's exact counts vs the naive float32-matrix upsampling.
        acts, masks, lab, fam = base["subset"]
        check = IoUTally(cfg.units, taxonomy.concept_family_index, cfg.image_size, (cfg.map_size,) * 2,
                         lib["thresholds"], "family", method="runs")
        mine = check.finalize(check.update(check.init(), Batch(acts, np.ones(n, bool), masks=masks, labelled=lab, family=fam)))
        differ = int((mine["intersection"] != base["inter"]).sum() + (mine["union"] != base["union"]).sum())
        row.update({
            "baseline_images_timed": n,
            "baseline_extrapolated": n < cfg.images,
            "baseline_images_per_s": n / (base["thresholds_s"] + base["tally_s"]),
            "baseline_total_s": base_total,
            "speedup_vs_naive": base_total / total,
            "baseline_count_entries_differing": differ,
            "baseline_count_entries": int(2 * mine["intersection"].size),
        })
    row["loadavg_after"] = os.getloadavg()
    row["machine"] = measured_on()
    row["peak_rss_mb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print_table(row)
    out = args.out or ROOT / "benchmarks" / "results" / f"scoring_{cfg.name}_{row['method']}_{dev.platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2, default=float) + "\n")
    print(f"saved {out}")
    return 0


def print_table(row: dict) -> None:
    cfg = row["config"]
    print(f"\nscoring benchmark '{cfg['name']}': N={cfg['images']} U={cfg['units']} maps {cfg['map_size']}x{cfg['map_size']}"
          f" S={cfg['image_size']} C={row['concepts']} batch={cfg['batch']} on {row['devices']} x {row['device_kind']}"
          f" ({row['cpu_count']} CPUs, load {row['loadavg_before'][0]:.2f} -> {row['loadavg_after'][0]:.2f})")
    lines = [
        ("tally method", row["method"]),
        ("pass 1 (thresholds) s", f"{row['pass1_s']:.2f}"),
        ("pass 2 (tally) s", f"{row['tally_s']:.2f}  (first batch incl. compile {row['tally_first_batch_s_incl_compile']:.2f})"),
        ("total s", f"{row['total_s']:.2f}"),
        ("images/s", f"{row['images_per_s']:.1f}"),
        ("image x unit x concept / s", f"{row['image_unit_concept_triples_per_s']:.3g}"),
        ("active maps (max > T)", f"{100 * row['active_map_fraction']:.1f}%"),
        ("peak RSS MB (library / process)", f"{row['peak_rss_mb_after_library']:.0f} / {row['peak_rss_mb_process']:.0f}"),
        ("JAX peak bytes", row["jax_peak_bytes"]),
    ]
    if "dense_tflops_achieved" in row:
        frac = row["fraction_of_peak"]
        lines.append(("dense TFLOP/s after batch 1 (of peak)", f"{row['dense_tflops_achieved']:.2f} ({'n/a' if frac is None else f'{100 * frac:.1f}%'})"))
    if "speedup_vs_naive" in row:
        note = " (measured on %d images, extrapolated linearly)" % row["baseline_images_timed"] if row["baseline_extrapolated"] else ""
        lines += [
            ("naive baseline images/s", f"{row['baseline_images_per_s']:.2f}{note}"),
            ("naive baseline total s", f"{row['baseline_total_s']:.1f}"),
            ("SPEEDUP vs naive", f"{row['speedup_vs_naive']:.1f}x"),
            ("naive vs exact counts differing", f"{row['baseline_count_entries_differing']} of {row['baseline_count_entries']}"),
        ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
