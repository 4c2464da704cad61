"""Put a finished run's results in place without ever losing the previous ones (DESIGN.md §7).

A rerun into an OUT that holds finished results must not destroy them before its own results are
complete: a run can still fail late (NaN weights, a full disk, a kill). So results are written into
``OUT/.incoming/`` first, in full, and only then swapped in:

1. ``OUT/.incoming/<layer>/`` (scores.npz, units.csv) and ``OUT/.incoming/dissection.json`` are written;
2. the old ``OUT/dissection.json`` is moved to ``OUT/.outgoing/`` (from here on OUT does not look complete);
3. what the previous run wrote that the new one does not replace is moved to ``OUT/.outgoing/``
   too: its layer folders that the new run does not have (listed in the old ``dissection.json``)
   and its report (:data:`REPORT_NAMES`: ``report.html``, ``report_assets/``, ``plots/``, and
   ``index.html`` when ``hnd report`` wrote it), which describes the old results. Only names a
   run of ours writes are moved; a user's other files in OUT stay where they are;
4. each ``OUT/<layer>`` of the new run is moved to ``OUT/.outgoing/`` and the new one renamed into place;
5. the new ``dissection.json`` is renamed into place last: OUT is complete again;
6. ``.outgoing`` and ``.incoming`` are removed.

Every rename is within one file system, so each step is atomic; a failure before step 2 leaves the
previous results untouched, and :func:`clean_staging` removes what a killed run left behind. A run
killed after step 2 left the previous run's ``dissection.json`` in ``.outgoing``: the next
:func:`clean_staging` finishes step 3 from it (those results were no longer complete) before the
staging folders are removed, so no stale layer or report outlives the swap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hnd_jax.results import (DISSECTION_FILE, INDEX_HTML, INDEX_TITLE_MARK, REPORT_NAMES, read_our_dissection,
                             write_dissection_json, write_layer_results)
from hnd_jax.taxonomy import Taxonomy

INCOMING = ".incoming"
OUTGOING = ".outgoing"
# REPORT_NAMES: what the report of a run writes in OUT (``hnd dissect`` without ``--no-report``,
# ``hnd report OUT``: :mod:`hnd_jax.reports.html` REPORT_HTML and ASSETS_DIR, :mod:`hnd_jax.reports.plots`
# PLOTS_DIR); INDEX_HTML: ``hnd report FOLDER``'s index page (:mod:`hnd_jax.reports.index`), removed
# only when it is ours. Both live in :mod:`hnd_jax.results`, which refuses them as layer names.


def _our_index(path: Path) -> bool:
    """Is ``path`` an index page written by :func:`hnd_jax.reports.index.write_index`?"""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, ValueError):
        return False
    return head.startswith("<!DOCTYPE html>") and INDEX_TITLE_MARK in head


def stale_names(out: str | Path, previous: Mapping[str, Any] | None, layers: Sequence[str]) -> list[str]:
    """Names in OUT that the previous run wrote and a run of ``layers`` does not replace.

    ``previous``: the previous run's dissection.json (:func:`hnd_jax.results.read_our_dissection`),
    or None when OUT holds none of ours (then nothing of a previous run is known: nothing is stale).
    Returns the previous layers not in ``layers`` and the report's names (:data:`REPORT_NAMES`, and
    ``index.html`` when it is ours) that exist in OUT.
    """
    out = Path(out)
    if previous is None:
        return []
    # REPORT_NAMES and INDEX_HTML are never layer names (hnd_jax.results.RESERVED_NAMES)
    names = [name for name in previous["layers"] if name not in layers] + list(REPORT_NAMES)
    present = [name for name in dict.fromkeys(names) if (out / name).exists() or (out / name).is_symlink()]
    if (out / INDEX_HTML).is_file() and _our_index(out / INDEX_HTML):
        present.append(INDEX_HTML)
    return present


def _move_out(out: Path, names: Sequence[str]) -> None:
    """Move ``OUT/<name>`` to ``OUT/.outgoing/<name>`` for each name (created as needed)."""
    outgoing = out / OUTGOING
    outgoing.mkdir(exist_ok=True)
    for name in names:
        if (out / name).exists() or (out / name).is_symlink():
            os.replace(out / name, outgoing / name)


def clean_staging(out: str | Path) -> None:
    """Remove a killed run's half-written results and stray temporary files of the final write.

    When the killed run was swapping its results in (the previous ``dissection.json`` is in
    ``.outgoing`` and OUT has none), the previous run's layers and report still in OUT, and the
    layers the killed run had already moved in, are removed first, as the swap would have (OUT's
    results were no longer complete; the rerun writes its own)."""
    out = Path(out)
    interrupted = read_our_dissection(out / OUTGOING)
    if interrupted is not None and not (out / DISSECTION_FILE).exists():
        half = read_our_dissection(out / INCOMING)  # the killed run's own layers, some already moved in
        names = stale_names(out, interrupted, ()) + [n for n in (half or {}).get("layers", []) if (out / n).exists()]
        for name in dict.fromkeys(names):
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
    for name in (INCOMING, OUTGOING):
        shutil.rmtree(out / name, ignore_errors=True)
    if out.is_dir():  # temporary files and folders of an atomic write that a kill interrupted
        for name in (DISSECTION_FILE, *REPORT_NAMES, INDEX_HTML):
            for stray in out.glob(f".{name}.*.tmp*"):  # hnd_jax.atomic: .NAME.<random>.tmp[.suffix]
                if stray.is_dir() and not stray.is_symlink():
                    shutil.rmtree(stray, ignore_errors=True)
                else:
                    stray.unlink(missing_ok=True)


def publish_results(out: str | Path, layers: Sequence[str], arrays: Sequence[Mapping[str, np.ndarray]],
                    taxonomy: Taxonomy, meta: Callable[[], Mapping[str, Any]]) -> list[str]:
    """Write every layer's results and ``dissection.json`` beside OUT's current ones, then swap them in.

    ``meta()`` gives dissection.json's content; it is called after the layers are written (so it can
    report the time that took). What the previous run of ours wrote and this one does not replace
    (its other layers, its report) is removed with the swap (:func:`stale_names`); nothing else in
    OUT is touched.

    Returns the previous run's layers that were removed (not in ``layers``), for the caller to say.
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

    previous = read_our_dissection(out)
    stale = stale_names(out, previous, layers)
    _move_out(out, [DISSECTION_FILE, *stale, *layers])  # the old dissection.json first: OUT is incomplete
    for layer in layers:
        os.replace(incoming / layer, out / layer)
    os.replace(incoming / DISSECTION_FILE, out / DISSECTION_FILE)
    clean_staging(out)
    return [name for name in (previous or {}).get("layers", []) if name in stale]
