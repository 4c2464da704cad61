"""The report's header: ``dissection.json`` as a readable table instead of raw JSON.

One row per topic (model, dictionary, settings, layers, global families, devices, timings, created,
versions), each a short line of text. Paths are shown relative to the output folder when that is
short (``../weights.npz``), else as their last parts (``…/synthetic/96-0``); the full path is always
in the ``title`` attribute (a tooltip). Unknown or oddly shaped metadata never fails the report: it
is shown as ``key: value`` text, and the whole file is linked for the rest.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from hnd_jax.reports.run_notes import global_families_note

MAX_UP = 2  # a relative path with more '..' than this is shortened instead
MAX_TEXT = 48  # a path longer than this is shortened to its last parts


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def short_path(path: str, out_dir: Path) -> str:
    """How a path is shown: relative to ``out_dir`` when close by, else its last two parts after '…/'."""
    p = Path(path)
    if not p.is_absolute():
        return path
    try:
        rel = os.path.relpath(p, Path(out_dir).resolve())
    except ValueError:  # another drive (Windows)
        rel = path
    if rel.split(os.sep).count("..") <= MAX_UP and len(rel) <= MAX_TEXT:
        return rel
    parts = p.parts
    return path if len(parts) <= 3 and len(path) <= MAX_TEXT else "…/" + "/".join(parts[-2:])


def path_html(path: str, out_dir: Path) -> str:
    """A path as a ``<span class="path">`` with the shortened text and the full path as tooltip."""
    return f'<span class="path" title="{esc(path)}">{esc(short_path(path, out_dir))}</span>'


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _plain(value: Any, out_dir: Path, depth: int = 0) -> str:
    """Any JSON value as short HTML text (dicts as 'key: value · ...'; strings that are paths shortened)."""
    if isinstance(value, dict):
        if depth >= 2:
            return esc(f"{len(value)} entries")
        return " · ".join(f"{esc(k)}: {_plain(v, out_dir, depth + 1)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v, out_dir, depth + 1) for v in value)
    if isinstance(value, str) and (value.startswith("/") or value.startswith("~")) and len(value) > 1:
        return path_html(value, out_dir)
    if value is None:
        return "–"
    return esc(_num(value))


def _sha(value: str) -> str:
    return f'<span class="path" title="{esc(value)}">{esc(value[:12])}…</span>'


def model_row(model: Any, out_dir: Path) -> str:
    if not isinstance(model, dict):
        return _plain(model, out_dir)
    bits = []
    name = model.get("name") or model.get("card") or model.get("class")
    if name:
        bits.append(f"<b>{esc(name)}</b>")
    if model.get("architecture") and model.get("architecture") != name:
        bits.append(esc(model["architecture"]))
    if model.get("kind"):
        bits.append(esc(model["kind"]))
    weights = model.get("weights")
    if isinstance(weights, dict):
        if isinstance(weights.get("path"), str):
            fmt = f" ({esc(weights['format'])})" if weights.get("format") else ""
            bits.append(f"weights {path_html(weights['path'], out_dir)}{fmt}")
            if isinstance(weights.get("sha256"), str):
                bits.append(f"weights sha256 {_sha(weights['sha256'])}")
        elif weights.get("kind"):
            bits.append(f"weights: {esc(weights['kind'])}")
    elif isinstance(weights, str):
        bits.append(f"weights {path_html(weights, out_dir)}")
    if isinstance(model.get("file"), str):
        bits.append(f"file {path_html(model['file'], out_dir)}")
    if isinstance(model.get("shape"), list):
        bits.append("shape [" + ", ".join(esc(x) for x in model["shape"]) + "]")
    if isinstance(model.get("params_sha256"), str):
        bits.append(f"params sha256 {_sha(model['params_sha256'])}")
    known = {"name", "card", "class", "architecture", "kind", "weights", "file", "shape", "params_sha256",
             "format", "dtype", "bytes"}
    rest = {k: v for k, v in model.items() if k not in known}
    if rest:
        bits.append(_plain(rest, out_dir))
    return " · ".join(bits) if bits else "–"


def dictionary_row(ident: Any, out_dir: Path) -> str:
    if not isinstance(ident, dict):
        return _plain(ident, out_dir)
    bits = []
    if ident.get("spec"):
        spec = str(ident["spec"])
        bits.append(f"<b>{path_html(spec, out_dir) if spec.startswith('/') else esc(spec)}</b>")
    if ident.get("kind"):
        bits.append(esc(ident["kind"]))
    if isinstance(ident.get("path"), str) and ident.get("path") != ident.get("spec"):
        bits.append(path_html(ident["path"], out_dir))
    if "num_local" in ident:
        bits.append(f"{esc(ident['num_local'])} local images")
    glob = ident.get("num_global")
    if isinstance(glob, dict) and glob:
        bits.append("global: " + ", ".join(f"{esc(k)} {esc(v)}" for k, v in glob.items()))
    if ident.get("image_size"):
        bits.append(f"{esc(ident['image_size'])} px")
    if ident.get("image_resample"):
        bits.append(f"{esc(ident['image_resample'])} resampling")
    skipped = ident.get("skipped")
    if isinstance(skipped, dict) and skipped:
        bits.append("skipped " + _plain(skipped, out_dir))
    if isinstance(ident.get("content_sha256"), str):
        bits.append(f"content sha256 {_sha(ident['content_sha256'])}")
    return " · ".join(bits) if bits else "–"


SETTING_NAMES = {
    "quantile": "quantile q",
    "iou_threshold": "IoU threshold",
    "iou_mode": "IoU mode",
    "pair_factor": "pair factor",
    "bias_cutoffs": "bias cut-offs",
    "image_size": "analysis size S",
}


def settings_row(settings: Any, out_dir: Path) -> str:
    if not isinstance(settings, dict):
        return _plain(settings, out_dir)
    bits = []
    for key, value in settings.items():
        label = SETTING_NAMES.get(key, key.replace("_", " "))
        if key == "bias_cutoffs" and isinstance(value, dict) and not value:
            text = "paper's (0.3 for 4 groups, 0.55 for 2)"
        elif key == "image_size":
            text = f"{_plain(value, out_dir)} px"
        else:
            text = _plain(value, out_dir)
        bits.append(f"{esc(label)} <b>{text}</b>")
    return " · ".join(bits)


def layers_row(meta: dict[str, Any]) -> str:
    names = meta.get("layers")
    if isinstance(names, dict):
        names = list(names)
    if not isinstance(names, list):
        return ""
    units = meta.get("units") if isinstance(meta.get("units"), dict) else {}
    hw = meta.get("map_hw") if isinstance(meta.get("map_hw"), dict) else {}
    out = []
    for item in names:
        name = item.get("name") if isinstance(item, dict) else item
        extra = []
        if name in units:
            extra.append(f"{esc(units[name])} units")
        if isinstance(hw.get(name), list) and len(hw[name]) == 2:
            extra.append(f"{esc(hw[name][0])}×{esc(hw[name][1])} maps")
        out.append(f"<b>{esc(name)}</b>" + (f" ({', '.join(extra)})" if extra else ""))
    return " · ".join(out)


def families_row(record: Any, out_dir: Path) -> str:
    if not isinstance(record, dict):
        return _plain(record, out_dir)
    scored = record.get("scored") or []
    skipped = record.get("skipped") if isinstance(record.get("skipped"), dict) else {}
    text = "scored: " + (", ".join(esc(x) for x in scored) if scored else "none")
    if skipped:
        text += f' · <span class="warn">not scored: {esc(", ".join(skipped))} (why: see the note below)</span>'
    return text


def timings_row(timings: Any) -> str:
    if not isinstance(timings, dict):
        return ""
    parts = [f"{esc(k)} {float(v):.1f} s" for k, v in timings.items() if isinstance(v, (int, float)) and k != "total"]
    total = timings.get("total")
    head = f"<b>{float(total):.1f} s</b> total" if isinstance(total, (int, float)) else ""
    return " · ".join([head] + parts if head else parts)


def devices_row(devices: Any, out_dir: Path) -> str:
    if isinstance(devices, dict) and "count" in devices:
        kind = devices.get("kind") or devices.get("platform") or "device"
        procs = devices.get("process_count")
        extra = f" in {esc(procs)} processes" if isinstance(procs, int) and procs > 1 else ""
        return f"{esc(devices['count'])} × {esc(kind)}{extra}"
    return _plain(devices, out_dir)


def header_rows(meta: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
    """(label, HTML) rows of the header table, in reading order; absent topics are left out."""
    rows: list[tuple[str, str]] = []
    if "model" in meta:
        label = "activations" if meta.get("source") == "activations" else "model"
        rows.append((label, model_row(meta["model"], out_dir)))
    if "dictionary" in meta:
        rows.append(("dictionary", dictionary_row(meta["dictionary"], out_dir)))
    if "settings" in meta:
        rows.append(("settings", settings_row(meta["settings"], out_dir)))
    elif "image_size" in meta:
        rows.append(("analysis size", f"{esc(meta['image_size'])} px"))
    layers = layers_row(meta)
    if layers:
        rows.append(("layers", layers))
    if "global_families" in meta:
        rows.append(("global families", families_row(meta["global_families"], out_dir)))
    if "taxonomy" in meta and isinstance(meta["taxonomy"], dict):
        tax = meta["taxonomy"]
        rows.append(("taxonomy", esc(tax.get("name", "")) + (f" · {_plain(tax['source'], out_dir)}" if tax.get("source") else "")))
    if "devices" in meta:
        rows.append(("devices", devices_row(meta["devices"], out_dir)))
    timings = timings_row(meta.get("timings"))
    if timings:
        rows.append(("time", timings))
    if "created" in meta:
        rows.append(("created", esc(meta["created"])))
    if isinstance(meta.get("versions"), dict):
        rows.append(("versions", " · ".join(f"{esc(k)} {esc(v)}" for k, v in meta["versions"].items())))
    return rows


def header_html(meta: dict[str, Any], out_dir: str | Path) -> str:
    """The header table (and the missing-global-families note) of ``OUT/report.html``."""
    out_dir = Path(out_dir)
    rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in header_rows(meta, out_dir))
    link = '<p class="meta-all">Every recorded detail: <a href="dissection.json">dissection.json</a></p>'
    note = global_families_note(meta)
    note_html = f'<p class="warnbox" id="global-families-note">{esc(note)}</p>' if note else ""
    return f'<table class="meta"><tbody>{rows}</tbody></table>{link}{note_html}'


HEADER_CSS = """
table.meta{width:auto;max-width:100%;margin:4px 0}table.meta th{border:0;padding:1px 14px 1px 0;vertical-align:top;
white-space:nowrap;font-weight:600}table.meta td{font-size:13px;padding:1px 0;overflow-wrap:anywhere}
span.path{font-family:ui-monospace,monospace;font-size:12px;border-bottom:1px dotted #98a2b3;cursor:help}
.meta-all{font-size:12px;color:var(--muted);margin:2px 0 6px}.warn{color:#b54708}
.warnbox{background:#fffaeb;border:1px solid #fedf89;border-radius:6px;padding:6px 10px;margin:6px 0;font-size:13px;color:#7a2e0e}
"""
