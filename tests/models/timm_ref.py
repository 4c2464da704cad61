"""timm itself as the reference for the ViTs, imported beside the pinned torch without torchvision.

timm (installed with ``pip install --no-deps timm``, see .ci/run) imports torchvision at import time
for its data transforms and FrozenBatchNorm2d, none of which a ViT forward uses. The torchvision
wheel that matches the pinned torch cannot be installed here, so when ``import torchvision`` fails a
stand-in package is put in its place: every ``torchvision.*`` module and attribute is an inert,
distinct placeholder class. Only timm's model code runs in the tests; if timm ever called into
torchvision during a ViT forward, the placeholder would raise (it computes nothing).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import pytest


class _Placeholder(type):
    _made: dict[str, type] = {}

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__name__}.{name}")


def _placeholder(name: str) -> type:
    if name not in _Placeholder._made:
        def init(self, *args, **kwargs):
            raise RuntimeError(f"torchvision stand-in {name} was used: timm needed real torchvision here")

        _Placeholder._made[name] = _Placeholder(name, (), {"__init__": init})
    return _Placeholder._made[name]


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        return None


def import_timm():
    """``timm``, or a pytest skip saying why (not installed: .ci/run installs it)."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (.ci/run installs it with `pip install --no-deps timm`)")
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or a wheel built for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if not any(isinstance(f, _StandInFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _StandInFinder())
    import timm

    return timm
