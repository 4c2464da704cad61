"""Test session set-up.

JAX must see 8 virtual CPU devices for the sharding tests, and the flag only works when it is set
before JAX is imported, so it is set here, in the first module pytest imports. Tests that need one
device build a mesh over ``jax.devices()[:1]``.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
