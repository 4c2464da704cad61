"""The demo's optax training loop: learns, and leaves BatchNorm statistics that match the final weights."""

from __future__ import annotations

import numpy as np
from flax import nnx

from hnd_jax.models.capture import forward_with_layers
from hnd_jax.models.registry import build_model
from hnd_jax.training import accuracy, recalibrate_batch_norm, train_classifier


def _toy_images(n=128, size=16, seed=0):
    """uint8 images; label 1 iff the left half is brighter than the right half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.integers(60, 120, size=(n, size, size, 3))
    x[:, :, : size // 2] += np.where(y == 1, 80, -50)[:, None, None, None]
    return np.clip(x, 0, 255).astype(np.uint8), y


def test_recalibration_sets_running_stats_to_the_data_statistics():
    model = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0))
    images, _ = _toy_images(n=32)
    view = nnx.view(model, use_running_average=False)
    recalibrate_batch_norm(view, images, batch_size=32, batches=200)  # 0.9**200: the old stats are gone
    _, acts = forward_with_layers(model, images.astype(np.float32) / 255.0, ["conv1"])
    conv1 = np.asarray(acts["conv1"], np.float64).reshape(-1, 16)
    np.testing.assert_allclose(np.asarray(model.bn1.mean.get_value()), conv1.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.bn1.var.get_value()), conv1.var(0), rtol=1e-3, atol=1e-6)
    assert model.bn1.use_running_average  # the kept model is still in inference mode


def test_training_learns_and_inference_mode_agrees_with_training_accuracy():
    model = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(1))
    images, labels = _toy_images(n=256, seed=1)
    held_x, held_y = _toy_images(n=128, seed=2)
    history = train_classifier(model, images, labels, epochs=3, batch_size=32, learning_rate=3e-3,
                               heldout=(held_x, held_y))
    assert len(history.loss) == 3 and history.loss[-1] < history.loss[0]
    assert history.accuracy[-1] > 0.9
    # inference mode (running statistics) must not collapse to one class
    assert history.heldout_accuracy > 0.9
    assert accuracy(model, images, labels) > 0.9


def test_training_progress_shows_steps_eta_epochs_and_time(capsys):
    """Plain mode (logs): step counts with rate and ETA, each epoch's loss, the stage's time at the end."""
    model = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0))
    images, labels = _toy_images(n=64, seed=3)
    history = train_classifier(model, images, labels, epochs=2, batch_size=16, progress="plain", desc="train toy")
    err = capsys.readouterr().err.splitlines()
    steps = [l for l in err if "/8 step" in l]
    assert steps and all("ETA" in l and "step/s" in l for l in steps), err
    assert steps[-1].startswith("hnd: train toy: 8/8 step")
    for e in (1, 2):
        assert any(f"epoch {e}/2: loss {history.loss[e - 1]:.3f}" in l for l in err), err
    assert err[-1].startswith("hnd: train toy: done in ") and "(8 step," in err[-1]


def test_training_is_silent_without_progress_and_unchanged_by_it(capsys):
    images, labels = _toy_images(n=64, seed=3)
    quiet = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0))
    h_quiet = train_classifier(quiet, images, labels, epochs=1, batch_size=16)
    assert capsys.readouterr() == ("", "")
    loud = build_model("demo_cnn", num_outputs=2, rngs=nnx.Rngs(0))
    h_loud = train_classifier(loud, images, labels, epochs=1, batch_size=16, progress="plain")
    assert h_quiet.loss == h_loud.loss  # progress output never changes the training
