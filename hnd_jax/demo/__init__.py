"""``hnd demo``: train a CNN on faces with a planted bias and a control, dissect both, compare.

Public API: :func:`run_demo` and :class:`DemoSettings` (the pieces: :mod:`.experiment` trains and
probes, :mod:`.measure` counts planted units from the results, :mod:`.page` writes the summary page).
"""

from hnd_jax.demo.run import run_demo
from hnd_jax.demo.settings import DemoSettings

__all__ = ["DemoSettings", "run_demo"]
