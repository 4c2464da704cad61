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
from hnd_jax.taxonomy import default_taxonomy


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


# ---------------------------------------------------------------- the dictionary must be the run's


def _run_on(tmp_path, root, *, image_size=16, num_images=12):
    """A fixture run whose dissection.json records ``root``'s identity as `hnd dissect` writes it."""
    from hnd_jax.dictionary import open_dictionary

    ident = dict(open_dictionary(str(root), image_size).identity(), spec=str(root))
    return write_fixture_run(tmp_path / "run", {"l": 3}, image_size=image_size, num_images=num_images,
                             dictionary=ident)


def test_a_regenerated_dictionary_is_refused_not_shown(tmp_path, monkeypatch, hnd):
    """The break test: the run's folder replaced by another dictionary with the same image count."""
    import shutil

    from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary

    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_dictionary(tmp_path / "fdA", num_images=12, seed=1)
    run = _run_on(tmp_path, root)
    recorded = run.meta["dictionary"]["content_sha256"]
    code, _, err = hnd("report", str(run.out), "--no-plots")  # the run's own dictionary: images
    assert code == 0 and err == "", err
    shown = [i for i in parse_report((run.out / "report.html").read_text()).sections[0].imgs
             if "strip" in i.get("class", "")]
    assert shown, "the unchanged dictionary should give top-image strips"

    shutil.rmtree(root)
    write_synthetic_dictionary(root, num_images=12, seed=5)  # same folder, same count, other faces
    (run.out / "report.html").unlink()
    for argv in ((), ("--dictionary", str(root))):
        code, out, err = hnd("report", str(run.out), "--no-plots", *argv)
        assert code == 2 and err.strip().count("\n") == 0, err
        assert err.startswith(f"hnd: error: dictionary {root}: not the one ")
        assert f"content_sha256 {recorded[:12]} recorded" in err and "num_local" not in err
        assert "--no-images" in err and out == ""
    assert not (run.out / "report.html").exists(), "refused before anything was written"

    code, _, err = hnd("report", str(run.out), "--no-plots", "--dictionary", "synthetic:20:5")
    assert code == 2 and "num_local 12 recorded, 20 here" in err and "content_sha256" in err

    code, out, err = hnd("report", str(run.out), "--no-plots", "--no-images")  # the way out
    assert code == 0 and "report.html" in out


def test_the_same_dictionary_elsewhere_or_prepared_is_accepted(tmp_path, monkeypatch, hnd):
    """Location is not identity: the run's dictionary moved, or a PREP of it, still gives images."""
    from hnd_jax.dictionary.prepare import prepare_dictionary
    from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary

    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_dictionary(tmp_path / "fdA", num_images=12, seed=1)
    run = _run_on(tmp_path, root)
    moved = root.rename(tmp_path / "moved")
    prep = tmp_path / "prep"
    prepare_dictionary(str(moved), prep, 16)
    for spec in (moved, prep):
        code, _, err = hnd("report", str(run.out), "--no-plots", "--dictionary", str(spec))
        assert code == 0 and err == "", (spec, err)


def test_each_identity_field_is_named_when_it_differs(tmp_path, monkeypatch):
    """Each checked identity field is named when it alone differs; the taxonomy one points at --taxonomy."""
    from hnd_jax.reports.build import CHECKED_IDENTITY_FIELDS, DictionaryMismatch, open_run_dictionary

    tax = default_taxonomy()
    run = write_fixture_run(tmp_path / "run", {"l": 3}, image_size=12, num_images=8, dictionary={
        "spec": "X", "content_sha256": "a" * 64, "num_local": 8, "taxonomy": tax.fingerprint,
        "image_size": 12, "image_resample": "bicubic"})
    base = dict(run.meta["dictionary"])
    for key, other in zip(CHECKED_IDENTITY_FIELDS, ("b" * 64, 9, "0" * 16, 13, "nearest")):
        ident = dict(base, **{key: other})

        class Opened(FakeDictionary):
            def identity(self):
                return ident

        monkeypatch.setattr(dictionary_pkg, "open_dictionary", lambda spec, size, **kw: Opened(tax, size, 8))
        with pytest.raises(DictionaryMismatch) as err:
            open_run_dictionary(run.out, meta=run.meta)
        shown = other[:12] if isinstance(other, str) and len(other) == 64 else other
        assert f"{key} " in str(err.value) and f"{shown} here" in str(err.value)
        assert ("--taxonomy" in str(err.value)) == (key == "taxonomy")
    # fields one side does not record are not compared (an old run, a reader without a hash)
    monkeypatch.setattr(dictionary_pkg, "open_dictionary", lambda spec, size, **kw: FakeDictionary(tax, size, 8))
    assert open_run_dictionary(run.out, meta=run.meta).num_local == 8


def test_the_check_hashes_the_dictionary_once(tmp_path, monkeypatch):
    """The identity compared is the one computed when the dictionary was opened (no second hashing)."""
    from hnd_jax.dictionary.layout import DictionaryLayout
    from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary
    from hnd_jax.reports.build import build_report

    root = write_synthetic_dictionary(tmp_path / "fdA", num_images=12, seed=1)
    run = _run_on(tmp_path, root)
    calls = []
    real = DictionaryLayout.content_hash
    monkeypatch.setattr(DictionaryLayout, "content_hash", lambda self: calls.append(1) or real(self))
    outcome = build_report(run.out, plots=False)
    assert outcome.notes == [] and len(calls) == 1
