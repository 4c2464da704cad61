"""``hnd demo``: the paper's controlled bias experiment, end to end and offline (:func:`run_demo`).

Steps (each logged with its time): open the synthetic Face Dictionary (generated once, cached),
render the probe sets, train the biased and the control demo CNN, save their weights, dissect both
with :func:`hnd_jax.pipeline.dissect.dissect_model`, write each model's report, the comparison and
finally ``OUT/summary.json``, ``OUT/report.html`` and ``OUT/index.html`` (the page ``hnd report OUT``
writes: every run's report and every page here, linked from ``report.html``). Layout of OUT::

    OUT/summary.json  OUT/report.html  OUT/index.html
    OUT/biased/   OUT/control/     dissection results + report.html + plots/ of each model
    OUT/models/biased/ ...         converted weights (hnd dissect --model demo_cnn --weights ...)
    OUT/compare/                   hnd compare's figures, compare.json, compare.html
    OUT/replicates/seed<S>/...     the same for every further replicate (``replicates`` > 1)

The counts in the summary are measured by the dissection (:mod:`hnd_jax.demo.measure`); nothing
about the expected outcome is written in. The verdict counts **significant** units (DESIGN.md §2c:
paired with the concept and AUC significant; biased toward the subgroup and the permutation test
significant, BH at alpha 0.05); the raw counts stand beside them. With ``replicates`` K > 1 the whole
experiment is repeated with seeds ``seed .. seed + K - 1``; ``finding.reproduced`` is true only when
the verdict holds in every replicate, and ``finding.<count>.spread`` gives the mean, min and max over
the replicates and how many reproduce. Top-level counts are those of the first replicate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from hnd_jax import __version__
from hnd_jax.atomic import write_json, write_text
from hnd_jax.demo.experiment import MODELS, TrainedModel, probe_sets, train_demo_model
from hnd_jax.demo.machine import describe_machine
from hnd_jax.demo.measure import clearly_more, difference_z, planted_unit_counts
from hnd_jax.demo.page import demo_page
from hnd_jax.demo.settings import DemoSettings
from hnd_jax.errors import HndError
from hnd_jax.out_folder import check_out_folder
from hnd_jax.reports.index import write_index

SUMMARY_FILE = "summary.json"
SUMMARY_KIND = "hnd-demo"
#: Written first: an interrupted demo's folder is still recognised as a demo's (and reused).
MARKER_FILE = ".hnd-demo"
CRITERION = ("the biased model's count of significant units (docs/algorithm.md §2c: BH at alpha "
             "0.05) >= the control's + 3 and the difference significant: one-sided two-proportion z-test over "
             "the dissected units, z >= 2.326 (p < 0.01)")
#: The two findings: (key of the raw count, key of its significant subset).
FINDINGS = (
    ("paired_with_planted_concept", "paired_significant_with_planted_concept"),
    ("biased_toward_planted_group", "biased_significant_toward_planted_group"),
)
REPLICATES_DIR = "replicates"


def _holds_demo(out: Path) -> bool:
    """Does ``out`` hold an earlier demo (its marker, or a summary.json of kind ``hnd-demo``)?"""
    if (out / MARKER_FILE).is_file():
        return True
    try:
        return json.loads((out / SUMMARY_FILE).read_text()).get("kind") == SUMMARY_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: str | Path) -> Path:
    """OUT may be new, empty, or an earlier demo's output; anything else is refused (never clobbered)."""
    return check_out_folder(out, what="hnd demo", holds_ours=_holds_demo)


def _model_entry(out: Path, pair_dir: Path, settings: DemoSettings, trained: TrainedModel) -> dict[str, Any]:
    layers = {}
    for layer in settings.layers:
        scores = pair_dir / trained.name / layer / "scores.npz"
        counts = planted_unit_counts(scores, settings.planted_concept, settings.planted_family, settings.planted_group)
        layers[layer] = {"scores": scores.relative_to(out).as_posix(), **counts}
    rel = pair_dir.relative_to(out)
    entry = {
        "results": (rel / trained.name).as_posix(),
        "report": (rel / trained.name / "report.html").as_posix(),
        "weights": (rel / "models" / trained.name).as_posix(),
        "training_set": trained.training_set,
        "train_accuracy": [round(a, 4) for a in trained.history.accuracy],
        "train_loss": [round(v, 4) for v in trained.history.loss],
        "probe_accuracy": trained.probe_accuracy,
        "units": sum(c["units"] for c in layers.values()),
    }
    for raw, sig in FINDINGS:
        entry[raw] = sum(c[raw] for c in layers.values())
        values = [c[sig] for c in layers.values()]
        entry[sig] = None if any(v is None for v in values) else sum(values)
    entry["layers"] = layers
    return entry


def _finding(models: dict[str, Any]) -> dict[str, Any]:
    """One replicate's verdict: raw counts with their z beside the significant counts the verdict uses."""
    units = models["biased"]["units"]
    finding: dict[str, Any] = {"criterion": f"in this replicate, {CRITERION}", "units": units}
    for raw, sig in FINDINGS:
        b, c = models["biased"][raw], models["control"][raw]
        bs, cs = models["biased"][sig], models["control"][sig]
        if bs is None or cs is None:
            raise HndError("the demo's dissections carry no significance arrays (docs/algorithm.md §2c)")
        finding[raw] = {"biased": b, "control": c, "z": round(difference_z(b, c, units), 3),
                        "biased_significant": bs, "control_significant": cs,
                        "z_significant": round(difference_z(bs, cs, units), 3),
                        "clearly_more": clearly_more(bs, cs, units)}
    finding["reproduced"] = all(finding[raw]["clearly_more"] for raw, _ in FINDINGS)
    return finding


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": round(sum(values) / len(values), 3), "min": min(values), "max": max(values)}


def combine_replicates(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's ``finding``: the first replicate's counts, the spread over all replicates, and
    ``reproduced`` only when every replicate reproduces."""
    first = findings[0]
    where = "in the one replicate" if len(findings) == 1 else f"in every one of the {len(findings)} replicates"
    out: dict[str, Any] = {"criterion": f"{where}, {CRITERION}", "units": first["units"], "replicates": len(findings)}
    for raw, _ in FINDINGS:
        entry = dict(first[raw])
        entry["spread"] = {
            k: _spread([f[raw][k] for f in findings])
            for k in ("biased", "control", "biased_significant", "control_significant")
        }
        entry["replicates_clearly_more"] = sum(bool(f[raw]["clearly_more"]) for f in findings)
        entry["clearly_more"] = entry["replicates_clearly_more"] == len(findings)
        out[raw] = entry
    out["replicates_reproduced"] = sum(bool(f["reproduced"]) for f in findings)
    out["reproduced"] = out["replicates_reproduced"] == len(findings)
    return out


def _run_pair(
    out: Path, pair_dir: Path, settings: DemoSettings, progress: bool, stage: Callable[[str, float], None],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train, dissect and report one biased/control pair of ``settings.seed`` into ``pair_dir``."""
    from hnd_jax.convert.checkpoint import save_model
    from hnd_jax.dictionary import open_dictionary
    from hnd_jax.pipeline.dissect import dissect_model
    from hnd_jax.reports.build import build_report
    from hnd_jax.reports.compare import compare_runs

    tag = f" (seed {settings.seed})"
    t = time.perf_counter()
    open_dictionary(settings.dictionary_spec, settings.image_size)  # generate (or find) it once
    stage(f"synthetic dictionary {settings.dictionary_spec}", t)

    t = time.perf_counter()
    probes = probe_sets(settings)
    stage("probe sets" + tag, t)

    trained: dict[str, TrainedModel] = {}
    for name in MODELS:
        t = time.perf_counter()
        trained[name] = train_demo_model(settings, name, probes, log=log, progress="auto" if progress else "none")
        save_model(trained[name].model, "demo_cnn", pair_dir / "models" / name,
                   source={"trained_by": "hnd demo", "training_set": trained[name].training_set})
        stage(f"train {name} model" + tag, t)

    for name in MODELS:
        t = time.perf_counter()
        dissect_model(
            trained[name].model, card="demo_cnn", layers=settings.layers, dictionary=settings.dictionary_spec,
            out=pair_dir / name, scoring={"image_size": settings.image_size},
            run={"batch_size": 64, "fresh": True, "progress": "auto" if progress else "none", "checkpoint_every": 0},
        )
        stage(f"dissect {name} model" + tag, t)

    t = time.perf_counter()
    for name in MODELS:
        build_report(pair_dir / name)
    compare_runs([pair_dir / n for n in MODELS], pair_dir / "compare", labels=list(MODELS))
    stage("reports and comparison" + tag, t)
    return {name: _model_entry(out, pair_dir, settings, trained[name]) for name in MODELS}


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole demo into ``out`` and return the summary (also written to ``OUT/summary.json``)."""
    settings = settings or DemoSettings()
    out = _check_out(out)
    write_text(out / MARKER_FILE, "output folder of hnd demo: a rerun may replace everything here\n")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        log(f"[{timings[name]:6.1f} s] {name}")

    replicates: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for k, seed in enumerate(settings.replicate_seeds):
        pair_dir = out if k == 0 else out / REPLICATES_DIR / f"seed{seed}"
        models_k = _run_pair(out, pair_dir, settings.scaled(seed=seed), progress, stage, log)
        entry = {
            "seed": seed,
            "folder": pair_dir.relative_to(out).as_posix() or ".",
            "dictionary": settings.scaled(seed=seed).dictionary_spec,
            "probe_accuracy": {n: models_k[n]["probe_accuracy"] for n in MODELS},
            "finding": _finding(models_k),
        }
        if k == 0:
            models = models_k  # the first replicate's models are the top-level "models"
        else:
            entry["models"] = models_k
        replicates.append(entry)
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
        "finding": combine_replicates([r["finding"] for r in replicates]),
        "replicates": replicates,
        "timings": timings,
        "machine": describe_machine(),
    }
    write_json(out / SUMMARY_FILE, summary)
    write_text(out / "report.html", demo_page(summary))
    write_index(out)  # OUT/index.html, as `hnd report OUT` writes it; last: it links report.html and summary.json
    return summary
