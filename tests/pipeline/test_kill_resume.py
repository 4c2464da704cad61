"""``kill -9`` a real dissection subprocess mid-run, rerun the same command: same scores, the
killed run never leaves a result that looks complete, and a changed setting refuses to resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hnd_jax.pipeline.stages import SLEEP_ENV
from tests.pipeline.tiny_driver import run

DRIVER = Path(__file__).with_name("tiny_driver.py")


def driver(out, *args, env=None, **kw):
    return subprocess.Popen([sys.executable, str(DRIVER), str(out), *args], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, **kw)


def checkpoint_stages(out: Path) -> list[str]:
    stages = []
    for meta in (out / ".checkpoints").glob("[0-9]*/meta/metadata"):
        if not meta.parent.parent.name.isdigit():  # a step orbax has not finalized yet
            continue
        try:
            stages.append(json.loads(meta.read_text())["stage"])
        except (OSError, ValueError, KeyError):
            pass
    return stages


def test_kill_9_then_resume_gives_identical_scores(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    run(ref)  # the uninterrupted reference, in this process
    shutil.copytree(ref, out)  # an old complete result in OUT: kept intact until the new run completes
    old_marker = (out / "dissection.json").read_bytes()

    env = dict(os.environ, **{SLEEP_ENV: "0.25"})
    proc = driver(out, "--fresh", env=env)
    deadline = time.monotonic() + 240
    while "pass2" not in checkpoint_stages(out):
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no pass-2 checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Issue 12: a killed rerun never destroys finished results; nothing of the killed run is in place.
    assert (out / "dissection.json").read_bytes() == old_marker, "the previous results must stay as they were"
    with np.load(ref / "conv1" / "scores.npz") as a, np.load(out / "conv1" / "scores.npz") as b:
        np.testing.assert_array_equal(a["iou"], b["iou"])

    # A changed setting refuses to resume: one line, exit 2, and the checkpoint is kept.
    refused = driver(out, "--quantile", "0.1")
    assert refused.wait(timeout=240) == 2
    err = refused.stderr.read().strip()
    assert "Traceback" not in err and err.count("\n") == 0
    assert err.startswith("hnd: error:") and "scoring.quantile" in err and "--fresh" in err

    again = driver(out)
    assert again.wait(timeout=240) == 0
    err = again.stderr.read()
    assert "resumed from pass2 at batch" in err, err
    for layer in ("conv1", "conv2"):
        with np.load(ref / layer / "scores.npz") as a, np.load(out / layer / "scores.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{layer}/{key}")
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["resumed"]["stage"] == "pass2"
