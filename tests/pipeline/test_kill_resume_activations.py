"""``kill -9`` a real ``hnd dissect --activations`` process mid-pass-2, rerun the same command: the
scores equal an uninterrupted run's (the --activations path shares the model path's driver, so it
resumes the same way)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hnd_jax.pipeline.stages import SLEEP_ENV
from tests.pipeline.test_activations_file import base_args, global_arrays, local_acts, tiny  # noqa: F401
from tests.pipeline.test_kill_resume import checkpoint_stages


def hnd_dissect(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "hnd_jax.cli.main", "dissect", *args], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_9_then_resume_activations_gives_identical_scores(tiny, tmp_path, sig):
    """SIGKILL: nothing runs after it. SIGTERM (scancel, timeout): the run stops with one line and
    exit 143 (it once died silently by the signal) after closing its files. Both resume exactly."""
    root, tax_path = tiny
    acts = tmp_path / "acts.npz"
    np.savez(acts, local=local_acts(), **global_arrays())
    ref, out = tmp_path / "ref", tmp_path / "out"
    extra = ["--batch-size", "2", "--checkpoint-every", "1", "--no-report"]
    done = hnd_dissect(base_args(root, tax_path, acts, ref) + extra)
    assert done.wait(timeout=240) == 0, done.stderr.read()

    proc = hnd_dissect(base_args(root, tax_path, acts, out) + extra, env=dict(os.environ, **{SLEEP_ENV: "0.4"}))
    deadline = time.monotonic() + 240
    while "pass2" not in checkpoint_stages(out):
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no pass-2 checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.5)  # into pass 2
    proc.send_signal(sig)
    proc.wait(timeout=30)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        err = proc.stderr.read().splitlines()
        assert proc.returncode == 143 and err == ["hnd: terminated"], err[-5:]  # --progress none: one line
    assert not (out / "dissection.json").exists()

    again = hnd_dissect(base_args(root, tax_path, acts, out) + extra)
    assert again.wait(timeout=240) == 0, again.stderr.read()
    assert "resumed from pass2 at batch" in again.stderr.read()
    with np.load(ref / "layer4.2.conv1" / "scores.npz") as a, np.load(out / "layer4.2.conv1" / "scores.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert json.loads((out / "dissection.json").read_text())["resumed"]["stage"] == "pass2"
