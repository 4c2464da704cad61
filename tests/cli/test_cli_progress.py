"""--no-progress on the long commands: progress lines (rate, ETA, stage time) by default in logs, none with the flag.

Under pytest stderr is not a terminal, so the default ('auto') prints plain lines, the form a pod or
SLURM log gets (hnd_jax/pipeline/progress.py).
"""

from __future__ import annotations

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
