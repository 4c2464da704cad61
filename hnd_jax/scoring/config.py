"""Settings of the HND scoring (DESIGN.md §2), shared by the engine, the pipeline and the CLI."""

from __future__ import annotations

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
    """

    image_size: int
    quantile: float = 0.005
    iou_threshold: float = 0.04
    iou_mode: str = "family"
    pair_factor: float = 1.5
    bias_cutoffs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from hnd_jax.errors import HndError

        if self.iou_mode not in IOU_MODES:
            raise HndError(f"--iou-mode {self.iou_mode!r}: expected one of {', '.join(IOU_MODES)}")
        if not (0.0 < self.quantile < 1.0):
            raise HndError(f"--quantile {self.quantile}: expected a number strictly between 0 and 1")
        if self.image_size <= 0:
            raise HndError(f"--image-size {self.image_size}: expected a positive integer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
