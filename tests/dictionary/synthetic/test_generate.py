"""The synthetic Face Dictionary: determinism, complete published layout, masks that mark the cues,
clear errors, and that the published-layout reader serves it.

The layout checks re-read the written files with plain csv/PIL/NumPy here (independent of the
writer's own bookkeeping); a separate test runs the project's reader over the same folder.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hnd_jax.dictionary.synthetic.generate import MARKER_FILE, global_group_counts, plan_local, write_synthetic_dictionary
from hnd_jax.dictionary.synthetic.face import (
    ACTION_UNITS,
    ATTRIBUTES,
    DRAWABLE_CONCEPTS,
    PARTS,
    FaceSpec,
    conflicts_with,
    render_face,
    sample_globals,
    sample_jitter,
)
from hnd_jax.dictionary.synthetic.png import encode_png
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import default_taxonomy, taxonomy_from_dict

NUM_IMAGES = 40
TAX = default_taxonomy()


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(root: Path, index_file: str) -> list[tuple[str, list[str]]]:
    with open(root / index_file, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["image", "labels"]
        return [(image, [x for x in labels.split(";") if x]) for image, labels in reader]


def _dilate(mask: np.ndarray, r: int = 2) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory) -> Path:
    return write_synthetic_dictionary(tmp_path_factory.mktemp("synth") / "a", num_images=NUM_IMAGES, seed=0)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_files_in_another_process(dictionary, tmp_path):
    """Two runs, the second in a fresh process with another PYTHONHASHSEED (so nothing may depend
    on the iteration order of string sets), write byte-identical trees."""
    code = "import sys; from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary as w; w(sys.argv[1], num_images=int(sys.argv[2]), seed=0)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-c", code, str(again), str(NUM_IMAGES)], check=True, env=env, timeout=300)
    first, second = _tree_digest(dictionary), _tree_digest(again)
    assert len(first) > 100
    assert first == second


def test_different_seeds_differ(dictionary, tmp_path):
    other = write_synthetic_dictionary(tmp_path / "c", num_images=NUM_IMAGES, seed=1)
    first, second = _tree_digest(dictionary), _tree_digest(other)
    assert (dictionary / "Attributes.csv").read_bytes() != (other / "Attributes.csv").read_bytes()
    common_images = [p for p in first if p.endswith(".png") and p in second and p.count("/") == 1]
    assert common_images, "expected images at the same paths"
    assert sum(first[p] != second[p] for p in common_images) == len(common_images)


# ----------------------------------------------------------------------------- layout
def test_layout_is_complete(dictionary):
    seen: dict[str, int] = {c: 0 for c in TAX.concept_names}
    sizes: dict[str, set] = {}
    modes: set[str] = set()
    labels_per_image: dict[str, list[int]] = {}
    total = 0
    for fam in TAX.local_families:
        rows = _rows(dictionary, fam.index_file)
        assert rows, fam.index_file
        total += len(rows)
        for image, labels in rows:
            with Image.open(dictionary / image) as im:
                assert im.mode == "RGB"
                size = im.size
            sizes.setdefault(fam.name, set()).add(size)
            assert size[0] != size[1], "images must not be square"
            stems = [Path(m).stem for m in labels]
            assert len(set(stems)) == len(stems)
            assert set(stems) <= set(fam.concepts), f"{image}: labels outside family {fam.name}"
            if fam.type == "part":
                assert set(stems) == set(fam.concepts)
            labels_per_image.setdefault(fam.name, []).append(len(stems))
            for m in labels:
                assert Path(m).name == f"{Path(m).stem}.png" and Path(m).parent == Path(image).with_suffix("")
                with Image.open(dictionary / m) as mm:
                    modes.add(mm.mode)
                    arr = np.asarray(mm)
                    assert mm.size == size, f"{m}: mask size {mm.size} != image size {size}"
                assert set(np.unique(arr).tolist()) == {0, 255}, m  # non-empty, binary 0/255
                seen[Path(m).stem] += 1
    assert total == NUM_IMAGES
    assert all(n >= 1 for n in seen.values()), {c: n for c, n in seen.items() if n == 0}
    assert modes == {"L", "RGB"}
    assert sizes["attributes"] == {(178, 218)} and sizes["parts"] == {(178, 218)}
    au_widths = {w for w, _ in sizes["action_units"]}
    assert len(au_widths) > 1 and all(160 <= w <= 200 for w in au_widths)
    for fam in ("attributes", "action_units"):
        assert 3.5 <= np.mean(labels_per_image[fam]) <= 6.5, (fam, labels_per_image[fam])
    # images in the attributes family are 40% of all, action units and parts 30% each
    assert [len(labels_per_image[f]) for f in ("attributes", "action_units", "parts")] == [16, 12, 12]
    # visualisations are present but never listed
    assert list(dictionary.rglob("lm.png")) and list(dictionary.rglob("*_overlap.png"))
    for fam in TAX.local_families:
        assert "lm.png" not in (dictionary / fam.index_file).read_text()
    meta = json.loads((dictionary / MARKER_FILE).read_text())
    assert meta["concept_counts"] == seen and meta["seed"] == 0


def test_written_files_are_the_rendered_faces(dictionary):
    """The PNG writer round-trips: decoded files equal what render_face drew for that image."""
    items = {f"{it.family.name}/{it.name}.png": it for it in plan_local(TAX, NUM_IMAGES, seed=0)}
    for fam in TAX.local_families:
        for image_rel, labels in _rows(dictionary, fam.index_file)[:3]:
            item = items[image_rel]
            image, masks = render_face(item.spec, item.size)
            with Image.open(dictionary / image_rel) as im:
                assert np.array_equal(np.asarray(im), image), image_rel
            for m in labels:
                with Image.open(dictionary / m) as mm:
                    assert np.array_equal(np.asarray(mm.convert("L")) > 0, masks[Path(m).stem]), m


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (218, 178), (3, 4, 3), (218, 178, 3)])
def test_png_encoder_round_trips_through_pil(shape):
    rng = np.random.default_rng(sum(shape))
    for array in (rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, 255, np.uint8)):
        with Image.open(io.BytesIO(encode_png(array))) as im:
            assert im.mode == ("L" if len(shape) == 2 else "RGB")
            assert np.array_equal(np.asarray(im), array)
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), np.uint8))


def test_global_groups_are_all_present(dictionary):
    for fam in TAX.global_families:
        for group in fam.groups:
            files = sorted((dictionary / TAX.global_root / fam.name / group).glob("*.png"))
            assert len(files) >= 8, (fam.name, group)
            with Image.open(files[0]) as im:
                assert im.mode == "RGB" and im.size[0] >= 100
    total = sum(1 for _ in (dictionary / TAX.global_root).rglob("*.png"))
    assert total == 8 * sum(f.num_groups for f in TAX.global_families)  # the floor at 40 images


def test_global_group_sizes_follow_num_images():
    counts = global_group_counts(TAX, 2000, seed=0)
    total = sum(sum(v) for v in counts.values())
    assert 0.8 * 500 <= total <= 1.2 * 500
    assert all(n >= 8 for v in counts.values() for n in v)
    assert any(len(set(v)) > 1 for v in counts.values()), "groups should have somewhat different sizes"


def test_written_size_is_modest(dictionary):
    """A timing-free proxy for speed: PNGs stay small (fast compression of flat drawings)."""
    local_bytes = sum(p.stat().st_size for f in TAX.local_families for p in (dictionary / f.name).rglob("*.png"))
    assert local_bytes / NUM_IMAGES < 60_000
    assert sum(1 for _ in dictionary.rglob("*")) < 40 * 16 + 200


# ----------------------------------------------------------------------------- masks mark the cues
def _spec_pair(concept: str, others: set[str], rng: np.random.Generator):
    jitter, globals_ = sample_jitter(rng), sample_globals(rng)
    with_c = FaceSpec(concepts=frozenset(others | {concept}), jitter=jitter, **globals_)
    # "not No_Beard" is drawn as a beard; every other cue is simply left out
    without = FaceSpec(concepts=frozenset(others), jitter=jitter, beard=concept == "No_Beard", **globals_)
    return with_c, without


@pytest.mark.parametrize("with_others", [False, True], ids=["alone", "among-others"])
def test_each_mask_marks_where_its_cue_changes_the_image(with_others):
    rng = np.random.default_rng(3)
    for concept in sorted(DRAWABLE_CONCEPTS - set(PARTS)):
        others: set[str] = set()
        if with_others:
            family = ATTRIBUTES if concept in ATTRIBUTES else ACTION_UNITS
            for o in rng.permutation(family).tolist():
                if o != concept and len(others) < 5 and not conflicts_with(o, others | {concept}):
                    others.add(o)
        with_c, without = _spec_pair(concept, others, rng)
        a, masks = render_face(with_c, (178, 218))
        b, _ = render_face(without, (178, 218))
        mask = masks[concept]
        changed = (a != b).any(axis=-1)
        assert mask.shape == (218, 178) and mask.any(), concept
        assert changed.sum() >= 40, f"{concept}: cue barely visible ({changed.sum()} px)"
        inside = (changed & _dilate(mask)).sum() / changed.sum()
        assert inside >= 0.98, f"{concept}: only {inside:.2f} of the changed pixels are in (2px around) its mask"
        coverage = (changed & mask).sum() / mask.sum()
        assert coverage >= 0.15, f"{concept}: only {coverage:.2f} of its mask shows the cue"


def test_lipstick_mask_is_exactly_the_red_lips():
    rng = np.random.default_rng(0)
    with_c, without = _spec_pair("Wearing_Lipstick", set(), rng)
    a, masks = render_face(with_c)
    b, _ = render_face(without)
    mask = masks["Wearing_Lipstick"]
    rgb = a.astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]) > 100)
    assert mask.sum() > 100
    assert not (red & ~mask).any(), "red lips outside the mask"
    # the rest of the lips is the dark line where they meet
    assert red[mask].mean() > 0.75
    assert rgb[mask & ~red].sum(axis=-1).max() < rgb[mask & red].sum(axis=-1).min()
    assert (rgb[mask, 0] - rgb[mask, 1]).mean() > 100
    assert np.abs(a[mask].astype(int) - b[mask].astype(int)).sum(axis=-1).mean() > 60


def test_masks_cover_the_parts_and_only_present_concepts():
    rng = np.random.default_rng(1)
    spec = FaceSpec(concepts=frozenset({"Eyeglasses", "AU_26"}), jitter=sample_jitter(rng), **sample_globals(rng))
    image, masks = render_face(spec, (190, 230))
    assert image.shape == (230, 190, 3) and image.dtype == np.uint8
    assert set(masks) == set(PARTS) | {"Eyeglasses", "AU_26"}
    assert all(m.shape == (230, 190) and m.dtype == bool and m.any() for m in masks.values())
    ys, xs = np.nonzero(masks["left_eye"])
    ys2, xs2 = np.nonzero(masks["right_eye"])
    assert xs.mean() > xs2.mean(), "left_eye is the subject's left: the image right"
    assert np.nonzero(masks["left_brow"])[0].mean() < ys.mean() < np.nonzero(masks["nose"])[0].mean()
    assert np.nonzero(masks["nose"])[0].mean() < np.nonzero(masks["mouth"])[0].mean()


def test_render_is_deterministic_and_jitter_moves_the_face():
    rng = np.random.default_rng(2)
    spec = FaceSpec(concepts=frozenset({"Goatee", "5_o_Clock_Shadow"}), jitter=sample_jitter(rng), **sample_globals(rng))
    a1, m1 = render_face(spec)
    a2, m2 = render_face(spec)
    assert np.array_equal(a1, a2) and all(np.array_equal(m1[k], m2[k]) for k in m1)
    moved = dataclasses.replace(spec, jitter=dataclasses.replace(spec.jitter, dx=spec.jitter.dx + 0.1))
    assert not np.array_equal(render_face(moved)[1]["nose"], m1["nose"])


def test_global_proxies_are_visible():
    rng = np.random.default_rng(4)
    jitter, g = sample_jitter(rng), sample_globals(rng)
    bright = render_face(FaceSpec(jitter=jitter, **{**g, "skin_tone": 0.1}))
    dark = render_face(FaceSpec(jitter=jitter, **{**g, "skin_tone": 0.9}))
    cheek = bright[1]["left_cheek"]
    assert bright[0][cheek].mean() > dark[0][cheek].mean() + 60
    young = render_face(FaceSpec(jitter=jitter, **{**g, "age": "twenty_to_forty"}))[0]
    old = render_face(FaceSpec(jitter=jitter, **{**g, "age": "sixty_plus"}))[0]
    assert (young != old).any(axis=-1).sum() > 200
    for family, groups in (("gender", ("Male", "Female")), ("ethnicity", ("white", "black"))):
        x = render_face(FaceSpec(jitter=jitter, **{**g, family: groups[0]}))[0]
        y = render_face(FaceSpec(jitter=jitter, **{**g, family: groups[1]}))[0]
        assert (x != y).any(axis=-1).sum() > 1000, family


# ----------------------------------------------------------------------------- errors
def _custom_taxonomy(extra_concept: str | None = None, global_families=None) -> dict:
    data = TAX.to_dict()
    if extra_concept:
        data["local_families"][0]["concepts"][extra_concept] = "Mouth"
    if global_families is not None:
        data["global_families"] = global_families
    return data


def test_undrawable_concept_is_named(tmp_path):
    tax = taxonomy_from_dict(_custom_taxonomy("Tongue_Out"), source="mine.json")
    with pytest.raises(HndError, match=r"mine\.json.*Tongue_Out"):
        write_synthetic_dictionary(tmp_path / "x", num_images=10, taxonomy=tax)
    assert not (tmp_path / "x").exists()


def test_unknown_global_family_or_group_is_named(tmp_path):
    bad_family = taxonomy_from_dict(_custom_taxonomy(global_families=[{"name": "Mood", "groups": ["calm", "tense"]}]))
    with pytest.raises(HndError, match="Mood"):
        write_synthetic_dictionary(tmp_path / "x", num_images=10, taxonomy=bad_family)
    bad_group = taxonomy_from_dict(_custom_taxonomy(global_families=[{"name": "Age", "groups": ["young", "sixty_plus"]}]))
    with pytest.raises(HndError, match="young"):
        write_synthetic_dictionary(tmp_path / "x", num_images=10, taxonomy=bad_group)


def test_regrouped_taxonomy_is_followed(tmp_path):
    data = {
        "name": "mouth-only",
        "regions": ["Mouth", "Eye"],
        "local_families": [
            {"name": "expressions", "index_file": "Expr.csv", "type": "attribute",
             "concepts": {"Smiling": "Mouth", "AU_15": "Mouth", "Eyeglasses": "Eye", "mouth": "Mouth"}},
        ],
        "global_families": [{"name": "skin_tone", "groups": ["dark", "bright"]}],
    }
    root = write_synthetic_dictionary(tmp_path / "m", num_images=6, seed=3, taxonomy=taxonomy_from_dict(data))
    rows = _rows(root, "Expr.csv")
    assert len(rows) == 6
    for _, labels in rows:
        stems = {Path(m).stem for m in labels}
        assert "mouth" in stems and not {"Smiling", "AU_15"} <= stems  # parts always, conflicts never
    assert sorted(p.name for p in (root / "non_localizable" / "skin_tone").iterdir()) == ["bright", "dark"]
    assert not (root / "Attributes.csv").exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"num_images": 2}, "num_images"),
    ({"num_images": 10, "seed": -1}, "seed"),
    ({"num_images": "ten"}, "num_images"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(HndError, match=match):
        write_synthetic_dictionary(tmp_path / "x", **kwargs)


def test_refuses_to_replace_a_foreign_folder_but_replaces_its_own(tmp_path):
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    small = taxonomy_from_dict(_custom_taxonomy(global_families=[{"name": "skin_tone", "groups": ["bright", "dark"]}]))
    with pytest.raises(HndError, match="refusing to overwrite"):
        write_synthetic_dictionary(precious, num_images=6, taxonomy=small)
    assert (precious / "thesis.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(HndError, match="is a file"):
        write_synthetic_dictionary(tmp_path / "file", num_images=6, taxonomy=small)
    out = write_synthetic_dictionary(tmp_path / "syn", num_images=6, seed=0, taxonomy=small)
    (out / "stale.txt").write_text("from an older run")
    write_synthetic_dictionary(out, num_images=6, seed=1, taxonomy=small)
    assert not (out / "stale.txt").exists() and json.loads((out / MARKER_FILE).read_text())["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


# ----------------------------------------------------------------------------- the project's reader
def test_published_reader_serves_it(dictionary):
    check = pytest.importorskip("hnd_jax.dictionary.check", reason="the published-layout reader (H1) is not in this tree")
    published = pytest.importorskip("hnd_jax.dictionary.published", reason="the published-layout reader is not in this tree")
    summary = check.check_published(dictionary, num_workers=1)
    assert summary["problems"] == [] and summary["skipped"] == {}
    meta = json.loads((dictionary / MARKER_FILE).read_text())
    assert summary["concept_counts"] == meta["concept_counts"]
    assert summary["global_counts"] == meta["global_counts"]
    assert summary["ignored_visualisations"] == 0

    d = published.PublishedDictionary(dictionary, 64, num_workers=1)
    assert d.num_local == NUM_IMAGES
    batch = d.get_local(np.arange(NUM_IMAGES))
    assert batch.images.shape == (NUM_IMAGES, 64, 64, 3)
    # every labelled concept has a non-empty mask at S=64, every unlabelled one an empty mask
    area = batch.masks.sum(axis=(2, 3))
    assert np.array_equal(area > 0, batch.labelled)
    # the order is Attributes, Action_Units, Parts, rows in file order
    expected = [image for fam in TAX.local_families for image, _ in _rows(dictionary, fam.index_file)]
    assert [r.image for r in d.layout.local] == expected
