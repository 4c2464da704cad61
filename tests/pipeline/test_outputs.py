"""Issue 12's output side: finished results are never lost, OUT is locked, every failure is one line.

Runs the real CLI in-process on the tiny published-layout dictionary with an activations file (the
fastest path through the one driver that `--model` shares).
"""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from hnd_jax.cli.main import main
from hnd_jax.pipeline import outlock, publish
from hnd_jax.pipeline.outlock import locked_out
from tests.pipeline.settings_cases import SETTINGS_OUT_OF_RANGE
from tests.pipeline.test_activations_file import LAYER, base_args, local_acts, tiny  # noqa: F401


def dissect(capsys, *args):
    code = main(["dissect", *args])
    return code, capsys.readouterr().err.strip()


@pytest.fixture()
def finished(tiny, tmp_path, capsys):
    """OUT with a complete earlier dissection; returns (args, out, snapshot of its files)."""
    root, tax_path = tiny
    np.save(tmp_path / "acts.npy", local_acts())
    out = tmp_path / "out"
    args = base_args(root, tax_path, tmp_path / "acts.npy", out) + ["--no-report"]
    code, err = dissect(capsys, *args)
    assert code == 0, err
    snap = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    return args, out, snap


def unchanged(out, snap) -> bool:
    """Every file of the earlier results is still there, byte for byte (staging files may be added)."""
    return all((out / rel).is_file() and (out / rel).read_bytes() == data for rel, data in snap.items())


def test_a_failing_rerun_keeps_the_finished_results(finished, tmp_path, capsys):
    args, out, snap = finished
    bad = local_acts()
    bad[3, 1, 0, 0] = np.nan
    np.save(tmp_path / "acts.npy", bad)  # the same command, now with NaN activations
    code, err = dissect(capsys, *args)
    assert code == 2 and err.count("\n") == 0 and "NaN" in err and "first at image 3" in err, err
    assert unchanged(out, snap)


def test_a_full_disk_during_the_final_write_is_one_line_and_keeps_results(finished, monkeypatch, capsys):
    args, out, snap = finished

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish, "write_dissection_json", full)
    code, err = dissect(capsys, *args)
    assert code == 2 and err.count("\n") == 0 and "no space left" in err.lower() and "Traceback" not in err, err
    assert unchanged(out, snap)
    assert (out / publish.INCOMING / LAYER / "scores.npz").exists()  # the new layer waited beside the old one
    monkeypatch.undo()
    code, err = dissect(capsys, *args)  # the next run cleans the half-written staging and completes
    assert code == 0, err
    assert not (out / publish.INCOMING).exists() and not (out / publish.OUTGOING).exists()


def test_a_permission_error_is_one_line(finished, monkeypatch, capsys):
    args, out, snap = finished

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(outlock.os, "open", denied)  # a read-only OUT, as root cannot make one with chmod
    code, err = dissect(capsys, *args)
    assert code == 2 and err.count("\n") == 0 and "Permission denied" in err, err
    assert unchanged(out, snap)


def test_a_second_run_on_a_locked_out_is_refused_naming_the_holder(finished, capsys):
    args, out, snap = finished
    with locked_out(out):
        code, err = dissect(capsys, *args)
    assert code == 2 and err.count("\n") == 0, err
    assert f"process {os.getpid()}" in err and "another dissection is writing here" in err
    assert unchanged(out, snap)


def test_a_stale_lock_of_a_killed_run_is_taken_over(finished, capsys):
    args, out, _ = finished
    (out / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "2026-01-01T00:00:00"}))
    code, err = dissect(capsys, *args)
    assert code == 0, err
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["lock_taken_over_from"].startswith("process 999999 on gone")
    assert not (out / ".lock").exists()  # removed at the end


def test_stray_temporary_files_of_a_killed_final_write_are_cleaned(finished, capsys):
    args, out, _ = finished
    stray = out / ".dissection.json.abc123.tmp"
    stray.write_text("{half")
    # a report killed mid-write (break test: .report_assets.mlpl4izo.tmp stayed for good)
    report_strays = [out / ".report_assets.mlpl4izo.tmp", out / ".report.html.x1y2.tmp.html"]
    report_strays[0].mkdir()
    (report_strays[0] / "L0.jpg").write_bytes(b"half")
    report_strays[1].write_text("<half")
    mine = out / ".my.tmp"  # not a name of ours: kept
    mine.write_text("mine")
    (out / publish.INCOMING / LAYER).mkdir(parents=True)
    code, err = dissect(capsys, *args)
    assert code == 0, err
    assert not stray.exists() and not (out / publish.INCOMING).exists()
    assert not any(p.exists() for p in report_strays) and mine.read_text() == "mine"


def test_garbage_in_checkpoint_metadata_is_one_line(finished, tmp_path, capsys):
    args, out, _ = finished
    meta = out / ".checkpoints" / "7" / "meta" / "metadata"
    meta.parent.mkdir(parents=True)
    meta.write_bytes(b"\x00\xffnot json")
    (out / ".checkpoints" / "7" / "_CHECKPOINT_METADATA").write_text("garbage")
    code, err = dissect(capsys, *args)
    assert code == 2 and err.count("\n") == 0 and "--fresh" in err, err
    code, err = dissect(capsys, *args, "--fresh")
    assert code == 0, err


@pytest.mark.parametrize("option,value,expected", SETTINGS_OUT_OF_RANGE)
def test_numeric_options_are_range_checked(finished, capsys, option, value, expected):
    args, out, snap = finished
    code, err = dissect(capsys, *args, option, value)
    assert code == 2 and err.count("\n") == 0 and expected in err, err
    assert unchanged(out, snap)
