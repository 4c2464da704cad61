"""One device mesh for the whole run (DESIGN.md §3): a ``data`` axis over images.

Results must not depend on the device count, so batches are padded to a multiple of the number of
devices with rows that a validity mask switches off, never by repeating real images.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(num_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh with axis ``data`` over the first ``num_devices`` local devices (default: all)."""
    if devices is None:
        devices = jax.devices()
        if num_devices is not None:
            if not 1 <= num_devices <= len(devices):
                from hnd_jax.errors import HndError

                raise HndError(f"--devices {num_devices}: this host has {len(devices)} device(s)")
            devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard the leading (image) axis over ``data``; replicate the rest."""
    return NamedSharding(mesh, P(DATA_AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def pad_to_devices(x: np.ndarray, mesh: Mesh, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """Pad the leading axis to a multiple of the mesh size. Returns (padded, valid[B'] bool)."""
    n = x.shape[0]
    size = mesh.devices.size
    target = -(-max(n, 1) // size) * size
    valid = np.zeros(target, dtype=bool)
    valid[:n] = True
    if target == n:
        return x, valid
    pad = np.full((target - n, *x.shape[1:]), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=0), valid


def put_sharded(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """Place a host array (leading axis already a multiple of the mesh size) sharded over ``data``."""
    return jax.device_put(x, data_sharding(mesh, x.ndim))
