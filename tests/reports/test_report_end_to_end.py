"""The report on real pieces: synthetic dictionary -> `dissect --activations` -> `hnd report` reopens it.

Activations are planted from the dictionary's own masks (unit k fires on concept k's pixels), so the
localizable units and their top images are real outputs of the scoring engine, not fixture data.
"""

from __future__ import annotations

import numpy as np
from html_check import parse_report
from PIL import Image

from hnd_jax.dictionary import open_dictionary
from hnd_jax.reports.build import build_report
from hnd_jax.reports.overlays import CONCEPT_RGB, render_unit_tiles
from hnd_jax.reports.results_view import load_run

SPEC = "synthetic:24:3"
S = 32
PLANTED = ("mouth", "left_eye", "nose")


def test_report_from_a_real_dissection(tmp_path, monkeypatch):
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    from hnd_jax.pipeline.dissect import dissect_activations

    dic = open_dictionary(SPEC, S)
    names = dic.taxonomy.concept_names
    picks = [names.index(p) for p in PLANTED]
    rng = np.random.default_rng(0)
    rows = []
    for batch in dic.local_batches(8, with_masks=True):
        m = batch.masks[:, picks].astype(np.float32).reshape(len(batch), len(picks), 8, 4, 8, 4).mean(axis=(3, 5))
        rows.append(m + 0.05 * rng.normal(size=m.shape))
    acts = np.concatenate(rows, axis=0)
    acts = np.concatenate([acts, rng.normal(size=(acts.shape[0], 2, 8, 8))], axis=1).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    out = tmp_path / "out"
    dissect_activations(tmp_path / "acts.npy", dictionary=SPEC, layer="planted", out=out, scoring={"image_size": S})

    outcome = build_report(out)  # reopens SPEC at S from dissection.json
    assert outcome.notes == []
    parsed = parse_report(outcome.html.read_text())
    assert parsed.errors == [] and len(parsed.sections[0].cards) == 5
    strips = [i for i in parsed.sections[0].imgs if "strip" in i.get("class", "")]
    assert len(strips) == 5
    for img in strips:
        with Image.open(out / img["src"]) as im:
            assert im.format == "JPEG" and im.size == (4 * 96 + 6, 96)

    layer = load_run(out).layers[0]
    assert layer.localizable[: len(PLANTED)].any(), "planted units should be localizable"
    tiles = render_unit_tiles(layer, dic, range(layer.num_units))
    outlined = 0
    for u in np.flatnonzero(layer.localizable):
        c = int(layer.top_concept[u])
        batch = dic.get_local(layer.top_images[u])
        for k in range(layer.top_images.shape[1]):
            has_mask = bool(batch.masks[k, c].any())
            drawn = bool((tiles[u].tiles[k] == CONCEPT_RGB).all(axis=-1).any())
            assert drawn == has_mask, (u, k)
            outlined += drawn
    assert outlined > 0
