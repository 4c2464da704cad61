"""Test session set-up.

JAX must see 8 virtual CPU devices for the sharding tests, and the flag only works when it is set
before JAX is imported, so it is set here, in the first module pytest imports. Tests that need one
device build a mesh over ``jax.devices()[:1]``.

The tests mirror the package (``tests/cli`` for the command line, ``tests/scoring`` for the kernels,
...); the helper modules that build fixtures live beside the tests that use them most and are put on
``sys.path`` here, so a test in another folder (the CLI tests) can import them by name.
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = Path(__file__).parent
for helper_dir in ("dictionary", "scoring", "reports", "convert", "models", "pipeline"):
    if str(HERE / helper_dir) not in sys.path:
        sys.path.append(str(HERE / helper_dir))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pristine_fixture(tmp_path_factory):
    """The hand-made published-layout dictionary (hnd_dict_fixture.py), read-only, shared."""
    from hnd_dict_fixture import write_fixture

    return write_fixture(tmp_path_factory.mktemp("face_dictionary") / "root")


@pytest.fixture()
def fresh_fixture(pristine_fixture, tmp_path: Path):
    """A private copy of the hand-made dictionary that a test may damage."""
    from hnd_dict_fixture import Fixture

    root = tmp_path / "root"
    shutil.copytree(pristine_fixture.root, root)
    return Fixture(root=root, rows=pristine_fixture.rows, global_images=pristine_fixture.global_images)
