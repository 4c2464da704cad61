"""``OUT/report.html`` of the demo: what was planted, what the dissection found, and links onwards.

One offline page; the comparison figures are the PNGs beside it (``compare/``), and each model's full
report is linked (``biased/report.html``, ``control/report.html``), and so is ``index.html``, the page
linking every run and page of the folder, which the demo writes last as ``hnd report OUT`` does.
"""

from __future__ import annotations

from typing import Any

from hnd_jax.reports.compare import FIGURES
from hnd_jax.reports.html import esc
from hnd_jax.reports.index import INDEX_HTML

_CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}"
    "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 10px;font-size:13px}"
    "th{background:#f3f4f6;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{color:#1a7f37;font-weight:600}.no{color:#b42318;font-weight:600}"
    "figure{margin:14px 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#667085}"
)


def _verdict(ok: bool) -> str:
    return '<span class="ok">yes</span>' if ok else '<span class="no">no</span>'


def _n(value: Any) -> str:
    return "–" if value is None else str(value)


def demo_page(summary: dict[str, Any]) -> str:
    """The HTML text of ``OUT/report.html`` for a finished demo ``summary`` (summary.json's content)."""
    p = summary["planted"]
    models = summary["models"]
    names = list(models)
    layers = summary["settings"]["layers"]
    concept, group = p["concept"], f'{p["family"]}={p["group"]}'

    rows = []
    for name in names:
        m = models[name]
        for layer in layers:
            c = m["layers"][layer]
            others = ", ".join(f"{g}: {n}" for g, n in c["biased_toward"].items() if g != p["group"])
            rows.append(
                f"<tr><td>{esc(name)}</td><td>{esc(layer)}</td><td class=n>{c['units']}</td>"
                f"<td class=n>{c['localizable']}</td><td class=n>{c['paired_with_planted_concept']}</td>"
                f"<td class=n><b>{_n(c.get('paired_significant_with_planted_concept'))}</b></td>"
                f"<td class=n>{c['top_concept_is_planted']}</td><td class=n>{c['biased_toward_planted_group']}</td>"
                f"<td class=n><b>{_n(c.get('biased_significant_toward_planted_group'))}</b></td>"
                f"<td>{esc(others)}</td><td><a href=\"{esc(c['scores'])}\">scores.npz</a></td></tr>"
            )
    counts = (
        "<table><tr><th>model</th><th>layer</th><th>units</th><th>localizable</th>"
        f"<th>paired with {esc(concept)}</th><th>significant</th><th>top concept {esc(concept)}</th>"
        f"<th>biased toward {esc(group)}</th><th>significant</th>"
        "<th>biased toward other subgroups</th><th>results</th></tr>" + "".join(rows) + "</table>"
    )
    probe_names = list(next(iter(models.values()))["probe_accuracy"])
    probes = (
        "<table><tr><th>model</th><th>training accuracy</th>"
        + "".join(f"<th>{esc(n.replace('_', ' '))}</th>" for n in probe_names)
        + "</tr>"
        + "".join(
            f"<tr><td>{esc(n)}</td><td class=n>{models[n]['train_accuracy'][-1]:.3f}</td>"
            + "".join(f"<td class=n>{models[n]['probe_accuracy'][q]:.3f}</td>" for q in probe_names)
            + "</tr>"
            for n in names
        )
        + "</table>"
    )
    f = summary["finding"]

    def finding_line(key: str, what: str) -> str:
        e = f[key]
        spread = e.get("spread")
        extra = ""
        if spread and f.get("replicates", 1) > 1:
            b, c = spread["biased_significant"], spread["control_significant"]
            extra = (
                f"; over {f['replicates']} replicates significant units biased mean {b['mean']} "
                f"(min {b['min']}, max {b['max']}), control mean {c['mean']} (min {c['min']}, max {c['max']}); "
                f"clearly more in {e['replicates_clearly_more']} of {f['replicates']}"
            )
        return (
            f"<li>Units {what}: significant units biased {e['biased_significant']}, control "
            f"{e['control_significant']} (z = {e['z_significant']}; raw counts {e['biased']} vs {e['control']}, "
            f"z = {e['z']}){extra} — clearly more: {_verdict(e['clearly_more'])}</li>"
        )

    reps = summary.get("replicates") or []
    rep_rows = "".join(
        f"<tr><td class=n>{r['seed']}</td><td>{esc(r['folder'])}</td>"
        + "".join(
            f"<td class=n>{r['finding'][k]['biased_significant']} / {r['finding'][k]['control_significant']}</td>"
            f"<td class=n>{r['finding'][k]['biased']} / {r['finding'][k]['control']}</td>"
            for k in ("paired_with_planted_concept", "biased_toward_planted_group")
        )
        + f"<td>{_verdict(r['finding']['reproduced'])}</td></tr>"
        for r in reps
    )
    replicate_table = (
        "<h2>Replicates</h2><table><tr><th>seed</th><th>folder</th>"
        f"<th>paired with {esc(concept)}: significant (biased / control)</th><th>raw</th>"
        f"<th>biased toward {esc(group)}: significant (biased / control)</th><th>raw</th><th>reproduced</th></tr>"
        f"{rep_rows}</table>"
        if len(reps) > 1 else ""
    )
    finding = (
        "<ul>"
        + finding_line("paired_with_planted_concept", f"paired with {esc(concept)}")
        + finding_line("biased_toward_planted_group", f"biased toward {esc(group)}")
        + f"</ul><p>Reproduced: {_verdict(f['reproduced'])}. Criterion: {esc(f['criterion'])}.</p>"
        "<p>Significant: paired units whose AUC for the concept is significant, biased units whose "
        "permutation test is significant (Benjamini-Hochberg over the layer, docs/algorithm.md §2c).</p>"
        + replicate_table
    )
    links = " · ".join(f'<a href="{esc(n)}/report.html">{esc(n)} model report</a>' for n in names)
    figures = "".join(
        f'<figure><img alt="{esc(fig)}" src="compare/compare_{fig}.png"><figcaption>{esc(fig.replace("_", " "))}'
        "</figcaption></figure>"
        for fig in FIGURES
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>hnd demo: planted bias</title>'
        f"<style>{_CSS}</style></head><body>"
        "<h1>hnd demo: a planted bias, found by dissection</h1>"
        f"<p>Task: <b>{esc(p['task'])}</b>. In the biased training set <b>{esc(concept)}</b> comes with the "
        f"positive class in {p['concept_bias']:.0%} of the images and <b>{esc(group)}</b> in "
        f"{p['group_bias']:.0%}; the control trains on faces where neither says anything about the label. "
        f"Both demo CNNs were then dissected on the synthetic Face Dictionary <code>{esc(summary['dictionary'])}</code> "
        f"at {summary['settings']['image_size']} px. Counts are summed over the layers {esc(', '.join(layers))}.</p>"
        f"<h2>Finding</h2>{finding}<h2>Units per layer</h2>{counts}"
        "<h2>What each model learned (probe accuracy)</h2>"
        "<p>Held-out probes: unbiased (the true task), concept only / group only (one shortcut follows the "
        "label), conflicting (both shortcuts point the wrong way).</p>"
        f"{probes}<p>{links} · <a href=\"compare/compare.html\">comparison</a> · "
        f"<a href=\"summary.json\">summary.json</a> · <a href=\"{INDEX_HTML}\">all reports here ({INDEX_HTML})</a>"
        "</p><h2>Comparison</h2>"
        f"{figures}</body></html>\n"
    )
