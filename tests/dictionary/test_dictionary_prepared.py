"""The prepared format (memory-mapped arrays): same batches as the PNG path, clear errors, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hnd_jax.cli.main import main
from hnd_jax.dictionary import open_dictionary
from hnd_jax.dictionary.check import check_dictionary
from hnd_jax.dictionary.prepare import prepare_dictionary
from hnd_jax.dictionary.prepared import PreparedDictionary, is_prepared, pack_masks, unpack_masks
from hnd_jax.errors import HndError

S = 13


@pytest.fixture(scope="module")
def prep(pristine_fixture, tmp_path_factory):
    return prepare_dictionary(pristine_fixture.root, tmp_path_factory.mktemp("prep") / "prep", S)


def _assert_same_local(a, b):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.labelled, b.labelled)
    np.testing.assert_array_equal(a.family, b.family)
    if a.masks is None:
        assert b.masks is None
    else:
        np.testing.assert_array_equal(a.masks, b.masks)


@pytest.mark.parametrize("k,size", [(0, 5), (1, 1), (3, 13), (2, 16), (4, 7)])
def test_pack_unpack_round_trip(k, size):
    masks = np.random.default_rng(k).random((k, size, size)) < 0.4
    bits = pack_masks(masks)
    assert bits.dtype == np.uint8 and bits.size == k * -(-size * size // 8)
    np.testing.assert_array_equal(unpack_masks(bits, k, size), masks)
    with pytest.raises(HndError, match="bytes"):
        unpack_masks(np.concatenate([bits, [0]]).astype(np.uint8), k, size)


def test_png_and_prepared_batches_are_identical(pristine_fixture, prep):
    png = open_dictionary(pristine_fixture.root, S)
    pre = open_dictionary(prep, S)
    assert isinstance(pre, PreparedDictionary) and is_prepared(prep)
    np.testing.assert_array_equal(png.labelled, pre.labelled)
    np.testing.assert_array_equal(png.family, pre.family)
    for with_masks in (True, False):
        pairs = list(zip(png.local_batches(4, with_masks=with_masks), pre.local_batches(4, with_masks=with_masks), strict=True))
        assert len(pairs) == 3
        for a, b in pairs:
            _assert_same_local(a, b)
    idx = np.array([8, 2, 2, 0])
    _assert_same_local(png.get_local(idx), pre.get_local(idx))
    for fam in png.taxonomy.global_families:
        np.testing.assert_array_equal(png.global_group_of(fam.name), pre.global_group_of(fam.name))
        for a, b in zip(png.global_batches(fam.name, 2), pre.global_batches(fam.name, 2), strict=True):
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.group, b.group)
            np.testing.assert_array_equal(a.index, b.index)
    assert png.identity()["content_sha256"] == pre.identity()["content_sha256"]
    assert pre.local_image_paths == png.local_image_paths


def test_process_slices_on_prepared(prep):
    d = open_dictionary(prep, S)
    for count in (2, 3, 4):
        got = [int(i) for p in range(count) for b in d.local_batches(2, process_index=p, process_count=count) for i in b.index]
        assert got == list(range(d.num_local))


def test_other_resample_filter_gives_identical_batches(pristine_fixture, tmp_path):
    out = prepare_dictionary(pristine_fixture.root, tmp_path / "p", 9, image_resample="bilinear")
    png = open_dictionary(pristine_fixture.root, 9, image_resample="bilinear")
    pre = open_dictionary(out, 9, image_resample="bilinear")
    for a, b in zip(png.local_batches(5), pre.local_batches(5), strict=True):
        _assert_same_local(a, b)
    # and it differs from bicubic, so the filter is really applied
    bicubic = open_dictionary(pristine_fixture.root, 9).get_local([0]).images
    assert not np.array_equal(bicubic, pre.get_local([0]).images)


def test_size_resample_and_taxonomy_mismatch_are_clear_errors(prep):
    with pytest.raises(HndError, match=r"prepared at size 13 but size 16 was asked.*--size 16"):
        open_dictionary(prep, 16)
    with pytest.raises(HndError, match="prepared with resample 'bicubic' but 'bilinear'"):
        open_dictionary(prep, S, image_resample="bilinear")
    from hnd_jax.taxonomy import taxonomy_from_dict

    other = taxonomy_from_dict({"regions": ["Mouth"], "local_families": [
        {"name": "aus", "index_file": "Action_Units.csv", "type": "action_unit", "concepts": {"AU_12": "Mouth"}}]})
    with pytest.raises(HndError, match="prepared with taxonomy"):
        open_dictionary(prep, S, taxonomy=other)
    with pytest.raises(HndError, match="index_files only apply"):
        open_dictionary(prep, S, index_files={"parts": "P.csv"})


def test_readable_through_grain_without_tensorflow(pristine_fixture, prep):
    import grain

    d = open_dictionary(prep, S)
    source = d.local_source()
    ds = grain.MapDataset.source(source).map(lambda r: (int(r["index"]), r["image"].shape, r["masks"].shape[0]))
    k = d.labelled.sum(axis=1)
    assert [ds[i] for i in range(len(ds))] == [(i, (S, S, 3), int(k[i])) for i in range(len(source))]
    png = open_dictionary(pristine_fixture.root, S).get_local([3])
    rec = source[3]
    np.testing.assert_array_equal(rec["image"], png.images[0])
    np.testing.assert_array_equal(rec["masks"], png.masks[0][png.labelled[0]])


def test_old_format_and_damaged_arrays_are_refused_in_one_line(prep, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(prep, old)
    meta = json.loads((old / "hnd_prepared.json").read_text())
    meta["format_version"] = 1
    (old / "hnd_prepared.json").write_text(json.dumps(meta))
    with pytest.raises(HndError, match=r"format version 1 is not supported.*run 'hnd dictionary prepare' again") as e:
        open_dictionary(old, S)
    assert "\n" not in str(e.value)
    cut = tmp_path / "cut"
    shutil.copytree(prep, cut)
    path = cut / "arrays" / "local_images.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(HndError, match="local_images.npy"):
        open_dictionary(cut, S)
    (cut / "arrays" / "local_images.npy").unlink()
    with pytest.raises(HndError, match="local_images.npy: missing"):
        open_dictionary(cut, S)


def test_bulk_reads_equal_record_reads(prep):
    """get_local's bulk path (contiguous and scattered indices) equals the one-record path."""
    d = open_dictionary(prep, S)
    for idx in ([0, 1, 2, 3], [8, 2, 2, 0], [5], []):
        batch = d.get_local(np.array(idx, np.int64))
        assert batch.images.shape == (len(idx), S, S, 3) and batch.masks.shape[0] == len(idx)
        for row, i in enumerate(idx):
            image, masks = d._load_local(i, True)
            np.testing.assert_array_equal(batch.images[row], image)
            np.testing.assert_array_equal(batch.masks[row][d.labelled[i]], masks)
            assert not batch.masks[row][~d.labelled[i]].any()


def test_check_on_prepared_matches_root(pristine_fixture, prep):
    a = check_dictionary(pristine_fixture.root)
    b = check_dictionary(prep)
    for key in ("num_local", "family_counts", "concept_counts", "global_counts", "image_size_range", "content_sha256"):
        assert a[key] == b[key], key
    assert b["kind"] == "prepared" and b["prepared_size"] == S


def test_damaged_prepared_labels_are_reported(prep, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prep, copy)
    with np.load(copy / "labels.npz") as z:
        arrays = dict(z)
    arrays["labelled"][0, np.flatnonzero(~arrays["labelled"][0])[0]] = True  # one more concept than stored masks
    np.savez(copy / "labels.npz", **arrays)
    with pytest.raises(HndError, match="bytes"):
        check_dictionary(copy)


def test_prepare_refuses_to_clobber_and_is_atomic(pristine_fixture, tmp_path, monkeypatch):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(HndError, match="not a prepared dictionary"):
        prepare_dictionary(pristine_fixture.root, foreign, S)
    assert (foreign / "keep.txt").read_text() == "mine"

    import hnd_jax.dictionary.prepare as prepare_mod

    calls = {"n": 0}

    def failing_pack(masks):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")
        return pack_masks(masks)

    monkeypatch.setattr(prepare_mod, "pack_masks", failing_pack)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_dictionary(pristine_fixture.root, tmp_path / "half", S)
    assert os.listdir(tmp_path) == ["foreign"]  # neither the PREP nor a temporary folder is left


def test_cli_prepare_and_overwrite(pristine_fixture, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["dictionary", "prepare", str(pristine_fixture.root), "--size", "7", "--out", str(out)]) == 0
    assert "prepared 9 local and 15 global images at 7x7" in capsys.readouterr().out
    assert main(["dictionary", "prepare", str(pristine_fixture.root), "--size", "7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert main(["dictionary", "prepare", str(pristine_fixture.root), "--size", "7", "--out", str(out), "--overwrite", "--skip-bad"]) == 0
    assert "skipped: none" in capsys.readouterr().out
    assert main(["dictionary", "prepare", str(pristine_fixture.root), "--size", "7", "--out", str(tmp_path / "q"), "--resample", "fancy"]) == 2
    assert "resample 'fancy'" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_prepare_with_a_custom_taxonomy_without_global_families(pristine_fixture, tmp_path):
    from hnd_jax.taxonomy import taxonomy_from_dict

    tax = taxonomy_from_dict({"regions": ["Nose", "Rest"], "local_families": [
        {"name": "parts", "index_file": "Parts.csv", "type": "part", "concepts": {
            "nose": "Nose", "left_brow": "Rest", "right_brow": "Rest", "left_eye": "Rest", "right_eye": "Rest",
            "mouth": "Rest", "left_cheek": "Rest", "right_cheek": "Rest"}}]})
    out = prepare_dictionary(pristine_fixture.root, tmp_path / "p", 6, taxonomy=tax)
    pre = open_dictionary(out, 6)  # the taxonomy comes from the PREP itself
    png = open_dictionary(pristine_fixture.root, 6, taxonomy=tax)
    assert pre.taxonomy == tax and pre.num_local == 2 and pre.labelled.all()
    _assert_same_local(png.get_local([0, 1]), pre.get_local([0, 1]))
    assert check_dictionary(out)["global_counts"] == {}
