"""A tiny hand-made Face Dictionary in the published layout, for reader tests.

It exercises the traps of the real data: non-square images of two sizes (18x22 and 20x16), RGB and
L images and masks (an RGB mask with a pixel set in one channel only), a JPEG image, ``lm.png`` and
``*_overlap.png`` files beside the masks (one even listed in a ``labels`` cell), concept names that
are prefixes of others (AU_1 with AU_12, AU_15, AU_17), an image without any concept, and global
groups holding .png, .jpg and .JPG files. ``write_fixture`` returns the ground truth the tests
compare with, written independently of the library's parser.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# (family name, index file, folder, native size (w, h), rows: list of concept lists)
LOCAL_SPEC = [
    ("attributes", "Attributes.csv", "attributes", (18, 22), [
        ["Smiling", "Eyeglasses", "No_Beard"],
        ["Big_Nose"],
        [],
    ]),
    ("action_units", "Action_Units.csv", "aus", (20, 16), [
        ["AU_1", "AU_12"],
        ["AU_12", "AU_15", "AU_17"],
        ["AU_1"],
        ["AU_17", "AU_26"],
    ]),
    ("parts", "Parts.csv", "parts", (18, 22), [
        ["nose", "left_brow", "right_brow", "left_eye", "right_eye", "mouth", "left_cheek", "right_cheek"],
        ["mouth", "nose", "left_eye", "right_eye", "left_brow", "right_brow", "right_cheek", "left_cheek"],
    ]),
]

GLOBAL_SPEC = {
    "Age": {"zero_to_twenty": ["b.png", "a.png"], "twenty_to_forty": ["x.jpg"], "forty_to_sixty": ["c.png"], "sixty_plus": ["d.JPG", "a.png"]},
    "Gender": {"Male": ["m1.png"], "Female": ["f1.png", "f0.png"]},
    "Ethnicity": {"white": ["w.png"], "black": ["k.png"], "asian": ["s.png"], "indian": ["i.png"]},
    "skin_tone": {"bright": ["b.png"], "dark": ["d.png"]},
}


@dataclass
class FixtureRow:
    image: str                      # relative to ROOT
    family: str
    masks: dict[str, str]           # concept -> mask path relative to ROOT
    size: tuple[int, int]           # native (w, h)


@dataclass
class Fixture:
    root: Path
    rows: list[FixtureRow] = field(default_factory=list)                 # dictionary order
    global_images: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # family -> [(group, path)] in order


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_fixture(root: Path, seed: int = 0) -> Fixture:
    """Write the fixture under ``root`` and return its ground truth."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    fx = Fixture(root=root)
    for fam, index_file, folder, (w, h), rows in LOCAL_SPEC:
        lines = []
        for r, concepts in enumerate(rows):
            d = f"{folder}/{r:06d}"
            if fam == "action_units" and r == 1:
                image, img_rel = rng.integers(0, 256, (h, w), dtype=np.uint8), f"{d}/face.png"  # L image
            elif fam == "attributes" and r == 1:
                image, img_rel = rng.integers(0, 256, (h, w, 3), dtype=np.uint8), f"{d}/face.jpg"
            else:
                image, img_rel = rng.integers(0, 256, (h, w, 3), dtype=np.uint8), f"{d}/face.png"
            _save(root / img_rel, image)
            masks = {}
            for k, c in enumerate(concepts):
                m = rng.random((h, w)) < 0.3
                if k % 2 == 0:  # L mask 0/255
                    arr = (m * 255).astype(np.uint8)
                else:           # RGB mask, some pixels set in a single channel only
                    arr = np.zeros((h, w, 3), dtype=np.uint8)
                    chan = rng.integers(0, 3, (h, w))
                    arr[m, chan[m]] = rng.integers(1, 256, int(m.sum()), dtype=np.uint8)
                rel = f"{d}/{c}.png"
                _save(root / rel, arr)
                masks[c] = rel
            # visualisations beside the masks: never labels
            _save(root / d / "lm.png", np.full((h, w), 255, np.uint8))
            if concepts:
                _save(root / d / f"{concepts[0]}_overlap.png", np.full((h, w, 3), 200, np.uint8))
            labels = list(masks.values())
            if fam == "attributes" and r == 0:
                labels = labels[:1] + [f"{d}/lm.png", f"{d}/{concepts[0]}_overlap.png"] + labels[1:]
            lines.append([img_rel, ";".join(labels)])
            fx.rows.append(FixtureRow(img_rel, fam, masks, (w, h)))
        with open(root / index_file, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "labels"])
            writer.writerows(lines)
    for fam, groups in GLOBAL_SPEC.items():
        fx.global_images[fam] = []
        for group, names in groups.items():
            for name in sorted(names):
                rel = f"non_localizable/{fam}/{group}/{name}"
                size = (int(rng.integers(10, 30)), int(rng.integers(10, 30)))
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path, format="JPEG" if name.lower().endswith("jpg") else "PNG")
                fx.global_images[fam].append((group, rel))
            (root / f"non_localizable/{fam}/{group}/notes.txt").write_text("not an image")
    return fx


def _pil_nearest_sources(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel, as Pillow's ImagingScaleAffine computes it.

    Pillow starts at 0.5 * scale and *accumulates* ``+= scale`` in float64, truncating each sum.
    That is floor((i + 0.5) * n_in / n_out) up to rounding, but the accumulated sum can fall just
    under an exact integer (e.g. 16 -> 7: row 3 reads source 7, not 8), so the reference follows
    the accumulation step by step.
    """
    scale = n_in / n_out
    pos, out = scale * 0.5, []
    for _ in range(n_out):
        out.append(min(int(pos), n_in - 1))
        pos += scale
    return np.array(out)


def nearest_resize_reference(mask: np.ndarray, size: int) -> np.ndarray:
    """NumPy nearest-neighbour resize to size x size, following PIL NEAREST's arithmetic."""
    h, w = mask.shape
    return mask[_pil_nearest_sources(h, size)][:, _pil_nearest_sources(w, size)]


def mask_truth(path: Path) -> np.ndarray:
    """Native-size bool mask read independently: any non-zero colour channel is inside, alpha ignored."""
    im = Image.open(path)
    if im.mode == "P":
        im = im.convert("RGB")
    arr = np.asarray(im)
    if im.mode in ("RGBA", "LA"):
        arr = arr[..., :-1]
    if arr.ndim == 3:
        return (arr != 0).any(axis=-1)
    return arr != 0
