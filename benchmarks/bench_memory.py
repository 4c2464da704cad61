"""Peak resident memory of ``hnd dissect --activations``, per stage, for one shape at a time.

    python benchmarks/bench_memory.py --images 24 --units 1024 --hw 32 32 --batch-size 32
    python benchmarks/bench_memory.py ... --sweep units=256,512,1024       # vary one factor
    python benchmarks/bench_memory.py ... --before-root /work/main         # same runs on another checkout

Each run is a fresh subprocess executing the real CLI (``hnd_jax.cli.main.main``) on a float32
``.npy`` ``[N, U, h, w]`` (cached under ``--work``) and the synthetic dictionary ``synthetic:N``.
Measured, in that subprocess:

* ``peak``: the peak RSS of the whole process (what ``/usr/bin/time -v`` calls "Maximum resident
  set size"): the largest of the stage peaks and ``VmHWM`` at exit;
* per stage (``setup``, ``pass1``, ``pass2``, ``global``, ``finalize``): the peak RSS while that stage
  ran, by resetting the kernel's high-water mark (``/proc/self/clear_refs`` = 5, Linux) at the stage
  start and reading ``VmHWM`` at its end; ``base`` is the RSS at the stage start;
* ``extra``: the peak minus the RSS when the run was set up (what the plan estimates);
* ``estimate``: :func:`hnd_jax.pipeline.memory_plan.plan_layer` for the same shape (the figure the
  refusal compares with the memory available), so estimate and extra can be read side by side.

Linux only (``/proc``). Keep each run under a minute on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
from hnd_jax.pipeline import dissect as D, stages as S

def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
    return 0

def reset():
    with open('/proc/self/clear_refs', 'w') as fh:
        fh.write('5')

stages = {}
order = []
def record(name, fn):
    def wrapper(*a, **k):
        reset(); base = rss('VmRSS'); t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            key = 'global' if name.startswith('global') else name
            old = stages.get(key, {'base': base, 'peak': 0, 'seconds': 0.0})
            stages[key] = {'base': min(old['base'], base), 'peak': max(old['peak'], rss('VmHWM')),
                           'file_end': rss('RssFile'),
                           'seconds': old['seconds'] + time.perf_counter() - t}
            if key not in order: order.append(key)
    return wrapper

run = S.StageRunner.run
S.StageRunner.run = lambda self, stage, *a, **k: record(stage.name, run)(self, stage, *a, **k)
D.Dissection._finalize = (lambda f: lambda self, r: record('finalize', f)(self, r))(D.Dissection._finalize)
init = D.Dissection.__init__
D.Dissection.__init__ = (lambda self, *a, **k: record('setup', init)(self, *a, **k))
from hnd_jax.cli.main import main
code = main(sys.argv[1:])
# The process peak is the largest stage peak or the high-water mark since the last reset (VmHWM;
# not ru_maxrss, which clear_refs resets too and which keeps the forking parent's mark over exec)
peak = max([rss('VmHWM')] + [v['peak'] for v in stages.values()])
json.dump({'code': code, 'peak': peak,
           'stages': {k: stages[k] for k in order}}, open(os.environ['HND_MEM_JSON'], 'w'))
"""


def activations_file(work: Path, n: int, u: int, h: int, w: int) -> Path:
    path = work / f"acts_{n}_{u}_{h}x{w}.npy"
    if not path.exists():
        rng = np.random.default_rng(0)
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, u, h, w))
        for s in range(n):
            arr[s] = np.maximum(rng.standard_normal((u, h, w), np.float32), 0)
        arr.flush()
        del arr
    return path


def measure(root: Path, work: Path, n: int, u: int, h: int, w: int, batch: int, size: int,
            extra: list[str]) -> dict:
    path = activations_file(work, n, u, h, w)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        out = Path(tmp) / "out"
        report = Path(tmp) / "mem.json"
        cmd = [sys.executable, "-c", CHILD, "dissect", "--activations", str(path), "--dictionary",
               f"synthetic:{n}", "--out", str(out), "--layer", "L", "--image-size", str(size),
               "--batch-size", str(batch), "--no-report", "--progress", "none", "--checkpoint-every", "0",
               "--permutations", "100", *extra]
        env = {**os.environ, "PYTHONPATH": str(root), "HND_MEM_JSON": str(report)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
        if proc.returncode != 0 or not report.exists():
            raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(report.read_text())
    result.update(root=str(root), images=n, units=u, hw=[h, w], batch_size=batch, image_size=size,
                  file_bytes=n * u * h * w * 4)
    try:
        sys.path.insert(0, str(ROOT))
        from hnd_jax.pipeline.memory_plan import plan_layer

        plan = plan_layer("L", n, u, (h, w), batch_size=batch, image_size=size, num_concepts=38, quantile=0.005,
                          prefetch=2)
        result["estimate"] = plan.total
    except ImportError:  # an older checkout without the planner
        pass
    result["extra"] = result["peak"] - result["stages"]["setup"]["base"]
    return result


def mib(x: float) -> str:
    return f"{x / 2**20:7.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--hw", type=int, nargs=2, default=(16, 16))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--sweep", default="", help="FACTOR=V1,V2,... with FACTOR images|units|hw|batch")
    ap.add_argument("--before-root", type=Path, help="another checkout to run interleaved (same data)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hnd_bench_memory")
    ap.add_argument("--json", type=Path)
    ap.add_argument("extra", nargs="*", help="more hnd dissect options (after --)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = dict(n=args.images, u=args.units, h=args.hw[0], w=args.hw[1], batch=args.batch_size)
    points = [base]
    if args.sweep:
        factor, _, values = args.sweep.partition("=")
        key = {"images": "n", "units": "u", "batch": "batch", "hw": "h"}[factor]
        points = [{**base, key: int(v), **({"w": int(v)} if factor == "hw" else {})} for v in values.split(",")]
    roots = [ROOT] + ([args.before_root.resolve()] if args.before_root else [])
    rows = []
    print(f"{'root':>6} {'N':>5} {'U':>5} {'hxw':>7} {'B':>4} {'file':>7} {'peak':>7} {'extra':>7} {'est':>7}  "
          "per stage: base/peak/file-backed at end, MiB")
    for p in points:
        for root in roots:
            r = measure(root, args.work, p["n"], p["u"], p["h"], p["w"], p["batch"], args.image_size, args.extra)
            rows.append(r)
            stages = " ".join(f"{k}={v['base'] / 2**20:.0f}/{v['peak'] / 2**20:.0f}/{v['file_end'] / 2**20:.0f}"
                              for k, v in r["stages"].items())
            est = mib(r["estimate"]) if "estimate" in r else "      -"
            tag = "this" if root == ROOT else "before"
            print(f"{tag:>6} {p['n']:5d} {p['u']:5d} {p['h']:3d}x{p['w']:<3d} {p['batch']:4d} {mib(r['file_bytes'])} "
                  f"{mib(r['peak'])} {mib(r['extra'])} {est}  {stages}", flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
