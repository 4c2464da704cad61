"""``OUT/report.html`` of the demo: what was planted, what the dissection found, and links onwards.

One offline page; the comparison figures are the PNGs beside it (``compare/``), and each model's full
report is linked (``biased/report.html``, ``control/report.html``).
"""

from __future__ import annotations

from typing import Any

from hnd_jax.reports.compare import FIGURES
from hnd_jax.reports.html import esc

_CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}"
    "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 10px;font-size:13px}"
    "th{background:#f3f4f6;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{color:#1a7f37;font-weight:600}.no{color:#b42318;font-weight:600}"
    "figure{margin:14px 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#667085}"
)


def _verdict(ok: bool) -> str:
    return '<span class="ok">yes</span>' if ok else '<span class="no">no</span>'


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
                f"<td class=n>{c['localizable']}</td><td class=n><b>{c['paired_with_planted_concept']}</b></td>"
                f"<td class=n>{c['top_concept_is_planted']}</td><td class=n><b>{c['biased_toward_planted_group']}</b></td>"
                f"<td>{esc(others)}</td><td><a href=\"{esc(c['scores'])}\">scores.npz</a></td></tr>"
            )
    counts = (
        "<table><tr><th>model</th><th>layer</th><th>units</th><th>localizable</th>"
        f"<th>paired with {esc(concept)}</th><th>top concept {esc(concept)}</th><th>biased toward {esc(group)}</th>"
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
    finding = (
        "<ul>"
        f"<li>Units paired with {esc(concept)}: biased {f['paired_with_planted_concept']['biased']}, "
        f"control {f['paired_with_planted_concept']['control']} (z = {f['paired_with_planted_concept']['z']}) — clearly more: "
        f"{_verdict(f['paired_with_planted_concept']['clearly_more'])}</li>"
        f"<li>Units biased toward {esc(group)}: biased {f['biased_toward_planted_group']['biased']}, "
        f"control {f['biased_toward_planted_group']['control']} (z = {f['biased_toward_planted_group']['z']}) — clearly more: "
        f"{_verdict(f['biased_toward_planted_group']['clearly_more'])}</li></ul>"
        f"<p>Criterion: {esc(f['criterion'])}.</p>"
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
        "<a href=\"summary.json\">summary.json</a></p><h2>Comparison</h2>"
        f"{figures}</body></html>\n"
    )
