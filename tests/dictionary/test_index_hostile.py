"""Index files and folders a user does not control (issue 12, DESIGN.md §7).

Line endings, oversized fields, non-UTF-8 bytes, paths leading outside ROOT, an index that is a
symlink to a system file, Windows separators, and global images in every format PIL reads.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hnd_jax.cli.main import main
from hnd_jax.dictionary import layout as layout_mod
from hnd_jax.dictionary import open_dictionary
from hnd_jax.dictionary.check import check_dictionary
from hnd_jax.dictionary.layout import read_layout
from hnd_jax.errors import BadInputError
from hnd_jax.taxonomy import default_taxonomy

S = 8


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(path: Path, rows: list[list[str]], terminator: str = "\r\n") -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator=terminator).writerows(rows)


def _records(root: Path, **kw):
    lay = read_layout(root, default_taxonomy(), **kw)
    return [(r.image, r.family, r.concepts, r.masks) for r in lay.local]


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# Line endings, field sizes, encodings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_any_line_ending_reads_the_same_records(fresh_fixture, terminator):
    before = _records(fresh_fixture.root)
    for name in ("Attributes.csv", "Action_Units.csv", "Parts.csv"):
        path = fresh_fixture.root / name
        _write_rows(path, _rows(path), terminator)
    assert _records(fresh_fixture.root) == before


def test_cr_only_line_numbers_in_errors(fresh_fixture):
    path = fresh_fixture.root / "Parts.csv"
    rows = _rows(path)
    rows[2] = [rows[2][0] + ".missing", rows[2][1]]
    _write_rows(path, rows, "\r")
    with pytest.raises(BadInputError) as info:
        read_layout(fresh_fixture.root, default_taxonomy())
    assert "Parts.csv:3" in str(info.value) and info.value.kind == "missing_image"


def test_huge_field_is_one_line_exit_2(fresh_fixture, capsys):
    path = fresh_fixture.root / "Parts.csv"
    rows = _rows(path)
    rows[1][1] = "x" * 200_000
    _write_rows(path, rows)
    with pytest.raises(BadInputError) as info:
        read_layout(fresh_fixture.root, default_taxonomy())
    assert info.value.kind == "bad_index" and "Parts.csv:2" in str(info.value) and "xxxx" not in str(info.value)
    code, _, err = _cli(capsys, "dictionary", "check", str(fresh_fixture.root))
    assert code == 2 and err.startswith("hnd: error: ") and err.count("\n") == 1 and len(err) < 400


def test_non_utf8_bytes_are_one_line_exit_2(fresh_fixture, capsys):
    path = fresh_fixture.root / "Parts.csv"
    data = path.read_bytes()
    cut = data.index(b"\n") + 5
    path.write_bytes(data[:cut] + b"\xff\xfe\xc3" + data[cut:])
    with pytest.raises(BadInputError) as info:
        read_layout(fresh_fixture.root, default_taxonomy())
    assert info.value.kind == "bad_index" and "not UTF-8" in str(info.value) and "line 2" in str(info.value)
    code, _, err = _cli(capsys, "dictionary", "check", str(fresh_fixture.root))
    assert code == 2 and "Parts.csv" in err and err.count("\n") == 1


def test_nul_byte_is_one_line(fresh_fixture):
    path = fresh_fixture.root / "Parts.csv"
    path.write_bytes(path.read_bytes() + b"a\x00b,c\n")
    with pytest.raises(BadInputError) as info:
        read_layout(fresh_fixture.root, default_taxonomy())
    assert info.value.kind == "bad_index" and "NUL" in str(info.value)


def test_skip_bad_counts_an_unreadable_index(fresh_fixture):
    path = fresh_fixture.root / "Parts.csv"
    path.write_bytes(b"image,labels\n\xff\n")
    lay = read_layout(fresh_fixture.root, default_taxonomy(), skip_bad=True)
    assert lay.skipped == {"bad_index": 1}
    assert all(r.family != 2 for r in lay.local)


# ---------------------------------------------------------------------------------------------
# Paths stay inside ROOT
# ---------------------------------------------------------------------------------------------


def _outside_image(tmp_path: Path, fx) -> Path:
    """A real image outside ROOT with the native size of the first Parts row."""
    row = next(r for r in fx.rows if r.family == "parts")
    outside = tmp_path / "elsewhere" / "x" / "original.png"
    outside.parent.mkdir(parents=True)
    shutil.copyfile(fx.root / row.image, outside)
    return outside


def _replace_first_parts_image(fx, new_path: str) -> None:
    path = fx.root / "Parts.csv"
    rows = _rows(path)
    rows[1][0] = new_path
    _write_rows(path, rows)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink_file", "symlink_folder"])
def test_paths_leading_outside_root_are_refused(fresh_fixture, tmp_path, capsys, how):
    fx = fresh_fixture
    outside = _outside_image(tmp_path, fx)
    if how == "dotdot":
        rel = os.path.relpath(outside, fx.root)  # ../elsewhere/x/original.png
        assert rel.startswith("..")
    elif how == "absolute":
        rel = str(outside)
    elif how == "symlink_file":
        rel = "parts/link.png"
        (fx.root / rel).symlink_to(outside)
    else:
        rel = "linked/original.png"
        (fx.root / "linked").symlink_to(outside.parent, target_is_directory=True)
    _replace_first_parts_image(fx, rel)
    with pytest.raises(BadInputError) as info:
        read_layout(fx.root, default_taxonomy())
    assert info.value.kind == "outside_root" and "--allow-outside-root" in str(info.value)
    with pytest.raises(BadInputError):
        open_dictionary(fx.root, S)
    code, _, err = _cli(capsys, "dictionary", "check", str(fx.root))
    assert code == 2 and "outside the dictionary root" in err and err.count("\n") == 1
    # allowed on request: the library parameter and the CLI flag
    records = _records(fx.root, allow_outside_root=True)
    assert records[len([r for r in fx.rows if r.family != "parts"])][0] == rel
    d = open_dictionary(fx.root, S, allow_outside_root=True)
    assert d.num_local == len(fx.rows)
    code, out, err = _cli(capsys, "dictionary", "check", str(fx.root), "--allow-outside-root")
    assert code == 0, err


def test_outside_mask_is_refused(fresh_fixture, tmp_path):
    fx = fresh_fixture
    path = fx.root / "Parts.csv"
    rows = _rows(path)
    masks = rows[1][1].split(";")
    outside = tmp_path / "secret" / masks[0].rsplit("/", 1)[-1]
    outside.parent.mkdir()
    shutil.copyfile(fx.root / masks[0], outside)
    masks[0] = os.path.relpath(outside, fx.root)
    rows[1][1] = ";".join(masks)
    _write_rows(path, rows)
    with pytest.raises(BadInputError) as info:
        read_layout(fx.root, default_taxonomy())
    assert info.value.kind == "outside_root" and "mask path" in str(info.value)
    lay = read_layout(fx.root, default_taxonomy(), skip_bad=True)
    assert lay.skipped == {"outside_root": 1}


def test_symlinks_inside_root_are_fine(fresh_fixture):
    fx = fresh_fixture
    row = next(r for r in fx.rows if r.family == "parts")
    (fx.root / "alias").symlink_to(fx.root / row.image.rsplit("/", 1)[0], target_is_directory=True)
    _replace_first_parts_image(fx, "alias/" + row.image.rsplit("/", 1)[1])
    assert len(_records(fx.root)) == len(fx.rows)


def test_global_image_symlinked_outside_is_refused(fresh_fixture, tmp_path):
    fx = fresh_fixture
    outside = tmp_path / "other.png"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(outside)
    (fx.root / "non_localizable/Gender/Male/zz.png").symlink_to(outside)
    with pytest.raises(BadInputError) as info:
        read_layout(fx.root, default_taxonomy())
    assert info.value.kind == "outside_root"
    lay = read_layout(fx.root, default_taxonomy(), allow_outside_root=True)
    assert "non_localizable/Gender/Male/zz.png" in [r.image for r in lay.global_images["Gender"]]


def test_process_default_is_what_the_cli_flag_sets(fresh_fixture, tmp_path):
    fx = fresh_fixture
    _replace_first_parts_image(fx, str(_outside_image(tmp_path, fx)))
    try:
        layout_mod.set_allow_outside_root(True)
        assert len(_records(fx.root)) == len(fx.rows)
        with pytest.raises(BadInputError):
            _records(fx.root, allow_outside_root=False)
    finally:
        layout_mod.set_allow_outside_root(False)
    with pytest.raises(BadInputError):
        _records(fx.root)


SECRET = "root:x:0:0:TOP-SECRET-LINE:/root:/bin/bash"


@pytest.mark.parametrize("content", [
    f"{SECRET}\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
    f"{SECRET},more,fields\n",
    f"image,labels\n{SECRET}\n",
    f"image,labels\n{SECRET},{SECRET}\n",
    f"image,labels\n{SECRET}/AU_1.png,x\n",
])
def test_index_symlinked_to_a_system_file_never_prints_its_content(fresh_fixture, tmp_path, capsys, content):
    secret = tmp_path / "passwd"
    secret.write_text(content)
    index = fresh_fixture.root / "Action_Units.csv"
    index.unlink()
    index.symlink_to(secret)
    code, out, err = _cli(capsys, "dictionary", "check", str(fresh_fixture.root))
    assert code == 2 and err.count("\n") == 1 and "Action_Units.csv" in err
    assert "TOP-SECRET" not in err and "TOP-SECRET" not in out
    assert "outside the dictionary root" in err  # a default index symlinked out of ROOT is not read
    # a user-named index file (--index-file) is trusted, yet no line of it is quoted when it is bad
    index.unlink()
    if not content.startswith("image,labels"):
        code, out, err = _cli(capsys, "dictionary", "check", str(fresh_fixture.root),
                              "--index-file", f"action_units={secret}")
        assert code == 2 and "TOP-SECRET" not in err + out and str(secret) in err


def test_backslash_paths_are_found(fresh_fixture):
    fx = fresh_fixture
    before = _records(fx.root)
    path = fx.root / "Attributes.csv"
    rows = _rows(path)
    rows = [rows[0]] + [[r[0].replace("/", "\\"), r[1].replace("/", "\\")] for r in rows[1:]]
    _write_rows(path, rows)
    assert _records(fx.root) == before
    d = open_dictionary(fx.root, S)
    assert d.num_local == len(fx.rows)
    next(iter(d.local_batches(4)))


# ---------------------------------------------------------------------------------------------
# Global images in every format PIL reads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix,fmt", [(".webp", "WEBP"), (".bmp", "BMP"), (".tif", "TIFF"), (".tiff", "TIFF"),
                                        (".jpe", "JPEG"), (".jpeg", "JPEG"), (".gif", "GIF"), (".PNG", "PNG")])
def test_global_images_in_every_format_are_read(fresh_fixture, suffix, fmt):
    fx = fresh_fixture
    folder = fx.root / "non_localizable/Age/zero_to_twenty"
    before = check_dictionary(fx.root)
    Image.fromarray(np.full((7, 9, 3), 90, np.uint8)).save(folder / f"extra{suffix}", format=fmt)
    after = check_dictionary(fx.root)
    assert after["global_counts"]["Age"]["zero_to_twenty"] == before["global_counts"]["Age"]["zero_to_twenty"] + 1
    assert after["problems"] == []


def test_files_that_are_not_images_are_counted_and_reported(fresh_fixture, capsys):
    fx = fresh_fixture
    summary = check_dictionary(fx.root)
    n_notes = sum(len(groups) for groups in summary["global_counts"].values())  # one notes.txt per group
    assert summary["ignored_global_files"] == n_notes
    code, out, _ = _cli(capsys, "dictionary", "check", str(fx.root))
    assert code == 0 and f"not images (left out): {n_notes}" in out


def test_sideways_phone_jpeg_with_its_upright_masks_is_accepted(fresh_fixture):
    """The issue's example end to end: the image is stored sideways with EXIF Orientation=6; its
    masks are drawn on the upright image. Check accepts it and the delivered pixels are upright."""
    fx = fresh_fixture
    k = next(i for i, r in enumerate(fx.rows) if r.family == "parts")
    row = fx.rows[k]
    upright = np.asarray(Image.open(fx.root / row.image).convert("RGB"))  # [h, w, 3]
    stored = np.rot90(upright, 1)  # what the phone wrote: a viewer turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    jpg = row.image.replace(".png", ".jpg")
    Image.fromarray(np.ascontiguousarray(stored)).save(fx.root / jpg, quality=100, subsampling=0, exif=exif)
    path = fx.root / "Parts.csv"
    text = path.read_text().replace(row.image, jpg)
    path.write_text(text)
    summary = check_dictionary(fx.root)
    assert summary["problems"] == [] and summary["num_local"] == len(fx.rows)
    h, w = upright.shape[:2]
    d = open_dictionary(fx.root, 16)
    got = d.get_local(np.array([k]), with_masks=False).images[0].astype(int)
    want = np.asarray(Image.fromarray(upright).resize((16, 16), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(got - want).mean() < 4
    assert (w, h) == row.size
