"""The published-layout reader against the hand-made fixture and independent NumPy/PIL references."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from hnd_dict_fixture import mask_truth, nearest_resize_reference
from hnd_jax.dictionary import FaceDictionary, open_dictionary
from hnd_jax.dictionary.batching import process_slice
from hnd_jax.dictionary.decode import resize_mask
from hnd_jax.dictionary.published import PublishedDictionary
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import default_taxonomy

S = 13  # odd, and neither image size divides it: nearest-neighbour rounding is exercised


def _image_reference(path, size, resample=Image.Resampling.BICUBIC):
    im = Image.open(path).convert("RGB")
    return np.asarray(im.resize((size, size), resample=resample))


def test_is_a_face_dictionary(pristine_fixture):
    d = open_dictionary(pristine_fixture.root, S)
    assert isinstance(d, FaceDictionary)
    assert d.num_local == len(pristine_fixture.rows)


def test_labelled_family_and_order_match_the_index_files(pristine_fixture):
    tax = default_taxonomy()
    d = open_dictionary(pristine_fixture.root, S)
    expected = np.zeros((len(pristine_fixture.rows), tax.num_concepts), dtype=bool)
    for i, row in enumerate(pristine_fixture.rows):
        for c in row.masks:
            expected[i, tax.concept_names.index(c)] = True
    np.testing.assert_array_equal(d.labelled, expected)
    fam_names = [f.name for f in tax.local_families]
    np.testing.assert_array_equal(d.family, [fam_names.index(r.family) for r in pristine_fixture.rows])
    assert d.local_image_paths == [r.image for r in pristine_fixture.rows]


def test_prefix_concepts_are_matched_exactly(pristine_fixture):
    """AU_1 must not swallow AU_12/AU_15/AU_17 (the published loader's substring bug)."""
    tax = default_taxonomy()
    d = open_dictionary(pristine_fixture.root, S)
    au1 = tax.concept_index["AU_1"]
    for i, row in enumerate(pristine_fixture.rows):
        assert d.labelled[i, au1] == ("AU_1" in row.masks)
    # row 'AU_12, AU_15, AU_17' has no AU_1 and its AU_1 mask slot is empty
    i = next(i for i, r in enumerate(pristine_fixture.rows) if set(r.masks) == {"AU_12", "AU_15", "AU_17"})
    b = d.get_local([i])
    assert not b.masks[0, au1].any()
    assert b.masks[0, tax.concept_index["AU_12"]].any()


def test_visualisations_are_not_labels(pristine_fixture):
    d = open_dictionary(pristine_fixture.root, S)
    # the first attributes row lists lm.png and Smiling_overlap.png among its labels
    assert d.layout.ignored_visualisations == 2
    assert d.labelled[0].sum() == 3


def test_images_and_masks_against_references(pristine_fixture):
    tax = default_taxonomy()
    root = pristine_fixture.root
    d = open_dictionary(root, S)
    seen = []
    for batch in d.local_batches(4):
        assert batch.images.dtype == np.uint8 and batch.images.shape[1:] == (S, S, 3)
        assert batch.masks.dtype == bool and batch.masks.shape[1:] == (tax.num_concepts, S, S)
        for b, i in enumerate(batch.index):
            row = pristine_fixture.rows[i]
            np.testing.assert_array_equal(batch.images[b], _image_reference(root / row.image, S))
            expected = np.zeros((tax.num_concepts, S, S), dtype=bool)
            for c, m in row.masks.items():
                native = mask_truth(root / m)
                assert native.shape == (row.size[1], row.size[0])
                expected[tax.concept_index[c]] = nearest_resize_reference(native, S)
            np.testing.assert_array_equal(batch.masks[b], expected)
            seen.append(int(i))
    assert seen == list(range(d.num_local))


@pytest.mark.parametrize("shape,size", [((22, 18), 13), ((16, 20), 7), ((5, 3), 11), ((9, 9), 9)])
def test_resize_mask_is_pil_nearest_with_pixel_centres(shape, size):
    rng = np.random.default_rng(1)
    m = rng.random(shape) < 0.5
    np.testing.assert_array_equal(resize_mask(m, size), nearest_resize_reference(m, size))


def test_rgb_mask_with_a_single_channel_set_is_inside(tmp_path):
    from hnd_jax.dictionary.decode import decode_mask

    arr = np.zeros((4, 5, 3), dtype=np.uint8)
    arr[1, 2, 2] = 1
    arr[3, 0, 0] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    rgba = np.concatenate([arr, np.full((4, 5, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    expected = np.zeros((4, 5), dtype=bool)
    expected[1, 2] = expected[3, 0] = True
    np.testing.assert_array_equal(decode_mask(tmp_path / "m.png"), expected)
    np.testing.assert_array_equal(decode_mask(tmp_path / "a.png"), expected)  # opaque alpha is not 'inside'


def test_resample_filter_is_the_callers(pristine_fixture):
    root = pristine_fixture.root
    d = open_dictionary(root, S, image_resample="bilinear")
    b = d.get_local([0], with_masks=False)
    np.testing.assert_array_equal(b.images[0], _image_reference(root / pristine_fixture.rows[0].image, S, Image.Resampling.BILINEAR))
    assert b.masks is None
    with pytest.raises(HndError, match="resample 'sharpest'"):
        open_dictionary(root, S, image_resample="sharpest")


def test_l_image_is_converted_to_rgb(pristine_fixture):
    d = open_dictionary(pristine_fixture.root, S)
    i = next(i for i, r in enumerate(pristine_fixture.rows) if set(r.masks) == {"AU_12", "AU_15", "AU_17"})
    img = d.get_local([i], with_masks=False).images[0]
    assert img.shape == (S, S, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 1])
    np.testing.assert_array_equal(img[..., 0], img[..., 2])


def test_get_local_keeps_the_requested_order(pristine_fixture):
    d = open_dictionary(pristine_fixture.root, S)
    idx = np.array([5, 0, 5, 8])
    b = d.get_local(idx)
    np.testing.assert_array_equal(b.index, idx)
    for k, i in enumerate(idx):
        single = d.get_local([i])
        np.testing.assert_array_equal(b.images[k], single.images[0])
        np.testing.assert_array_equal(b.masks[k], single.masks[0])
        np.testing.assert_array_equal(b.labelled[k], d.labelled[i])
        assert b.family[k] == d.family[i]
    with pytest.raises(HndError, match="out of range"):
        d.get_local([d.num_local])


def test_global_order_groups_and_pixels(pristine_fixture):
    root = pristine_fixture.root
    tax = default_taxonomy()
    d = open_dictionary(root, S)
    for fam in tax.global_families:
        truth = pristine_fixture.global_images[fam.name]
        assert d.global_groups(fam.name) == fam.groups
        np.testing.assert_array_equal(d.global_group_of(fam.name), [fam.groups.index(g) for g, _ in truth])
        assert d.global_image_paths(fam.name) == [p for _, p in truth]
        got = list(d.global_batches(fam.name, 2))
        images = np.concatenate([b.images for b in got])
        np.testing.assert_array_equal(np.concatenate([b.index for b in got]), np.arange(len(truth)))
        for k, (_, p) in enumerate(truth):
            np.testing.assert_array_equal(images[k], _image_reference(root / p, S))
    with pytest.raises(HndError, match="unknown global family"):
        d.global_group_of("Mood")


@pytest.mark.parametrize("n,count", [(9, 1), (9, 2), (9, 4), (9, 9), (9, 12), (0, 3), (100, 7)])
def test_process_slices_cover_the_range_exactly_once(n, count):
    start = 3
    parts = [process_slice(start, start + n, p, count) for p in range(count)]
    covered = np.concatenate([np.arange(a, b) for a, b in parts])
    np.testing.assert_array_equal(covered, np.arange(start, start + n))  # contiguous, ordered, no overlap
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1


def test_multi_process_batches_cover_every_image_once(pristine_fixture):
    d = open_dictionary(pristine_fixture.root, S)
    for count in (1, 2, 3, 5, 11):
        for batch_size in (1, 2, 4):
            got = [int(i) for p in range(count) for b in d.local_batches(batch_size, with_masks=False, process_index=p, process_count=count) for i in b.index]
            assert got == list(range(d.num_local)), (count, batch_size)
    got = [int(i) for p in range(2) for b in d.local_batches(2, start=2, stop=7, process_index=p, process_count=2) for i in b.index]
    assert got == list(range(2, 7))
    fam = "Age"
    n = len(d.global_group_of(fam))
    got = [int(i) for p in range(4) for b in d.global_batches(fam, 1, process_index=p, process_count=4) for i in b.index]
    assert got == list(range(n))
    # a range of the family (what a resumed process reads: its own slice, past the done batches)
    for start, stop, bs in ((1, n - 1, 2), (0, 1, 3), (n - 1, n + 5, 1), (3, 3, 2)):
        got = [int(i) for b in d.global_batches(fam, bs, start=start, stop=stop) for i in b.index]
        assert got == list(range(start, min(stop, n))), (start, stop, bs)
    got = [int(i) for p in range(2) for b in d.global_batches(fam, 2, start=1, stop=n - 1, process_index=p, process_count=2)
           for i in b.index]
    assert got == list(range(1, n - 1))
    with pytest.raises(HndError, match="process_index"):
        list(d.local_batches(2, process_index=2, process_count=2))


def test_index_files_can_be_overridden(fresh_fixture):
    root = fresh_fixture.root
    shutil.move(root / "Parts.csv", root / "MyParts.csv")
    d = open_dictionary(root, S, index_files={"parts": "MyParts.csv"})
    assert d.num_local == len(fresh_fixture.rows)
    with pytest.raises(HndError, match="unknown local family"):
        open_dictionary(root, S, index_files={"bodyparts": "MyParts.csv"})


def test_identity_changes_with_index_files_and_image_sets(fresh_fixture):
    root = fresh_fixture.root
    first = open_dictionary(root, S).identity()
    assert first == open_dictionary(root, S).identity()
    assert first["num_local"] == len(fresh_fixture.rows)
    # drop the last Parts row
    rows = list(csv.reader(open(root / "Parts.csv")))
    with open(root / "Parts.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows[:-1])
    second = open_dictionary(root, S).identity()
    assert second["content_sha256"] != first["content_sha256"]
    # add a global image
    shutil.copy(root / "non_localizable/Gender/Male/m1.png", root / "non_localizable/Gender/Male/m2.png")
    third = open_dictionary(root, S).identity()
    assert third["content_sha256"] != second["content_sha256"]
    assert third["num_global"]["Gender"] == second["num_global"]["Gender"] + 1


def test_custom_taxonomy_drives_concepts(fresh_fixture):
    """A user taxonomy with one family and two concepts: other families are not read at all."""
    from hnd_jax.taxonomy import taxonomy_from_dict

    tax = taxonomy_from_dict({
        "regions": ["Eye", "Mouth"],
        "local_families": [{"name": "aus", "index_file": "Action_Units.csv", "type": "action_unit",
                            "concepts": {"AU_12": "Mouth", "AU_1": "Eye", "AU_15": "Mouth", "AU_17": "Mouth", "AU_26": "Mouth"}}],
        "global_families": [{"name": "Gender", "groups": ["Female", "Male"]}],
    })
    d = PublishedDictionary(fresh_fixture.root, S, taxonomy=tax)
    rows = [r for r in fresh_fixture.rows if r.family == "action_units"]
    assert d.num_local == len(rows)
    for i, r in enumerate(rows):
        assert {tax.concept_names[c] for c in np.flatnonzero(d.labelled[i])} == set(r.masks)
    np.testing.assert_array_equal(d.global_group_of("Gender"), [0, 0, 1])  # Female first, then Male


def test_resize_mask_sweep_of_sizes():
    """Adversarial sweep: every input side 1..40 to every output side 1..24 (exact-integer edges included)."""
    rng = np.random.default_rng(7)
    for h in range(1, 41):
        m = rng.random((h, 41 - h)) < 0.5
        for size in range(1, 25):
            np.testing.assert_array_equal(resize_mask(m, size), nearest_resize_reference(m, size), err_msg=f"{m.shape}->{size}")


def test_constant_and_empty_masks(tmp_path):
    from hnd_jax.dictionary.decode import decode_mask

    Image.fromarray(np.zeros((6, 4), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((6, 4, 3), 255, np.uint8)).save(tmp_path / "full.png")
    assert not resize_mask(decode_mask(tmp_path / "empty.png", (4, 6)), 5).any()
    assert resize_mask(decode_mask(tmp_path / "full.png", (4, 6)), 5).all()


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"])
def test_load_mask_fast_path_equals_decode_then_resize(tmp_path, mode):
    from hnd_jax.dictionary.decode import decode_mask, load_mask

    rng = np.random.default_rng(3)
    inside = rng.random((22, 18)) < 0.4
    rgb = np.zeros((22, 18, 3), np.uint8)
    rgb[inside, rng.integers(0, 3, int(inside.sum()))] = 255
    im = Image.fromarray(rgb)
    im = im.convert(mode) if mode not in ("P",) else im.convert("P", palette=Image.Palette.ADAPTIVE)
    im.save(tmp_path / "m.png")
    expected = nearest_resize_reference(mask_truth(tmp_path / "m.png"), 13)
    np.testing.assert_array_equal(resize_mask(decode_mask(tmp_path / "m.png", (18, 22)), 13), expected)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png", (18, 22), 13), expected)
