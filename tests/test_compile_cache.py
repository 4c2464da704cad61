"""hnd_jax.compile_cache: where XLA's persistent compilation cache goes, and how to turn it off."""

from __future__ import annotations

import jax
import pytest

from hnd_jax.compile_cache import ENV, compilation_cache_dir, enable_compilation_cache


@pytest.fixture
def restore_jax_cache_config():
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)


@pytest.mark.parametrize("value", ["off", "0", "OFF", " none "])
def test_off(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    assert compilation_cache_dir() is None and enable_compilation_cache() is None


def test_default_is_under_hnd_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "c"))
    assert compilation_cache_dir() == tmp_path / "c" / "xla"


def test_enable_points_jax_at_the_folder(monkeypatch, tmp_path, restore_jax_cache_config):
    monkeypatch.setenv(ENV, str(tmp_path / "xla"))
    assert enable_compilation_cache() == tmp_path / "xla"
    assert (tmp_path / "xla").is_dir()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0


def test_a_folder_that_cannot_be_made_disables_it(monkeypatch, tmp_path, restore_jax_cache_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV, str(blocker / "xla"))
    before = jax.config.jax_compilation_cache_dir
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
