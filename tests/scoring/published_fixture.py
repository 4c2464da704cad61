"""A tiny Face Dictionary in the published layout for the tiny test taxonomy (activations-file tests).

Non-square images (10x12), masks as L PNGs with 0/255 values at the image's size, two local
families, and global groups of different sizes (files named out of order to exercise sorting).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from scoring_fixtures import TINY_TAXONOMY

W, H = 10, 12
# rows per local family: the concepts present on each image
ROWS = {
    "attrs": [["Smiling", "Eyeglasses"], ["Goatee"], ["Smiling", "Big_Lips", "Goatee"], [], ["Eyeglasses"]],
    "parts": [["left_eye", "mouth", "chin"], ["left_eye", "mouth", "chin"], ["mouth"]],
}
GLOBAL_SIZES = {"Gender": [2, 3], "Age": [1, 2, 2], "skin_tone": [1, 1, 2, 1]}


def write_tiny_dictionary(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the dictionary under ``root``; returns (root, taxonomy json path)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for fam in TINY_TAXONOMY["local_families"]:
        lines = []
        for i, concepts in enumerate(ROWS[fam["name"]]):
            img_rel = f"{fam['name']}/{i:03d}.png"
            (root / fam["name"] / f"{i:03d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / img_rel)
            labels = []
            for c in concepts:
                mask = np.zeros((H, W), np.uint8)
                y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
                mask[y : y + rng.integers(2, 5), x : x + rng.integers(2, 5)] = 255
                rel = f"{fam['name']}/{i:03d}/{c}.png"
                Image.fromarray(mask, mode="L").save(root / rel)
                labels.append(rel)
            lines.append([img_rel, ";".join(labels)])
        with open(root / fam["index_file"], "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "labels"])
            writer.writerows(lines)
    for fam in TINY_TAXONOMY["global_families"]:
        for g, n in zip(fam["groups"], GLOBAL_SIZES[fam["name"]]):
            folder = root / "non_localizable" / fam["name"] / g
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{n - j:02d}.png")
    tax_path = root.parent / "tiny_taxonomy.json"
    tax_path.write_text(json.dumps(TINY_TAXONOMY))
    return root, tax_path


def num_local() -> int:
    return sum(len(r) for r in ROWS.values())
