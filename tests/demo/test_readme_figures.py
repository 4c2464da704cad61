"""The README's demo figures come from a measured summary.json (scripts/readme_figures.py), never by hand."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hnd_jax.demo.figures import BEGIN, END, demo_tables, load_summary, machine_line, replace_block
from hnd_jax.demo.machine import cpu_model, describe_machine
from hnd_jax.demo.run import combine_replicates
from hnd_jax.errors import HndError

REPO = Path(__file__).resolve().parents[2]
MEASURED = REPO / "benchmarks" / "measured" / "demo_summary.json"
SCRIPT = REPO / "scripts" / "readme_figures.py"


def _script(*args, cwd=REPO):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_the_readme_block_is_what_the_measured_summary_gives():
    assert _script(MEASURED, "--check", REPO / "README.md").returncode == 0


def test_check_fails_on_a_stale_readme_and_write_repairs_it(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace(END, "| paired with Eyeglasses | 27 | 0 |\n" + END), encoding="utf-8")
    bad = _script(MEASURED, "--check", stale)
    assert bad.returncode == 1 and "rerun with --write" in bad.stderr
    assert _script(MEASURED, "--write", stale).returncode == 0
    assert stale.read_text(encoding="utf-8") == readme


def _finding(b, c, bs, cs, reproduced):
    entry = {"biased": b, "control": c, "z": 1.0, "biased_significant": bs, "control_significant": cs,
             "z_significant": 2.0, "clearly_more": reproduced}
    return {"criterion": "X", "units": 192, "paired_with_planted_concept": entry,
            "biased_toward_planted_group": dict(entry, biased=b + 100, biased_significant=bs + 100),
            "reproduced": reproduced}


def test_every_figure_is_read_from_the_summary():
    summary = load_summary(MEASURED)
    rep = copy.deepcopy(summary["replicates"][0])
    findings = [_finding(11, 2, 9, 1, True), _finding(23, 5, 17, 4, False)]
    summary["replicates"] = [dict(rep, seed=s, finding=f) for s, f in zip((7, 8), findings)]
    summary["finding"] = combine_replicates(findings)
    text = demo_tables([summary])
    assert "| 7 | 9 vs 1 (11 vs 2) | 109 vs 1 (111 vs 2) | yes |" in text
    assert "| 8 | 17 vs 4 (23 vs 5) | 117 vs 4 (123 vs 5) | no |" in text
    assert "| mean (min–max) | 13.0 (9–17) vs 2.5 (1–4) |" in text and "| 1 of 2 |" in text
    assert "**NOT reproduced**" in text and "seeds 7, 8" in text
    probes = summary["models"]["control"]["probe_accuracy"]
    assert "| control model | " + " | ".join(f"{probes[p]:.2f}" for p in probes) + " |" in text
    assert machine_line(summary["machine"]) in text


def test_machine_is_recorded_and_named():
    info = describe_machine()
    assert info["cpu_count"] >= 1 and info["jax_device_count"] >= 1 and info["jax_device_kind"]
    line = machine_line(info)
    assert info["cpu"] in line and f"{info['cpu_count']} logical CPUs" in line
    assert machine_line(None) == "machine not recorded"


def test_cpu_model_reads_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t:  AMD  EPYC 9R14\n")
    assert cpu_model(tmp_path / "cpuinfo") == "AMD EPYC 9R14"
    assert cpu_model(tmp_path / "missing")  # falls back to platform, never raises


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(HndError, match="not a summary.json written by hnd demo"):
        load_summary(tmp_path / "x.json")
    with pytest.raises(HndError, match="no demo figures block"):
        replace_block("# README\n", "table\n")
    result = _script(tmp_path / "x.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert BEGIN.startswith("<!--") and END.startswith("<!--")
