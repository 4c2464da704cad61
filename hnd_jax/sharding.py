"""One device mesh for the whole run (DESIGN.md §3): a ``data`` axis over images.

Results must not depend on the device count, so batches are padded to a multiple of the number of
devices with rows that a validity mask switches off, never by repeating real images. This module
holds the one padding helper (:func:`pad_rows`, :func:`padded_size`) and the one host-copy helper
(:func:`to_host`) that the scoring kernels and the pipeline share.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(num_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh with axis ``data`` over the first ``num_devices`` local devices (default: all).

    Raises HndError when more devices are asked for than this process has.
    """
    if devices is None:
        devices = jax.local_devices()
        if num_devices is not None:
            if not 1 <= num_devices <= len(devices):
                from hnd_jax.errors import HndError

                raise HndError(f"--devices {num_devices}: this process has {len(devices)} device(s)")
            devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard the leading (image) axis over ``data``; replicate the rest."""
    return NamedSharding(mesh, P(DATA_AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def padded_size(batch_size: int, mesh: Mesh) -> int:
    """``batch_size`` rounded up to a multiple of the mesh's device count (at least one row per device)."""
    devices = int(mesh.devices.size)
    return -(-max(int(batch_size), 1) // devices) * devices


def pad_rows(x: np.ndarray, size: int, fill=0) -> np.ndarray:
    """Pad the leading axis of ``x`` to ``size`` rows with ``fill`` (never by repeating real rows).

    Returns ``x`` itself when it already has ``size`` rows; raises ValueError when it has more.
    """
    n = x.shape[0]
    if n == size:
        return x
    if n > size:
        raise ValueError(f"batch of {n} rows is larger than the padded size {size}")
    pad = np.full((size - n, *x.shape[1:]), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=0)


def put_sharded(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """Place a host array (leading axis already a multiple of the mesh size) sharded over ``data``."""
    return jax.device_put(x, data_sharding(mesh, x.ndim))


def to_host(tree: Any) -> Any:
    """Every array leaf of ``tree`` as a host NumPy array (sharded arrays are gathered)."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
