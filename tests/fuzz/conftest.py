"""Hypothesis profiles for the fuzz tests of the readers of untrusted bytes.

* ``ci`` (default): a few seconds per reader, derandomized (the same examples on every run, so CI
  is reproducible), no example database written into the checkout;
* ``long``: many more examples with random seeds, for local runs:
  ``HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz``.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=3000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
