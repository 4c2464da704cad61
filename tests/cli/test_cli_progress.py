"""--no-progress on the long commands: progress lines (rate, ETA, stage time) by default in logs, none with the flag.

Under pytest stderr is not a terminal, so the default ('auto') prints plain lines, the form a pod or
SLURM log gets (hnd_jax/pipeline/progress.py).
"""

from __future__ import annotations

import re
import signal
import time

import numpy as np
import pytest

from hnd_jax.cli.main import main


def _progress_lines(err: str, stage: str) -> list[str]:
    return [l for l in err.splitlines() if l.startswith(f"hnd: {stage}: ")]


def _assert_progress(err: str, stage: str, total: int) -> None:
    lines = _progress_lines(err, stage)
    assert lines, err
    counts = [l for l in lines if f"/{total} img" in l]
    assert counts and all("img/s, ETA" in l for l in counts), lines
    assert lines[-1].startswith(f"hnd: {stage}: done in ") and f"({total} img," in lines[-1]  # each image counted once


def test_synth_shows_progress_unless_told_not_to(tmp_path, capsys):
    assert main(["dictionary", "synth", str(tmp_path / "a"), "--images", "12"]) == 0
    err = capsys.readouterr().err
    from hnd_jax.dictionary import open_dictionary

    d = open_dictionary(str(tmp_path / "a"), 16)
    total = d.num_local + sum(len(d.global_group_of(f.name)) for f in d.taxonomy.global_families)
    _assert_progress(err, "synth", total)
    assert main(["dictionary", "synth", str(tmp_path / "b"), "--images", "12", "--no-progress"]) == 0
    assert _progress_lines(capsys.readouterr().err, "synth") == []


def test_prepare_shows_progress_unless_told_not_to(pristine_fixture, tmp_path, capsys):
    root = str(pristine_fixture.root)
    assert main(["dictionary", "prepare", root, "--size", "7", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    from hnd_jax.dictionary.prepared import read_metadata

    meta = read_metadata(tmp_path / "p")
    total = meta["num_local"] + meta["num_global"]
    _assert_progress(err, "prepare", total)
    assert main(["dictionary", "prepare", root, "--size", "7", "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    assert _progress_lines(capsys.readouterr().err, "prepare") == []


@pytest.mark.parametrize("quiet", [False, True])
def test_extract_shows_progress_unless_told_not_to(tmp_path, capsys, quiet):
    from hnd_jax.convert.checkpoint import save_model
    from hnd_jax.models.registry import build_model
    from flax import nnx

    save_model(build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0)), "demo_cnn", tmp_path / "w")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((5, 64, 64, 3), dtype=np.float32))
    argv = ["extract", "--model", "demo_cnn", "--weights", str(tmp_path / "w"), "--layer", "conv4",
            "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "a.npy"), "--batch-size", "2"]
    assert main(argv + (["--no-progress"] if quiet else [])) == 0
    err = capsys.readouterr().err
    if quiet:
        assert _progress_lines(err, "extract") == []
    else:
        _assert_progress(err, "extract", 5)
    assert np.load(tmp_path / "a.npy").shape[0] == 5


def test_a_stage_ended_by_an_error_or_an_interrupt_is_not_called_done(capsys):
    from hnd_jax.pipeline.progress import StageProgress

    progress = StageProgress("pass 2 (IoU tally)", 32, mode="plain")
    progress.update(8)
    progress.close(completed=False)
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("hnd: pass 2 (IoU tally): stopped after ") and last.endswith(" at 8/32 img"), last


@pytest.mark.parametrize("for_dissect", [False, True])
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_extract_says_where_it_stopped(tmp_path, sig, code, word, for_dissect):
    """A real `hnd extract` stopped by Ctrl-C (SIGINT) or SIGTERM mid-way: its progress ends with
    'stopped after S s at N/M img' (as dissect's stages do), never 'done', then the signal's one line."""
    from flax import nnx

    from hnd_jax.convert.checkpoint import save_model
    from hnd_jax.models.registry import build_model
    from hnd_jax.pipeline.stages import SLEEP_ENV
    from test_multiprocess import finish, hnd  # the real-process helpers of the dissect interruption tests

    save_model(build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0)), "demo_cnn", tmp_path / "w")
    args = ["extract", "--model", "demo_cnn", "--weights", tmp_path / "w", "--layer", "conv4", "--batch-size", 1]
    if for_dissect:  # dissect_layout_activations: the local images then every global family's
        args += ["--dictionary", "synthetic:6:0", "--for-dissect", "--out", tmp_path / "a.npz"]
    else:
        np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 64, 64, 3), dtype=np.float32))
        args += ["--inputs", tmp_path / "x.npy", "--out", tmp_path / "a.npy"]
    stderr = tmp_path / "stderr"
    proc = hnd(args, devices=1, extra_env={SLEEP_ENV: "0.3", "HND_CACHE": str(tmp_path / "cache")}, stderr_file=stderr)
    deadline = time.monotonic() + 120
    while not _progress_lines(stderr.read_text(errors="replace"), "extract"):  # a few batches done
        assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text(errors="replace")
        time.sleep(0.05)
    proc.send_signal(sig)
    ((got, _, err),) = finish([proc], timeout=60)
    lines = err.splitlines()
    assert got == code and lines[-1] == f"hnd: {word}", err[-2000:]
    stop = re.fullmatch(r"hnd: extract: stopped after [0-9.]+ s at (\d+)/(\d+) img", lines[-2])
    assert stop is not None, lines[-3:]
    done, total = int(stop[1]), int(stop[2])
    counted = [int(m[1]) for l in _progress_lines(err, "extract") if (m := re.match(r"hnd: extract: (\d+)/", l))]
    assert counted and counted[-1] <= done < total, (counted, done, total)  # where it was, not the end
    if not for_dissect:
        assert total == 20
    assert not any("done in" in l for l in lines)
    assert not (tmp_path / "a.npy").exists() and not (tmp_path / "a.npz").exists()


@pytest.mark.parametrize("exc", [None, KeyboardInterrupt, "Terminated", ValueError])
@pytest.mark.parametrize("first", [0, 3])
def test_a_stage_in_a_with_block_is_done_only_when_the_block_finished(capsys, exc, first):
    """An interruption always says where it stopped; an error only once an image was done (a bad input
    found first is its own one line)."""
    from hnd_jax.errors import Terminated
    from hnd_jax.pipeline.progress import StageProgress

    if exc == "Terminated":
        exc = Terminated  # SIGTERM's exception (hnd_jax/errors.py), a BaseException like KeyboardInterrupt

    def stage():
        with StageProgress("extract", 10, mode="plain") as progress:
            progress.update(first)
            if exc is not None:
                raise exc()

    if exc is None:
        stage()
    else:
        with pytest.raises(exc):  # never swallowed
            stage()
    lines = [l for l in capsys.readouterr().err.splitlines() if "/10 img," not in l]  # the periodic lines
    if exc is None:
        assert len(lines) == 1 and re.fullmatch(rf"hnd: extract: done in [0-9.]+ s \({first} img, .*", lines[0]), lines
    elif exc is ValueError and first == 0:
        assert lines == []
    else:
        assert len(lines) == 1 and re.fullmatch(rf"hnd: extract: stopped after [0-9.]+ s at {first}/10 img", lines[0])


@pytest.mark.parametrize("command", ["synth", "prepare"])
def test_an_interrupted_synth_or_prepare_says_where_it_stopped(pristine_fixture, tmp_path, capsys, monkeypatch,
                                                               command):
    """Ctrl-C in the middle of writing: the stage's last line is 'stopped after ... at N/M img'."""
    if command == "synth":
        from hnd_jax.dictionary.synthetic import generate as module

        name, argv = "_write_global", ["dictionary", "synth", str(tmp_path / "a"), "--images", "12"]
    else:
        from hnd_jax.dictionary import prepare as module

        name, argv = "_write_arrays", ["dictionary", "prepare", str(pristine_fixture.root), "--size", "7",
                                       "--out", str(tmp_path / "p")]
    def interrupted(*args):
        bar = args[-1]
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(module, name, interrupted)
    assert main(argv) == 130
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith(f"hnd: {command}: ")]
    assert lines and re.fullmatch(rf"hnd: {command}: stopped after [0-9.]+ s at \d+/\d+ img", lines[-1]), lines
