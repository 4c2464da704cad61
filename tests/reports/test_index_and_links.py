"""`hnd report FOLDER` on a folder of dissections (index page), compare.html's links back, plot sizes."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from html_check import parse_report
from PIL import Image
from reports_fixture import write_fixture_run

from hnd_jax.cli import main as cli_main
from hnd_jax.reports.compare import FIGURES, compare_runs
from hnd_jax.reports.index import find_runs
from hnd_jax.reports.plots import MAX_WIDTH_IN, PLOT_NAMES, plot_path, write_plots


def local_links(page: Path) -> list[Path]:
    """Every relative href/src of ``page`` resolved to a file path (data: and #anchors left out)."""
    parsed = parse_report(page.read_text())
    assert parsed.errors == [] and parsed.stack == []
    out = []
    for _, _, url in parsed.urls:
        if url.startswith(("data:", "#")) or not url:
            continue
        assert not urlparse(url).scheme, f"{page}: external link {url}"
        out.append((page.parent / unquote(url)).resolve())
    return out


def demo_like(tmp_path: Path) -> Path:
    """A folder laid out like `hnd demo`'s: two runs, an overview page, summary.json, a comparison."""
    folder = tmp_path / "demo"
    write_fixture_run(folder / "biased", {"conv3": 6, "conv4": 8}, seed=1, top=False)
    write_fixture_run(folder / "control", {"conv3": 6, "conv4": 8}, seed=2, top=False)
    (folder / "models" / "biased").mkdir(parents=True)
    (folder / "report.html").write_text("<!DOCTYPE html><html><body>demo</body></html>")
    (folder / "summary.json").write_text("{}")
    compare_runs([folder / "biased", folder / "control"], folder / "compare")
    return folder


def test_report_on_a_folder_of_runs_writes_each_report_and_an_index(tmp_path, capsys):
    folder = demo_like(tmp_path)
    code = cli_main.main(["report", str(folder), "--no-images"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (folder / "biased" / "report.html").is_file() and (folder / "control" / "report.html").is_file()
    assert f"wrote {folder / 'index.html'} (links the 2 reports)" in out
    links = local_links(folder / "index.html")
    for target in ("biased/report.html", "control/report.html", "biased/dissection.json", "report.html",
                   "summary.json", "compare/compare.html"):
        assert (folder / target).resolve() in links, target
    assert all(p.exists() for p in links)
    text = (folder / "index.html").read_text()
    assert text.count("<tr>") == 1 + 4  # header + one row per (run, layer)
    assert "demo</body>" in (folder / "report.html").read_text()  # the demo's own page is left alone


def test_find_runs_is_sorted_nested_and_skips_report_folders(tmp_path):
    write_fixture_run(tmp_path / "b", {"l": 3}, top=False)
    write_fixture_run(tmp_path / "a" / "x", {"l": 3}, top=False)
    write_fixture_run(tmp_path / "b" / "plots" / "odd", {"l": 3}, top=False)  # inside a run: not looked at
    (tmp_path / "plots").mkdir()
    assert find_runs(tmp_path) == [tmp_path / "a" / "x", tmp_path / "b"]
    (tmp_path / "a" / "self").symlink_to(tmp_path)  # a loop back up, and a second way to reach run b
    (tmp_path / "link_to_b").symlink_to(tmp_path / "b")
    assert find_runs(tmp_path) == [tmp_path / "a" / "x", tmp_path / "b"]  # each run once, the walk ends


def test_a_run_stopped_before_it_finished_says_so(tmp_path, capsys):
    (tmp_path / "out" / ".checkpoints").mkdir(parents=True)
    code = cli_main.main(["report", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "did not finish" in err and "rerun the same `hnd dissect` command" in err, err


def test_a_folder_without_any_dissection_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code = cli_main.main(["report", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert code == 2 and "no dissection.json here or in its sub-folders" in err and err.count("\n") == 1


def test_compare_links_back_relative_to_its_own_folder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_fixture_run(runs / "m1", {"l": 5}, seed=1, top=False)
    write_fixture_run(runs / "m2", {"l": 5}, seed=2, top=False)
    (runs / "m1" / "report.html").write_text("<html></html>")  # m2 has no report: no link
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # run from another folder, with relative paths
    compare_runs(["../runs/m1", "../runs/m2"], "../out/cmp")
    page = tmp_path / "out" / "cmp" / "compare.html"
    text = page.read_text().replace("<wbr>", "")  # optional line breaks inside paths
    links = local_links(page)
    assert (runs / "m1" / "report.html").resolve() in links
    assert all(p.exists() for p in links)
    assert "../../runs/m1" in text and "../../runs/m2" in text  # relative to compare.html, not to the cwd
    assert '"../runs/m1"' not in text and ">../runs/m1<" not in text
    table = json.loads((tmp_path / "out" / "cmp" / "compare.json").read_text())
    assert [r["out_dir"] for r in table["series"]] == [str((runs / "m1").resolve()), str((runs / "m2").resolve())]


def test_plots_fit_a_1000px_page_and_long_axes_are_horizontal(tmp_path):
    run = write_fixture_run(tmp_path / "run", {"l": 30}, top=False)
    write_plots(run.out)
    limit = MAX_WIDTH_IN * 100  # figure_png draws at 100 dpi
    for name in PLOT_NAMES:
        with Image.open(plot_path(run.out, "l", name)) as im:
            assert im.size[0] <= limit, (name, im.size)
    with Image.open(plot_path(run.out, "l", "paired_per_concept")) as im:
        w, h = im.size
    assert h > w  # 38 concepts: one horizontal bar each, the figure grows down, not across
    series = [f"m{i}" for i in range(4)]
    for i, s in enumerate(series):
        write_fixture_run(tmp_path / s, {"l": 10}, seed=i, top=False)
    cmp = compare_runs([tmp_path / s for s in series], tmp_path / "cmp")
    for name in FIGURES:
        with Image.open(cmp / f"compare_{name}.png") as im:
            assert im.size[0] <= limit, (name, im.size)


@pytest.mark.parametrize("n", [1, 12, 38])
def test_hbar_rows_keep_their_height(n):
    """Each label gets the same height whatever the count: labels never shrink or overlap as axes grow."""
    from hnd_jax.reports.plots import HBAR_ROW_IN, hbar_chart

    fig = hbar_chart([f"c{i}" for i in range(n)], {"a": list(range(n)), "b": [1] * n}, title="t", xlabel="x")
    bars = fig.axes[0].patches
    assert [round(b.get_width()) for b in bars[:n]] == list(range(n))
    assert fig.get_size_inches()[1] >= HBAR_ROW_IN * n * 1.6
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"c{i}" for i in range(n)]


def test_index_names_runs_without_global_families(tmp_path):
    from test_header import skip_globals

    from hnd_jax.reports.index import write_index

    write_fixture_run(tmp_path / "a", {"l": 4}, top=False)
    skip_globals(write_fixture_run(tmp_path / "b", {"l": 4}, top=False), lambda f: f"no '{f}/<group>' arrays in x.npy")
    text = write_index(tmp_path).read_text()
    assert text.count("global families not scored") == 1
    assert "global families not scored: Age, Gender, Ethnicity, skin_tone (why: see its report)" in text
    assert "(no report)" in text  # neither run has a report.html: named, not linked


@pytest.mark.parametrize("bad", ["{victim}/conv1", "../victim", ".hidden", ""])
def test_a_layer_name_in_dissection_json_never_leads_outside_out(tmp_path, capsys, bad):
    """dissection.json is user-supplied: a crafted layer name once made `hnd report` write plots into
    another run's folder and end with a traceback."""
    victim = tmp_path / "victim"
    write_fixture_run(victim, {"conv1": 8})
    before = sorted(p.relative_to(victim) for p in victim.rglob("*"))
    run = tmp_path / "runs" / "crafted"
    write_fixture_run(run, {"conv1": 8})
    meta = json.loads((run / "dissection.json").read_text())
    name = bad.format(victim=victim)
    meta["layers"] = [name]
    meta["units"], meta["map_hw"] = {name: 8}, {name: [4, 4]}
    (run / "dissection.json").write_text(json.dumps(meta))
    for command in (["report", str(run)], ["compare", str(run), str(victim), "--out", str(tmp_path / "cmp")]):
        code = cli_main.main(command)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"hnd: error: {run / 'dissection.json'}: layer name ") and err.count("\n") == 1, err
    assert sorted(p.relative_to(victim) for p in victim.rglob("*")) == before  # nothing written there
    assert not (tmp_path / "runs" / "victim").exists()
