"""Put a finished run's results in place without ever losing the previous ones (DESIGN.md §7).

A rerun into an OUT that holds finished results must not destroy them before its own results are
complete: a run can still fail late (NaN weights, a full disk, a kill). So results are written into
``OUT/.incoming/`` first, in full, and only then swapped in:

1. ``OUT/.incoming/<layer>/`` (scores.npz, units.csv) and ``OUT/.incoming/dissection.json`` are written;
2. the old ``OUT/dissection.json`` is removed (from here on OUT does not look complete);
3. each ``OUT/<layer>`` is moved to ``OUT/.outgoing/`` and the new one renamed into place;
4. the new ``dissection.json`` is renamed into place last: OUT is complete again;
5. ``.outgoing`` and ``.incoming`` are removed.

Every rename is within one file system, so each step is atomic; a failure before step 2 leaves the
previous results untouched, and :func:`clean_staging` removes what a killed run left behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hnd_jax.results import DISSECTION_FILE, write_dissection_json, write_layer_results
from hnd_jax.taxonomy import Taxonomy

INCOMING = ".incoming"
OUTGOING = ".outgoing"


def clean_staging(out: str | Path) -> None:
    """Remove a killed run's half-written results and stray temporary files of the final write."""
    out = Path(out)
    for name in (INCOMING, OUTGOING):
        shutil.rmtree(out / name, ignore_errors=True)
    if out.is_dir():
        for stray in out.glob(f".{DISSECTION_FILE}.*.tmp"):
            stray.unlink(missing_ok=True)


def publish_results(out: str | Path, layers: Sequence[str], arrays: Sequence[Mapping[str, np.ndarray]],
                    taxonomy: Taxonomy, meta: Callable[[], Mapping[str, Any]]) -> None:
    """Write every layer's results and ``dissection.json`` beside OUT's current ones, then swap them in.

    ``meta()`` gives dissection.json's content; it is called after the layers are written (so it can
    report the time that took).

    Raises OSError (a full disk, permissions) with OUT's previous results intact when the failure
    happens while writing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_staging(out)
    incoming = out / INCOMING
    for layer, layer_arrays in zip(layers, arrays):
        write_layer_results(incoming, layer, layer_arrays, taxonomy)
    write_dissection_json(incoming, meta())

    (out / DISSECTION_FILE).unlink(missing_ok=True)
    outgoing = out / OUTGOING
    outgoing.mkdir(exist_ok=True)
    for layer in layers:
        if (out / layer).exists():
            os.replace(out / layer, outgoing / layer)
        os.replace(incoming / layer, out / layer)
    os.replace(incoming / DISSECTION_FILE, out / DISSECTION_FILE)
    clean_staging(out)
