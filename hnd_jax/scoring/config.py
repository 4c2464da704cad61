"""Settings of the HND scoring (DESIGN.md §2), stated once for the engine, the pipeline and the CLI.

Each field carries its command-line help in ``metadata`` (``help``, optionally ``metavar`` and
``choices``); :func:`hnd_jax.cli.common.add_config_options` builds the options, their help and
their shown defaults from here, and :meth:`ScoringConfig.__post_init__` is the one place the
values are checked. A value out of range raises :class:`~hnd_jax.errors.HndError` naming the option.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

IOU_MODES = ("family", "labeled", "official")
#: Largest analysis size S: a per-image count must be exact in float32 accumulation (S*S < 2**24).
MAX_IMAGE_SIZE = 4096


def _option(help: str, **extra: Any) -> dict[str, Any]:
    return {"help": help, **extra}


@dataclass(frozen=True)
class ScoringConfig:
    """How units are scored.

    image_size:     S, the analysis resolution (binary maps and masks are S x S), pixels; 1..MAX_IMAGE_SIZE.
    quantile:       q; the threshold T_u is the (1 - q) quantile of unit u's raw values (§2).
    iou_threshold:  a unit is localizable when its best IoU reaches this (paper: 0.04).
    iou_mode:       which images enter a concept's IoU: 'family' (default), 'labeled', 'official'.
    pair_factor:    a unit is paired with concept c when P(c|u) > pair_factor / |R| (paper: 1.5).
    bias_cutoffs:   overrides per global family name -> cutoff; families not listed use the
                    taxonomy's cutoff (0.3 for 4 groups, 0.55 for 2 groups, else 1.2/G).
    permutations:   permutations of the group labels per global family for the bias p-values
                    (DESIGN.md §2c); the smallest p-value is 1 / (1 + permutations).
    alpha:          Benjamini-Hochberg level for ``biased_significant_<F>`` and ``paired_significant``.
    seed:           seed of the permutations (family k of the taxonomy uses ``[seed, k]``).

    Raises HndError for a value out of range (the message names the command-line option).
    """

    image_size: int = field(metadata=_option("analysis size S in pixels: masks and upsampled maps are S x S "
                                             "(default: the model's input size)", metavar="S"))
    quantile: float = field(default=0.005, metadata=_option(
        "tail quantile q: the threshold T_u is the (1 - q) quantile of the unit's activations", metavar="Q"))
    iou_threshold: float = field(default=0.04, metadata=_option(
        "a unit is localizable when its best IoU reaches this", metavar="T"))
    iou_mode: str = field(default="family", metadata=_option(
        "images in a concept's IoU: family (every image of the concept's family), labeled (images "
        "labelled with it), official (labelled and the unit fires: the published code)", choices=IOU_MODES))
    pair_factor: float = field(default=1.5, metadata=_option(
        "a unit is paired with concept c when P(c|u) > F / |R| (R: the unit's region)", metavar="F"))
    bias_cutoffs: dict[str, float] = field(default_factory=dict)
    permutations: int = field(default=1000, metadata=_option(
        "label permutations per global family for the bias p-values (smallest p: 1/(1+N))", metavar="N"))
    alpha: float = field(default=0.05, metadata=_option(
        "Benjamini-Hochberg false discovery rate for the significant biased and paired units", metavar="A"))
    seed: int = field(default=0, metadata=_option("seed of the label permutations", metavar="K",
                                                  flag="--permutation-seed"))

    def __post_init__(self) -> None:
        from hnd_jax.errors import HndError

        if self.iou_mode not in IOU_MODES:
            raise HndError(f"--iou-mode {self.iou_mode!r}: expected one of {', '.join(IOU_MODES)}")
        _check_number("--quantile", self.quantile, low=0.0, high=1.0, low_open=True, high_open=True)
        _check_number("--iou-threshold", self.iou_threshold, low=0.0, high=1.0)
        _check_number("--pair-factor", self.pair_factor, low=0.0, low_open=True)
        check_int("--image-size", self.image_size, low=1, high=MAX_IMAGE_SIZE,
                  why="counts per image are exact only while S*S < 2**24")
        for family, cutoff in self.bias_cutoffs.items():
            _check_number(f"bias cut-off of {family}", cutoff, low=0.0, high=1.0, low_open=True)
        check_int("--permutations", self.permutations, low=1)
        _check_number("--alpha", self.alpha, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("--permutation-seed", self.seed, low=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_int(name: str, value: Any, *, low: int, high: int | None = None, why: str = "") -> None:
    """HndError naming the option unless ``value`` is an integer (not a bool) in ``low..high``
    (``high`` None: no upper bound); ``why`` is added to the message after the bounds."""
    from hnd_jax.errors import HndError

    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rule = f">= {low}" if high is None else f">= {low} and <= {high}"
        raise HndError(f"{name} {value!r}: expected an integer {rule}" + (f" ({why})" if why else ""))


def _check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    """HndError unless ``value`` is a finite real number within the stated bounds."""
    from hnd_jax.errors import HndError

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rule = " and ".join(x for x in (lo, hi) if x)
        raise HndError(f"{name} {value!r}: expected a finite number {rule}".rstrip())
