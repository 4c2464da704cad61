"""The report header (dissection.json as a readable table), bar legends and the missing-global-families note."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from html_check import parse_report
from reports_fixture import write_fixture_run

from hnd_jax.reports.header import header_html, short_path
from hnd_jax.reports.html import write_report
from hnd_jax.reports.run_notes import global_families_note


class Spans(HTMLParser):
    """(text, title) of every <span class="path">, and the header table's rows as {label: text}."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paths: list[list] = []
        self.rows: dict[str, str] = {}
        self._span = None
        self._th = self._td = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and a.get("class") == "path":
            self._span = ["", a.get("title")]
        if tag == "th":
            self._th = ""
        if tag == "td" and self._th is not None:
            self._td = ""

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.paths.append(self._span)
            self._span = None
        if tag == "td" and self._td is not None:
            self.rows[self._th] = self._td
            self._th = self._td = None

    def handle_data(self, data):
        if self._span is not None:
            self._span[0] += data
        if self._td is not None:
            self._td += data
        elif self._th is not None:
            self._th += data


def real_meta(out: Path, weights: str, cache: str) -> dict:
    """A dissection.json as `hnd dissect --model` writes it (fields from a real run)."""
    return {
        "layers": ["conv3", "conv4"],
        "source": "model",
        "model": {"kind": "card", "card": "demo_cnn", "architecture": "demo_cnn",
                  "weights": {"kind": "file", "path": weights, "sha256": "e0" * 32, "format": "npz"},
                  "params_sha256": "ab" * 32},
        "dictionary": {"kind": "published", "path": cache, "content_sha256": "cd" * 32, "image_size": 64,
                       "image_resample": "bicubic", "num_local": 96,
                       "num_global": {"Age": 32, "Gender": 16}, "skipped": {}, "spec": "synthetic:96:0"},
        "image_size": 64,
        "settings": {"image_size": 64, "quantile": 0.005, "iou_threshold": 0.04, "iou_mode": "family",
                     "pair_factor": 1.5, "bias_cutoffs": {}},
        "global_families": {"scored": ["Age", "Gender"], "skipped": {}},
        "units": {"conv3": 64, "conv4": 128},
        "map_hw": {"conv3": [16, 16], "conv4": [8, 8]},
        "devices": {"count": 8, "kind": "cpu", "platform": "cpu", "process_count": 1},
        "timings": {"setup": 0.04, "pass1": 1.13, "total": 2.72, "split": {"data": 0.2}},
        "versions": {"hnd-jax": "0.1.0", "jax": "0.10.2"},
        "created": "2026-11-30T12:05:52+00:00",
    }


def test_header_is_a_table_with_short_paths_and_full_tooltips(tmp_path):
    out = tmp_path / "runs" / "model"
    out.mkdir(parents=True)
    weights = str(tmp_path / "runs" / "w.npz")
    cache = "/root/.cache/hnd_jax/synthetic/96-0/very/deep/folder"
    meta = real_meta(out, weights, cache)
    text = header_html(meta, out)
    assert "{" not in text and '"' + "kind" + '"' not in text  # no raw JSON
    spans = Spans()
    spans.feed(text)
    shown = {title: label for label, title in spans.paths}
    assert shown[weights] == "../w.npz"  # close to OUT: relative
    assert shown[cache] == "…/deep/folder"  # far: last parts, full path in the tooltip
    rows = spans.rows
    assert set(rows) >= {"model", "dictionary", "settings", "layers", "global families", "devices", "time",
                         "created", "versions"}
    assert "demo_cnn" in rows["model"] and "synthetic:96:0" in rows["dictionary"]
    # the weights' identity: a file's sha256 (what `hnd dissect --weights FILE` records), else the parameters'
    assert "weights sha256 " + "e0" * 6 + "…" in rows["model"] and "params sha256 " + "ab" * 6 + "…" in rows["model"]
    assert f'title="{"e0" * 32}"' in text  # the full digest in the tooltip
    assert "96 local images" in rows["dictionary"] and "Age 32" in rows["dictionary"]
    assert "quantile q 0.005" in rows["settings"] and "IoU threshold 0.04" in rows["settings"]
    assert "conv3 (64 units, 16×16 maps)" in rows["layers"]
    assert rows["devices"] == "8 × cpu" and rows["time"].startswith("2.7 s total")
    assert "dissection.json" in text  # the rest is one click away


@pytest.mark.parametrize(
    "path, out, expected",
    [
        ("/data/runs/a/w.npz", "/data/runs/a", "w.npz"),
        ("/data/w.npz", "/data/runs/a", "../../w.npz"),
        ("/x/y/z/w.npz", "/data/runs/a/b", "…/z/w.npz"),  # three levels up: shortened instead
        ("relative/spec", "/data", "relative/spec"),
    ],
)
def test_short_path(path, out, expected):
    assert short_path(path, Path(out)) == expected


def test_odd_metadata_never_breaks_the_header(tmp_path):
    meta = {"model": ["a", 1], "dictionary": "ROOT", "settings": {"x": {"y": {"z": 1}}}, "layers": [{"name": "l"}],
            "global_families": "?", "devices": 3, "timings": "slow", "versions": None, "taxonomy": 1}
    text = header_html(meta, tmp_path)
    assert "<table" in text and "ROOT" in text and "y: z: 1" in text and "l" in text


def test_report_has_the_header_table_and_bar_legends(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 8}, top=False)
    text = write_report(run.out).read_text()
    parsed = parse_report(text)
    assert parsed.errors == [] and parsed.stack == []
    assert '<table class="meta">' in text and '<dl class="meta">' not in text
    # the nasty model name is escaped in the table too
    assert "<script>alert" not in text
    # both two-bar tables name their bars; the bar colours are the classes the bars use
    keys = re.findall(r'<p class="barkey">(.*?)</p>', text)
    assert len(keys) == 2
    assert 'class="bar"></i>localizable' in keys[0] and 'class="bar b2"></i>interpretable' in keys[0]
    assert "localizable (top concept)" in keys[1] and "interpretable (paired)" in keys[1]
    # both bars share one scale: the longest is 100%, none longer (interpretable per type can exceed localizable)
    widths = [float(w) for w in re.findall(r'class="bar(?: b2)?" style="width:([0-9.]+)%"', text)]
    assert widths and max(widths) == 100.0


def skip_globals(run, reason_of) -> dict:
    """Turn a fixture run into one whose global families were not scored (as --activations X.npy leaves it)."""
    for layer in run.layers:
        path = run.out / layer.name / "scores.npz"
        arrays = {k: v for k, v in np.load(path).items() if not k.startswith(("global_", "biased_"))}
        np.savez_compressed(path, **arrays)
    meta = dict(run.meta, source="activations",
                model={"kind": "external activations", "file": "/data/acts.npy", "format": "npy"},
                global_families={"scored": [], "skipped": {f.name: reason_of(f.name)
                                                          for f in run.taxonomy.global_families}})
    (run.out / "dissection.json").write_text(json.dumps(meta))
    return meta


def test_missing_global_families_are_explained_with_what_to_pass(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 5}, top=False)
    meta = skip_globals(run, lambda f: f"no '{f}/<group>' arrays in acts.npy")
    note = global_families_note(meta)
    assert note.startswith("Global families not scored (Age, Gender, Ethnicity, skin_tone)")
    assert "(Age, Gender, Ethnicity, skin_tone): no '<Family>/<group>' arrays in acts.npy. To score them" in note
    assert ".npz" in note and "'<Family>/<group>'" in note and "--model" in note
    text = write_report(run.out).read_text()
    assert 'id="global-families-note"' in text and "no &#x27;&lt;Family&gt;/&lt;group&gt;&#x27; arrays" in text
    assert 'href="#global-families-note"' in text  # the empty subgroup panel points at the reason
    # a model run that lacked images gets the dictionary advice instead
    model_meta = dict(meta, source="model", model={"kind": "card", "card": "x"})
    assert "non_localizable" in global_families_note(model_meta) and "--model" not in global_families_note(model_meta)
    # nothing skipped, nothing said
    assert global_families_note({"global_families": {"scored": ["Age"], "skipped": {}}}) is None
    assert global_families_note({}) is None
    mixed = {"global_families": {"skipped": {"Age": "no 'Age/<group>' arrays in a.npz", "Gender": "skipped: no images",
                                             "skin_tone": "no 'skin_tone/<group>' arrays in a.npz"}}}
    assert global_families_note(mixed).startswith(
        "Global families not scored (Age, Gender, skin_tone): Age, skin_tone: no '<Family>/<group>' arrays in a.npz; "
        "Gender: skipped: no images. ")
    lone = {"global_families": {"skipped": {"Age": "no 'Age/<group>' arrays in a.npz"}}}
    assert "(Age): no 'Age/<group>' arrays in a.npz." in global_families_note(lone)
