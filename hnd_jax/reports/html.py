"""``OUT/report.html``: a dissection you can read in a browser, offline.

One self-contained HTML file (inline CSS and vanilla JS, no CDN, no framework) plus, when the
dictionary is available, one small JPEG strip per unit under ``OUT/report_assets/`` (the top images
with the thresholded activation and the top concept's mask; see :mod:`hnd_jax.reports.overlays`).
Keeping images beside the page instead of inlining them keeps the page light for 512+ units and lets
the browser load them lazily.

Per layer the page shows the summary counts (:mod:`hnd_jax.reports.summary`), the plots from
``OUT/plots/`` when they exist, and one card per unit. Cards are rendered on the server side (they
are in the file, searchable and printable); the script only filters and re-orders them by concept,
region, IoU and interpretability. All text from the results is escaped.
"""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import numpy as np
from PIL import Image

from hnd_jax.atomic import atomic_dir, write_text
from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.reports.header import HEADER_CSS, header_html
from hnd_jax.reports.overlays import THUMB_SIZE, UnitTiles, render_unit_tiles
from hnd_jax.reports.plots import PLOT_NAMES, plot_path
from hnd_jax.reports.results_view import LayerResults, RunResults, iou_threshold_of, load_run
from hnd_jax.reports.run_notes import skipped_global_families
from hnd_jax.reports.summary import LayerSummary, interpretable_mask, summarize_layer

REPORT_HTML = "report.html"
ASSETS_DIR = "report_assets"
JPEG_QUALITY = 88


def esc(value: Any) -> str:
    """Escape any value for HTML text and attribute context."""
    return html.escape(str(value), quote=True)


def fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# --------------------------------------------------------------------------------------------- assets
def _write_jpeg(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _units_to_show(layer: LayerResults, max_units: int | None) -> list[int]:
    """All units in index order, or the ``max_units`` with the highest IoU (ties: lower index first)."""
    units = np.arange(layer.num_units)
    if max_units is None or max_units >= layer.num_units:
        return units.tolist()
    best = np.max(np.where(np.isnan(layer.iou), -1.0, layer.iou), axis=1, initial=-1.0)
    top = np.lexsort((units, -best))[: max(0, max_units)]
    return sorted(top.tolist())


# --------------------------------------------------------------------------------------------- pieces
CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--hl:#fff2cc;--bias:#fde2e1;--acc:#2f6fde}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);
margin:0;background:#f7f8fa}header,section.layer{max-width:1280px;margin:0 auto;padding:16px 24px}
header{border-bottom:1px solid var(--line);background:#fff;max-width:none}header h1{margin:0 0 6px;font-size:22px}
h2{font-size:19px;margin:18px 0 8px;border-bottom:2px solid var(--acc);padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
nav a{margin-right:12px}.headline{font-size:15px;margin:6px 0 12px}.headline b{font-size:17px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:14px}
.panel{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
table{border-collapse:collapse;width:100%}td,th{padding:2px 6px;text-align:left;font-size:13px}
th{color:var(--muted);font-weight:600;border-bottom:1px solid var(--line)}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{height:9px;background:var(--acc);border-radius:2px;min-width:1px}.bar.b2{background:#9bb7ef}
td.barcell{width:35%;min-width:60px}.scroll{max-height:360px;overflow-y:auto;overflow-x:hidden}td{overflow-wrap:break-word}
.plots{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0;align-items:flex-start}
.plots img{max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
details.plotbox summary{cursor:pointer;color:var(--muted);margin-top:10px}
.barkey{font-size:12px;color:var(--muted);margin:6px 0 0}.barkey i{display:inline-block;width:14px;height:9px;border-radius:2px;
margin:0 4px 0 10px;vertical-align:0}.barkey i:first-child{margin-left:0}
.controls{position:sticky;top:0;z-index:2;background:#f7f8fa;padding:8px 0;display:flex;flex-wrap:wrap;gap:12px;
align-items:center;border-bottom:1px solid var(--line);margin-top:14px}.controls label{font-size:13px}
.controls select,.controls input[type=number]{font:inherit;padding:2px 4px}.count{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,410px),1fr));gap:12px;margin-top:12px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}.card[hidden]{display:none}
.card.dim{opacity:.78}.card header{all:unset;display:flex;justify-content:space-between;align-items:baseline;gap:8px}
.card h4{margin:0;font-size:15px}.tag{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;background:#eef2fb;color:#2c4a8a}
.tag.no{background:#f1f1f1;color:#777}.top{margin:4px 0 6px}.strip{display:block;width:100%;max-width:392px;image-rendering:auto}
.caps{display:flex;max-width:392px;font-size:11px;color:var(--muted)}.caps span{flex:1;text-align:center}
.note{color:var(--muted);font-style:italic;font-size:12px;margin:4px 0}
table.p td{font-size:12px;padding:1px 5px}tr.hl td{background:var(--hl);font-weight:600}tr.bias td{background:var(--bias);font-weight:600}
.legend span{display:inline-block;width:12px;height:12px;vertical-align:-1px;margin:0 4px 0 10px;border-radius:2px}
.fam{color:var(--muted);font-size:12px;margin-top:4px}
details.zero summary{font-size:12px;color:var(--muted);cursor:pointer}
"""

JS = """
(function(){
  function num(v){var x=parseFloat(v);return isNaN(x)?-1:x;}
  document.querySelectorAll('section.layer').forEach(function(sec){
    var box=sec.querySelector('.cards'); if(!box) return;
    var cards=Array.prototype.slice.call(box.querySelectorAll('.card'));
    var fc=sec.querySelector('.f-concept'), fr=sec.querySelector('.f-region'), fi=sec.querySelector('.f-iou'),
        fo=sec.querySelector('.f-interp'), fs=sec.querySelector('.f-sort'), cnt=sec.querySelector('.count');
    function apply(){
      var c=fc.value, r=fr.value, m=num(fi.value), only=fo.checked, shown=0;
      cards.forEach(function(el){
        var d=el.dataset, paired=d.paired?d.paired.split('|'):[];
        var ok=(!c||d.concept===c||paired.indexOf(c)>=0)&&(!r||d.region===r)&&(m<=0||num(d.iou)>=m)&&(!only||d.interpretable==='1');
        el.hidden=!ok; if(ok) shown++;
      });
      cnt.textContent=shown+' of '+cards.length+' units shown';
    }
    function order(){
      var k=fs.value, sorted=cards.slice();
      sorted.sort(function(a,b){
        var A=a.dataset,B=b.dataset,ua=+A.unit,ub=+B.unit;
        if(k==='iou-desc') return (num(B.iou)-num(A.iou))||(ua-ub);
        if(k==='iou-asc') return (num(A.iou)-num(B.iou))||(ua-ub);
        if(k==='concept') return (A.concept||'~').localeCompare(B.concept||'~')||(num(B.iou)-num(A.iou))||(ua-ub);
        if(k==='region') return (A.region||'~').localeCompare(B.region||'~')||(num(B.iou)-num(A.iou))||(ua-ub);
        return ua-ub;
      });
      sorted.forEach(function(el){box.appendChild(el);});
    }
    [fc,fr,fi,fo].forEach(function(el){el.addEventListener('input',apply);el.addEventListener('change',apply);});
    fs.addEventListener('change',order);
    order(); apply();
  });
})();
"""


def bar_key(names: Iterable[str]) -> str:
    """The legend of a count table's bars: one swatch per bar colour (first numeric column first)."""
    swatches = "".join(f'<i class="bar{" b2" if i else ""}"></i>{esc(n)}' for i, n in enumerate(names))
    return f'<p class="barkey">bars: {swatches}</p>'


def _count_table(
    title: str,
    rows: Iterable[tuple[str, ...]],
    headers: tuple[str, ...],
    counts: list[list[int]],
    legend: tuple[str, ...] = (),
) -> str:
    """A table of named rows with numeric columns and bars for the first two; ``legend`` names the bars."""
    rows = list(rows)
    top = max([c for cs in counts for c in cs[:2]] + [1])  # both bars on one scale, none past the cell
    body = []
    for names, cs in zip(rows, counts):
        cells = "".join(f"<td>{esc(n)}</td>" for n in names)
        nums = "".join(f'<td class="n">{c}</td>' for c in cs)
        bars = f'<div class="bar" style="width:{100.0 * cs[0] / top:.1f}%"></div>'
        if len(cs) > 1:
            bars += f'<div class="bar b2" style="width:{100.0 * cs[1] / top:.1f}%"></div>'
        body.append(f'<tr>{cells}{nums}<td class="barcell">{bars}</td></tr>')
    head = "".join(f"<th>{esc(h)}</th>" for h in headers) + "<th></th>"
    return (
        f'<div class="panel"><h3>{esc(title)}</h3><div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>{bar_key(legend) if legend else ""}</div>'
    )


def _sig(n: int | None) -> str:
    """' (k significant)' beside a raw count, or '' for results without significance."""
    return "" if n is None else f" (<b>{n}</b> significant)"


def summary_html(layer: LayerResults, summary: LayerSummary, meta: dict[str, Any] | None = None) -> str:
    """The summary block of one layer: headline numbers and the count tables.

    Raw counts are shown with their significant subset (DESIGN.md §2c) when the results carry it;
    ``meta`` (dissection.json) says why global families are missing, when they are.
    """
    u = max(summary.num_units, 1)
    sig_fam = summary.biased_significant_per_family or {}
    fam_bits = "".join(
        f" · <b>{n}</b> biased ({esc(f)}){_sig(sig_fam.get(f))}" for f, n in summary.biased_per_family.items()
    )
    headline = (
        f'<p class="headline"><b>{summary.num_units}</b> units · <b>{summary.localizable}</b> localizable '
        f"({100.0 * summary.localizable / u:.1f}%) · <b>{summary.interpretable}</b> interpretable "
        f"(paired, {100.0 * summary.interpretable / u:.1f}%){_sig(summary.interpretable_significant)}{fam_bits}</p>"
    )
    if summary.has_significance:
        headline += (
            '<p class="note">significant: paired with AUC &gt; 0.5 (Mann-Whitney) or biased by a label permutation'
            " test, Benjamini-Hochberg over the layer at the run's alpha (docs/algorithm.md §2c).</p>"
        )
    panels = [
        _count_table(
            "Per facial region",
            [(r,) for r in summary.regions],
            ("region", "localizable", "interpretable"),
            [[summary.localizable_per_region[r], summary.interpretable_per_region[r]] for r in summary.regions],
            legend=("localizable", "interpretable"),
        ),
        _count_table(
            "Per concept type",
            [(t,) for t in summary.concept_types],
            ("type", "localizable (top concept)", "interpretable (paired)"),
            [[summary.localizable_per_type[t], summary.interpretable_per_type[t]] for t in summary.concept_types],
            legend=("localizable (top concept)", "interpretable (paired)"),
        ),
    ]
    order = [i for r in summary.regions for i, cr in enumerate(layer.concept_region) if cr == r]
    psig = summary.paired_significant_per_concept
    panels.append(
        _count_table(
            "Units paired per concept",
            [(layer.concepts[i], layer.concept_region[i], layer.concept_type[i]) for i in order],
            ("concept", "region", "type", "paired units") + (() if psig is None else ("significant",)),
            [[summary.paired_per_concept[layer.concepts[i]]] + ([] if psig is None else [psig[layer.concepts[i]]])
             for i in order],
        )
    )
    if summary.biased_per_group:
        rows = [(f, g) for f, gs in summary.biased_per_group.items() for g in gs]
        bsig = summary.biased_significant_per_group
        panels.append(
            _count_table(
                "Biased units per global subgroup",
                rows,
                ("family", "subgroup", "biased units") + (() if bsig is None else ("significant",)),
                [[summary.biased_per_group[f][g]] + ([] if bsig is None else [bsig[f][g]]) for f, g in rows],
            )
        )
    else:
        skipped = skipped_global_families(meta or {})
        why = (f"No global family was scored ({esc(', '.join(skipped))}): "
               '<a href="#global-families-note">why, and how to get them</a>.') if skipped else (
               "These results have no global families.")
        panels.append(f'<div class="panel"><h3>Biased units per global subgroup</h3><p class="note">{why}</p></div>')
    return headline + f'<div class="grid">{"".join(panels)}</div>'


def _size_attrs(path: Path) -> str:
    """` width=".." height=".."` of an image file (read from its header), so the page lays out before it loads."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError:
        return ""
    return f' width="{w}" height="{h}"'


def plots_html(out_dir: Path, layer: LayerResults) -> str:
    imgs = []
    for name in PLOT_NAMES:
        path = plot_path(out_dir, layer.name, name)
        if path.is_file():
            rel = "/".join(quote(p) for p in path.relative_to(out_dir).parts)
            imgs.append(f'<img loading="lazy"{_size_attrs(path)} src="{esc(rel)}" alt="{esc(name.replace("_", " "))}">')
    if not imgs:
        return ""
    return f'<details class="plotbox" open><summary>Plots (OUT/plots/)</summary><div class="plots">{"".join(imgs)}</div></details>'


def controls_html(layer: LayerResults, summary: LayerSummary) -> str:
    concepts = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in sorted(set(layer.concepts)))
    regions = "".join(f'<option value="{esc(r)}">{esc(r)}</option>' for r in summary.regions)
    return (
        '<div class="controls">'
        f'<label>Concept (top or paired) <select class="f-concept"><option value="">any</option>{concepts}</select></label>'
        f'<label>Region <select class="f-region"><option value="">any</option>{regions}'
        '<option value="-">(not localizable)</option></select></label>'
        '<label>Min IoU <input class="f-iou" type="number" min="0" max="1" step="0.01" value="0" size="5"></label>'
        '<label><input class="f-interp" type="checkbox"> interpretable only</label>'
        '<label>Sort <select class="f-sort"><option value="iou-desc">IoU, high first</option>'
        '<option value="iou-asc">IoU, low first</option><option value="unit">unit index</option>'
        '<option value="concept">top concept</option><option value="region">region</option></select></label>'
        '<span class="count"></span></div>'
    )


def _prob_rows(layer: LayerResults, u: int) -> str:
    """Within-region probabilities of a localizable unit, largest first; paired ones highlighted.

    Concepts with P(c|u) = 0 (often most of a region) are folded under a <details> to keep cards short.
    """
    idx = [i for i, r in enumerate(layer.concept_region) if r == layer.region[u]]
    idx.sort(key=lambda i: (-float(layer.local_probs[u, i]), i))

    def row(i: int) -> str:
        star = " *" if layer.paired_significant is not None and layer.paired_significant[u, i] else ""
        auc = "" if layer.auc is None else (
            f'<td class="n">AUC {fmt(float(layer.auc[u, i]))} p {float(layer.auc_pvalues[u, i]):.2g}</td>'
        )
        return (
            f'<tr class="{"hl" if layer.paired[u, i] else ""}"><td>{esc(layer.concepts[i])}{star}</td>'
            f'<td class="n">{fmt(float(layer.local_probs[u, i]))}</td>'
            f'<td class="n">IoU {fmt(float(layer.iou[u, i]))}</td>{auc}</tr>'
        )

    shown = [i for i in idx if layer.local_probs[u, i] > 0 or layer.paired[u, i]]
    rest = [i for i in idx if i not in shown]
    extra = "" if layer.auc is None else "<th></th>"
    head = f'<thead><tr><th>P(c|u) in {esc(layer.region[u])}</th><th></th><th></th>{extra}</tr></thead>'
    out = f'<table class="p">{head}<tbody>{"".join(row(i) for i in shown)}</tbody></table>'
    if rest:
        out += (
            f'<details class="zero"><summary>{len(rest)} more in {esc(layer.region[u])} with P = 0</summary>'
            f'<table class="p"><tbody>{"".join(row(i) for i in rest)}</tbody></table></details>'
        )
    return out


def _global_rows(layer: LayerResults, u: int) -> str:
    parts = []
    for fam in layer.global_families:
        def cell(g: int, name: str) -> str:
            star = " *" if fam.biased_significant is not None and fam.biased_significant[u, g] else ""
            p = "" if fam.pvalues is None else f'<td class="n">p {float(fam.pvalues[u, g]):.2g}</td>'
            return (
                f'<tr class="{"bias" if fam.biased[u, g] else ""}"><td>{esc(name)}{star}</td>'
                f'<td class="n">{fmt(float(fam.probs[u, g]))}</td>{p}</tr>'
            )

        cells = "".join(cell(g, name) for g, name in enumerate(fam.groups))
        parts.append(f'<div class="fam">{esc(fam.name)}</div><table class="p"><tbody>{cells}</tbody></table>')
    if not parts:
        return ""
    return '<div style="display:grid;grid-template-columns:repeat(2,1fr);gap:0 10px">' + "".join(
        f"<div>{p}</div>" for p in parts
    ) + "</div>"


def card_html(layer: LayerResults, u: int, interpretable: bool, image_html: str, iou_threshold: float | None) -> str:
    """One unit's card, with the data attributes the filter/sort script reads."""
    c = int(layer.top_concept[u])
    best = float(layer.iou[u, c]) if c >= 0 else float("nan")
    concept = layer.concepts[c] if c >= 0 else ""
    loc = bool(layer.localizable[u])
    paired = [layer.concepts[i] for i in np.flatnonzero(layer.paired[u])] if loc else []
    region = str(layer.region[u]) if loc else "-"
    if c < 0:
        top = '<p class="top">top concept <b>none</b> (best IoU 0 or undefined)</p>'
    else:
        cut = f" &lt; {fmt(iou_threshold)}" if (iou_threshold is not None and not loc) else ""
        top = (
            f'<p class="top">top concept <b>{esc(concept)}</b> · IoU <b>{fmt(best)}</b>{cut}'
            f' · {esc(layer.concept_type[c])}</p>'
        )
    tag = f'<span class="tag">{esc(region)}</span>' if loc else '<span class="tag no">not localizable</span>'
    body = [top, image_html]
    if loc:
        body.append(_prob_rows(layer, u))
        if paired:
            body.append(f'<p class="note">paired with {esc(", ".join(paired))}</p>')
            if layer.paired_significant is not None:
                sig = [layer.concepts[i] for i in np.flatnonzero(layer.paired_significant[u] & layer.paired[u])]
                body.append(f'<p class="note">significant (*): {esc(", ".join(sig)) if sig else "none"}</p>')
        else:
            body.append('<p class="note">paired with no concept (no P(c|u) above the cut-off)</p>')
    body.append(_global_rows(layer, u))
    body.append(f'<p class="note">threshold T = {float(layer.thresholds[u]):.4g}</p>')
    attrs = (
        f'data-unit="{u}" data-iou="{"" if math.isnan(best) else f"{best:.6f}"}" data-concept="{esc(concept)}" '
        f'data-region="{esc(region)}" data-paired="{esc("|".join(paired))}" data-interpretable="{int(interpretable)}"'
    )
    cls = "card" if interpretable else "card dim"
    return (
        f'<article class="{cls}" id="{esc(layer.name)}-u{u}" {attrs}><header><h4>unit {u}</h4>{tag}</header>'
        f'{"".join(body)}</article>'
    )


def _image_block(tiles: UnitTiles | None, src: str | None, note: str | None) -> str:
    if tiles is None or src is None:
        return f'<p class="note">{esc(note or "no images")}</p>'
    caps = "".join(
        f"<span>{'#' + str(int(i)) if i >= 0 else '—'}"
        f"{'' if math.isnan(a) else f' · {100 * a:.0f}%'}</span>"
        for i, a in zip(tiles.indices, tiles.active_fraction)
    )
    k = len(tiles.indices)
    w = k * THUMB_SIZE + (k - 1) * 2
    return (
        f'<img class="strip" loading="lazy" width="{w}" height="{THUMB_SIZE}" src="{esc(src)}" '
        f'alt="top {k} images of unit {tiles.unit}"><div class="caps">{caps}</div>'
    )


# --------------------------------------------------------------------------------------------- page
def _no_image_note(layer: LayerResults, dictionary: FaceDictionary | None) -> str | None:
    if layer.top_images is None:
        return "Top images were not stored with these results (no 'top_images' in scores.npz)."
    if dictionary is None:
        return "Top images not shown: the Face Dictionary was not available when this report was written."
    return None


LEGEND = (
    '<p class="legend">Top images: dimmed outside the unit\'s thresholded activation'
    '<span style="background:rgb(255,150,0)"></span>activation boundary'
    '<span style="background:rgb(0,230,255)"></span>top concept mask · '
    "caption: dictionary image index · share of pixels above threshold. "
    "Highlighted rows: paired concepts (yellow), biased subgroups (red); * marks the significant ones.</p>"
)


def _write_strips(tiles: dict[int, UnitTiles], folder: Path, url_prefix: str) -> dict[int, str]:
    """One JPEG strip per unit; returns unit -> relative URL."""
    if not tiles:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    srcs = {}
    for u, t in tiles.items():
        _write_jpeg(folder / f"u{u:05d}.jpg", t.strip())
        srcs[u] = f"{url_prefix}/u{u:05d}.jpg"
    return srcs


def layer_section(
    out: Path,
    index: int,
    layer: LayerResults,
    assets: Path,
    *,
    dictionary: FaceDictionary | None,
    max_units: int | None,
    iou_threshold: float | None,
    meta: dict[str, Any] | None = None,
) -> str:
    """The <section> of one layer: summary, plots, controls and unit cards (writes its image strips)."""
    summary = summarize_layer(layer)
    interp = interpretable_mask(layer)
    units = _units_to_show(layer, max_units)
    note = _no_image_note(layer, dictionary)
    tiles: dict[int, UnitTiles] = {}
    if note is None:
        tiles = render_unit_tiles(layer, dictionary, units)
        if layer.top_maps is None:
            note = "Activation maps were not stored ('top_maps' absent): only the concept outline is drawn."
    srcs = _write_strips(tiles, assets / f"L{index}", f"{ASSETS_DIR}/L{index}")
    cards = "".join(
        card_html(layer, u, bool(interp[u]), _image_block(tiles.get(u), srcs.get(u), note), iou_threshold)
        for u in units
    )
    shown = "" if len(units) == layer.num_units else (
        f'<p class="note">Showing the {len(units)} units with the highest IoU of {layer.num_units}.</p>'
    )
    legend = LEGEND + (f'<p class="note">{esc(note)}</p>' if tiles and note else "")
    return (
        f'<section class="layer" id="layer-{index}" data-layer="{esc(layer.name)}">'
        f"<h2>Layer {esc(layer.name)}</h2>{summary_html(layer, summary, meta)}{plots_html(out, layer)}"
        f'{controls_html(layer, summary)}{legend}{shown}<div class="cards">{cards}</div></section>'
    )


def _title(meta: dict[str, Any]) -> str:
    model = meta.get("model")
    if isinstance(model, dict):
        name = model.get("name") or model.get("card") or model.get("kind") or ""
    else:
        name = model or ""
    return f"HND report · {name}" if name else "HND report"


def page_html(meta: dict[str, Any], layer_names: list[str], sections: list[str], out_dir: str | Path = ".") -> str:
    """The whole document around the layer sections (inline CSS and script: nothing loaded from outside).

    ``out_dir``: the output folder, to show recorded paths relative to it (see :mod:`hnd_jax.reports.header`).
    """
    title = _title(meta)
    nav = "".join(f'<a href="#layer-{i}">{esc(name)}</a>' for i, name in enumerate(layer_names))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}{HEADER_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>{header_html(meta, out_dir)}<nav>{nav}</nav></header>"
        f"{''.join(sections)}<script>{JS}</script></body></html>\n"
    )


def write_report(
    out_dir: str | Path,
    *,
    dictionary: FaceDictionary | None = None,
    max_units: int | None = None,
    run: RunResults | None = None,
) -> Path:
    """Write ``OUT/report.html`` (and ``OUT/report_assets/``) for a finished dissection; returns its path.

    ``dictionary``: the Face Dictionary the run used (for the top images); without it the cards
    say so instead of showing images. ``max_units``: show at most this many unit cards per layer
    (those with the highest IoU); the summaries always count every unit. The results are validated
    before anything is written, the image folder is built under a temporary name and the page is
    written atomically, so a failure leaves the previous report as it was. ``run``: the results of
    ``out_dir`` when the caller has already loaded them (:func:`load_run`), so they are not read again.
    """
    run = load_run(out_dir) if run is None else run
    out = run.out_dir
    iou_cut = iou_threshold_of(run.meta)
    with atomic_dir(out / ASSETS_DIR) as assets:
        assets.chmod(0o755)  # mkdtemp makes it private; a report folder is meant to be shared or served
        sections = [
            layer_section(
                out, i, layer, assets, dictionary=dictionary, max_units=max_units, iou_threshold=iou_cut, meta=run.meta
            )
            for i, layer in enumerate(run.layers)
        ]
        has_assets = any(assets.iterdir())
    if not has_assets:
        shutil.rmtree(out / ASSETS_DIR, ignore_errors=True)
    path = out / REPORT_HTML
    write_text(path, page_html(run.meta, [layer.name for layer in run.layers], sections, out))
    return path
