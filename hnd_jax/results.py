"""The results of a dissection on disk (DESIGN.md §4, the public contract), and how to read them back.

Layout of an output folder ``OUT``::

    OUT/dissection.json            run metadata; written LAST, so its presence marks a complete run
    OUT/<layer>/scores.npz         every array of one layer (layer names are used as-is: layer4.2.conv1)
    OUT/<layer>/units.csv          one readable row per unit

``scores.npz`` (``numpy.load(path)`` works without ``allow_pickle``; strings are unicode arrays):

=========================  ===========  ===================================================================
key                        shape/dtype  meaning
=========================  ===========  ===================================================================
concepts                   [C] str      local concepts, in taxonomy concept-axis order
concept_region             [C] str      facial region of each concept
concept_type               [C] str      action_unit / part / attribute (or a user taxonomy's types)
thresholds                 [U] f32      T_u, the (1 - q) quantile of the unit's raw values
iou                        [U,C] f32    IoU(u, c); NaN where the union is 0 (no support)
top_concept                [U] int64    argmax of IoU ignoring NaN; -1 when the best IoU is 0 or NaN (no top concept)
localizable                [U] bool     best IoU >= iou_threshold
region                     [U] str      region of the top concept, '' when not localizable
local_probs                [U,C] f32    P(c|u) within the unit's region; 0 outside it
global_groups_<F>          [G] str      subgroups of global family F (one set of keys per scored family)
global_probs_<F>           [U,G] f32    P(g|u)
biased_<F>                 [U,G] bool   P(g|u) >= the family's cut-off
global_pvalues_<F>         [U,G] f32    permutation p-value of P(g|u) (DESIGN.md §2c), in [1/(1+n_perm), 1]
biased_significant_<F>     [U,G] bool   biased_<F> and BH-significant at alpha over all (u, g) of the layer
global_effect_<F>          [U,G] f32    P(g|u) minus its mean over the permutations
auc                        [U,C] f32    AUC of m_u(x), images labelled c vs the rest of c's family; NaN if untestable
auc_pvalues                [U,C] f32    one-sided Mann-Whitney p-value for AUC > 0.5 (normal approx., 1 if untestable)
paired_significant         [U,C] bool   paired, BH-significant at alpha over all tested (u, c), and AUC > 0.5
paired                     [U,C] bool   extra: P(c|u) > pair_factor / |R|
lo, hi                     [U] f32      extra: min / max raw value over local images and positions
intersection, union        [U,C] int64  extra: the IoU counts
top_images                 [U,k] int64  extra: dictionary indices of each unit's top-activating images
top_maps                   [U,k,h,w]    extra (when available): the raw maps of those images
global_lo_<F>, global_hi_<F> [U] f32    extra: min / max over family F's images and positions
image_max                  [N,U] f32    extra, only when small: m_u(x) for every local image
=========================  ===========  ===================================================================

``units.csv`` columns: ``unit, top_concept`` (``none`` when ``top_concept`` is -1), ``iou, region,
localizable, threshold, paired`` (``concept:P`` pairs joined by ``;``, highest first),
``paired_significant`` (the subset of those pairs that is significant, same format), one
``biased_<F>`` column per global family (``group:P``) and, when the p-values are present, one
``biased_significant_<F>`` column per family (``group:P:p-value``). Significance columns are empty for
results written before they existed.

``dissection.json`` holds at least ``layers`` (list of names), ``settings`` (the scoring settings),
``image_size``, ``dictionary`` (its identity, with ``spec`` to reopen it), ``model`` (its identity),
``timings`` (seconds per stage), ``versions`` (jax, flax, numpy, hnd-jax) and ``created`` (UTC).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import re
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from hnd_jax.atomic import write_json, write_npz, write_text
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import Taxonomy

SCORES_FILE = "scores.npz"
UNITS_FILE = "units.csv"
DISSECTION_FILE = "dissection.json"
#: What an interrupted run of ``hnd dissect`` leaves in OUT (checkpoints, lock files, disk cache,
#: half-swapped results of :mod:`hnd_jax.pipeline.publish`): such a folder is an earlier dissection too.
CHECKPOINTS_DIR = ".checkpoints"
RUN_TRACES = (CHECKPOINTS_DIR, ".lock", ".cache", ".incoming", ".outgoing")
#: Names hnd writes beside the layer folders in OUT (the run's metadata; the report, its assets and
#: plots; ``hnd report``'s index): no layer's results may go there.
REPORT_NAMES = ("report.html", "report_assets", "plots")
INDEX_HTML = "index.html"
#: How that index page's title starts (publish.py tells our index.html from a user's by it).
INDEX_TITLE_MARK = "<title>HND reports \u00b7 "
RESERVED_NAMES = (DISSECTION_FILE, *REPORT_NAMES, INDEX_HTML)

#: Keys every scores.npz has (plus the three per-family keys for every scored global family).
REQUIRED_KEYS = (
    "concepts",
    "concept_region",
    "concept_type",
    "thresholds",
    "iou",
    "top_concept",
    "localizable",
    "region",
    "local_probs",
)


def layer_dir(out_dir: str | Path, layer: str) -> Path:
    """``OUT/<layer>``; HndError for names that would escape OUT, are not a single folder name, or are
    one of the names hnd writes beside the layers (:data:`RESERVED_NAMES`)."""
    if not layer or layer in (".", "..") or "/" in layer or "\\" in layer or layer.startswith("."):
        raise HndError(f"layer name {layer!r}: expected a plain name like layer4.2.conv1 (no '/', not starting with '.')")
    if layer in RESERVED_NAMES:
        raise HndError(f"layer name {layer!r}: hnd writes a file or folder of that name in OUT; give the layer "
                       "another --layer name (an activations file) or dissect a layer with another path")
    return Path(out_dir) / layer


def global_family_names(arrays: Mapping[str, Any]) -> list[str]:
    """The global families present in a results mapping (from the ``global_probs_<F>`` keys)."""
    return [k[len("global_probs_") :] for k in arrays if k.startswith("global_probs_")]


def write_layer_results(
    out_dir: str | Path, layer: str, arrays: Mapping[str, np.ndarray], taxonomy: Taxonomy | None = None
) -> Path:
    """Write ``OUT/<layer>/scores.npz`` and ``units.csv`` atomically; returns the layer folder.

    ``arrays`` is :meth:`hnd_jax.scoring.engine.LayerScorer.finalize` output (plus any extra keys).
    ``taxonomy``, when given, is checked against the ``concepts`` array.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"results of layer {layer!r} lack {', '.join(missing)}")
    if taxonomy is not None and tuple(np.asarray(arrays["concepts"]).tolist()) != taxonomy.concept_names:
        raise ValueError(f"results of layer {layer!r} were computed with another taxonomy")
    folder = layer_dir(out_dir, layer)
    write_npz(folder / SCORES_FILE, {k: np.asarray(v) for k, v in arrays.items()})
    write_text(folder / UNITS_FILE, units_csv(arrays))
    return folder


def _pairs(labels: list[str], values: np.ndarray, flags: np.ndarray) -> str:
    """``label:value`` for the flagged entries, highest value first, joined by ';'."""
    idx = np.flatnonzero(flags)
    idx = idx[np.argsort(-values[idx], kind="stable")]
    return ";".join(f"{labels[i]}:{float(values[i]):.3f}" for i in idx)


def units_csv(arrays: Mapping[str, np.ndarray]) -> str:
    """The readable per-unit table (see the module docstring for the columns)."""
    concepts = np.asarray(arrays["concepts"]).tolist()
    iou = np.asarray(arrays["iou"])
    top = np.asarray(arrays["top_concept"])
    probs = np.asarray(arrays["local_probs"])
    paired = np.asarray(arrays["paired"]) if "paired" in arrays else None
    paired_sig = np.asarray(arrays["paired_significant"]) if "paired_significant" in arrays else None
    families = global_family_names(arrays)
    sig_families = [f for f in families if f"biased_significant_{f}" in arrays and f"global_pvalues_{f}" in arrays]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["unit", "top_concept", "iou", "region", "localizable", "threshold", "paired", "paired_significant"]
        + [f"biased_{f}" for f in families]
        + [f"biased_significant_{f}" for f in sig_families]
    )
    for u in range(iou.shape[0]):
        t = int(top[u])
        row = [
            u,
            "none" if t < 0 else concepts[t],
            "" if t < 0 else f"{float(iou[u, t]):.4f}",
            str(arrays["region"][u]),
            bool(arrays["localizable"][u]),
            f"{float(arrays['thresholds'][u]):.6g}",
            "" if paired is None else _pairs(concepts, probs[u], paired[u]),
            "" if paired_sig is None else _pairs(concepts, probs[u], paired_sig[u]),
        ]
        for f in families:
            groups = np.asarray(arrays[f"global_groups_{f}"]).tolist()
            row.append(_pairs(groups, np.asarray(arrays[f"global_probs_{f}"])[u], np.asarray(arrays[f"biased_{f}"])[u]))
        for f in sig_families:
            groups = np.asarray(arrays[f"global_groups_{f}"]).tolist()
            gp = np.asarray(arrays[f"global_probs_{f}"])[u]
            pv = np.asarray(arrays[f"global_pvalues_{f}"])[u]
            flags = np.asarray(arrays[f"biased_significant_{f}"])[u]
            row.append(";".join(f"{groups[g]}:{float(gp[g]):.3f}:{float(pv[g]):.3g}" for g in np.flatnonzero(flags)))
        writer.writerow(row)
    return buf.getvalue()


def load_layer_results(path: str | Path) -> dict[str, np.ndarray]:
    """Read one layer's arrays from ``OUT/<layer>`` or ``OUT/<layer>/scores.npz``."""
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_FILE
    if not path.is_file():
        raise HndError(f"{path}: no scores.npz here (expected OUT/<layer>/scores.npz from 'hnd dissect')")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise HndError(f"{path}: not a readable scores.npz ({exc})") from None
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise HndError(f"{path}: not a hnd-jax scores file (missing {', '.join(missing)})")
    return arrays


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers (recorded in dissection.json)."""
    out = {}
    for name in ("hnd-jax", "jax", "jaxlib", "flax", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def read_our_dissection(out: str | Path) -> dict[str, Any] | None:
    """``OUT/dissection.json`` when hnd-jax wrote it (:func:`write_dissection_json`), else None.

    "Ours" is checked tightly, so that a user's own file of that name is never taken for an earlier
    dissection (and the folder replaced): a JSON object whose ``layers`` is a non-empty list of plain
    layer names (:func:`layer_dir`), with ``settings`` and ``versions`` objects, ``versions`` naming
    ``hnd-jax``, and a ``model`` entry. Never raises for a bad or unreadable file (None).
    """
    path = Path(out) / DISSECTION_FILE
    try:
        if not path.is_file() or path.stat().st_size > 64 * 2**20:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict) or "model" not in doc:
        return None
    versions, layers = doc.get("versions"), doc.get("layers")
    if not isinstance(versions, dict) or "hnd-jax" not in versions:
        return None
    if not isinstance(layers, list) or not layers or not all(isinstance(name, str) for name in layers):
        return None
    try:
        for name in layers:
            layer_dir(out, name)
    except HndError:
        return None
    return doc


#: A checkpoint step, finished or being written: orbax's ``<step>`` / ``<step>.orbax-checkpoint-tmp...``,
#: or a multi-process run's plain ``<step>`` / ``.tmp-<step>`` (pipeline/checkpoints.py ``_PlainSteps``).
_STEP = re.compile(r"\d+(\.orbax-checkpoint-tmp.*)?|\.tmp-\d+")
_PROCESS = re.compile(r"process_\d+")  # one process's folder in a multi-process run
_CACHE_FILE = re.compile(r"layer_\d{3}_\d+_\d+\.f32")  # hnd_jax.pipeline.cache's memmap files


def _entries_match(folder: Path, leaf: Callable[[Path], bool]) -> bool:
    """Is every entry of ``folder`` a ``leaf``, or a ``process_<i>`` folder of leaves?"""
    for entry in folder.iterdir():
        if _PROCESS.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            if not all(leaf(sub) for sub in entry.iterdir()):
                return False
        elif not leaf(entry):
            return False
    return True


def _our_trace(out: Path, name: str) -> bool:
    """Is ``OUT/<name>`` what a run of ours leaves there (by its shape, not only its name: a home
    folder's ``.cache`` is not ours)?"""
    path = out / name
    if path.is_symlink():
        return False
    if name == CHECKPOINTS_DIR:  # orbax step folders (pipeline/checkpoints.py)
        return path.is_dir() and _entries_match(path, lambda e: e.is_dir() and bool(_STEP.fullmatch(e.name)))
    if name == ".cache":  # the disk cache of activations (pipeline/cache.py)
        return path.is_dir() and _entries_match(path, lambda e: e.is_file() and bool(_CACHE_FILE.fullmatch(e.name)))
    if name == ".lock" or name.startswith(".lock.process_"):  # pipeline/outlock.py: empty or {pid, host, since}
        if not path.is_file() or path.stat().st_size > 4096:
            return False
        text = path.read_bytes().strip()
        if not text:
            return True
        try:
            record = json.loads(text)
        except ValueError:
            return False
        return isinstance(record, dict) and "pid" in record
    # .incoming, .outgoing (pipeline/publish.py): a run's results being swapped (layer folders of
    # results files, dissection.json and its temporary files, a previous run's report), nothing else
    return path.is_dir() and all(_staged(entry) for entry in path.iterdir())


def _staged(entry: Path) -> bool:
    """Is ``entry`` something publish.py puts in ``.incoming`` / ``.outgoing``?"""
    if entry.is_symlink():
        return False
    name = entry.name
    if name in RESERVED_NAMES or (name.startswith(f".{DISSECTION_FILE}.") and entry.is_file()):
        return True
    try:
        layer_dir(entry.parent, name)
    except HndError:
        return False
    return entry.is_dir() and all(f.name in (SCORES_FILE, UNITS_FILE) or f.name.startswith(".")
                                  for f in entry.iterdir())


def holds_our_dissection(out: str | Path) -> bool:
    """Does the folder ``out`` hold an earlier ``hnd dissect`` output: a :func:`read_our_dissection`
    result, or what an interrupted run leaves (:data:`RUN_TRACES`, ``.lock.process_<i>``), each
    checked by its shape? Never raises for unreadable entries (False)."""
    out = Path(out)
    if read_our_dissection(out) is not None:
        return True
    try:
        names = [n for n in RUN_TRACES if (out / n).exists()] + [p.name for p in out.glob(".lock.process_*")]
        return any(_our_trace(out, name) for name in names)
    except OSError:
        return False


def write_dissection_json(out: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``OUT/dissection.json`` atomically: ``meta`` plus ``versions`` and ``created``.

    Call it last: its presence tells readers (reports, resume) that the run completed.
    """
    doc = dict(meta)
    doc.setdefault("versions", package_versions())
    doc.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    path = Path(out) / DISSECTION_FILE
    write_json(path, doc)
    return path
