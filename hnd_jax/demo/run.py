"""``hnd demo``: the paper's controlled bias experiment, end to end and offline (:func:`run_demo`).

Steps (each logged with its time): open the synthetic Face Dictionary (generated once, cached),
render the probe sets, train the biased and the control demo CNN, save their weights, dissect both
with :func:`hnd_jax.pipeline.dissect.dissect_model`, write each model's report, the comparison and
finally ``OUT/summary.json`` and ``OUT/report.html``. Layout of OUT::

    OUT/summary.json  OUT/report.html
    OUT/biased/   OUT/control/     dissection results + report.html + plots/ of each model
    OUT/models/biased/ ...         converted weights (hnd dissect --model demo_cnn --weights ...)
    OUT/compare/                   hnd compare's figures, compare.json, compare.html

The counts in the summary are measured by the dissection (:mod:`hnd_jax.demo.measure`); nothing
about the expected outcome is written in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from hnd_jax import __version__
from hnd_jax.atomic import write_json, write_text
from hnd_jax.demo.experiment import MODELS, TrainedModel, probe_sets, train_demo_model
from hnd_jax.demo.measure import clearly_more, difference_z, planted_unit_counts
from hnd_jax.demo.page import demo_page
from hnd_jax.demo.settings import DemoSettings
from hnd_jax.errors import HndError

SUMMARY_FILE = "summary.json"
SUMMARY_KIND = "hnd-demo"
#: Written first: an interrupted demo's folder is still recognised as a demo's (and reused).
MARKER_FILE = ".hnd-demo"
CRITERION = ("biased-model count >= control count + 3 and the difference significant: one-sided "
             "two-proportion z-test over the dissected units, z >= 2.326 (p < 0.01)")


def _check_out(out: Path) -> None:
    """OUT may be new, empty, or an earlier demo's output; anything else is refused (never clobbered)."""
    if out.exists() and not out.is_dir():
        raise HndError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / MARKER_FILE).is_file():
            return
        summary = out / SUMMARY_FILE
        try:
            kind = json.loads(summary.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != SUMMARY_KIND:
            raise HndError(f"--out {out}: folder is not empty and holds no earlier hnd demo; choose a new folder")


def _model_entry(out: Path, settings: DemoSettings, trained: TrainedModel) -> dict[str, Any]:
    layers = {}
    for layer in settings.layers:
        scores = out / trained.name / layer / "scores.npz"
        counts = planted_unit_counts(scores, settings.planted_concept, settings.planted_family, settings.planted_group)
        layers[layer] = {"scores": scores.relative_to(out).as_posix(), **counts}
    return {
        "results": trained.name,
        "report": f"{trained.name}/report.html",
        "weights": f"models/{trained.name}",
        "training_set": trained.training_set,
        "train_accuracy": [round(a, 4) for a in trained.history.accuracy],
        "train_loss": [round(v, 4) for v in trained.history.loss],
        "probe_accuracy": trained.probe_accuracy,
        "units": sum(c["units"] for c in layers.values()),
        "paired_with_planted_concept": sum(c["paired_with_planted_concept"] for c in layers.values()),
        "biased_toward_planted_group": sum(c["biased_toward_planted_group"] for c in layers.values()),
        "layers": layers,
    }


def _finding(models: dict[str, Any]) -> dict[str, Any]:
    units = models["biased"]["units"]
    finding: dict[str, Any] = {"criterion": CRITERION, "units": units}
    for key in ("paired_with_planted_concept", "biased_toward_planted_group"):
        b, c = models["biased"][key], models["control"][key]
        finding[key] = {"biased": b, "control": c, "z": round(difference_z(b, c, units), 3),
                        "clearly_more": clearly_more(b, c, units)}
    finding["reproduced"] = all(finding[k]["clearly_more"] for k in ("paired_with_planted_concept", "biased_toward_planted_group"))
    return finding


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole demo into ``out`` and return the summary (also written to ``OUT/summary.json``)."""
    from hnd_jax.convert.checkpoint import save_model
    from hnd_jax.pipeline.dissect import dissect_model
    from hnd_jax.reports.build import build_report
    from hnd_jax.reports.compare import compare_runs

    settings = settings or DemoSettings()
    out = Path(out)
    _check_out(out)
    write_text(out / MARKER_FILE, "output folder of hnd demo: a rerun may replace everything here\n")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        log(f"[{timings[name]:6.1f} s] {name}")

    t = time.perf_counter()
    from hnd_jax.dictionary import open_dictionary

    open_dictionary(settings.dictionary_spec, settings.image_size)  # generate (or find) it once
    stage(f"synthetic dictionary {settings.dictionary_spec}", t)

    t = time.perf_counter()
    probes = probe_sets(settings)
    stage("probe sets", t)

    trained: dict[str, TrainedModel] = {}
    for name in MODELS:
        t = time.perf_counter()
        trained[name] = train_demo_model(settings, name, probes, log=log)
        save_model(trained[name].model, "demo_cnn", out / "models" / name,
                   source={"trained_by": "hnd demo", "training_set": trained[name].training_set})
        stage(f"train {name} model", t)

    for name in MODELS:
        t = time.perf_counter()
        dissect_model(
            trained[name].model, card="demo_cnn", layers=settings.layers, dictionary=settings.dictionary_spec,
            out=out / name, scoring={"image_size": settings.image_size},
            run={"batch_size": 64, "fresh": True, "progress": "auto" if progress else "none", "checkpoint_every": 0},
        )
        stage(f"dissect {name} model", t)

    t = time.perf_counter()
    for name in MODELS:
        build_report(out / name)
    compare_runs([out / n for n in MODELS], out / "compare", labels=list(MODELS))
    stage("reports and comparison", t)

    models = {name: _model_entry(out, settings, trained[name]) for name in MODELS}
    timings["total"] = round(time.perf_counter() - t_all, 2)
    summary = {
        "kind": SUMMARY_KIND,
        "hnd_jax": __version__,
        "planted": {
            "task": settings.task,
            "concept": settings.planted_concept,
            "family": settings.planted_family,
            "group": settings.planted_group,
            "concept_bias": settings.concept_bias,
            "group_bias": settings.group_bias,
        },
        "dictionary": settings.dictionary_spec,
        "settings": settings.to_dict(),
        "paths": "relative to this file's folder",
        "models": models,
        "finding": _finding(models),
        "timings": timings,
    }
    write_json(out / SUMMARY_FILE, summary)
    write_text(out / "report.html", demo_page(summary))
    return summary
