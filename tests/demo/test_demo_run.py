"""``hnd demo`` at reduced size: every piece runs, the outputs are complete and consistent.

Whether the planted bias is found is a property of the full-size run (minutes, see the README and
the issue notes); here the sizes are too small for a trained model, so the tests check that the
summary reports what the dissection measured, not which way it came out.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from hnd_jax.cli.main import main
from hnd_jax.demo import DemoSettings, run_demo
from hnd_jax.demo.experiment import PROBES, probe_sets, training_set
from hnd_jax.demo.measure import planted_unit_counts
from hnd_jax.demo.run import FINDINGS, _finding, combine_replicates
from hnd_jax.errors import HndError

SMALL = DemoSettings(train_images=96, probe_images=24, dictionary_images=96, epochs=1, layers=("conv3", "conv4"))


class _Links(HTMLParser):
    VOID = {"img", "meta", "br", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls = [], [], []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("href", "src")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_training_sets_plant_what_the_settings_say():
    s = SMALL.scaled(train_images=400)
    _, labels, biased = training_set(s, "biased")
    _, _, control = training_set(s, "control")
    assert biased["planted_rate_positive"] == pytest.approx(0.95, abs=0.01)
    assert biased["planted_rate_negative"] == pytest.approx(0.05, abs=0.01)
    assert biased["group_rate_positive"] == pytest.approx(s.group_bias, abs=0.01)
    assert biased["group_rate_negative"] == pytest.approx(1 - s.group_bias, abs=0.01)
    assert control["planted_rate_positive"] == pytest.approx(0.5, abs=0.01)
    assert control["planted_rate_negative"] == pytest.approx(0.5, abs=0.01)
    assert labels.mean() == pytest.approx(0.5, abs=0.01)
    probes = probe_sets(SMALL)
    assert list(probes) == list(PROBES)
    assert all(x.shape == (24, 64, 64, 3) and x.dtype == np.uint8 and len(y) == 24 for x, y in probes.values())


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    logs: list[str] = []
    summary = run_demo(out, SMALL.scaled(replicates=2), progress=False, log=logs.append)
    return out, summary, logs


def test_summary_holds_what_the_dissection_measured(demo_out):
    out, summary, logs = demo_out
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    import os

    machine = summary["machine"]  # the README's figures name the machine from here
    assert machine["cpu_count"] == os.cpu_count() and machine["jax_device_kind"] and machine["cpu"]
    assert summary["planted"] == {"task": SMALL.task, "concept": "Eyeglasses", "family": SMALL.planted_family,
                                  "group": SMALL.planted_group, "concept_bias": SMALL.concept_bias,
                                  "group_bias": SMALL.group_bias}
    for name in ("biased", "control"):
        model = summary["models"][name]
        assert set(model["probe_accuracy"]) == set(PROBES)
        assert all(0.0 <= a <= 1.0 for a in model["probe_accuracy"].values())
        for layer in SMALL.layers:
            entry = model["layers"][layer]
            scores = out / entry["scores"]
            assert scores == out / name / layer / "scores.npz" and scores.is_file()
            measured = planted_unit_counts(scores, "Eyeglasses", SMALL.planted_family, SMALL.planted_group)
            assert {k: entry[k] for k in measured} == measured
            with np.load(scores) as z:
                assert entry["units"] == z["thresholds"].shape[0]
        assert model["paired_with_planted_concept"] == sum(
            model["layers"][l]["paired_with_planted_concept"] for l in SMALL.layers)
        assert model["biased_toward_planted_group"] == sum(
            model["layers"][l]["biased_toward_planted_group"] for l in SMALL.layers)
    finding = summary["finding"]
    for key, sig in FINDINGS:
        assert finding[key]["biased"] == summary["models"]["biased"][key]
        assert finding[key]["control"] == summary["models"]["control"][key]
        for name in ("biased", "control"):
            assert finding[key][f"{name}_significant"] == summary["models"][name][sig] == sum(
                summary["models"][name]["layers"][l][sig] for l in SMALL.layers)
            assert finding[key][f"{name}_significant"] <= finding[key][name]
        assert finding[key]["clearly_more"] == all(r["finding"][key]["clearly_more"] for r in summary["replicates"])
    assert any("train biased model" in line for line in logs)


def test_replicates_are_measured_and_spread(demo_out):
    out, summary, _ = demo_out
    reps = summary["replicates"]
    assert [r["seed"] for r in reps] == [0, 1] and summary["finding"]["replicates"] == 2
    assert reps[0]["folder"] == "." and "models" not in reps[0]
    second = reps[1]
    assert second["folder"] == "replicates/seed1" and second["dictionary"] == SMALL.scaled(seed=1).dictionary_spec
    for name in ("biased", "control"):
        model = second["models"][name]
        for layer in SMALL.layers:
            entry = model["layers"][layer]
            assert entry["scores"] == f"replicates/seed1/{name}/{layer}/scores.npz"
            measured = planted_unit_counts(out / entry["scores"], "Eyeglasses", SMALL.planted_family,
                                           SMALL.planted_group)
            assert {k: entry[k] for k in measured} == measured
    assert reps[0]["finding"] == _finding(summary["models"]) and second["finding"] == _finding(second["models"])
    finding = summary["finding"]
    for key, _ in FINDINGS:
        for k in ("biased", "control", "biased_significant", "control_significant"):
            values = [r["finding"][key][k] for r in reps]
            assert finding[key]["spread"][k] == {"mean": round(sum(values) / 2, 3), "min": min(values),
                                                 "max": max(values)}
    assert finding["replicates_reproduced"] == sum(r["finding"]["reproduced"] for r in reps)
    assert finding["reproduced"] == all(r["finding"]["reproduced"] for r in reps)
    page = (out / "report.html").read_text()
    assert "Replicates" in page and "replicates/seed1" in page


def test_combined_verdict_needs_every_replicate():
    def one(bs, cs, units=100):
        models = {"biased": {"units": units}, "control": {"units": units}}
        for raw, sig in FINDINGS:
            models["biased"].update({raw: bs + 5, sig: bs})
            models["control"].update({raw: cs + 5, sig: cs})
        return _finding(models)

    good, bad = one(20, 2), one(4, 2)
    assert good["reproduced"] and not bad["reproduced"]
    both = combine_replicates([good, bad])
    assert not both["reproduced"] and both["replicates_reproduced"] == 1
    key = FINDINGS[0][0]
    assert both[key]["biased_significant"] == 20 and both[key]["biased"] == 25  # the first replicate's counts
    assert both[key]["spread"]["biased_significant"] == {"mean": 12.0, "min": 4, "max": 20}
    assert both[key]["replicates_clearly_more"] == 1 and not both[key]["clearly_more"]
    assert combine_replicates([good, good])["reproduced"]
    assert combine_replicates([good, bad])["criterion"].startswith("in every one of the 2 replicates, ")
    assert combine_replicates([good])["criterion"].startswith("in the one replicate, ")  # not "every" of one


def test_outputs_exist_and_the_page_links_resolve(demo_out):
    out, summary, _ = demo_out
    for name in ("biased", "control"):
        assert (out / name / "dissection.json").is_file() and (out / name / "report.html").is_file()
        assert (out / "models" / name / "manifest.json").is_file()
        assert any((out / name / "plots").rglob("*.png"))
    assert (out / "compare" / "compare.html").is_file()
    parser = _Links()
    parser.feed((out / "report.html").read_text())
    assert parser.errors == [] and parser.stack == []
    local = [u for u in parser.urls if not u.startswith(("http:", "https:", "data:", "#"))]
    assert any(u.endswith(".png") for u in local) and "biased/report.html" in local
    assert "index.html" in local  # the page linking every report here, as `hnd report OUT` writes it
    for url in local:
        assert (out / url).is_file(), url


def test_the_index_links_every_run_and_page_and_is_what_hnd_report_writes(demo_out, tmp_path, capsys):
    out, summary, _ = demo_out
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert parser.errors == [] and parser.stack == []
    local = {u for u in parser.urls if not u.startswith(("http:", "https:", "data:", "#"))}
    runs = {f"{r['folder']}/{n}".removeprefix("./") for r in summary["replicates"] for n in ("biased", "control")}
    assert len(runs) == 4  # two replicates: the top-level pair and replicates/seed<S>/
    for run in runs:  # every model's report and results, from the summary, not from the index's own search
        assert f"{run}/report.html" in local and f"{run}/dissection.json" in local, run
    assert {"report.html", "summary.json", "compare/compare.html"} <= local
    for url in local:
        assert (out / url).is_file(), url
    import shutil

    again = tmp_path / out.name  # `hnd report` over a copy rewrites the same index (reports without images: faster)
    shutil.copytree(out, again)
    (again / "index.html").unlink()
    assert main(["report", str(again), "--no-images", "--no-plots"]) == 0, capsys.readouterr().err
    assert (again / "index.html").read_text() == (out / "index.html").read_text()


def test_saved_weights_reproduce_the_dissection(demo_out, tmp_path):
    """The weights in OUT/models/biased give the same scores through `hnd dissect --model demo_cnn`."""
    out, _, _ = demo_out
    again = tmp_path / "again"
    code = main(["dissect", "--model", "demo_cnn", "--weights", str(out / "models" / "biased"), "--layer", "conv4",
                 "--dictionary", SMALL.dictionary_spec, "--out", str(again)])
    assert code == 0
    with np.load(out / "biased" / "conv4" / "scores.npz") as a, np.load(again / "conv4" / "scores.npz") as b:
        np.testing.assert_array_equal(a["thresholds"], b["thresholds"])
        np.testing.assert_array_equal(a["intersection"], b["intersection"])
        key = f"biased_{SMALL.planted_family}"
        np.testing.assert_array_equal(a[key], b[key])


def test_an_interrupted_demo_folder_is_reused(tmp_path, monkeypatch):
    """Interrupted after the marker (here: training fails), the folder is still a demo's: rerun accepted."""
    import hnd_jax.demo.run as demo_run

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_run, "probe_sets", boom)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "out", SMALL, progress=False, log=lambda m: None)
    assert (tmp_path / "out" / ".hnd-demo").is_file() and not (tmp_path / "out" / "summary.json").exists()
    demo_run._check_out(tmp_path / "out")  # no error: a demo's folder


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(HndError, match="not empty"):
        run_demo(tmp_path, SMALL, progress=False, log=lambda m: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
