"""Real multi-process dissections (DESIGN.md §6, issue 10): separate OS processes joined over
127.0.0.1 with ``--coordinator``, each with 4 CPU devices and the gloo collectives.

* 2 processes x 4 devices give the same scores, bit for bit, as 1 process x 8 devices, for
  ``--activations`` and for ``--model mtcnn_onet``;
* ``kill -9`` of one process mid-pass-2 ends the other with one line naming it; rerunning both
  resumes and gives the uninterrupted scores;
* different ``--quantile`` on the two processes: both exit 2 with one line naming the difference;
* killing either process ends the other within the peer timeout with one line naming it (process 0,
  the coordinator, through the supervisor of hnd_jax/supervise.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hnd_jax.distributed import JOIN_TIMEOUT_FLOOR
from hnd_jax.pipeline.stages import SLEEP_ENV

DICT = "synthetic:24"
PEER_TIMEOUT = 4.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (SLEEP_ENV,)}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return env


def hnd(args, *, devices: int, extra_env=None, stderr_file: Path | None = None) -> subprocess.Popen:
    """``stderr_file``: stderr goes there (read back by :func:`finish`) instead of a pipe."""
    p = subprocess.Popen([sys.executable, "-m", "hnd_jax.cli.main", *map(str, args)],
                         env=env_for(devices, **(extra_env or {})), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE if stderr_file is None else open(stderr_file, "wb"), text=True)
    p.stderr_file = stderr_file
    return p


def start_pair(args_of, *, extra_env=None, stderr_dir: Path | None = None) -> list[subprocess.Popen]:
    """Two processes x 4 devices; ``args_of(i)`` gives process i's arguments; with ``stderr_dir``
    process i's stderr goes to ``stderr_dir/stderr_<i>``."""
    port = free_port()
    return [hnd([*args_of(i), "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i,
                 "--peer-timeout", PEER_TIMEOUT], devices=4, extra_env=extra_env,
                stderr_file=None if stderr_dir is None else stderr_dir / f"stderr_{i}") for i in range(2)]


def finish(procs, timeout=240) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
            pytest.fail(f"process hung: {(se or '')[-2000:]}")
        if p.stderr_file is not None:
            se = p.stderr_file.read_text(errors="replace")
        out.append((p.returncode, so, se))
    return out


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hnd: error:")]


def assert_same_scores(a: Path, b: Path, layer: str) -> None:
    with np.load(a / layer / "scores.npz") as x, np.load(b / layer / "scores.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert x[key].dtype == y[key].dtype, key
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def checkpoint_meta(out: Path, process: int) -> list[dict]:
    metas = []
    for meta in (out / ".checkpoints" / f"process_{process}").glob("[0-9]*/meta.json"):
        if meta.parent.name.isdigit():
            try:
                metas.append(json.loads(meta.read_text()))
            except (OSError, ValueError):
                pass
    return metas


@pytest.fixture(scope="module")
def activations(tmp_path_factory) -> Path:
    """Random NCHW activations for the 24 local images of the synthetic dictionary, with ties."""
    path = tmp_path_factory.mktemp("acts") / "acts.npy"
    rng = np.random.default_rng(7)
    acts = rng.standard_normal((24, 6, 4, 4)).astype(np.float32)
    acts[:, 0] = np.round(acts[:, 0])  # ties at the threshold
    acts[:, 1] = 0.0  # a dead unit
    np.save(path, acts)
    return path


def acts_args(acts: Path, out: Path, *extra) -> list:
    return ["dissect", "--activations", acts, "--layer", "feat", "--image-size", 32, "--dictionary", DICT,
            "--out", out, "--batch-size", 4, "--permutations", 20, "--no-report", "--progress", "none", *extra]


@pytest.fixture(scope="module")
def acts_reference(activations, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out"
    ((code, _, err),) = finish([hnd(acts_args(activations, out), devices=8)])
    assert code == 0, err
    return out


def test_two_processes_equal_one_for_activations(activations, acts_reference, tmp_path):
    out = tmp_path / "out"
    results = finish(start_pair(lambda i: acts_args(activations, out)))
    for code, _, err in results:
        assert code == 0, err
        # hnd's own lines only: gloo's "[Gloo] Rank 0 is connected to 3 peer ranks..." (std::cout) once
        # filled both processes' stdout; JAX's absl warnings would show on stderr
        assert all(line.startswith("hnd: ") for line in err.splitlines()), err
    assert "process 0 wrote" in results[1][2]
    assert "[Gloo]" not in results[0][1] and results[0][1].startswith("layer feat: ") and results[1][1] == ""
    assert_same_scores(acts_reference, out, "feat")
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["devices"]["process_count"] == 2 and meta["devices"]["count"] == 4
    # only results: no lock file of either process, no (empty) checkpoint folder
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "dissection.json", "feat", "feat/scores.npz", "feat/units.csv"]


def test_two_processes_equal_one_for_a_model(tmp_path):
    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip("facenet-pytorch is not installed, so mtcnn_onet's shipped weights cannot be located")

    def args(out):
        return ["dissect", "--model", "mtcnn_onet", "--dictionary", DICT, "--out", out, "--batch-size", 8,
                "--permutations", 10, "--no-report", "--progress", "none"]

    ref, out = tmp_path / "ref", tmp_path / "out"
    ((code, _, err),) = finish([hnd(args(ref), devices=8)])
    assert code == 0, err
    for code, _, err in finish(start_pair(lambda i: args(out))):
        assert code == 0, err
    assert_same_scores(ref, out, "conv4")


def test_kill_9_one_process_mid_pass2_then_rerun_both(activations, acts_reference, tmp_path):
    out = tmp_path / "out"
    args = lambda i: acts_args(activations, out, "--checkpoint-every", 1)  # noqa: E731
    procs = start_pair(args, extra_env={SLEEP_ENV: "0.4"})
    deadline = time.monotonic() + 180
    while not any(m["stage"] == "pass2" and m["next_batch"] >= 1 for m in checkpoint_meta(out, 1)):
        assert all(p.poll() is None for p in procs), f"ended before the kill: {procs[1].stderr.read()}"
        assert time.monotonic() < deadline, "no pass-2 checkpoint appeared"
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    (code0, _, err0), (code1, _, _) = finish(procs, timeout=PEER_TIMEOUT + 60)
    assert code1 == -signal.SIGKILL
    assert code0 not in (0, None)
    lines = error_lines(err0)
    assert len(lines) == 1 and "lost process 1" in lines[0], err0[-2000:]
    assert not (out / "dissection.json").exists()
    # process 0 ended through its peer watch (os._exit) and still removed its lock file; the killed one could not
    assert not (out / ".lock").exists() and "pid" in json.loads((out / ".lock.process_1").read_text())

    results = finish(start_pair(lambda i: acts_args(activations, out, "--checkpoint-every", 1)))
    for code, _, err in results:
        assert code == 0, err
    assert "resumed from pass2" in results[1][2]
    assert_same_scores(acts_reference, out, "feat")
    assert not list(out.glob(".lock*"))


@pytest.mark.parametrize("option, key, values", [
    ("--quantile", "quantile", ("0.005", "0.1")),
    ("--alpha", "alpha", ("0.05", "0.1")),  # finalize-only (not in the checkpoint's fingerprint): compared too
])
def test_different_settings_on_the_processes_both_exit_2_with_one_line(activations, tmp_path, option, key, values):
    out = tmp_path / "out"
    results = finish(start_pair(lambda i: acts_args(activations, out, option, values[i])))
    for code, _, err in results:
        assert code == 2, err
        lines = error_lines(err)
        assert len(lines) == 1, err
        assert f"scoring.{key}: {values[0]} on process 0, {values[1]} on process 1" in lines[0]
    assert not (out / "dissection.json").exists()


def start_counted(args, counts, ids, stderr_dir: Path) -> list[subprocess.Popen]:
    """Process k started with ``--num-processes counts[k] --process-id ids[k]`` (stderr to files)."""
    port = free_port()
    return [hnd([*args, "--coordinator", f"127.0.0.1:{port}", "--num-processes", n, "--process-id", i,
                 "--peer-timeout", PEER_TIMEOUT], devices=4, stderr_file=stderr_dir / f"stderr_{k}")
            for k, (n, i) in enumerate(zip(counts, ids))]


def test_a_process_given_more_processes_than_process_0_is_refused_on_both(activations, tmp_path):
    """JAX takes process 0's count: process 1 (told 3) joined as 'process 1 of 2' and the run went
    through as if nothing was wrong. Now both say so in the same line right after joining."""
    out = tmp_path / "out"
    results = finish(start_counted(acts_args(activations, out), [2, 3], [0, 1], tmp_path), timeout=120)
    for code, so, err in results:
        assert code == 2 and so == "", err
        assert error_lines(err) == ["hnd: error: the processes were started with different --num-processes: 2 on "
                                    "process 0, 3 on process 1 (start every process with the same --coordinator, "
                                    "--num-processes and settings)"], err
        assert all(line.startswith("hnd: ") for line in err.splitlines()), err
    assert not out.exists() or not any(out.iterdir())


def test_a_process_id_process_0_does_not_expect_ends_at_once_with_one_line(activations, tmp_path):
    """Process 1 started as process 2 of 3 while process 0 expects 2: JAX's coordinator refuses it
    (the client aborts); its supervisor says why in one line, long before the join timeout. Process
    0 would wait out the join timeout for its process 1 (as the next test checks): stopped here."""
    procs = start_counted(acts_args(activations, tmp_path / "out"), [2, 3], [0, 2], tmp_path)
    started = time.monotonic()
    try:
        ((code, so, err),) = finish(procs[1:], timeout=60)
        assert time.monotonic() - started < 45
        assert code == 2 and so == "", err
        assert err.splitlines()[1:] == [
            "hnd: error: process 0 (the coordinator) was started with a smaller --num-processes: it has no process 2; "
            "start every process with the same --num-processes (JAX: INVALID_ARGUMENT: Unexpected task registered "
            "with task=2)"], err
        assert procs[0].poll() is None  # still waiting for a process 1
    finally:
        procs[0].send_signal(signal.SIGTERM)
        ((code, _, err),) = finish(procs[:1], timeout=30)
    assert code == -signal.SIGTERM and err.splitlines()[-1] == "hnd: terminated", err


def test_a_process_given_fewer_processes_than_process_0_ends_both_at_the_join_timeout(activations, tmp_path):
    """Process 0 told 3, process 1 told 2: process 0 waits for a process 2 that nobody starts (it
    cannot tell a late one from a missing one), and process 1 waits with it. Both end with the
    join-timeout line naming --num-processes, exit 2, within the join timeout (60 s) and start-up."""
    procs = start_counted(acts_args(activations, tmp_path / "out"), [3, 2], [0, 1], tmp_path)
    started = time.monotonic()
    results = finish(procs, timeout=150)
    assert time.monotonic() - started < JOIN_TIMEOUT_FLOOR + 30
    for code, so, err in results:
        assert code == 2 and so == "", err
        (line,) = error_lines(err)
        assert line.startswith("hnd: error: not every process joined in time (--peer-timeout): start all of them "
                               "with the same --coordinator HOST:PORT and --num-processes"), err
        assert all(line.startswith("hnd: ") for line in err.splitlines()), err


def test_different_out_folders_are_refused_on_both_processes(activations, tmp_path):
    """Process 1 once checkpointed into its own OUT and said 'process 0 wrote' it."""
    results = finish(start_pair(lambda i: acts_args(activations, tmp_path / f"out{i}")))
    for code, _, err in results:
        assert code == 2, err
        (line,) = error_lines(err)
        assert f"out: {tmp_path / 'out0'} on process 0, {tmp_path / 'out1'} on process 1" in line, line
    assert not (tmp_path / "out0" / "dissection.json").exists()


@pytest.mark.parametrize("victim", [1, 0])
def test_killing_a_process_ends_the_other_within_the_timeout(activations, tmp_path, victim):
    """Process 1 lost: process 0's peer watch names it. Process 0 lost (it hosts JAX's coordination
    service): JAX aborts the other with a fatal message and a stack trace, which its supervisor
    (hnd_jax/supervise.py) replaces with our one line. Either way: exactly one stderr line after
    the kill, exit 2, within the peer timeout."""
    out = tmp_path / "out"
    procs = start_pair(lambda i: acts_args(activations, out, "--checkpoint-every", 1), extra_env={SLEEP_ENV: "0.4"},
                       stderr_dir=tmp_path)
    survivor = procs[1 - victim]
    deadline = time.monotonic() + 180
    while not checkpoint_meta(out, 1 - victim):  # both are working in pass 1
        assert all(p.poll() is None for p in procs), survivor.stderr_file.read_text()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    before_kill = survivor.stderr_file.stat().st_size
    procs[victim].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    results = finish(procs, timeout=PEER_TIMEOUT + 60)
    elapsed = time.monotonic() - killed
    code, _, err = results[1 - victim]
    after_kill = survivor.stderr_file.read_bytes()[before_kill:].decode(errors="replace").splitlines()
    assert code == 2, err[-2000:]
    assert elapsed < PEER_TIMEOUT + 30, f"took {elapsed:.1f} s to notice"
    assert len(after_kill) == 1 and after_kill[0].startswith(f"hnd: error: lost process {victim} ("), err[-2000:]
    if victim == 1:
        assert "no sign of life" in after_kill[0]
    else:
        assert "the coordinator" in after_kill[0]
        assert "Check failure stack trace" not in err and "Terminating process" not in err
    assert results[victim][0] == -signal.SIGKILL
    assert not (out / "dissection.json").exists()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
@pytest.mark.parametrize("victim", [0, 1])
def test_a_signal_stops_a_process_and_the_other_names_it(activations, tmp_path, victim, sig, code, word):
    """SIGTERM (scancel, kubectl delete, timeout) once did nothing: JAX's preemption notifier had
    replaced its default action with a handler that only logs, and the run went on to the end. Now
    it stops the process like Ctrl-C does (``hnd: terminated``, 143; ``hnd: interrupted``, 130) and
    the other ends with one line naming it."""
    out = tmp_path / "out"
    procs = start_pair(lambda i: acts_args(activations, out, "--checkpoint-every", 1), extra_env={SLEEP_ENV: "0.4"},
                       stderr_dir=tmp_path)
    deadline = time.monotonic() + 180
    # Both are working in pass 1: a checkpoint of a later stage would leave the signal racing the end
    # of the run under load (it once arrived after the victim had finished: exit 0), so only pass 1's.
    while not all(any(m.get("stage") == "pass1" for m in checkpoint_meta(out, i)) for i in (0, 1)):
        assert all(p.poll() is None for p in procs), procs[0].stderr_file.read_text()
        assert time.monotonic() < deadline, "no pass-1 checkpoint appeared"
        assert not any(m.get("stage") not in (None, "pass1") for i in (0, 1) for m in checkpoint_meta(out, i)), \
            "the processes left pass 1 before the test saw both in it (machine too loaded for this test)"
        time.sleep(0.02)
    procs[victim].send_signal(sig)
    results = finish(procs, timeout=PEER_TIMEOUT + 60)
    got, _, err = results[victim]
    assert got == code, err[-2000:]
    assert f"hnd: {word}" in err.splitlines() and not error_lines(err), err[-2000:]
    assert "SIGTERM caught" not in err  # JAX's notifier no longer takes the signal
    got, _, err = results[1 - victim]
    assert got == 2 and error_lines(err) == [f"hnd: error: lost process {victim} (it stopped with an error: "
                                             f"{word})"], err[-2000:]
    assert not (out / "dissection.json").exists()


@pytest.mark.parametrize("sig, word", [(signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupted")])
def test_a_signal_while_waiting_for_the_others_ends_at_once(activations, tmp_path, sig, word):
    """Joining is one long C++ call in JAX (a Python handler would wait for the join timeout): the
    signal ends the process at once with its one line."""
    stderr = tmp_path / "stderr"
    proc = hnd([*acts_args(activations, tmp_path / "out"), "--coordinator", f"127.0.0.1:{free_port()}",
                "--num-processes", 2, "--process-id", 1], devices=4, stderr_file=stderr)
    deadline = time.monotonic() + 120
    while "hnd: joining" not in stderr.read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text(errors="replace")
        time.sleep(0.05)
    time.sleep(0.5)  # inside jax.distributed.initialize
    proc.send_signal(sig)
    ((code, _, err),) = finish([proc], timeout=30)
    assert code == -sig and err.splitlines()[-1] == f"hnd: {word}", err[-2000:]


@pytest.mark.parametrize("for_dissect", [False, True])
def test_extract_two_processes_equal_one(tmp_path, for_dissect):
    """hnd extract: each process computes its slice of the rows, process 0 writes the same file."""
    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip("facenet-pytorch is not installed, so mtcnn_onet's shipped weights cannot be located")
    suffix = [] if not for_dissect else ["--for-dissect"]

    def args(out):
        return ["extract", "--model", "mtcnn_onet", "--layer", "conv3", "--dictionary", DICT, "--out", out,
                "--batch-size", 5, *suffix]

    ref, out = tmp_path / "ref.npz", tmp_path / "out.npz"
    ((code, _, err),) = finish([hnd(args(ref), devices=8)])
    assert code == 0, err
    results = finish(start_pair(lambda i: args(out)))
    for code, _, err in results:
        assert code == 0, err
    assert "wrote" in results[0][1] and "wrote" not in results[1][1]
    with np.load(ref) as a, np.load(out) as b:
        assert sorted(a.files) == sorted(b.files)
        assert any("/" in key for key in a.files) == for_dissect  # the global families' group arrays
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
