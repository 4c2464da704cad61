"""Settings of the HND scoring (DESIGN.md §2), shared by the engine, the pipeline and the CLI."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

IOU_MODES = ("family", "labeled", "official")


@dataclass(frozen=True)
class ScoringConfig:
    """How units are scored.

    image_size:     S, the analysis resolution (binary maps and masks are S x S).
    quantile:       q; the threshold T_u is the (1 - q) quantile of unit u's raw values.
    iou_threshold:  a unit is localizable when its best IoU reaches this.
    iou_mode:       which images enter a concept's IoU: 'family' (default), 'labeled', 'official'.
    pair_factor:    a unit is paired with concept c when P(c|u) > pair_factor / |R|.
    bias_cutoffs:   overrides per global family name -> cutoff; families not listed use the
                    taxonomy's cutoff (0.3 for 4 groups, 0.55 for 2 groups, else 1.2/G).
    permutations:   permutations of the group labels per global family for the bias p-values
                    (DESIGN.md §2c); the smallest p-value is 1 / (1 + permutations).
    alpha:          Benjamini-Hochberg level for ``biased_significant_<F>`` and ``paired_significant``.
    seed:           seed of the permutations (family k of the taxonomy uses ``[seed, k]``).
    """

    image_size: int
    quantile: float = 0.005
    iou_threshold: float = 0.04
    iou_mode: str = "family"
    pair_factor: float = 1.5
    bias_cutoffs: dict[str, float] = field(default_factory=dict)
    permutations: int = 1000
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        from hnd_jax.errors import HndError

        if self.iou_mode not in IOU_MODES:
            raise HndError(f"--iou-mode {self.iou_mode!r}: expected one of {', '.join(IOU_MODES)}")
        if not (0.0 < self.quantile < 1.0):
            raise HndError(f"--quantile {self.quantile}: expected a number strictly between 0 and 1")
        if self.image_size <= 0:
            raise HndError(f"--image-size {self.image_size}: expected a positive integer")
        if isinstance(self.permutations, bool) or not isinstance(self.permutations, numbers.Integral) or self.permutations < 1:
            raise HndError(f"--permutations {self.permutations!r}: expected a whole number of at least 1")
        if not (0.0 < self.alpha < 1.0):
            raise HndError(f"--alpha {self.alpha}: expected a number strictly between 0 and 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise HndError(f"--seed {self.seed!r}: expected a whole number >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
