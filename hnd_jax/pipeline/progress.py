"""Progress bars for the long stages (tqdm on stderr, with rate and ETA).

Disabled when the caller asks (``progress=False``) or when stderr is not a terminal, so logs and test
output stay clean.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_enabled(requested: bool) -> bool:
    """Bars only when asked for AND stderr is an interactive terminal."""
    return bool(requested) and sys.stderr.isatty()


def stage_bar(desc: str, total: int, *, enabled: bool, initial: int = 0, unit: str = "img") -> tqdm:
    """A bar counting images of one stage; ``initial`` lets a resumed stage start where it stopped."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=False,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )
