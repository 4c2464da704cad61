"""The filter/sort script, run in a real browser (headless chromium) against the fixture's arrays.

Needs a chromium binary; without one the test is skipped and says so (the HTML structure is
checked by test_html_report.py either way).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from reports_fixture import write_fixture_run

from hnd_jax.reports.html import write_report

PROBE = """<script>
(function(){
var s=document.querySelector('section.layer'), out={};
function set(cls,val){var el=s.querySelector(cls); if(el.type==='checkbox') el.checked=val; else el.value=val;
  el.dispatchEvent(new Event('change'));}
function visible(){return Array.prototype.slice.call(s.querySelectorAll('.card'))
  .filter(function(c){return !c.hidden;}).map(function(c){return +c.dataset.unit;});}
out.initial=visible();
set('.f-region','Mouth'); out.region=visible(); set('.f-region','-'); out.nonloc=visible(); set('.f-region','');
set('.f-concept','%CONCEPT%'); out.concept=visible(); set('.f-concept','');
set('.f-iou','0.1'); out.iou=visible(); set('.f-iou','0');
set('.f-interp',true); out.interp=visible(); set('.f-interp',false);
set('.f-sort','unit'); out.unit=visible();
out.count=s.querySelector('.count').textContent;
var pre=document.createElement('pre'); pre.id='probe'; pre.textContent=JSON.stringify(out); document.body.appendChild(pre);
})();
</script></body>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_filters_and_sorting_in_a_browser(tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium/chrome binary on PATH: the script is not executed here")
    run = write_fixture_run(tmp_path / "run", {"l": 24}, image_size=12, num_images=5, seed=6, top=False)
    a = run.layers[0].arrays
    concepts = [str(c) for c in a["concepts"]]
    loc = a["localizable"]
    paired = a["paired"] & loc[:, None]
    probe_concept = concepts[int(np.argmax(paired.sum(axis=0)))]
    text = write_report(run.out).read_text().replace("</body>", PROBE.replace("%CONCEPT%", probe_concept))
    page = tmp_path / "run" / "probe.html"
    page.write_text(text)
    res = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, res.stderr[-2000:]
    got = json.loads(html.unescape(found.group(1)))

    units = range(24)
    top = a["top_concept"]
    best = [float(a["iou"][u, top[u]]) if top[u] >= 0 else -1.0 for u in units]
    assert got["initial"] == sorted(units, key=lambda u: (-best[u], u))
    assert sorted(got["region"]) == [u for u in units if loc[u] and a["region"][u] == "Mouth"]
    assert sorted(got["nonloc"]) == [u for u in units if not loc[u]]
    c = concepts.index(probe_concept)
    assert sorted(got["concept"]) == [u for u in units if top[u] == c or paired[u, c]]
    assert sorted(got["iou"]) == [u for u in units if best[u] >= 0.1]
    assert sorted(got["interp"]) == [u for u in units if paired[u].any()]
    assert got["unit"] == list(units)
    assert got["count"] == "24 of 24 units shown"
