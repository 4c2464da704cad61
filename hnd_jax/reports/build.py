"""Everything ``hnd report OUT`` does: reopen the run's dictionary, write the plots, write the HTML.

The dictionary is found from ``OUT/dissection.json`` (``dictionary.spec`` and ``image_size``) unless
the caller names one. When it was only inferred and cannot be reopened (moved, deleted, another
machine), the report is still written without images and the reason is returned as a note; when
the caller named it explicitly, failing to open it is an error.

The dictionary opened is checked against the identity ``dissection.json`` records for it
(:func:`dictionary_differences`): the top images are stored as dictionary positions, so another
dictionary -- the same folder regenerated, ``synthetic`` for a real one -- would put other faces on
the unit cards without any error. A dictionary that differs is refused (:class:`DictionaryMismatch`),
named or inferred alike; ``hnd report --no-images`` writes the report without the top images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.errors import HndError
from hnd_jax.pipeline.fingerprint import short_value
from hnd_jax.reports.html import write_report
from hnd_jax.reports.plots import write_plots
from hnd_jax.reports.results_view import RunResults, load_run, read_meta
from hnd_jax.results import CHECKPOINTS_DIR
from hnd_jax.taxonomy import Taxonomy, default_taxonomy, load_taxonomy, taxonomy_from_dict


@dataclass
class ReportOutcome:
    """What :func:`build_report` wrote, and notes worth telling the user (e.g. why images are missing).

    ``run``: the results the report was written from, loaded once, for the caller to reuse (the
    console summary of ``hnd dissect``, the folder index) instead of reading the files again.
    """

    html: Path
    plots: list[Path]
    notes: list[str] = field(default_factory=list)
    run: RunResults | None = None


class DictionaryMismatch(HndError):
    """The dictionary opened for a report is not the one the run recorded (never turned into a note)."""


#: Identity fields (``FaceDictionary.identity()``, recorded as ``dissection.json`` ``dictionary``) that
#: decide which face and masks sit at each dictionary position. ``content_sha256`` covers the index
#: files, the kept records and the global listing (and the taxonomy); the location (``path``,
#: ``spec``, ``kind``: a PREP of the same ROOT holds the same images) is deliberately not compared.
CHECKED_IDENTITY_FIELDS = ("content_sha256", "num_local", "taxonomy", "image_size", "image_resample")


def dictionary_differences(recorded: Any, opened: dict[str, Any]) -> list[str]:
    """``'FIELD X recorded, Y here'`` for every :data:`CHECKED_IDENTITY_FIELDS` entry that both
    identities hold and that differs (empty: the same dictionary as far as recorded).

    ``recorded``: the run's ``dissection.json`` ``dictionary`` value; anything but a dict (an old
    run's bare spec string) records nothing to compare. Reads only the two dicts (no file is hashed).
    """
    if not isinstance(recorded, dict) or not isinstance(opened, dict):
        return []
    return [
        f"{key} {short_value(recorded[key])} recorded, {short_value(opened[key])} here"
        for key in CHECKED_IDENTITY_FIELDS
        if key in recorded and key in opened and recorded[key] != opened[key]
    ]


def run_image_size(meta: dict[str, Any]) -> int | None:
    """The analysis size S the run used (``image_size``, or ``settings.image_size``)."""
    for holder in (meta, meta.get("settings") if isinstance(meta.get("settings"), dict) else {}):
        value = holder.get("image_size")
        if isinstance(value, int) and value > 0:
            return value
    return None


def run_dictionary_spec(meta: dict[str, Any]) -> str | None:
    """The spec string that reopens the run's dictionary (``dictionary.spec``), if recorded.

    A relative ROOT/PREP spec only works from the run's working directory, so when it does not
    exist here but the identity's resolved ``path`` does, that path is used instead.
    """
    ident = meta.get("dictionary")
    if isinstance(ident, str):
        return ident
    if not isinstance(ident, dict):
        return None
    spec = ident.get("spec") if isinstance(ident.get("spec"), str) else None
    path = ident.get("path") if isinstance(ident.get("path"), str) else None
    if spec is not None and not spec.startswith("synthetic") and not Path(spec).expanduser().exists():
        if path is not None and Path(path).exists():
            return path
    return spec or path


def run_image_resample(meta: dict[str, Any]) -> str | None:
    """The resample filter the run's dictionary used for images (recorded in its identity)."""
    ident = meta.get("dictionary")
    if isinstance(ident, dict) and isinstance(ident.get("image_resample"), str):
        return ident["image_resample"]
    return None


def run_taxonomy(meta: dict[str, Any], taxonomy: str | Path | Taxonomy | None) -> Taxonomy:
    """The taxonomy to reopen the dictionary with: the given one, the run's recorded one, or the default."""
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if taxonomy is not None:
        return load_taxonomy(taxonomy)
    recorded = meta.get("taxonomy")
    if isinstance(recorded, dict) and "local_families" in recorded:
        return taxonomy_from_dict(recorded, source="dissection.json taxonomy")
    source = recorded.get("source") if isinstance(recorded, dict) else recorded
    if isinstance(source, str) and Path(source).is_file():
        return load_taxonomy(source)
    return default_taxonomy()


def open_run_dictionary(
    out_dir: str | Path,
    spec: str | None = None,
    taxonomy: str | Path | Taxonomy | None = None,
    *,
    meta: dict[str, Any] | None = None,
) -> FaceDictionary:
    """Open the Face Dictionary a run used (or ``spec``) at the run's analysis size.

    ``meta``: the run's ``dissection.json`` when the caller has already read it (else it is read here).

    Raises :class:`DictionaryMismatch` when the opened dictionary's identity differs from the
    recorded one (:func:`dictionary_differences`; its identity was computed when it was opened, so
    the check hashes nothing), :class:`HndError` when no dictionary can be opened.
    """
    from hnd_jax.dictionary import open_dictionary

    meta = read_meta(out_dir) if meta is None else meta
    spec = spec or run_dictionary_spec(meta)
    if spec is None:
        raise HndError(f"{Path(out_dir) / 'dissection.json'}: records no dictionary spec; pass --dictionary")
    size = run_image_size(meta)
    if size is None:
        raise HndError(f"{Path(out_dir) / 'dissection.json'}: records no image_size; cannot reopen the dictionary")
    resample = run_image_resample(meta)
    extra = {"image_resample": resample} if resample else {}
    dico = open_dictionary(spec, size, taxonomy=run_taxonomy(meta, taxonomy), **extra)
    differs = dictionary_differences(meta.get("dictionary"), dico.identity())
    if differs:
        taxonomy_differs = any(d.startswith("taxonomy ") for d in differs)
        hint = "pass --taxonomy with the taxonomy the run used, " if taxonomy_differs else ""
        raise DictionaryMismatch(
            f"dictionary {spec}: not the one {Path(out_dir) / 'dissection.json'} records ({'; '.join(differs)}),"
            f" so its top images would show other faces; {hint}pass --dictionary with the dictionary the run"
            " used, or --no-images to write the report without top images"
        )
    return dico


def build_report(
    out_dir: str | Path,
    *,
    dictionary: str | None = None,
    taxonomy: str | Path | None = None,
    images: bool = True,
    plots: bool = True,
    max_units: int | None = None,
) -> ReportOutcome:
    """Write ``OUT/plots/`` and ``OUT/report.html`` for a finished run (see the module docstring).

    ``OUT/dissection.json`` and every ``OUT/<layer>/scores.npz`` are read once; the loaded results are
    returned in :attr:`ReportOutcome.run`.
    """
    if max_units is not None and max_units <= 0:
        raise HndError(f"--max-units {max_units}: expected a positive integer")
    run = load_run(out_dir)  # validate the results before anything is written
    notes: list[str] = []
    dico = None
    if images:
        if dictionary is not None:
            dico = open_run_dictionary(out_dir, dictionary, taxonomy, meta=run.meta)
        else:
            try:
                dico = open_run_dictionary(out_dir, None, taxonomy, meta=run.meta)
            except DictionaryMismatch:
                raise  # another dictionary where the run's was: refused, not a note
            except HndError as exc:
                notes.append(f"report written without images: {exc} (pass --dictionary to point at it)")
        if dico is not None and tuple(dico.taxonomy.concept_names) != run.layers[0].concepts:
            raise HndError(
                f"{run.layers[0].path}: the dictionary's concepts differ from the results'"
                " (pass --taxonomy with the taxonomy the run used)"
            )
    written = write_plots(out_dir, run) if plots else []
    html_path = write_report(out_dir, dictionary=dico, max_units=max_units, run=run)
    return ReportOutcome(html=html_path, plots=written, notes=notes, run=run)


@dataclass
class FolderOutcome:
    """What :func:`build_reports` wrote for a folder of several dissections: each report and the index."""

    index: Path
    reports: list[ReportOutcome]


def build_reports(out_dir: str | Path, **options: Any) -> ReportOutcome | FolderOutcome:
    """``hnd report FOLDER``: one dissection's report, or every report under FOLDER and an index page.

    A folder with ``dissection.json`` is one dissection (:func:`build_report`). A folder without one
    that holds dissections in sub-folders (the demo's ``biased/`` and ``control/``) gets each of
    their reports and ``FOLDER/index.html`` linking them (:mod:`hnd_jax.reports.index`). ``options``
    are :func:`build_report`'s keywords, applied to every run. Raises :class:`HndError` when the
    folder holds no dissection at all.
    """
    from hnd_jax.reports.index import find_runs, write_index
    from hnd_jax.reports.results_view import DISSECTION_JSON

    folder = Path(out_dir)
    if (folder / DISSECTION_JSON).is_file() or (folder / CHECKPOINTS_DIR).is_dir() or not folder.is_dir():
        return build_report(folder, **options)  # a stopped run: build_report says to resume it
    runs = find_runs(folder)
    if not runs:
        raise HndError(
            f"{folder}: no {DISSECTION_JSON} here or in its sub-folders (not a `hnd dissect` or `hnd demo` output folder)"
        )
    reports = [build_report(run, **options) for run in runs]
    loaded = [one.run for one in reports if one.run is not None]
    return FolderOutcome(index=write_index(folder, runs, loaded=loaded), reports=reports)
