"""hnd bench: one real run on synthetic inputs; every stage timed; the JSON contract (issue 10)."""

from __future__ import annotations

import json

import pytest

from hnd_jax import bench
from hnd_jax.cli.main import main

TINY = bench.BenchConfig("cpu-small", "demo_cnn", "conv4", 32, 24, 8, units=0, map_size=0, permutations=5)
STAGES = ("dictionary_read", "forward", "pass1", "iou_tally", "global_families", "finalize", "end_to_end")


@pytest.fixture()
def tiny(monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "cpu-small", TINY)


@pytest.mark.parametrize("tally", ["dense", "runs"])
def test_json_report_times_every_stage(tiny, tmp_path, capsys, tally):
    path = tmp_path / "bench.json"
    assert main(["bench", "--tally", tally, "--json", str(path)]) == 0
    table = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["device_count"] >= 1 and report["process_count"] == 1 and report["device_kind"]
    assert report["peak_host_memory_bytes"] > 0
    assert report["peak_device_memory_bytes"] is None  # CPU: no device memory statistics
    assert tuple(report["stages"]) == STAGES
    for name, row in report["stages"].items():
        assert row["seconds"] > 0 and row["images_per_s"] > 0, name
        assert name in table
    s = report["stages"]
    assert s["pass1"]["images"] == 24 and s["end_to_end"]["images"] == 24
    assert s["global_families"]["images"] == report["global_images"] > 0
    parts = sum(s[k]["seconds"] for k in STAGES[:-1])
    assert parts <= s["end_to_end"]["seconds"] * 1.01  # the parts are disjoint pieces of the whole run
    assert s["iou_tally"]["kernel"] == tally
    assert s["iou_tally"]["unit_concept_pairs_per_s"] > 0
    assert ("tflops" in s["iou_tally"]) == (tally == "dense")


def test_unknown_tally_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--tally", "fast"])
    assert exc.value.code == 2


def test_tally_choices_are_the_kernels():
    from hnd_jax.scoring.tally import METHODS

    assert bench.TALLY_KERNELS == METHODS
