"""The memory plan of a dissection: its estimate against a measured peak, and the refusal before pass 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hnd_jax import npyfile
from hnd_jax.cli.main import main
from hnd_jax.errors import HndError
from hnd_jax.pipeline import memory_plan as mp

ROOT = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux") and Path("/proc/self/status").exists()


def write_acts(path: Path, n: int, u: int, h: int, w: int) -> Path:
    rng = np.random.default_rng(0)
    np.save(path, np.maximum(rng.standard_normal((n, u, h, w), np.float32), 0))
    return path


def args(acts: Path, out: Path, batch: int, n: int = 24) -> list[str]:
    return ["dissect", "--activations", str(acts), "--dictionary", f"synthetic:{n}", "--out", str(out),
            "--layer", "L", "--image-size", "32", "--batch-size", str(batch), "--no-report",
            "--progress", "none", "--checkpoint-every", "0", "--permutations", "20"]


CHILD = r"""
import json, sys
from hnd_jax.pipeline import memory_plan as mp
def rss(key='VmRSS'):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
seen = {}
check = mp.check_dissection_memory
def record(d):
    seen['base'] = rss()  # the running process when the plan is made (what the plan adds to)
    plans = check(d)
    seen['estimate'] = sum(p.total for p in plans)
    return plans
mp.check_dissection_memory = record
from hnd_jax.cli.main import main
code = main(sys.argv[2:])
# VmHWM, not ru_maxrss: Linux carries the forking parent's high-water mark (pytest's) over exec
seen['peak'] = rss('VmHWM')
seen['code'] = code
json.dump(seen, open(sys.argv[1], 'w'))
"""


@pytest.mark.skipif(not LINUX, reason="reads the resident set size from /proc (Linux only)")
@pytest.mark.parametrize("units,hw,batch", [(512, 32, 32), (256, 24, 8)])
def test_estimate_is_within_the_stated_factor_of_the_measured_peak(units, hw, batch, tmp_path):
    # Shapes whose batches and per-unit state dominate (hundreds of MiB): there the plan's constants
    # do not hide its model. The measured figure is the peak RSS minus the RSS when the plan was made.
    acts = write_acts(tmp_path / "a.npy", 24, units, hw, hw)
    report = tmp_path / "m.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(report), *args(acts, tmp_path / "out", batch)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(report.read_text())
    assert m["code"] == 0
    extra = m["peak"] - m["base"]
    ratio = m["estimate"] / extra
    print(f"estimate {m['estimate'] / 2**20:.0f} MiB, measured {extra / 2**20:.0f} MiB, ratio {ratio:.2f}")
    assert 1 / mp.ESTIMATE_FACTOR <= ratio <= mp.ESTIMATE_FACTOR, (extra, m["estimate"], ratio)


def test_a_run_that_cannot_fit_is_refused_before_pass_1_with_a_batch_size_that_fits(tmp_path, monkeypatch, capsys):
    acts = write_acts(tmp_path / "a.npy", 24, 256, 16, 16)
    plan = lambda b: mp.plan_layer("L", 24, 256, (16, 16), batch_size=b, image_size=32, num_concepts=38,  # noqa: E731
                                   quantile=0.005)
    assert plan(2).total < plan(32).total
    available = (plan(4).total + plan(5).total) // 2  # batch 4 fits, 5 does not
    monkeypatch.setattr(npyfile, "memory_available", lambda: available)

    def pass1_never_runs(*a, **k):
        raise AssertionError("pass 1 started")

    import hnd_jax.pipeline.stages as stages

    run = stages.StageRunner.run
    monkeypatch.setattr(stages.StageRunner, "run", pass1_never_runs)
    out = tmp_path / "out"
    code = main(args(acts, out, 32))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("hnd: error: layer L: needs about ") and err.count("\n") == 1, err
    assert f"more than the {mp.format_size(available)} available" in err
    assert err.rstrip().endswith("; use --batch-size 4 or less"), err
    assert not (out / "dissection.json").exists()

    monkeypatch.setattr(stages.StageRunner, "run", run)  # the advice holds: that batch size runs
    assert main(args(acts, out, 4)) == 0, capsys.readouterr().err
    assert (out / "dissection.json").exists()


def test_when_even_one_image_per_batch_cannot_fit_the_message_says_why(tmp_path, monkeypatch, capsys):
    acts = write_acts(tmp_path / "a.npy", 24, 64, 8, 8)
    monkeypatch.setattr(npyfile, "memory_available", lambda: 1 << 20)
    code = main(args(acts, tmp_path / "out", 8))
    err = capsys.readouterr().err
    assert code == 2 and "per-image statistics alone exceed it" in err and "--batch-size" not in err, err


def test_unknown_available_memory_checks_nothing(tmp_path, monkeypatch, capsys):
    acts = write_acts(tmp_path / "a.npy", 24, 16, 4, 4)
    monkeypatch.setattr(npyfile, "memory_available", lambda: None)
    assert main(args(acts, tmp_path / "out", 8)) == 0, capsys.readouterr().err


def test_an_uncertain_plan_warns_instead_of_refusing():
    p = mp.plan_layer("conv5", 100, 512, (7, 7), batch_size=32, image_size=64, num_concepts=38, quantile=0.005,
                      tally="cells")
    assert not p.certain and "cells" in p.unmodelled[0]
    said = []
    mp.check_memory([p], batch_size=32, available=p.total - 1, say=said.append)
    assert len(said) == 1 and "layer conv5: needs about" in said[0] and "may fail" in said[0]
    certain = mp.plan_layer("conv5", 100, 512, (7, 7), batch_size=32, image_size=64, num_concepts=38, quantile=0.005)
    with pytest.raises(HndError, match="layer conv5"):
        mp.check_memory([certain], batch_size=32, available=certain.total - 1)
    mp.check_memory([certain], batch_size=32, available=certain.total)  # fits exactly: no error


def test_several_layers_are_added_and_fewer_layers_is_advised():
    a = mp.plan_layer("a", 50, 256, (8, 8), batch_size=16, image_size=32, num_concepts=38, quantile=0.005)
    b = mp.plan_layer("b", 50, 1024, (8, 8), batch_size=16, image_size=32, num_concepts=38, quantile=0.005)
    need = a.total + b.total - mp.RUNTIME_BYTES
    mp.check_memory([a, b], batch_size=16, available=need)
    with pytest.raises(HndError, match="layer b: .*fewer layers per run"):
        mp.check_memory([a, b], batch_size=16, available=need - 1)


@pytest.mark.parametrize("factor", ["num_images", "num_units", "map_hw", "batch_size", "prefetch", "image_size"])
def test_the_estimate_grows_with_every_factor_it_models(factor):
    base = dict(num_images=200, num_units=256, map_hw=(8, 8), batch_size=16, image_size=32, prefetch=2)
    # (more images: 801, so that both have a partial last batch, the one padded copy)
    bigger = {**base, factor: (16, 16) if factor == "map_hw" else base[factor] * 4 + (factor == "num_images")}
    lo = mp.plan_layer("L", **{k: v for k, v in base.items() if k not in ("num_images", "num_units", "map_hw")},
                       num_images=base["num_images"], num_units=base["num_units"], map_hw=base["map_hw"],
                       num_concepts=38, quantile=0.005)
    hi = mp.plan_layer("L", **{k: v for k, v in bigger.items() if k not in ("num_images", "num_units", "map_hw")},
                       num_images=bigger["num_images"], num_units=bigger["num_units"], map_hw=bigger["map_hw"],
                       num_concepts=38, quantile=0.005)
    assert hi.total > lo.total


def test_npz_arrays_read_whole_are_counted():
    kw = dict(batch_size=16, image_size=32, num_concepts=38, quantile=0.005)
    npy = mp.plan_layer("L", 100, 256, (8, 8), **kw)
    npz = mp.plan_layer("L", 100, 256, (8, 8), npz_local_bytes=10 << 20, **kw)
    assert npz.total - npy.total == 10 << 20


@pytest.mark.parametrize("seed", range(20))
def test_suggested_batch_size_is_the_largest_that_fits(seed):
    rng = np.random.default_rng(seed)
    limit = int(rng.integers(0, 70))
    fits = lambda b: b <= limit  # noqa: E731 (monotone, like the plans)
    got = mp.suggest_batch_size(fits, 64)
    assert got == (None if limit < 1 else min(limit, 63))


FINALIZE_CHILD = r"""
import json, sys
import numpy as np
from hnd_jax.scoring.config import ScoringConfig
from hnd_jax.scoring.engine import LayerScorer
from hnd_jax.taxonomy import resolve_taxonomy
def hwm(key='VmHWM'):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
N, U, n_f = (int(x) for x in sys.argv[2:5])
tax = resolve_taxonomy(None)
rng = np.random.default_rng(0)
C = tax.num_concepts
scorer = LayerScorer(tax, rng.random((N, C)) < 0.3, rng.integers(0, len(tax.local_families), N).astype(np.int32),
                     U, (8, 8), ScoringConfig(image_size=32, permutations=50))
p1 = {"image_max": rng.random((N, U)).astype(np.float32), "lo": np.zeros(U, np.float32),
      "hi": np.ones(U, np.float32), "thresholds": np.full(U, 0.9, np.float32)}
inter = rng.integers(0, 100, (U, C))
p2 = {"intersection": inter, "union": inter + rng.integers(1, 100, (U, C))}
g = {f.name: {"image_max": rng.random((n_f, U)).astype(np.float32), "lo": np.zeros(U, np.float32),
              "hi": np.ones(U, np.float32), "group": rng.integers(0, f.num_groups, n_f)} for f in tax.global_families}
base = hwm('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')
scorer.finalize(p1, p2, g)
json.dump({"extra": hwm() - base}, open(sys.argv[1], 'w'))
"""


@pytest.mark.skipif(not LINUX, reason="reads the resident set size from /proc (Linux only)")
def test_finalize_estimate_is_within_the_stated_factor(tmp_path):
    # Finalize's work grows with N x U (local) and n_F x U (global families): measured on inputs big
    # enough (8.2 M and 4.1 M values) for those terms to dominate the fixed costs.
    N, U, n_f = 8000, 1024, 4000
    report = tmp_path / "f.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", FINALIZE_CHILD, str(report), str(N), str(U), str(n_f)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    extra = json.loads(report.read_text())["extra"]
    estimate = max(mp.FINALIZE_LOCAL_BYTES * N, mp.FINALIZE_GLOBAL_BYTES * n_f) * U
    print(f"finalize: estimate {estimate / 2**20:.0f} MiB, measured {extra / 2**20:.0f} MiB")
    assert 1 / mp.ESTIMATE_FACTOR <= estimate / extra <= mp.ESTIMATE_FACTOR, (estimate, extra)
