"""Cross-model comparison (``hnd compare OUT1 OUT2 ... --out CMP``), like the paper's model figures.

Every dissected layer of every run becomes one series (labelled ``label`` or ``label:layer`` when a
run has several layers). Counts are turned into **fractions of the layer's units**, so models of
different widths compare, and drawn as grouped bars:

* ``compare_per_region.png``: interpretable units per facial region;
* ``compare_per_concept_type.png``: interpretable units per concept type;
* ``compare_biased_per_subgroup.png``: units biased toward each global subgroup;
* ``compare_paired_per_concept.png``: units paired with each concept.

``compare.json`` holds the counts, the fractions and where they came from; ``compare.html`` shows the
figures (inlined as data URIs: one file, offline) and the numbers. All runs must carry the same
taxonomy (concepts, their regions and types, global families and subgroups): comparing different
concept sets would put unlike bars side by side.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from hnd_jax.atomic import write_bytes, write_json, write_text
from hnd_jax.errors import HndError
from hnd_jax.reports.plots import bar_chart, figure_png, hbar_chart
from hnd_jax.reports.results_view import LayerResults, RunResults, load_run
from hnd_jax.reports.summary import LayerSummary, summarize_layer

COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"
FIGURES = ("per_region", "per_concept_type", "biased_per_subgroup", "paired_per_concept")


@dataclass(frozen=True)
class Series:
    """One compared layer: its label, source and counts."""

    label: str
    run: RunResults
    layer: LayerResults
    summary: LayerSummary

    def fraction(self, count: int) -> float:
        return count / self.summary.num_units if self.summary.num_units else 0.0


def _labels(outs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        names = [p.resolve().name or str(p) for p in outs]
        return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
    labels = [str(x).strip() for x in labels]
    if len(labels) != len(outs):
        raise HndError(f"--labels has {len(labels)} label(s) for {len(outs)} result folder(s); give one per folder")
    if any(not x for x in labels) or len(set(labels)) != len(labels):
        raise HndError(f"--labels {','.join(labels)!r}: expected distinct, non-empty labels")
    return labels


def _check_same_taxonomy(series: list[Series]) -> None:
    """Same concept axis, regions and types everywhere; a global family shared by two runs has the same groups.

    A family scored in some runs only (e.g. ``--activations`` without global arrays) is not an error:
    :func:`shared_families` leaves it out of the comparison and says so in compare.json.
    """
    first = series[0]
    what = ("concepts", "concept regions", "concept types")
    for s in series[1:]:
        for name, a, b in zip(what, first.layer.taxonomy_signature()[:3], s.layer.taxonomy_signature()[:3]):
            if a != b:
                raise HndError(
                    f"{s.run.out_dir}: its {name} differ from those of {first.run.out_dir}"
                    " (compare runs dissected with the same taxonomy)"
                )
    groups: dict[str, tuple[tuple[str, ...], Path]] = {}
    for s in series:
        for fam in s.layer.global_families:
            seen = groups.setdefault(fam.name, (fam.groups, s.run.out_dir))
            if seen[0] != fam.groups:
                raise HndError(
                    f"{s.run.out_dir}: global family {fam.name!r} has groups {', '.join(fam.groups)}"
                    f" but {seen[1]} has {', '.join(seen[0])} (compare runs dissected with the same taxonomy)"
                )


def shared_families(series: list[Series]) -> tuple[list[str], list[str]]:
    """(global families scored in every series, families left out because some series lack them)."""
    names = [list(s.summary.biased_per_group) for s in series]
    every = [f for f in names[0] if all(f in n for n in names)]
    some = list(dict.fromkeys(f for n in names for f in n if f not in every))
    return every, some


def collect_series(outs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Series]:
    """Load every run and check they are comparable; one :class:`Series` per (run, layer)."""
    outs = [Path(p) for p in outs]
    if len(outs) < 2:
        raise HndError(f"hnd compare needs at least two result folders, got {len(outs)}")
    names = _labels(outs, labels)
    series = []
    for name, path in zip(names, outs):
        run = load_run(path)
        for layer in run.layers:
            label = name if len(run.layers) == 1 else f"{name}:{layer.name}"
            series.append(Series(label, run, layer, summarize_layer(layer)))
    _check_same_taxonomy(series)
    return series


def comparison_table(series: list[Series]) -> dict[str, Any]:
    """Fractions (and counts) per region, concept type, global subgroup and concept, for every series."""
    s0 = series[0].summary
    layer0 = series[0].layer
    order = [i for r in s0.regions for i, cr in enumerate(layer0.concept_region) if cr == r]
    concepts = [layer0.concepts[i] for i in order]
    families, left_out = shared_families(series)
    subgroups = [(f, g) for f in families for g in s0.biased_per_group[f]]
    rows = []
    for s in series:
        m = s.summary
        rows.append(
            {
                "label": s.label,
                "out_dir": str(s.run.out_dir.resolve()),
                "layer": s.layer.name,
                "num_units": m.num_units,
                "counts": m.to_dict(),
                "fractions": {
                    "localizable": s.fraction(m.localizable),
                    "interpretable": s.fraction(m.interpretable),
                    "interpretable_per_region": {r: s.fraction(m.interpretable_per_region[r]) for r in s0.regions},
                    "localizable_per_region": {r: s.fraction(m.localizable_per_region[r]) for r in s0.regions},
                    "interpretable_per_type": {t: s.fraction(m.interpretable_per_type[t]) for t in s0.concept_types},
                    "biased_per_group": {
                        f: {g: s.fraction(n) for g, n in gs.items()} for f, gs in m.biased_per_group.items()
                    },
                    "paired_per_concept": {c: s.fraction(m.paired_per_concept[c]) for c in concepts},
                },
            }
        )
    return {
        "regions": list(s0.regions),
        "concept_types": list(s0.concept_types),
        "concepts": concepts,
        "global_subgroups": [[f, g] for f, g in subgroups],
        "global_families_left_out": left_out,
        "series": rows,
    }


def comparison_figures(table: dict[str, Any]):
    """The grouped-bar figures, keyed by :data:`FIGURES`."""
    rows = table["series"]
    subgroups = [tuple(x) for x in table["global_subgroups"]]

    def series_of(key: str, names: list[Any], get) -> dict[str, list[float]]:
        return {r["label"]: [get(r["fractions"][key], n) for n in names] for r in rows}

    plain = lambda d, n: d[n]  # noqa: E731
    return {
        "per_region": bar_chart(
            table["regions"], series_of("interpretable_per_region", table["regions"], plain),
            title="Interpretable units per facial region", ylabel="fraction of the layer's units",
        ),
        "per_concept_type": bar_chart(
            table["concept_types"], series_of("interpretable_per_type", table["concept_types"], plain),
            title="Interpretable units per concept type", ylabel="fraction of the layer's units",
        ),
        "biased_per_subgroup": hbar_chart(
            [f"{f}: {g}" for f, g in subgroups],
            series_of("biased_per_group", subgroups, lambda d, fg: d[fg[0]][fg[1]]),
            title="Units biased toward each global subgroup", xlabel="fraction of the layer's units",
            empty_text="no global families in these results",
        ),
        "paired_per_concept": hbar_chart(
            table["concepts"], series_of("paired_per_concept", table["concepts"], plain),
            title="Units paired with each concept", xlabel="fraction of the layer's units",
        ),
    }


def folder_link(out_dir: str | Path, page_dir: Path) -> tuple[str, str | None]:
    """(folder as shown on compare.html, URL of its report.html or None): both relative to ``page_dir``.

    Relative to the page's own folder, so the table and links stay right wherever the command ran
    and when the comparison folder is opened elsewhere together with the runs.
    """
    target = Path(out_dir).resolve()
    try:
        rel = os.path.relpath(target, page_dir.resolve())
    except ValueError:  # another drive (Windows): keep it absolute
        rel = str(target)
    report = target / "report.html"
    url = "/".join(quote(part) for part in Path(rel).parts) + "/report.html" if report.is_file() else None
    return rel, url


def breakable(text: Any) -> str:
    """Escaped text with optional line breaks after '.', ':', '/' and '_' (used only when a column is too narrow)."""
    out = html.escape(str(text), quote=True)
    for ch in ".:/_":
        out = out.replace(ch, ch + "<wbr>")
    return out


def _html_page(table: dict[str, Any], pngs: dict[str, bytes], page_dir: Path = Path(".")) -> str:
    esc = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    links = {r["out_dir"]: folder_link(r["out_dir"], page_dir) for r in table["series"]}

    def folder_cell(out_dir: str) -> str:
        rel, url = links[out_dir]
        title = f' title="{esc(out_dir)}"'
        if url is None:
            return f'<td class="path"{title}>{breakable(rel)}</td>'
        return f'<td class="path"{title}><a href="{esc(url)}">{breakable(rel)}</a></td>'

    reports = [(r["label"], links[r["out_dir"]][1]) for r in table["series"]]
    seen: set[str] = set()
    report_links = " · ".join(
        f'<a href="{esc(url)}">{esc(label.split(":")[0])}</a>'
        for label, url in reports
        if url is not None and not (url in seen or seen.add(url))
    )
    reports_html = f"<p>Reports compared: {report_links}</p>" if report_links else ""
    imgs = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(pngs[name]).decode()}">'
        f"<figcaption>{esc(name.replace('_', ' '))}</figcaption></figure>"
        for name in FIGURES
    )
    head = "".join(
        f"<th>{esc(h).replace('~', '&shy;')}</th>"  # '~': where a long header may break
        for h in ["series", "folder", "layer", "units", "local~izable", "interpret~able"]
        + [f"interp. {r}" for r in table["regions"]]
    )
    body = "".join(
        "<tr>"
        + f"<td>{breakable(r['label'])}</td>{folder_cell(r['out_dir'])}"
        + "".join(f"<td>{breakable(x)}</td>" for x in (r["layer"], r["num_units"]))
        + f'<td>{r["fractions"]["localizable"]:.3f}</td><td>{r["fractions"]["interpretable"]:.3f}</td>'
        + "".join(f'<td>{r["fractions"]["interpretable_per_region"][g]:.3f}</td>' for g in table["regions"])
        + "</tr>"
        for r in table["series"]
    )
    left_out = (
        f"<p>Global families left out (not scored in every run): {esc(', '.join(table['global_families_left_out']))}</p>"
        if table["global_families_left_out"]
        else ""
    )
    css = (
        "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1280px;padding:0 24px;color:#1d2330}"
        "table{border-collapse:collapse;max-width:100%}"
        "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;overflow-wrap:break-word}th{background:#f3f4f6}"
        "td.path{font-family:ui-monospace,monospace;font-size:12px}"
        "figure{margin:16px 0}img{max-width:100%;height:auto;border:1px solid #eee}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><title>HND comparison</title>'
        f"<style>{css}</style></head><body><h1>HND comparison</h1>"
        "<p>Fractions of each layer's units (details and counts in <a href=\"compare.json\">compare.json</a>).</p>"
        f"{reports_html}"
        f"{left_out}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{imgs}</body></html>\n"
    )


def compare_runs(outs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Write the comparison figures, ``compare.json`` and ``compare.html`` into ``out``; returns ``out``."""
    series = collect_series(outs, labels)
    table = comparison_table(series)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HndError(f"--out {out}: exists and is not a folder")
    pngs = {name: figure_png(fig) for name, fig in comparison_figures(table).items()}
    for name, data in pngs.items():
        write_bytes(out / f"compare_{name}.png", data)
    write_json(out / COMPARE_JSON, table)
    write_text(out / COMPARE_HTML, _html_page(table, pngs, out))
    return out
