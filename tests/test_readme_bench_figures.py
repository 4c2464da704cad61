"""The README's benchmark figures come from the measured JSON in benchmarks/measured/ (scripts/readme_figures.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hnd_jax.demo.bench_figures import BEGIN, END, ROWS, bench_table, load_measured, replace_bench_block
from hnd_jax.demo.machine import measured_on
from hnd_jax.errors import HndError

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO / "benchmarks" / "measured"
SCRIPT = REPO / "scripts" / "readme_figures.py"


def _script(*args):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def _block(readme: str) -> str:
    return readme[readme.index(BEGIN) + len(BEGIN): readme.index(END)]


def test_the_readme_is_what_the_committed_json_gives():
    result = _script("--check", REPO / "README.md")
    assert result.returncode == 0, result.stderr


def test_a_figure_edited_by_hand_fails_the_check_and_write_repairs_it(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = _block(readme)
    number = re.search(r"\*\*(\d+\.\d+) s\*\*", block)  # the end-to-end figure of the first row
    assert number, block
    edited = block.replace(number.group(0), f"**{float(number.group(1)) / 2:.2f} s**", 1)
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace(block, edited), encoding="utf-8")
    bad = _script("--check", stale)
    assert bad.returncode == 1 and "benchmark figures differ" in bad.stderr and "demo figures" not in bad.stderr
    assert _script("--write", stale).returncode == 0
    assert stale.read_text(encoding="utf-8") == readme


def test_every_committed_json_is_a_row_naming_its_script_and_machine():
    committed = {f.name for f in MEASURED.glob("*.json")} - {"demo_summary.json"}
    known = {r.file for r in ROWS}
    assert committed <= known, f"not rendered into the README: {committed - known}"
    table = bench_table(MEASURED)
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    present = [r for r in ROWS if r.file in committed]
    assert len(rows) == len(present) >= 5
    for line, row in zip(rows, present):
        machine = load_measured(MEASURED / row.file)["machine"]
        assert f"`{row.script}`" in line
        assert f"{machine['cpu']}, {machine['cpu_count']} logical CPUs" in line and machine["date"][:10] in line
        assert f"load {machine['load_average'][0]:.1f}" in line


def _copy(tmp_path) -> Path:
    out = tmp_path / "measured"
    shutil.copytree(MEASURED, out)
    return out


def _edit(folder: Path, name: str, change) -> None:
    doc = json.loads((folder / name).read_text())
    change(doc)
    (folder / name).write_text(json.dumps(doc))


def test_every_figure_is_read_from_the_json(tmp_path):
    folder = _copy(tmp_path)
    e2e = "activations_e2e_2500x512x4_S128.json"

    def faster(doc):
        doc["hnd"]["wall_s"], doc["hnd"]["walls_s"] = 1.25, [1.25, 7.5]
        doc["naive_baseline"]["tally_s"], doc["published"]["tally_s"] = 100.0, 10.0
    _edit(folder, e2e, faster)
    _edit(folder, "kernels_wide_cpu.json", lambda d: d["kernels"]["dense"].update(counts_identical_to_cells=False))
    _edit(folder, "dictionary_read.json", lambda d: d["machine"].update(cpu="Test CPU 9000", cpu_count=96,
                                                                        load_average=[12.34, 0, 0]))
    table = bench_table(folder)
    assert "**1.25 s** best of 2 (1.2–7.5 s)" in table
    assert "100 s, extrapolated" in table and "(**80×**)" in table and "10.0 s (8.0×" in table
    assert "counts **DIFFER** across" in table
    assert "Test CPU 9000, 96 logical CPUs (2 available), load 12.3" in table


def test_a_json_without_its_machine_is_refused(tmp_path):
    folder = _copy(tmp_path)
    _edit(folder, "kernels_wide_cpu.json", lambda d: d.pop("machine"))
    with pytest.raises(HndError, match="kernels_wide_cpu.json: records no machine"):
        bench_table(folder)
    result = _script("--measured", folder)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "records no machine" in result.stderr


def test_a_json_of_another_benchmark_is_refused(tmp_path):
    folder = _copy(tmp_path)
    shutil.copy(folder / "dictionary_read.json", folder / "activations_e2e_2500x512x4_S128.json")
    with pytest.raises(HndError, match="written by 'dictionary_read', expected 'bench_activations_e2e'"):
        bench_table(folder)
    _edit(folder, "activations_e2e_2500x512x4_S128.json", lambda d: d.update(benchmark="bench_activations_e2e"))
    with pytest.raises(HndError, match="not what benchmarks/bench_activations_e2e.py writes"):
        bench_table(folder)


def test_missing_markers_and_folders_are_one_line_errors(tmp_path):
    with pytest.raises(HndError, match="no benchmark figures block"):
        replace_bench_block("# README\n", "table\n")
    with pytest.raises(HndError, match="no such folder"):
        bench_table(tmp_path / "missing")
    with pytest.raises(HndError, match="none of"):
        bench_table(tmp_path)


def test_measured_on_records_machine_load_and_date():
    info = measured_on()
    assert info["cpu"] and info["cpu_count"] >= 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", info["date"])
    assert info["load_average"] is None or len(info["load_average"]) == 3
