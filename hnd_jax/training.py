"""A small optax training loop for NNX classifiers (the demo trains its biased and control CNNs here).

Kept deliberately plain: inputs are uint8 NHWC images scaled to [0, 1] (the same preprocessing the
demo model card declares, so dissection sees what training saw), softmax cross-entropy on integer
labels, Adam with a cosine-decayed learning rate, a fixed number of epochs over a seeded shuffle,
then a BatchNorm statistics refresh (:func:`recalibrate_batch_norm`). Deterministic for a seed on one device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclass
class TrainingHistory:
    """Per-epoch mean training loss and accuracy, plus held-out accuracy when a split was given."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    heldout_accuracy: float | None = None


def _to_inputs(images_uint8: np.ndarray) -> jax.Array:
    return jnp.asarray(images_uint8, dtype=jnp.float32) / 255.0


@nnx.jit
def _train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
    def loss_fn(m):
        logits = m(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)


@nnx.jit
def _forward(model: nnx.Module, x: jax.Array) -> jax.Array:
    return model(x)


@nnx.jit
def _predict(model: nnx.Module, x: jax.Array) -> jax.Array:
    return jnp.argmax(model(x), axis=-1)


def accuracy(model: nnx.Module, images_uint8: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Classification accuracy of ``model`` as built (BatchNorm in inference mode: running statistics)."""
    hits = 0
    for start in range(0, len(labels), batch_size):
        pred = _predict(model, _to_inputs(images_uint8[start : start + batch_size]))
        hits += int(np.sum(np.asarray(pred) == labels[start : start + batch_size]))
    return hits / max(len(labels), 1)


def recalibrate_batch_norm(train_view: nnx.Module, images_uint8: np.ndarray, batch_size: int, *, batches: int = 40) -> None:
    """Refresh BatchNorm running statistics with the final weights (forward passes, no updates).

    The running averages trail the weights by ~1/(1 - momentum) steps; after the last, still large
    Adam steps they can describe a network that no longer exists, and inference-mode predictions
    collapse to one class even at high training accuracy (measured on the demo's biased set:
    0.95 training accuracy, 0.50 in inference mode, 0.97 after this refresh). ``batches`` forward
    passes of the training view (momentum 0.9) make the old statistics' weight 0.9**40 ~ 1.5%.
    """
    n = len(images_uint8)
    for b in range(batches):
        start = (b * batch_size) % max(n - batch_size + 1, 1)
        _forward(train_view, _to_inputs(images_uint8[start : start + batch_size]))


def train_classifier(
    model: nnx.Module,
    images_uint8: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 4,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    heldout: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool | str = False,
    desc: str = "train",
) -> TrainingHistory:
    """Train ``model`` in place on (images, labels) and return the loss/accuracy history.

    The last incomplete batch is dropped so every step has the same shape (one compilation).
    ``progress`` is a mode of :mod:`hnd_jax.pipeline.progress` (``True`` = ``'auto'``: a tqdm bar over
    the training steps with ETA on a terminal, plain lines with rate and ETA otherwise; ``False`` /
    ``'none'``: silent), on stderr under the name ``desc``; each epoch's loss and accuracy are shown
    as the bar's postfix (a line in plain mode), and the stage's time when it ends.
    """
    from hnd_jax.pipeline.progress import StageProgress

    labels = np.asarray(labels, dtype=np.int32)
    n = len(labels)
    if n < batch_size:
        batch_size = n
    # BatchNorm layers are built in inference mode; the training view shares the model's arrays.
    train_model = nnx.view(model, use_running_average=False)
    steps = n // batch_size
    schedule = optax.cosine_decay_schedule(learning_rate, decay_steps=max(steps * epochs, 1), alpha=0.05)
    optimizer = nnx.Optimizer(train_model, optax.adam(schedule), wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    history = TrainingHistory()
    with StageProgress(desc, steps * epochs, mode=progress, unit="step") as bar:  # a stop says where
        for epoch in range(epochs):
            order = rng.permutation(n)
            losses, accs = [], []
            for step in range(steps):
                idx = order[step * batch_size : (step + 1) * batch_size]
                loss, acc = _train_step(train_model, optimizer, _to_inputs(images_uint8[idx]), jnp.asarray(labels[idx]))
                losses.append(float(loss))
                accs.append(float(acc))
                bar.update(1)
            history.loss.append(float(np.mean(losses)))
            history.accuracy.append(float(np.mean(accs)))
            bar.note(f"epoch {epoch + 1}/{epochs}: loss {history.loss[-1]:.3f}, train accuracy {history.accuracy[-1]:.3f}")
        recalibrate_batch_norm(train_model, images_uint8[rng.permutation(n)], batch_size)
    if heldout is not None:
        history.heldout_accuracy = accuracy(model, *heldout)
    return history
