"""What the demo plants and how big it runs (:class:`DemoSettings`), checked before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from hnd_jax.errors import HndError


@dataclass(frozen=True)
class DemoSettings:
    """The controlled bias experiment of ``hnd demo``.

    The task is a local concept the model must see (default: an open mouth). In the biased training
    set the planted concept (eyeglasses) comes with the positive class in ``concept_bias`` of the
    images and, drawn independently, the planted subgroup (Age=sixty_plus: white hair and forehead
    lines in the synthetic faces) in ``group_bias``; the control trains on the same kind of faces
    with neither correlated with the label.

    ``replicates`` K repeats the whole experiment (training sets, probes, initialisation, dictionary)
    with seeds ``seed .. seed + K - 1``; the verdict must hold in every replicate.

    Why these defaults (measured on 2 CPU cores; the full table is in README.md and the issue notes):

    * Smiling, the paper's example task, is a 1-2 px curve at 64 px; the demo CNN stays at chance on
      it (0.48 held out after 6 epochs), so the control would not be a trained model. An open mouth is
      learnable (0.90-0.99 held out after 4 epochs) but harder than the shortcuts, which is what
      makes a shortcut win.
    * One flag planting concept and group together made the CNN learn the easier cue alone (skin
      tone: 0.90 on skin-only probes, 0.50 on eyeglasses-only); independent flags at 0.95 each make
      both cues worth learning.
    * Age=sixty_plus is the subgroup found at every seed tried. With two-group families (skin tone,
      the Gender stand-in) the paper's 0.55 cut-off marks almost every unit as biased toward one
      side, brightness alone decides many (controls: 10 to 91 of 192 units toward one skin tone),
      and shortcut models may encode the complement; the Ethnicity stand-in (background hue) was
      found at seed 0 but not at seed 1.
    """

    task: str = "Mouth_Slightly_Open"
    planted_concept: str = "Eyeglasses"
    planted_family: str = "Age"
    planted_group: str = "sixty_plus"
    concept_bias: float = 0.95
    group_bias: float = 0.95
    train_images: int = 2000
    probe_images: int = 300
    dictionary_images: int = 1000
    image_size: int = 64
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 3e-3
    layers: tuple[str, ...] = ("conv3", "conv4")
    seed: int = 0
    replicates: int = 1

    def __post_init__(self) -> None:
        for name in ("train_images", "probe_images", "dictionary_images", "epochs", "batch_size", "image_size",
                     "replicates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise HndError(f"demo setting {name}={value!r}: expected a positive integer")
        if self.image_size < 16:
            raise HndError(f"demo setting image_size={self.image_size}: expected at least 16 pixels")
        for name in ("concept_bias", "group_bias"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.5 < float(value) <= 1.0:
                raise HndError(f"demo setting {name}={value!r}: expected a number in (0.5, 1]")
        if not self.layers:
            raise HndError("demo setting layers: give at least one layer of demo_cnn")
        if self.batch_size > self.train_images:
            raise HndError(f"demo setting batch_size={self.batch_size} exceeds train_images={self.train_images}")

    @property
    def dictionary_spec(self) -> str:
        """The synthetic dictionary both models are dissected on (cached after the first run)."""
        return f"synthetic:{self.dictionary_images}:{self.seed}"

    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        """Seeds of the ``replicates`` biased/control pairs: ``seed``, ``seed + 1``, ... (each pair gets
        its own training sets, probes, initialisation and synthetic dictionary)."""
        return tuple(self.seed + k for k in range(self.replicates))

    def scaled(self, **changes: Any) -> "DemoSettings":
        """A copy with some fields changed (e.g. the reduced sizes used in tests)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["dictionary"] = self.dictionary_spec
        return d
