"""``FOLDER/index.html``: one page linking the reports of every dissection found under a folder.

``hnd report FOLDER`` on a folder that is not itself a dissection (no ``FOLDER/dissection.json``) but
holds some (the demo's ``biased/`` and ``control/``, a sweep over models) writes each one's report and
this index: per run its model, layers, unit counts and links to its report and ``dissection.json``,
plus the other pages found there (the demo's own ``report.html`` and ``summary.json``, comparisons'
``compare.html``). Every link is relative to the index, so the folder can be moved or served as is.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from hnd_jax.atomic import write_text
from hnd_jax.reports.results_view import DISSECTION_JSON, RunResults, load_run
from hnd_jax.reports.run_notes import skipped_global_families
from hnd_jax.reports.summary import summarize_layer
from hnd_jax.results import INDEX_HTML, INDEX_TITLE_MARK

MAX_DEPTH = 3  # how deep below FOLDER dissections are looked for
SKIP_DIRS = {"plots", "report_assets", "models", "__pycache__"}
EXTRA_PAGES = (  # pages beside the runs that the index links when present (path relative to FOLDER, label)
    ("report.html", "overview page (report.html)"),
    ("summary.json", "summary.json"),
)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def url_of(path: Path, base: Path) -> str:
    """``path`` as a URL relative to folder ``base`` (each part percent-encoded)."""
    return "/".join(quote(part) for part in path.relative_to(base).parts)


def find_runs(folder: str | Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Sub-folders of ``folder`` (not itself) holding a ``dissection.json``, sorted; not descending into runs."""
    folder = Path(folder)
    found: list[Path] = []
    seen = {folder.resolve()}  # a link back up (``self -> .``) or to a run already found is walked once

    def walk(d: Path, depth: int) -> None:
        if depth > max_depth:
            return
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            real = child.resolve()
            if child.name in SKIP_DIRS or real in seen:
                continue
            seen.add(real)
            if (child / DISSECTION_JSON).is_file():
                found.append(child)
            else:
                walk(child, depth + 1)

    walk(folder, 1)
    return found


def find_comparisons(folder: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """``compare.html`` pages under ``folder`` (``hnd compare`` outputs), sorted."""
    pages = []
    for depth in range(1, max_depth + 1):
        pages.extend(folder.glob("/".join(["*"] * depth) + "/compare.html"))
    return sorted(pages)


@dataclass(frozen=True)
class IndexedRun:
    """One run of the index: where it is and whether its report exists."""

    run: RunResults
    report: Path | None


def _model_name(meta: dict[str, Any]) -> str:
    model = meta.get("model")
    if isinstance(model, dict):
        return str(model.get("name") or model.get("card") or model.get("class") or model.get("kind") or "")
    return str(model or "")


def run_row(item: IndexedRun, folder: Path) -> str:
    """One table row per layer of a run (the run's cells span its layers)."""
    run = item.run
    rel = url_of(run.out_dir, folder)
    if item.report is not None:
        name = f'<a href="{esc(url_of(item.report, folder))}">{esc(run.out_dir.relative_to(folder))}</a>'
    else:
        name = esc(run.out_dir.relative_to(folder)) + ' <span class="muted">(no report)</span>'
    links = f'<a href="{esc(rel)}/{DISSECTION_JSON}">dissection.json</a>'
    skipped = skipped_global_families(run.meta)
    note_html = (f'<div class="note">global families not scored: {esc(", ".join(skipped))} (why: see its report)</div>'
                 if skipped else "")
    rows = []
    span = len(run.layers)
    for i, layer in enumerate(run.layers):
        s = summarize_layer(layer)
        biased = ", ".join(f"{f} {n}" for f, n in s.biased_per_family.items()) or "–"
        first = (
            f'<td rowspan="{span}">{name}{note_html}</td><td rowspan="{span}">{esc(_model_name(run.meta))}</td>'
            if i == 0 else ""
        )
        last = f'<td rowspan="{span}">{links}</td>' if i == 0 else ""
        rows.append(
            f"<tr>{first}<td>{esc(layer.name)}</td><td class=n>{s.num_units}</td><td class=n>{s.localizable}</td>"
            f"<td class=n>{s.interpretable}</td><td>{esc(biased)}</td>{last}</tr>"
        )
    return "".join(rows)


CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1280px;padding:0 24px;color:#1d2330}"
    "table{border-collapse:collapse;max-width:100%;margin:8px 0 16px}"
    "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left;vertical-align:top;overflow-wrap:break-word}"
    "th{background:#f3f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#667085}"
    ".note{color:#7a2e0e;font-size:12px;max-width:420px}ul{padding-left:20px}"
)


def index_html(folder: Path, runs: list[IndexedRun], extras: list[tuple[str, str]]) -> str:
    """The HTML text of the index page (``extras``: (url, label) of other pages to link)."""
    body = "".join(run_row(r, folder) for r in runs)
    table = (
        "<table><thead><tr><th>dissection (report)</th><th>model</th><th>layer</th><th>units</th>"
        "<th>localizable</th><th>interpretable</th><th>biased units per family</th><th>results</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )
    more = "".join(f'<li><a href="{esc(url)}">{esc(label)}</a></li>' for url, label in extras)
    more_html = f"<p>Other pages here:</p><ul>{more}</ul>" if more else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{INDEX_TITLE_MARK}{esc(folder.resolve().name)}</title><style>{CSS}</style></head><body>"
        f"<h1>HND reports in {esc(folder.resolve().name)}/</h1>"
        f"<p>{len(runs)} dissection{'s' if len(runs) != 1 else ''} found in this folder; "
        "counts are units of each layer (definitions in each report).</p>"
        f"{more_html}{table}</body></html>\n"
    )


def write_index(folder: str | Path, runs: list[Path] | None = None, *, loaded: Sequence[RunResults] = ()) -> Path:
    """Write ``FOLDER/index.html`` for the dissections under ``folder`` (found with :func:`find_runs`).

    Each run is loaded (validated) for its counts, unless ``loaded`` already holds it (results the
    caller loaded, matched by folder: ``hnd report FOLDER`` passes those it wrote reports from, so no
    file is read twice); its report is linked when ``report.html`` exists. Returns the index's path.
    Raises :class:`~hnd_jax.errors.HndError` for a malformed run.
    """
    folder = Path(folder)
    runs = find_runs(folder) if runs is None else runs
    known = {run.out_dir.resolve(): run for run in loaded}
    items = []
    for path in runs:
        report = path / "report.html"
        run = known.get(Path(path).resolve())
        items.append(IndexedRun(load_run(path) if run is None else run, report if report.is_file() else None))
    extras = [(url_of(folder / rel, folder), label) for rel, label in EXTRA_PAGES if (folder / rel).is_file()]
    extras += [(url_of(p, folder), f"comparison: {p.parent.relative_to(folder)}/compare.html")
               for p in find_comparisons(folder)]
    path = folder / INDEX_HTML
    write_text(path, index_html(folder, items, extras))
    return path
