"""`hnd report OUT`: reopens the run's dictionary from dissection.json, writes plots + HTML; errors are one line.

cli/main.py's SUBCOMMAND_MODULES gets "report" from the lead; until then these tests add it for the
duration of the test (monkeypatch), which exercises the same main() error handling.
"""

from __future__ import annotations

import pytest
from html_check import parse_report
from reports_fixture import FakeDictionary, write_fixture_run

import hnd_jax.dictionary as dictionary_pkg
from hnd_jax.cli import main as cli_main
from hnd_jax.errors import HndError
from hnd_jax.reports.plots import PLOT_NAMES


@pytest.fixture
def hnd(monkeypatch, capsys):
    if "report" not in cli_main.SUBCOMMAND_MODULES:
        monkeypatch.setattr(cli_main, "SUBCOMMAND_MODULES", (*cli_main.SUBCOMMAND_MODULES, "report"))

    def call(*argv):
        code = cli_main.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_report_reopens_the_recorded_dictionary(tmp_path, monkeypatch, hnd):
    run = write_fixture_run(tmp_path / "run", {"layer4.2.conv1": 6}, image_size=14, num_images=8, seed=11)
    seen = {}

    def fake_open(spec, image_size, *, taxonomy=None, **kw):
        seen.update(spec=spec, image_size=image_size, taxonomy=taxonomy)
        return FakeDictionary(taxonomy, image_size, 8)

    monkeypatch.setattr(dictionary_pkg, "open_dictionary", fake_open)
    code, out, err = hnd("report", str(run.out))
    assert code == 0, err
    assert seen["spec"] == "synthetic:8:11" and seen["image_size"] == 14
    assert seen["taxonomy"].concept_names == run.taxonomy.concept_names
    assert "report.html" in out and err == ""
    for name in PLOT_NAMES:
        assert (run.out / "plots" / "layer4.2.conv1" / f"{name}.png").is_file()
    parsed = parse_report((run.out / "report.html").read_text())
    assert len(parsed.sections[0].cards) == 6
    assert len([i for i in parsed.sections[0].imgs if "strip" in i.get("class", "")]) == 6


def test_unreachable_recorded_dictionary_gives_a_note(tmp_path, monkeypatch, hnd):
    run = write_fixture_run(tmp_path / "run", {"l": 3}, image_size=12, num_images=5)

    def failing_open(spec, image_size, **kw):
        raise HndError(f"{spec}: no Face Dictionary here")

    monkeypatch.setattr(dictionary_pkg, "open_dictionary", failing_open)
    code, out, err = hnd("report", str(run.out), "--no-plots")
    assert code == 0
    assert err.startswith("hnd: note: report written without images") and err.count("\n") == 1
    assert "was not available" in (run.out / "report.html").read_text()
    assert not (run.out / "plots").exists()
    # named explicitly, the same failure is an error (exit 2, one line)
    code, out, err = hnd("report", str(run.out), "--dictionary", "/nowhere")
    assert code == 2 and err.startswith("hnd: error: /nowhere") and err.strip().count("\n") == 0


def test_report_bad_input(tmp_path, hnd):
    code, _, err = hnd("report", str(tmp_path))
    assert code == 2 and "dissection.json" in err and err.strip().count("\n") == 0
    run = write_fixture_run(tmp_path / "run", {"l": 3}, top=False)
    code, _, err = hnd("report", str(run.out), "--max-units", "0", "--no-images")
    assert code == 2 and "--max-units" in err
