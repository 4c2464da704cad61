"""Synthetic training sets with a planted bias, for the controlled bias experiment of ``hnd demo``.

The paper's controlled experiment trains a face model on data where a task correlates with a
concept and a demographic group, then checks that dissection finds units for that concept and
units biased toward that group. :func:`biased_training_set` builds such data with the synthetic
face renderer (:mod:`hnd_jax.dictionary.synthetic.face`), so the dissection can be checked against a
known truth.

What is planted, exactly (:func:`plan_biased_training_set`):

* ``labels`` are balanced: ``ceil(N/2)`` positives (the ``task`` concept is drawn on the face) and
  ``floor(N/2)`` negatives (it is not), in random order.
* Every image has a **shortcut flag** ``planted``. A planted image shows the ``planted_concept`` AND
  belongs to ``planted_group`` (e.g. wears eyeglasses and has dark skin); an image that is not
  planted shows neither (no eyeglasses, and a group drawn uniformly from the family's other
  groups, e.g. bright skin).
* In the positive class exactly ``round(bias * n_pos)`` images are planted; in the negative class
  exactly ``round(negative_rate * n_neg)``, where ``negative_rate`` defaults to ``1 - bias``. So with
  ``bias=0.9`` the shortcut agrees with the label on 90% of the images.
* ``group_bias`` decouples the two shortcuts: by default one flag plants both (the concept and the
  group always come together); with ``group_bias`` set, the group flag is drawn on its own, in
  ``round(group_bias * n_pos)`` positives and ``round((1 - group_bias) * n_neg)`` negatives. A weaker
  group shortcut than concept shortcut keeps a small CNN from learning the easy global cue (skin
  tone) alone and ignoring the local one.
* ``bias=None`` (or 0.5) is the unbiased control: half of each class is planted, so the shortcut
  says nothing about the label (``group_bias`` is then ignored: the group is unbiased too).
* Everything else is random and independent of the label: the other global attributes, the
  face jitter, and a few distractor cues from the task's concept set (each with probability
  ``distractor_rate``, never the task or planted concept, nothing that conflicts with them).

Images are drawn in the synthetic dictionary's 178x218 frame and resized to ``size`` x ``size``
with PIL bicubic, exactly as the dictionary reader delivers dictionary images at analysis size
``size``: the trained model and the dissection see the same kind of picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from hnd_jax.dictionary.synthetic.face import (
    ACTION_UNITS,
    ATTRIBUTES,
    DRAWABLE_CONCEPTS,
    GLOBAL_GROUPS,
    PARTS,
    FaceSpec,
    conflicts_with,
    render_face,
    sample_globals,
    sample_jitter,
)
from hnd_jax.errors import HndError

_STREAM_PLAN, _STREAM_FACE = 11, 12
CELEBA_FRAME = (178, 218)  # the synthetic dictionary's attribute/part image size


@dataclass(frozen=True)
class BiasPlan:
    """The faces of a planted-bias training set, before rendering.

    specs: one FaceSpec per image; labels: int64 [N] (1 = task concept present);
    planted: bool [N] (the planted concept is drawn); in_group: bool [N] (the image belongs to the
    planted group; equal to ``planted`` unless ``group_bias`` was given); groups: [N] str, the
    image's group in the planted family.
    """

    specs: tuple[FaceSpec, ...]
    labels: np.ndarray
    planted: np.ndarray
    groups: np.ndarray
    task: str
    planted_concept: str | None
    planted_family: str | None
    planted_group: str | None
    bias: float
    negative_rate: float
    in_group: np.ndarray | None = None
    group_bias: float | None = None

    def summary(self) -> dict:
        """Rates per class, for logs and the demo's summary.json."""
        pos, neg = self.labels == 1, self.labels == 0
        return {
            "task": self.task,
            "planted_concept": self.planted_concept,
            "planted_group": None if self.planted_family is None else [self.planted_family, self.planted_group],
            "bias": self.bias,
            "negative_rate": self.negative_rate,
            "num_images": int(len(self.labels)),
            "planted_rate_positive": float(self.planted[pos].mean()) if pos.any() else None,
            "planted_rate_negative": float(self.planted[neg].mean()) if neg.any() else None,
            "group_bias": self.group_bias,
            "group_rate_positive": float(self.in_group[pos].mean()) if pos.any() and self.in_group is not None else None,
            "group_rate_negative": float(self.in_group[neg].mean()) if neg.any() and self.in_group is not None else None,
        }


_FIELD_OF_FAMILY = {"Age": "age", "Gender": "gender", "Ethnicity": "ethnicity"}


def _check(task: str, planted_concept: str | None, planted_group, bias, negative_rate, num_images) -> None:
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 2:
        raise HndError(f"num_images must be an integer >= 2, got {num_images!r}")
    for what, name in (("task", task), ("planted_concept", planted_concept)):
        if name is None and what == "planted_concept":
            continue
        if name not in DRAWABLE_CONCEPTS or name in PARTS:
            raise HndError(
                f"{what} {name!r} is not a drawable concept that can be present or absent "
                f"(choose one of {', '.join(sorted(DRAWABLE_CONCEPTS - set(PARTS)))})"
            )
    if planted_concept is not None and (planted_concept == task or conflicts_with(planted_concept, {task})):
        raise HndError(f"planted_concept {planted_concept!r} cannot be planted on the task {task!r} (same or conflicting cue)")
    if planted_group is not None:
        try:
            family, group = planted_group
        except (TypeError, ValueError):
            raise HndError(f"planted_group must be (family, group), got {planted_group!r}") from None
        if family not in GLOBAL_GROUPS or group not in GLOBAL_GROUPS[family]:
            known = "; ".join(f"{f}: {', '.join(g)}" for f, g in GLOBAL_GROUPS.items())
            raise HndError(f"planted_group {planted_group!r} is not a drawable global group ({known})")
    if planted_concept is None and planted_group is None:
        raise HndError("nothing to plant: give planted_concept, planted_group or both")
    for what, value in (("bias", bias), ("negative_rate", negative_rate)):
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
            raise HndError(f"{what} must be a number in [0, 1] (or None), got {value!r}")


def _distractor_pool(task: str, excluded: set[str]) -> list[str]:
    family = ATTRIBUTES if task in ATTRIBUTES else ACTION_UNITS
    return [c for c in family if c not in excluded and not conflicts_with(c, excluded)]


def plan_biased_training_set(
    num_images: int,
    seed: int,
    *,
    task: str = "Smiling",
    planted_concept: str | None = "Eyeglasses",
    planted_group: tuple[str, str] | None = ("skin_tone", "dark"),
    bias: float | None = 0.9,
    negative_rate: float | None = None,
    distractor_rate: float = 0.2,
    group_bias: float | None = None,
) -> BiasPlan:
    """Decide every face of the training set (see the module docstring for what is planted)."""
    _check(task, planted_concept, planted_group, bias, negative_rate, num_images)
    if group_bias is not None and not (isinstance(group_bias, (int, float)) and 0.0 <= float(group_bias) <= 1.0):
        raise HndError(f"group_bias must be a number in [0, 1] (or None), got {group_bias!r}")
    p_pos = 0.5 if bias is None else float(bias)
    p_neg = 1.0 - p_pos if negative_rate is None else float(negative_rate)
    rng = np.random.default_rng([int(seed), _STREAM_PLAN])
    n = int(num_images)
    n_pos = (n + 1) // 2
    labels = rng.permutation(np.r_[np.ones(n_pos, np.int64), np.zeros(n - n_pos, np.int64)])

    def draw_flags(rate_pos: float, rate_neg: float) -> np.ndarray:
        flags = np.zeros(n, dtype=bool)
        for cls, rate in ((1, rate_pos), (0, rate_neg)):
            members = np.flatnonzero(labels == cls)
            flags[rng.choice(members, size=int(round(rate * len(members))), replace=False)] = True
        return flags

    planted = draw_flags(p_pos, p_neg)
    separate_group = group_bias is not None and bias is not None and planted_group is not None
    in_group = draw_flags(float(group_bias), 1.0 - float(group_bias)) if separate_group else planted

    family, group = planted_group if planted_group is not None else (None, None)
    other_groups = [g for g in GLOBAL_GROUPS[family] if g != group] if family else []
    excluded = {task} | ({planted_concept} if planted_concept else set())
    pool = _distractor_pool(task, excluded)
    specs, groups = [], []
    for i in range(n):
        face_rng = np.random.default_rng([int(seed), _STREAM_FACE, i])
        cues: set[str] = set()
        for c in pool:
            if face_rng.random() < distractor_rate and not conflicts_with(c, cues | excluded):
                cues.add(c)
        if labels[i] == 1:
            cues.add(task)
        if planted[i] and planted_concept is not None:
            cues.add(planted_concept)
        fixed = {}
        if family is not None:
            other = other_groups[int(face_rng.integers(len(other_groups)))]  # drawn always: same faces
            fixed[family] = group if in_group[i] else other  # across bias settings
            groups.append(fixed[family])
        else:
            groups.append("")
        specs.append(FaceSpec(concepts=frozenset(cues), jitter=sample_jitter(face_rng), **sample_globals(face_rng, fixed)))
    return BiasPlan(
        specs=tuple(specs),
        labels=labels,
        planted=planted,
        groups=np.array(groups),
        task=task,
        planted_concept=planted_concept,
        planted_family=family,
        planted_group=group,
        bias=p_pos,
        negative_rate=p_neg,
        in_group=in_group,
        group_bias=float(group_bias) if separate_group else None,
    )


def render_plan(
    plan: BiasPlan, size: int = 64, *, frame: tuple[int, int] = CELEBA_FRAME, resample: str = "bicubic"
) -> np.ndarray:
    """uint8 [N, size, size, 3]: the plan's faces drawn in a ``frame`` (W, H) and resized to ``size``.

    The default frame is the dictionary's CelebA-like 178x218 and the default filter the dictionary
    reader's (PIL bicubic), so a model trained on these images sees faces exactly as it will see the
    synthetic dictionary's attribute images at the analysis size ``size``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise HndError(f"size must be an integer >= 16 pixels, got {size!r}")
    try:
        filt = Image.Resampling[str(resample).upper()]
    except KeyError:
        raise HndError(f"resample {resample!r} is not a PIL filter (nearest, box, bilinear, bicubic, lanczos)") from None
    out = np.empty((len(plan.specs), size, size, 3), dtype=np.uint8)
    for i, spec in enumerate(plan.specs):
        image, _ = render_face(spec, frame)
        if image.shape[:2] != (size, size):
            image = np.asarray(Image.fromarray(image).resize((size, size), resample=filt))
        out[i] = image
    return out


def biased_training_set(
    num_images: int,
    seed: int,
    *,
    size: int = 64,
    task: str = "Smiling",
    planted_concept: str | None = "Eyeglasses",
    planted_group: tuple[str, str] | None = ("skin_tone", "dark"),
    bias: float | None = 0.9,
    negative_rate: float | None = None,
    group_bias: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, size, size, 3], labels int64 [N]) with the planted bias described above.

    The default plants "smiling faces mostly wear eyeglasses and have dark skin" at 90%; ``bias=None``
    gives the unbiased control with the same faces otherwise. Use :func:`plan_biased_training_set`
    to see which images were planted.
    """
    plan = plan_biased_training_set(
        num_images, seed, task=task, planted_concept=planted_concept, planted_group=planted_group,
        bias=bias, negative_rate=negative_rate, group_bias=group_bias,
    )
    return render_plan(plan, size), plan.labels.copy()
