"""After ``hnd dissect`` (and in ``hnd report``), each results file is opened for reading once.

The summary printed at the end, the plots, the HTML report and a folder's index are views of the
same ``OUT/dissection.json`` and ``OUT/<layer>/scores.npz``; they used to read them again each (four
reads of both after one ``hnd dissect``). Every open of those names is counted here, at the level of
``open`` itself (``builtins.open`` and ``io.open``, which ``np.load``, ``zipfile`` and ``Path.read_text``
all go through), so a new reader added anywhere is seen.
"""

from __future__ import annotations

import argparse
import builtins
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from reports_fixture import write_fixture_run

from hnd_jax.cli.main import main

RESULT_NAMES = {"scores.npz", "dissection.json"}


class ReadCounter:
    """Counts opens for reading of files named like results, by resolved path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.reads: Counter[str] = Counter()
        real = io.open

        def counting_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and Path(file).name in RESULT_NAMES:
                if not any(c in mode for c in "wax+"):
                    self.reads[str(Path(file).resolve())] += 1
            return real(file, mode, *args, **kwargs)

        monkeypatch.setattr(io, "open", counting_open)
        monkeypatch.setattr(builtins, "open", counting_open)

    def of(self, path: Path) -> int:
        return self.reads[str(path.resolve())]

    def clear(self) -> None:
        self.reads.clear()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from hnd_jax.convert.checkpoint import load_model
    from hnd_jax.models.torch_mapping import export_torch_state_dict

    path = tmp_path_factory.mktemp("weights") / "w.npz"
    model, _ = load_model("demo_cnn", None, random_init=True)
    np.savez(path, **export_torch_state_dict(model))
    return path


def test_hnd_dissect_then_hnd_report_read_each_results_file_once(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    files = [out / "dissection.json", out / "conv4" / "scores.npz"]
    count = ReadCounter(monkeypatch)
    assert main(["dissect", "--model", "demo_cnn", "--weights", str(weights), "--dictionary", "synthetic:24",
                 "--out", str(out), "--image-size", "16", "--batch-size", "8", "--progress", "none",
                 "--permutations", "50"]) == 0
    printed = capsys.readouterr().out
    assert "layer conv4: 128 units" in printed and f"report: {out / 'report.html'}" in printed  # it did report
    assert (out / "report.html").is_file() and any((out / "plots").rglob("*.png"))
    assert [count.of(f) for f in files] == [1, 1], dict(count.reads)

    # the summary alone (--no-report) reads them once too
    from hnd_jax.cli.dissect import _report

    count.clear()
    assert _report(argparse.Namespace(out=str(out), no_report=True, dictionary=None, taxonomy=None)) == 0
    assert "layer conv4: 128 units" in capsys.readouterr().out
    assert [count.of(f) for f in files] == [1, 1], dict(count.reads)

    count.clear()
    assert main(["report", str(out)]) == 0
    assert [count.of(f) for f in files] == [1, 1], dict(count.reads)


def test_hnd_report_on_a_folder_reads_each_run_once(tmp_path, monkeypatch, capsys):
    """The folder's index is made from the results its reports were written from."""
    folder = tmp_path / "sweep"
    runs = [write_fixture_run(folder / name, {"l1": 7, "l2": 5}, seed=i, top=False) for i, name in enumerate("ab")]
    count = ReadCounter(monkeypatch)
    assert main(["report", str(folder), "--no-images"]) == 0
    assert "index.html" in capsys.readouterr().out and (folder / "index.html").is_file()
    for run in runs:
        files = [run.out / "dissection.json", run.out / "l1" / "scores.npz", run.out / "l2" / "scores.npz"]
        assert [count.of(f) for f in files] == [1, 1, 1], dict(count.reads)
    index = (folder / "index.html").read_text()
    assert all(f"{run.out.name}/report.html" in index for run in runs)
