"""Settings used only after the passes fail before them; an out-of-memory line fits where it happened.

The break test: ``--permutations 100000000000`` ran every pass, then ran out of memory in the
significance tests and was told to use a smaller --batch-size or --cache-budget (which change
nothing there), and its checkpoint blocked a rerun with a sane value until --fresh.
"""

from __future__ import annotations

import numpy as np

from hnd_jax.cli.main import main
from hnd_jax.scoring import significance

ALLOC = "Unable to allocate 27.6 TiB for an array with shape (100000000000, 38) and data type int64"


def _dissect(tmp_path, *extra):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", rng.normal(size=(24, 3, 4, 4)).astype(np.float32))
    return main(["dissect", "--activations", str(tmp_path / "acts.npy"), "--layer", "l", "--image-size", "16",
                 "--dictionary", "synthetic:24:3", "--out", str(tmp_path / "out"), "--no-report",
                 "--no-progress", *extra])


def test_out_of_memory_after_the_passes_does_not_blame_the_batch_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HND_DEBUG", raising=False)

    def no_memory(values):
        raise MemoryError(ALLOC)

    monkeypatch.setattr(significance, "midranks", no_memory)  # inside the real engine.finalize -> auc_test
    code = _dissect(tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hnd: error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("hnd: error: out of memory (Unable to allocate 27.6 TiB")
    assert "after the passes" in lines[0] and "do not change" in lines[0]
    assert "a smaller --batch-size" not in lines[0]


def test_out_of_memory_in_the_passes_keeps_the_batch_size_advice(tmp_path, monkeypatch, capsys):
    from hnd_jax.scoring import engine

    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HND_DEBUG", raising=False)

    def no_memory(*args, **kwargs):
        raise MemoryError(ALLOC)

    monkeypatch.setattr(engine.LayerScorer, "pass2", no_memory)  # the second pass's tally
    code = _dissect(tmp_path)
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("hnd: error: ")]
    assert code == 2 and len(line) == 1 and "a smaller --batch-size or --cache-budget" in line[0], err
    assert "after the passes" not in line[0]


def test_too_many_permutations_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    code = _dissect(tmp_path, "--permutations", "100000000000")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("hnd: error: --permutations 100000000000: expected an integer from 1 to 1,000,000")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "synthetic").exists(), "nothing was started"
    assert _dissect(tmp_path, "--permutations", "50") == 0  # a sane value is not blocked by the refused run
