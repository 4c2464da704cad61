"""The machine a run was measured on, for ``summary.json`` and the README's figures.

:func:`describe_machine` returns a JSON-ready dict: ``cpu`` (the model name from ``/proc/cpuinfo``,
else :func:`platform.processor`, else the architecture), ``cpu_count`` (logical CPUs),
``cpu_available`` (the CPUs this process may run on: ``os.sched_getaffinity`` where it exists),
``os`` (:func:`platform.platform`), ``python``, and JAX's ``jax_backend``, ``jax_device_kind``
(``jax.devices()[0].device_kind``) and ``jax_device_count``. Never raises: a field that cannot be read
is ``None``.

:func:`measured_on` adds what a benchmark's JSON needs besides the machine: ``date`` (UTC, ISO 8601)
and ``load_average`` (``os.getloadavg()``: 1, 5 and 15-minute averages; ``None`` where the OS has
none). Every benchmark script stores it under the key ``"machine"``; the README's figures are rendered
from it (:mod:`hnd_jax.demo.bench_figures`).
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine() -> dict[str, Any]:
    """The machine's CPU, core counts, OS and JAX devices (see the module docstring)."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count()}
    try:
        info["cpu_available"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cpu_available"] = info["cpu_count"]
    info["os"] = platform.platform()
    info["python"] = platform.python_version()
    try:
        import jax

        devices = jax.devices()
        info.update(jax_backend=jax.default_backend(), jax_device_kind=devices[0].device_kind,
                    jax_device_count=len(devices), jax=jax.__version__)
    except Exception:  # noqa: BLE001 - a description must never fail the run it describes
        info.update(jax_backend=None, jax_device_kind=None, jax_device_count=None, jax=None)
    return info


def measured_on() -> dict[str, Any]:
    """:func:`describe_machine` plus ``date`` (UTC, ISO 8601) and ``load_average`` (1/5/15 min, or ``None``)."""
    info = describe_machine()
    info["date"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        info["load_average"] = None
    return info
