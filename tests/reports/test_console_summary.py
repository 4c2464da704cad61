"""console_summary(OUT): the lines `hnd dissect` prints at the end, against counts made unit by unit."""

from __future__ import annotations

import re

import numpy as np
import pytest
from reports_fixture import write_fixture_run
from test_header import skip_globals
from test_summary import reference_counts

from hnd_jax.errors import HndError
from hnd_jax.reports.console import console_summary


def top_names(counts: dict[str, int], k: int) -> list[tuple[str, int]]:
    """Highest counts first, ties in axis order, zeros left out (independent of the module's sorting)."""
    order = list(counts)
    nonzero = [(name, n) for name, n in counts.items() if n > 0]
    return sorted(nonzero, key=lambda t: (-t[1], order.index(t[0])))[:k]


def parse(line: str) -> list[tuple[str, int]]:
    body = line.split(": ", 1)[1]
    return [] if body == "none" else [(x.rsplit(" ", 1)[0], int(x.rsplit(" ", 1)[1])) for x in body.split(", ")]


def test_lines_per_layer_match_independent_counts(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"layer3": 40, "layer4": 25}, seed=4, top=False, with_significance=False)
    text = console_summary(run.out, top=4)
    lines = text.splitlines()
    assert not text.endswith("\n")
    for layer in run.layers:
        ref = reference_counts(layer.arrays)
        u = len(layer.arrays["thresholds"])
        i = lines.index(next(x for x in lines if x.startswith(f"layer {layer.name}:")))
        head, concepts, regions, biased = lines[i : i + 4]
        assert head == (
            f"layer {layer.name}: {u} units, {ref['localizable']} localizable ({100 * ref['localizable'] / u:.0f}%), "
            f"{ref['interpretable']} interpretable ({100 * ref['interpretable'] / u:.0f}%)"
        )
        assert concepts.startswith("  top concepts (paired units): ")
        assert parse(concepts) == top_names(ref["per_concept"], 4)
        assert regions.startswith("  top regions (interpretable units): ")
        by_region = {r: ref["int_region"].get(r, 0) for r in run.taxonomy.regions}  # ties: Eye, Cheek, Nose...
        assert parse(regions) == top_names(by_region, 4)
        assert biased.startswith("  biased units: ")
        for fam in ref["biased"]:
            units = int(np.any(layer.arrays[f"biased_{fam}"], axis=1).sum())
            assert re.search(rf"(^|; ){re.escape(fam)} {units}( \[|;|$)", biased.split(": ", 1)[1]), (fam, biased)
    assert "significant" not in text  # no §2c arrays in these results
    assert lines[-1] == f"results: {run.out}/<layer>/scores.npz (write the report with: hnd report {run.out})"


def test_significant_counts_when_the_results_have_them(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 30}, seed=9, top=False, with_significance=False)
    a = run.layers[0].arrays
    rng = np.random.default_rng(0)
    extra = {"paired_significant": a["paired"] & (rng.uniform(size=a["paired"].shape) < 0.5)}
    for fam in ("Age", "Gender", "Ethnicity", "skin_tone"):
        extra[f"biased_significant_{fam}"] = a[f"biased_{fam}"] & (rng.uniform(size=a[f"biased_{fam}"].shape) < 0.4)
    np.savez_compressed(run.out / "l" / "scores.npz", **a, **extra)
    text = console_summary(run.out)
    loc = a["localizable"]
    sig_units = int((extra["paired_significant"] & loc[:, None]).any(axis=1).sum())
    assert f", {sig_units} with a significant pairing" in text.splitlines()[0]
    for fam in ("Age", "Gender", "Ethnicity", "skin_tone"):
        units = int(a[f"biased_{fam}"].any(axis=1).sum())
        sig = int(extra[f"biased_significant_{fam}"].any(axis=1).sum())
        assert f"{fam} {units} ({sig} significant)" in text


def test_missing_global_families_and_the_report_path(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 6}, top=False)
    skip_globals(run, lambda f: f"no '{f}/<group>' arrays in acts.npy")
    (run.out / "report.html").write_text("<html></html>")
    text = console_summary(run.out)
    lines = text.splitlines()
    assert not any(x.startswith("  biased units") for x in lines)
    note = " ".join(text[text.index("note: "):text.index("\nreport: ")].split())  # wrapped at 100 columns
    assert all(len(x) <= 100 for x in lines if not x.startswith("report: "))
    assert "skin_tone): no '<Family>/<group>' arrays in acts.npy" in note and "--model" in note and ".npz" in note
    assert lines[-1] == f"report: {run.out / 'report.html'}"
    assert console_summary(run.out, report="elsewhere.html").splitlines()[-1].startswith("results: ")


def test_bad_folder_is_one_line(tmp_path):
    with pytest.raises(HndError, match="dissection.json"):
        console_summary(tmp_path)
