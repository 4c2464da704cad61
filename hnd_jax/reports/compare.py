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

**Tests** (DESIGN.md §2c: a comparison states a test and its p-value, never a bare difference).
Every series after the first is compared with the first (the baseline) on every count the figures
and tables show (localizable, interpretable, interpretable per region and per type, biased per
subgroup, paired per concept, and the significant subsets when both runs carry them): Fisher's exact
test, two-sided (``scipy.stats.fisher_exact`` on ``[[k1, n1 - k1], [k2, n2 - k2]]``, n = the layer's
units), with Benjamini-Hochberg adjusted p-values over all tests of the comparison
(``scipy.stats.false_discovery_control``). The test treats units as independent draws, which units
of one layer are not exactly; read small p-values as "unlikely to be noise of this size", not as
exact error rates. ``compare.json`` lists them under ``tests``.

**Comparable runs.** Runs whose dictionaries (identity without its path), image sizes or scoring
settings (all but the permutation ``seed``) differ are refused, since their counts do not measure the
same thing; ``allow_mixed=True`` (``hnd compare --allow-mixed``) compares them anyway and marks them:
``compare.json`` ``mixed`` lists every difference and the HTML shows it above the numbers.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np

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


#: Identity keys that name where a dictionary lies, not what it holds.
_DICTIONARY_LOCATION_KEYS = ("path", "spec", "root")
#: Scoring settings that do not change what is measured (the seed of the permutations).
_IGNORED_SETTINGS = ("seed",)


def run_conditions(meta: dict[str, Any]) -> dict[str, Any]:
    """What must agree between compared runs: dictionary identity (without its location), image size
    and scoring settings (without the permutation seed). Unrecorded values are None."""
    dic = meta.get("dictionary")
    dic = {k: v for k, v in dic.items() if k not in _DICTIONARY_LOCATION_KEYS} if isinstance(dic, dict) else dic
    settings = meta.get("settings")
    settings = (
        {k: v for k, v in settings.items() if k not in _IGNORED_SETTINGS} if isinstance(settings, dict) else settings
    )
    image_size = meta.get("image_size")
    if image_size is None and isinstance(settings, dict):
        image_size = settings.get("image_size")
    return {"dictionary": dic, "image_size": image_size, "settings": settings}


def condition_differences(series: list[Series]) -> list[str]:
    """One line per run whose conditions differ from the first run's (empty when all agree)."""
    first = series[0].run
    base = run_conditions(first.meta)
    lines, seen = [], {first.out_dir}
    for s in series[1:]:
        if s.run.out_dir in seen:
            continue
        seen.add(s.run.out_dir)
        cond = run_conditions(s.run.meta)
        for key in ("dictionary", "image_size", "settings"):
            a, b = base[key], cond[key]
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                what = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)
            else:
                what = f"{a!r} vs {b!r}"
            verb = "differ" if key == "settings" else "differs"
            lines.append(f"{s.run.out_dir}: {key.replace('_', ' ')} {verb} from {first.out_dir} ({what})")
    return lines


def collect_series(
    outs: Sequence[str | Path], labels: Sequence[str] | None = None, *, allow_mixed: bool = False
) -> list[Series]:
    """Load every run and check they are comparable; one :class:`Series` per (run, layer).

    Raises :class:`HndError` when the taxonomies differ, or when dictionaries, image sizes or scoring
    settings differ and ``allow_mixed`` is False (see the module docstring).
    """
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
    diffs = condition_differences(series)
    if diffs and not allow_mixed:
        raise HndError(f"{diffs[0]}; runs measured under different conditions are not comparable"
                       " (--allow-mixed compares them anyway and marks them)")
    return series


def fisher_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test for k1/n1 vs k2/n2 (1.0 when a run has no units)."""
    from scipy.stats import fisher_exact

    if n1 <= 0 or n2 <= 0:
        return 1.0
    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)


def _measures(m: LayerSummary, regions, types, subgroups, concepts) -> dict[str, dict[str, int]]:
    """measure -> {key: count} for every count the comparison shows (significant ones when present)."""
    out = {
        "localizable": {"": m.localizable},
        "interpretable": {"": m.interpretable},
        "interpretable_per_region": {r: m.interpretable_per_region[r] for r in regions},
        "interpretable_per_type": {t: m.interpretable_per_type[t] for t in types},
        "biased_per_group": {f"{f}: {g}": m.biased_per_group[f][g] for f, g in subgroups},
        "paired_per_concept": {c: m.paired_per_concept[c] for c in concepts},
    }
    if m.has_significance:
        out["interpretable_significant"] = {"": m.interpretable_significant}
        out["biased_significant_per_group"] = {f"{f}: {g}": m.biased_significant_per_group[f][g] for f, g in subgroups}
        out["paired_significant_per_concept"] = {c: m.paired_significant_per_concept[c] for c in concepts}
    return out


def comparison_tests(series: list[Series], regions, types, subgroups, concepts) -> list[dict[str, Any]]:
    """Fisher's exact test of every shown count of every series against the first series."""
    from scipy.stats import false_discovery_control

    base = series[0]
    base_m = _measures(base.summary, regions, types, subgroups, concepts)
    n1 = base.summary.num_units
    tests = []
    for s in series[1:]:
        n2 = s.summary.num_units
        for measure, counts in _measures(s.summary, regions, types, subgroups, concepts).items():
            if measure not in base_m:
                continue
            for key, k2 in counts.items():
                k1 = base_m[measure][key]
                tests.append({
                    "baseline": base.label, "series": s.label, "measure": measure, "key": key,
                    "count_baseline": k1, "units_baseline": n1, "count": k2, "units": n2,
                    "fraction_baseline": k1 / n1 if n1 else 0.0, "fraction": k2 / n2 if n2 else 0.0,
                    "difference": (k2 / n2 if n2 else 0.0) - (k1 / n1 if n1 else 0.0),
                    "test": "Fisher exact, two-sided", "p_value": fisher_test(k1, n1, k2, n2),
                })
    if tests:
        adjusted = false_discovery_control(np.array([t["p_value"] for t in tests]), method="bh")
        for t, a in zip(tests, adjusted):
            t["p_value_bh"] = float(a)
    return tests


def comparison_table(series: list[Series]) -> dict[str, Any]:
    """Fractions (and counts) per region, concept type, global subgroup and concept, for every series."""
    s0 = series[0].summary
    layer0 = series[0].layer
    order = [i for r in s0.regions for i, cr in enumerate(layer0.concept_region) if cr == r]
    concepts = [layer0.concepts[i] for i in order]
    families, left_out = shared_families(series)
    subgroups = [(f, g) for f in families for g in s0.biased_per_group[f]]
    rows = []
    base_conditions = run_conditions(series[0].run.meta)
    for s in series:
        m = s.summary
        rows.append(
            {
                "label": s.label,
                "mixed": run_conditions(s.run.meta) != base_conditions,
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
                    **({} if not m.has_significance else {
                        "interpretable_significant": s.fraction(m.interpretable_significant),
                        "biased_significant_per_group": {
                            f: {g: s.fraction(n) for g, n in gs.items()}
                            for f, gs in m.biased_significant_per_group.items()
                        },
                        "paired_significant_per_concept": {
                            c: s.fraction(m.paired_significant_per_concept[c]) for c in concepts
                        },
                    }),
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
        "mixed": condition_differences(series),
        "tests": comparison_tests(series, s0.regions, s0.concept_types, subgroups, concepts),
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
        + f"<td>{breakable(r['label'] + (' (mixed)' if r.get('mixed') else ''))}</td>{folder_cell(r['out_dir'])}"
        + "".join(f"<td>{breakable(x)}</td>" for x in (r["layer"], r["num_units"]))
        + f'<td>{r["fractions"]["localizable"]:.3f}</td><td>{r["fractions"]["interpretable"]:.3f}</td>'
        + "".join(f'<td>{r["fractions"]["interpretable_per_region"][g]:.3f}</td>' for g in table["regions"])
        + "</tr>"
        for r in table["series"]
    )
    tests = table.get("tests", [])
    test_rows = "".join(
        "<tr>"
        + "".join(f"<td>{esc(t[k])}</td>" for k in ("series", "measure", "key"))
        + f'<td>{t["count_baseline"]}/{t["units_baseline"]}</td><td>{t["count"]}/{t["units"]}</td>'
        + f'<td>{t["difference"]:+.3f}</td><td>{t["p_value"]:.3g}</td><td>{t["p_value_bh"]:.3g}</td></tr>'
        for t in tests
    )
    tests_html = (
        f"<h2>Tests against {esc(tests[0]['baseline'])}</h2><p>Fisher's exact test, two-sided, for every count"
        " shown; p (BH) is adjusted over all of them. Units of one layer are treated as independent draws.</p>"
        "<table><thead><tr><th>series</th><th>measure</th><th>key</th><th>baseline</th><th>series</th>"
        f"<th>difference</th><th>p</th><th>p (BH)</th></tr></thead><tbody>{test_rows}</tbody></table>"
        if tests else ""
    )
    mixed = (
        '<p class="mixed"><b>Mixed conditions</b> (compared with --allow-mixed): '
        + "; ".join(esc(x) for x in table["mixed"]) + "</p>"
        if table.get("mixed") else ""
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
        ".mixed{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><title>HND comparison</title>'
        f"<style>{css}</style></head><body><h1>HND comparison</h1>"
        "<p>Fractions of each layer's units (details and counts in <a href=\"compare.json\">compare.json</a>).</p>"
        f"{reports_html}{mixed}"
        f"{left_out}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tests_html}{imgs}"
        "</body></html>\n"
    )


def compare_runs(
    outs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None, allow_mixed: bool = False
) -> Path:
    """Write the comparison figures, ``compare.json`` and ``compare.html`` into ``out``; returns ``out``.

    Raises :class:`HndError` for runs that are not comparable (``allow_mixed`` admits runs whose
    dictionaries, image sizes or scoring settings differ, and marks them; see the module docstring).
    """
    series = collect_series(outs, labels, allow_mixed=allow_mixed)
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
