"""Train the demo's biased and control CNNs on synthetic faces, and probe what each one learned.

Both models start from the same initialisation and train with the same optimizer, epochs and
image count; only the training set's correlations differ. Probe sets (never trained on) tell the
shortcut from the task without any dissection:

* ``unbiased``: neither shortcut says anything about the label (the true task);
* ``concept_only``: only the planted concept follows the label (at ``concept_bias``);
* ``group_only``: only the planted subgroup follows the label (at ``group_bias``);
* ``conflicting``: both shortcuts point the wrong way (rates ``1 - bias``).

A model that learned the task scores alike on all four; a shortcut learner scores high on the
shortcut probes and low on ``conflicting``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from flax import nnx

from hnd_jax.demo.settings import DemoSettings
from hnd_jax.dictionary.synthetic.bias import plan_biased_training_set, render_plan
from hnd_jax.training import TrainingHistory, accuracy, train_classifier

#: Seed offsets that keep the training, probe and dictionary faces apart for one demo seed.
_TRAIN_STREAM, _PROBE_STREAM = 1000, 2000
PROBES = ("unbiased", "concept_only", "group_only", "conflicting")
MODELS = ("biased", "control")


@dataclass
class TrainedModel:
    """One trained demo CNN with what its training set planted and what the probes measured."""

    name: str
    model: nnx.Module
    training_set: dict[str, Any]
    history: TrainingHistory
    probe_accuracy: dict[str, float]


def _faces(settings: DemoSettings, num: int, seed: int, **plant: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    kwargs: dict[str, Any] = dict(
        task=settings.task,
        planted_concept=settings.planted_concept,
        planted_group=(settings.planted_family, settings.planted_group),
    )
    kwargs.update(plant)
    plan = plan_biased_training_set(num, seed, **kwargs)
    return render_plan(plan, settings.image_size), plan.labels.copy(), plan.summary()


def training_set(settings: DemoSettings, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The biased set (both shortcuts planted) or the control (same faces' distribution, none planted)."""
    seed = settings.seed + _TRAIN_STREAM
    if name == "biased":
        return _faces(settings, settings.train_images, seed, bias=settings.concept_bias, group_bias=settings.group_bias)
    if name == "control":
        return _faces(settings, settings.train_images, seed, bias=None)
    raise ValueError(f"unknown demo model {name!r}")


def probe_sets(settings: DemoSettings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four probe sets described in the module docstring (held out: their own seeds)."""
    n, base = settings.probe_images, settings.seed + _PROBE_STREAM
    cb, gb = settings.concept_bias, settings.group_bias
    plants = {
        "unbiased": dict(bias=None),
        "concept_only": dict(bias=cb, planted_group=None),
        "group_only": dict(bias=gb, planted_concept=None),
        "conflicting": dict(bias=1.0 - cb, group_bias=1.0 - gb),
    }
    return {name: _faces(settings, n, base + i, **plants[name])[:2] for i, name in enumerate(PROBES)}


def train_demo_model(
    settings: DemoSettings,
    name: str,
    probes: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    log: Callable[[str], None] = print,
    progress: bool | str = False,
) -> TrainedModel:
    """Render ``name``'s training set, train a fresh demo CNN on it, and run the probes.

    ``progress``: the training's progress mode (:func:`hnd_jax.training.train_classifier`)."""
    from hnd_jax.models.registry import build_model

    images, labels, summary = training_set(settings, name)
    model = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(settings.seed))  # same init for both
    history = train_classifier(
        model, images, labels, epochs=settings.epochs, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, seed=settings.seed, progress=progress, desc=f"train {name} model",
    )
    probe_accuracy = {p: round(accuracy(model, *probes[p]), 4) for p in PROBES}
    log(
        f"  {name}: train accuracy {history.accuracy[-1]:.3f}; probes "
        + ", ".join(f"{p} {a:.3f}" for p, a in probe_accuracy.items())
    )
    return TrainedModel(name, model, summary, history, probe_accuracy)
