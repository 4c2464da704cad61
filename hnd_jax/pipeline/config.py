"""How a dissection runs (not what it computes): batch size, cache, checkpoints, devices, progress.

:class:`~hnd_jax.scoring.config.ScoringConfig` says what is computed and enters the run's
fingerprint in full; :class:`RunConfig` says how, and only ``batch_size`` and ``devices`` enter the
fingerprint (they decide which images a checkpointed batch index refers to and how states are
sharded); ``tally`` picks the pass-2 kernel, whose counts are identical bit for bit, so a run
resumed with another kernel continues exactly. Like ScoringConfig, every field carries its command-line help in ``metadata`` and is
checked once, in ``__post_init__`` (HndError naming the option).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PROGRESS_MODES = ("auto", "bar", "plain", "none")
#: Pass-2 IoU kernels (:data:`hnd_jax.scoring.tally.METHODS`; restated to keep this module import-light).
TALLY_METHODS = ("auto", "cells", "runs", "dense")


@dataclass(frozen=True)
class RunConfig:
    """batch_size:       images per step (rounded up to a multiple of the device count).
    cache_budget:     bytes (``'2GiB'``, ``'512MiB'``, ``0``) allowed for keeping activations between
                      the passes; beyond it pass 2 recomputes them (:mod:`hnd_jax.pipeline.cache`).
    checkpoint_every: save the accumulator states every this many batches (0: never).
    devices:          local devices in the ``data`` mesh (None: all of this process's devices).
    progress:         'auto' (bars on a terminal, plain lines otherwise), 'bar', 'plain', 'none'.
    fresh:            discard an interrupted run's checkpoints instead of resuming.
    tally:            pass-2 kernel: 'auto' (per platform, :func:`hnd_jax.scoring.tally.auto_method`:
                      run-length on CPUs, cell-sparse on accelerators), 'cells', 'runs' or 'dense'.
                      All give identical counts (DESIGN.md §2b); only the speed differs.
    prefetch:         batches read ahead of the device by a background thread (0: read in the loop).
    """

    batch_size: int = field(default=32, metadata={"help": "images per step (rounded up to a multiple of the "
                                                          "device count)", "metavar": "B"})
    cache_budget: str = field(default="2GiB", metadata={
        "help": "keep activations between the passes when they fit this budget, else recompute (e.g. 512MiB, 0)",
        "metavar": "SIZE"})
    checkpoint_every: int = field(default=50, metadata={"help": "save the accumulator states every N batches "
                                                                "(0: never)", "metavar": "N"})
    devices: int | None = field(default=None, metadata={"help": "local devices to use (default: all)",
                                                         "metavar": "N"})
    progress: str = field(default="auto", metadata={
        "help": "progress display: bars on a terminal, plain lines with rate and ETA otherwise (auto), "
                "always bars, always plain lines, or none", "choices": PROGRESS_MODES})
    fresh: bool = field(default=False, metadata={"help": "ignore a previous interrupted run and start over"})
    tally: str = field(default="auto", metadata={
        "help": "pass-2 IoU kernel (identical counts, different speed): auto = run-length on CPUs, "
                "cell-sparse on GPUs/TPUs", "choices": TALLY_METHODS})
    prefetch: int = field(default=2, metadata={"help": "batches read and decoded ahead of the device by a "
                                                       "background thread (0: no read-ahead)", "metavar": "N"})

    def __post_init__(self) -> None:
        from hnd_jax.errors import HndError
        from hnd_jax.pipeline.sizes import parse_size
        from hnd_jax.scoring.config import check_int

        check_int("--batch-size", self.batch_size, low=1)
        check_int("--checkpoint-every", self.checkpoint_every, low=0)
        if self.devices is not None:
            check_int("--devices", self.devices, low=1)
        if self.progress not in PROGRESS_MODES:
            raise HndError(f"--progress {self.progress!r}: expected one of {', '.join(PROGRESS_MODES)}")
        if self.tally not in TALLY_METHODS:
            raise HndError(f"--tally {self.tally!r}: expected one of {', '.join(TALLY_METHODS)}")
        check_int("--prefetch", self.prefetch, low=0)
        parse_size(self.cache_budget)  # raises HndError naming --cache-budget

    @property
    def cache_budget_bytes(self) -> int:
        from hnd_jax.pipeline.sizes import parse_size

        return parse_size(self.cache_budget)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def coerce(cls: type, value: Any, **defaults: Any):
    """``value`` as an instance of the config dataclass ``cls``: an instance, a mapping of its fields
    or None (``defaults`` only). Unknown keys raise HndError naming them."""
    from dataclasses import fields

    from hnd_jax.errors import HndError

    if isinstance(value, cls):
        return value
    given = dict(value or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise HndError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**{**defaults, **given})
