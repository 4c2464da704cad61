"""Every kind of bad input: a one-line BadInputError naming the file (library), exit 2 (CLI), and
--skip-bad counts. Each case damages a private copy of the fixture in one way."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hnd_jax.cli.main import main
from hnd_jax.dictionary import open_dictionary
from hnd_jax.dictionary.check import check_dictionary
from hnd_jax.errors import BadInputError

S = 8


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _au_row(fx, k=0):
    return [r for r in fx.rows if r.family == "action_units"][k]


# Each damage returns the path fragment the error must name. 'lost' is how many local images
# --skip-bad leaves out; 'lazy' is true when opening without validation does not see it (pixels).
def missing_index(fx):
    (fx.root / "Action_Units.csv").unlink()
    return "Action_Units.csv"


def empty_index(fx):
    (fx.root / "Parts.csv").write_bytes(b"")
    return "Parts.csv"


def header_only_index(fx):
    (fx.root / "Parts.csv").write_text("image,labels\n")
    return "Parts.csv"


def bad_header(fx):
    rows = _rows(fx.root / "Parts.csv")
    _write_rows(fx.root / "Parts.csv", [["img", "masks"]] + rows[1:])
    return "Parts.csv"


def missing_image(fx):
    (fx.root / fx.rows[1].image).unlink()
    return fx.rows[1].image


def missing_mask(fx):
    row = _au_row(fx, 1)
    (fx.root / row.masks["AU_15"]).unlink()
    return row.masks["AU_15"]


def truncated_image(fx):
    path = fx.root / fx.rows[0].image
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return fx.rows[0].image


def garbage_mask(fx):
    row = _au_row(fx, 0)
    (fx.root / row.masks["AU_12"]).write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return row.masks["AU_12"]


def mask_size(fx):
    row = _au_row(fx, 2)
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(fx.root / row.masks["AU_1"])
    return row.masks["AU_1"]


def unknown_concept(fx):
    row = _au_row(fx, 0)
    extra = str(Path(row.masks["AU_1"]).with_name("AU_99.png"))
    shutil.copy(fx.root / row.masks["AU_1"], fx.root / extra)
    rows = _rows(fx.root / "Action_Units.csv")
    rows[1][1] += ";" + extra
    _write_rows(fx.root / "Action_Units.csv", rows)
    return "AU_99"


def concept_of_another_family(fx):
    row = _au_row(fx, 0)
    extra = str(Path(row.masks["AU_1"]).with_name("Smiling.png"))
    shutil.copy(fx.root / row.masks["AU_1"], fx.root / extra)
    rows = _rows(fx.root / "Action_Units.csv")
    rows[1][1] += ";" + extra
    _write_rows(fx.root / "Action_Units.csv", rows)
    return "Smiling"


def duplicate_row(fx):
    rows = _rows(fx.root / "Attributes.csv")
    _write_rows(fx.root / "Attributes.csv", rows + [rows[2]])
    return "Attributes.csv"


def empty_global_group(fx):
    folder = fx.root / "non_localizable/Gender/Female"
    for f in folder.glob("*.png"):
        f.unlink()
    return "non_localizable/Gender/Female"


def missing_global_group(fx):
    shutil.rmtree(fx.root / "non_localizable/Age/sixty_plus")
    return "non_localizable/Age/sixty_plus"


def corrupt_global_image(fx):
    (fx.root / "non_localizable/Age/zero_to_twenty/a.png").write_bytes(b"broken")
    return "non_localizable/Age/zero_to_twenty/a.png"


CASES = [
    # damage, kind, lost local images with --skip-bad, lazy
    (missing_index, "missing_index", 4, False),
    (empty_index, "empty_index", 2, False),
    (header_only_index, "empty_index", 2, False),
    (bad_header, "bad_index", 2, False),
    (missing_image, "missing_image", 1, False),
    (missing_mask, "missing_mask", 1, False),
    (truncated_image, "corrupt_image", 1, True),
    (garbage_mask, "corrupt_mask", 1, True),
    (mask_size, "mask_size", 1, True),
    (unknown_concept, "unknown_concept", 1, False),
    (concept_of_another_family, "unknown_concept", 1, False),
    (duplicate_row, "duplicate_row", 0, False),  # the extra copy is dropped
    (empty_global_group, "empty_global_group", 0, False),
    (missing_global_group, "empty_global_group", 0, False),
    (corrupt_global_image, "corrupt_global_image", 0, True),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize("damage,kind,lost,lazy", CASES, ids=IDS)
def test_library_raises_one_line_naming_the_file(fresh_fixture, damage, kind, lost, lazy):
    where = damage(fresh_fixture)
    with pytest.raises(BadInputError) as info:
        check_dictionary(fresh_fixture.root)
    err = info.value
    assert err.kind == kind
    assert where in str(err) and "\n" not in str(err)
    if lazy:  # opening is cheap; the same error appears when the bad file is decoded
        d = open_dictionary(fresh_fixture.root, S)
        with pytest.raises(BadInputError) as info2:
            for batch in d.local_batches(3):
                pass
            for fam in d.taxonomy.global_families:
                for batch in d.global_batches(fam.name, 3):
                    pass
        assert info2.value.kind == kind and where in str(info2.value)
    else:
        with pytest.raises(BadInputError) as info3:
            open_dictionary(fresh_fixture.root, S)
        assert info3.value.kind == kind


@pytest.mark.parametrize("damage,kind,lost,lazy", CASES, ids=IDS)
def test_skip_bad_skips_and_counts(fresh_fixture, damage, kind, lost, lazy):
    damage(fresh_fixture)
    n = len(fresh_fixture.rows)
    d = open_dictionary(fresh_fixture.root, S, skip_bad=True)
    assert d.skipped == {kind: 1}
    assert d.num_local == n - lost
    got = [int(i) for b in d.local_batches(4) for i in b.index]  # the kept data reads without error
    assert got == list(range(n - lost))
    for fam in d.taxonomy.global_families:
        for _ in d.global_batches(fam.name, 4):
            pass
    summary = check_dictionary(fresh_fixture.root, skip_bad=True)
    assert summary["skipped"] == {kind: 1}
    assert len(summary["problems"]) == 1 and "\n" not in summary["problems"][0]
    assert summary["num_local"] == n - lost


def test_corrupt_global_image_leaves_its_group_smaller(fresh_fixture):
    corrupt_global_image(fresh_fixture)
    d = open_dictionary(fresh_fixture.root, S, skip_bad=True)
    assert d.global_image_paths("Age")[0] == "non_localizable/Age/zero_to_twenty/b.png"
    np.testing.assert_array_equal(d.global_group_of("Age"), [0, 1, 2, 3, 3])


def test_a_group_whose_only_image_is_corrupt_is_also_empty(fresh_fixture):
    (fresh_fixture.root / "non_localizable/Ethnicity/white/w.png").write_bytes(b"broken")
    summary = check_dictionary(fresh_fixture.root, skip_bad=True)
    assert summary["skipped"] == {"corrupt_global_image": 1, "empty_global_group": 1}
    assert summary["global_counts"]["Ethnicity"] == {"white": 0, "black": 1, "asian": 1, "indian": 1}
    with pytest.raises(BadInputError, match="w.png: image is corrupt") as err:
        check_dictionary(fresh_fixture.root)
    # PIL's own text names the file object it was handed ("<...CappedReader object at 0x...>")
    assert " object at 0x" not in str(err.value) and "not an image format" in str(err.value)


def test_duplicate_row_keeps_the_first(fresh_fixture):
    duplicate_row(fresh_fixture)
    d = open_dictionary(fresh_fixture.root, S, skip_bad=True)
    assert d.local_image_paths.count(fresh_fixture.rows[1].image) == 1


def test_several_problems_are_counted_per_kind(fresh_fixture):
    missing_image(fresh_fixture)
    missing_mask(fresh_fixture)
    mask_size(fresh_fixture)
    empty_global_group(fresh_fixture)
    missing_global_group(fresh_fixture)
    summary = check_dictionary(fresh_fixture.root, skip_bad=True)
    assert summary["skipped"] == {"missing_image": 1, "missing_mask": 1, "mask_size": 1, "empty_global_group": 2}
    assert summary["num_local"] == len(fresh_fixture.rows) - 3


@pytest.mark.parametrize("damage,kind,lost,lazy", CASES, ids=IDS)
def test_cli_check_prints_one_line_and_exits_2(fresh_fixture, capsys, damage, kind, lost, lazy):
    where = damage(fresh_fixture)
    code = main(["dictionary", "check", str(fresh_fixture.root)])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("hnd: error: ") and err.count("\n") == 1 and where in err
    code = main(["dictionary", "check", str(fresh_fixture.root), "--skip-bad", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["skipped"] == {kind: 1}


def test_cli_skip_bad_human_output_lists_the_counts(fresh_fixture, capsys):
    missing_mask(fresh_fixture)
    duplicate_row(fresh_fixture)
    assert main(["dictionary", "check", str(fresh_fixture.root), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "duplicate_row 1" in out and "missing_mask 1" in out


def test_cli_process_has_no_traceback(fresh_fixture):
    truncated_image(fresh_fixture)
    res = subprocess.run(
        [sys.executable, "-m", "hnd_jax.cli.main", "dictionary", "check", str(fresh_fixture.root)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert "corrupt or truncated" in res.stderr


def test_missing_root_gives_instructions(tmp_path, capsys):
    code = main(["dictionary", "check", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "nowhere" in err and "data/README.md" in err and "downloads nothing" in err
