"""Fixtures for the dictionary reader tests: the hand-made published-layout fixture (see hnd_dict_fixture.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hnd_dict_fixture import Fixture, write_fixture  # noqa: E402


@pytest.fixture(scope="session")
def pristine_fixture(tmp_path_factory) -> Fixture:
    """Read-only fixture shared by the tests that do not modify it."""
    return write_fixture(tmp_path_factory.mktemp("face_dictionary") / "root")


@pytest.fixture()
def fresh_fixture(pristine_fixture: Fixture, tmp_path: Path) -> Fixture:
    """A private copy that a test may damage."""
    root = tmp_path / "root"
    shutil.copytree(pristine_fixture.root, root)
    return Fixture(root=root, rows=pristine_fixture.rows, global_images=pristine_fixture.global_images)
