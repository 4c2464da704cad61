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
#: Settings only :meth:`hnd_jax.scoring.engine.LayerScorer.finalize` reads (after every pass): the
#: IoU cut, the pairing factor, the bias cut-offs and the significance tests. A resumed run may change
#: them (its checkpointed states do not depend on them); image size, quantile and IoU mode it may not.
FINALIZE_ONLY = ("iou_threshold", "pair_factor", "bias_cutoffs", "permutations", "alpha", "seed")
#: Largest analysis size S: a per-image count must be exact in float32 accumulation (S*S < 2**24).
MAX_IMAGE_SIZE = 4096

#: Upper bound of ``--permutations``, checked with the other settings before any pass runs (the
#: permutation test only runs when the results are finalised, after every pass, so a value nothing can
#: compute would otherwise fail at the very end). Why 10**6 is enough and affordable
#: (hnd_jax/scoring/significance.py, ``global_permutation_test``):
#:
#: * resolution: a permutation p-value is at least 1 / (1 + N), and Benjamini-Hochberg at level alpha
#:   over m tests rejects nothing above alpha / m; 10**6 permutations reach p ~ 1e-6, below
#:   0.05 / m for up to m = 5 * 10**4 tests (m = U * sum of G over the global families: 4,000 units
#:   times the Face Dictionary's 12 global groups). More permutations cannot add a rejection there.
#: * time: each permutation is one float64 product [n, U] x [n, G] per global family (n: the family's
#:   images), 2 n U G flops; at 10**6, n = 1,000, U = 512, G = 4 that is 4e12 flops per family and
#:   layer, measured at about 3 minutes on a shared 2-core CPU (20,000 permutations in 3.3 s), i.e.
#:   roughly 10 minutes per layer for the Face Dictionary's four global families at this size.
#: * memory: the permutations are drawn and counted in chunks of at most ``CHUNK_VALUES`` labels
#:   (about 20 bytes each while drawn: int64 indices, their int64 gather, the int32 labels), so memory
#:   does not grow with N; only the p-value arrays [U, G] and one block's sums [K, U, G] stay.
MAX_PERMUTATIONS = 10**6


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
                    (DESIGN.md §2c); the smallest p-value is 1 / (1 + permutations); at most
                    :data:`MAX_PERMUTATIONS` (why: the comment above it).
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
        "label permutations per global family for the bias p-values (smallest p: 1/(1+N); at most 1,000,000)",
        metavar="N"))
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
                  why=" (counts per image are exact only while S*S < 2**24)")
        for family, cutoff in self.bias_cutoffs.items():
            _check_number(f"bias cut-off of {family}", cutoff, low=0.0, high=1.0, low_open=True)
        check_int("--permutations", self.permutations, low=1, high=MAX_PERMUTATIONS,
                  why=" (p-values down to 1e-6; see MAX_PERMUTATIONS in hnd_jax/scoring/config.py)")
        _check_number("--alpha", self.alpha, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("--permutation-seed", self.seed, low=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def streaming_dict(self) -> dict[str, Any]:
        """The fields the passes' accumulators depend on (what a checkpoint's states were computed
        with): every field but :data:`FINALIZE_ONLY`, which only the final scoring reads."""
        return {k: v for k, v in asdict(self).items() if k not in FINALIZE_ONLY}


def check_int(name: str, value: Any, *, low: int, high: int | None = None, why: str = "") -> None:
    """HndError naming the option unless ``value`` is an integer (not a bool) in ``low..high``
    (``high`` None: no upper bound); ``why`` is appended to the message of a value above ``high``."""
    from hnd_jax.errors import HndError

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise HndError(f"{name} {value!r}: expected an integer >= {low}")
    if high is not None and value > high:
        raise HndError(f"{name} {value!r}: expected an integer from {low} to {high:,}{why}")


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
