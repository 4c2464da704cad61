"""open_dictionary's spec forms (ROOT, PREP, synthetic[:N[:SEED]]), the synthetic cache, and the
`hnd dictionary check --json / synth` CLI content against the fixture's ground truth."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from hnd_dict_fixture import write_fixture
from hnd_jax.cli.main import main
from hnd_jax.dictionary import open_dictionary
from hnd_jax.dictionary.opening import parse_synthetic_spec
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import default_taxonomy


@pytest.mark.parametrize("spec,expected", [
    ("synthetic", (600, 0)), ("synthetic:25", (25, 0)), ("synthetic:25:7", (25, 7)), ("synthetic::3", (600, 3)),
    ("synthetics", None), ("/data/synthetic", None),
])
def test_parse_synthetic_spec(spec, expected):
    assert parse_synthetic_spec(spec) == expected


@pytest.mark.parametrize("spec", ["synthetic:x", "synthetic:1:2:3", "synthetic:0", "synthetic:5:-1"])
def test_bad_synthetic_specs(spec):
    with pytest.raises(HndError, match="synthetic"):
        parse_synthetic_spec(spec)


def test_synthetic_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    """With a stand-in generator (the hand fixture): written under $HND_CACHE, then reused."""
    calls = []

    def fake_writer(out, *, num_images, seed, taxonomy):
        calls.append((num_images, seed))
        write_fixture(out, seed=seed)
        return out

    fake = types.ModuleType("hnd_jax.dictionary.synthetic.generate")
    fake.write_synthetic_dictionary = fake_writer
    monkeypatch.setitem(sys.modules, "hnd_jax.dictionary.synthetic.generate", fake)
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    a = open_dictionary("synthetic:9:4", 8)
    b = open_dictionary("synthetic:9:4", 8)
    assert calls == [(9, 4)]
    assert (tmp_path / "cache/synthetic/9-4/Parts.csv").is_file()
    assert a.identity() == b.identity() and a.num_local == 9
    assert [p.name for p in (tmp_path / "cache/synthetic").iterdir()] == ["9-4"]  # no temporary left
    open_dictionary("synthetic:9:5", 8)
    assert calls == [(9, 4), (9, 5)]


def test_real_synthetic_dictionary_reads_through_the_same_reader(tmp_path, monkeypatch):
    pytest.importorskip("hnd_jax.dictionary.synthetic.generate", reason="the synthetic generator (H2) is not in this tree")
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    d = open_dictionary("synthetic:12:3", 16)
    root = tmp_path / "cache/synthetic/12-3"
    direct = open_dictionary(root, 16)
    assert d.num_local == direct.num_local > 0
    a, b = d.get_local(np.arange(d.num_local)), direct.get_local(np.arange(direct.num_local))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_cli_synth_writes_a_checkable_dictionary(tmp_path, capsys):
    pytest.importorskip("hnd_jax.dictionary.synthetic.generate", reason="the synthetic generator (H2) is not in this tree")
    out = tmp_path / "syn"
    assert main(["dictionary", "synth", str(out), "--images", "12", "--seed", "2"]) == 0
    assert "12 local images" in capsys.readouterr().out
    assert main(["dictionary", "check", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_local"] == 12 and summary["skipped"] == {}
    assert main(["dictionary", "synth", str(tmp_path / "x"), "--images", "0"]) == 2


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(HndError, match="Face Dictionary not found.*data/README.md"):
        open_dictionary(tmp_path / "absent", 8)
    (tmp_path / "f.csv").write_text("x")
    with pytest.raises(HndError, match="is a folder"):
        open_dictionary(tmp_path / "f.csv", 8)
    with pytest.raises(HndError, match="image size"):
        open_dictionary(tmp_path, 0)


def test_check_json_content_matches_the_fixture(pristine_fixture, capsys):
    tax = default_taxonomy()
    root = pristine_fixture.root
    assert main(["dictionary", "check", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    concept_counts = {c: 0 for c in tax.concept_names}
    family_counts = {f.name: 0 for f in tax.local_families}
    for row in pristine_fixture.rows:
        family_counts[row.family] += 1
        for c in row.masks:
            concept_counts[c] += 1
    assert summary["concept_counts"] == concept_counts
    assert summary["family_counts"] == family_counts
    assert summary["global_counts"] == {
        fam.name: {g: sum(1 for gg, _ in pristine_fixture.global_images[fam.name] if gg == g) for g in fam.groups}
        for fam in tax.global_families
    }
    sizes = [Image.open(root / r.image).size for r in pristine_fixture.rows]
    sizes += [Image.open(root / p).size for v in pristine_fixture.global_images.values() for _, p in v]
    assert summary["image_size_range"] == {
        "width": [min(s[0] for s in sizes), max(s[0] for s in sizes)],
        "height": [min(s[1] for s in sizes), max(s[1] for s in sizes)],
    }
    assert summary["skipped"] == {} and summary["problems"] == []
    assert summary["ignored_visualisations"] == 2


def test_check_human_summary(pristine_fixture, capsys):
    assert main(["dictionary", "check", str(pristine_fixture.root)]) == 0
    out = capsys.readouterr().out
    assert "local images: 9" in out and "problems found: none" in out
    assert "Gender: Male 1, Female 2" in out
    assert "native image size: width" in out
    assert main(["dictionary"]) == 2  # no action: help, exit 2


def test_cli_index_file_override(fresh_fixture, capsys):
    (fresh_fixture.root / "Parts.csv").rename(fresh_fixture.root / "P2.csv")
    assert main(["dictionary", "check", str(fresh_fixture.root), "--json"]) == 2
    assert "Parts.csv" in capsys.readouterr().err
    assert main(["dictionary", "check", str(fresh_fixture.root), "--json", "--index-file", "parts=P2.csv"]) == 0
    assert json.loads(capsys.readouterr().out)["family_counts"]["parts"] == 2
    assert main(["dictionary", "check", str(fresh_fixture.root), "--index-file", "P2.csv"]) == 2
    assert "FAMILY=FILE" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# --allow-outside-root and --max-image-pixels reach every command that reads a dictionary (issue 12)
# ---------------------------------------------------------------------------------------------


def _help(*cmd):
    import contextlib
    import io

    from hnd_jax.cli.main import main as hnd_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        hnd_main([*cmd, "--help"])
    return buf.getvalue()


@pytest.mark.parametrize("cmd", [("dictionary", "check"), ("dictionary", "prepare"), ("dissect",), ("report",)])
def test_dictionary_commands_take_the_untrusted_input_options(cmd):
    text = _help(*cmd)
    assert "--allow-outside-root" in text and "--max-image-pixels" in text


def test_max_image_pixels_option_is_applied_and_restored(fresh_fixture, capsys):
    from hnd_jax.cli.main import main as hnd_main
    from hnd_jax.dictionary import decode

    before = decode.max_image_pixels()
    code = hnd_main(["dictionary", "check", str(fresh_fixture.root), "--max-image-pixels", "50"])
    err = capsys.readouterr().err
    assert code == 2 and "more than the limit of 50" in err and err.count("\n") == 1
    assert decode.max_image_pixels() == before
    assert hnd_main(["dictionary", "check", str(fresh_fixture.root), "--max-image-pixels", "100000"]) == 0
    assert hnd_main(["dictionary", "check", str(fresh_fixture.root), "--skip-bad", "--max-image-pixels", "50"]) == 0
    out = capsys.readouterr().out
    assert "image_too_large" in out
