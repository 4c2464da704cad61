"""OUT is never someone else's folder, and a rerun leaves no stale results of the previous run.

1. ``hnd dissect`` (both sources, and the Python API) refuses, before any work and before writing
   anything, an OUT that is not absent, empty or an earlier dissection of ours (a user's folder,
   a user's own ``dissection.json``, an empty ``--out``), with the check ``hnd demo`` shares.
2. A rerun into an earlier run's OUT removes, with the swap, what that run wrote and the new one does
   not replace (its other layers, its report.html / report_assets / plots, hnd report's index.html),
   and nothing else (a user's notes survive).
3. Settings out of range are refused before OUT is created (``--image-size`` past MAX_IMAGE_SIZE).

Runs the real CLI in-process on the tiny published-layout dictionary with an activations file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hnd_jax.cli.main import main
from hnd_jax.errors import HndError
from hnd_jax.out_folder import check_out_folder
from hnd_jax.pipeline import publish
from hnd_jax.pipeline.dissect import dissect_activations, dissect_model
from hnd_jax.results import RUN_TRACES, holds_our_dissection, read_our_dissection
from hnd_jax.scoring.config import MAX_IMAGE_SIZE, ScoringConfig
from tests.pipeline.settings_cases import SETTINGS_OUT_OF_RANGE
from tests.pipeline.test_activations_file import LAYER, S, base_args, local_acts, tiny  # noqa: F401

OTHER = "layer3.conv2"  # a second layer name: the same activations scored under another name


def dissect(capsys, *args):
    code = main(["dissect", *args])
    return code, capsys.readouterr().err.strip()


def tree(folder):
    """Every entry under ``folder`` (relative path -> bytes for files, None for folders)."""
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def acts(tmp_path):
    np.save(tmp_path / "acts.npy", local_acts())
    return tmp_path / "acts.npy"


@pytest.fixture()
def args_for(tiny, acts):
    root, tax_path = tiny

    def make(out, layer=LAYER):
        args = base_args(root, tax_path, acts, out)
        args[args.index("--layer") + 1] = layer
        return args

    return make


# ------------------------------------------------------------------------------ 1. whose folder
def _users_folder(out):
    """The break test's folder: the user's notes in a folder named like the layer, and their own
    dissection.json and report.html."""
    (out / LAYER).mkdir(parents=True)
    (out / LAYER / "my_notes.txt").write_text("mine\n")
    (out / "dissection.json").write_text("keep\n")
    (out / "report.html").write_text("<p>my report</p>\n")


@pytest.mark.parametrize("what", ["user_files", "foreign_json", "json_of_another_schema", "one_file"])
def test_a_folder_that_is_not_ours_is_refused_and_left_as_it_was(args_for, tmp_path, capsys, what):
    out = tmp_path / "mine"
    out.mkdir()
    if what == "user_files":
        _users_folder(out)
    elif what == "foreign_json":  # valid JSON, not ours: another tool's dissection.json
        (out / "dissection.json").write_text(json.dumps({"layers": [LAYER], "tool": "netdissect"}))
    elif what == "json_of_another_schema":  # every key ours has, but no hnd-jax version: not written by us
        (out / "dissection.json").write_text(json.dumps(
            {"layers": [LAYER], "settings": {}, "model": {}, "versions": {"numpy": "2"}}))
    else:
        (out / "photo.jpg").write_bytes(b"\xff\xd8 not really")
    before = tree(out)
    code, err = dissect(capsys, *args_for(out))
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert f"--out {out}: folder is not empty and holds no earlier hnd dissection" in err
    assert tree(out) == before  # nothing written, nothing removed (no .lock, no .checkpoints)


def test_the_model_path_refuses_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import hnd_jax.pipeline.model_source as model_source

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded before OUT was checked")

    monkeypatch.setattr(model_source, "resolve_model", must_not_load)
    out = tmp_path / "mine"
    out.mkdir()
    _users_folder(out)
    before = tree(out)
    code, err = dissect(capsys, "--model", "demo_cnn", "--random-init", "--dictionary", "synthetic:24",
                        "--out", str(out), "--image-size", "16", "--layer", LAYER)
    assert code == 2 and "holds no earlier hnd dissection" in err and err.count("\n") == 0, err
    assert tree(out) == before
    with pytest.raises(HndError, match="holds no earlier hnd dissection"):
        dissect_model("demo_cnn", random_init=True, dictionary="synthetic:24", out=out, layers=[LAYER])
    assert tree(out) == before


def test_the_api_refuses_a_users_folder(tiny, acts, tmp_path):
    root, tax_path = tiny
    out = tmp_path / "mine"
    out.mkdir()
    _users_folder(out)
    before = tree(out)
    with pytest.raises(HndError, match="holds no earlier hnd dissection"):
        dissect_activations(acts, dictionary=root, layer=LAYER, out=out, scoring={"image_size": S},
                            taxonomy=tax_path)
    assert tree(out) == before


def test_an_empty_out_is_refused_naming_the_option(args_for, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    code, err = dissect(capsys, *args_for(""))
    assert code == 2 and err.count("\n") == 0 and "--out '': empty folder name" in err, err
    assert tree(tmp_path) == before  # nothing written into the current folder
    from hnd_jax.demo.run import _check_out

    with pytest.raises(HndError, match="--out '': empty folder name"):  # the demo shares the check
        _check_out("")


def test_a_file_as_out_is_refused(args_for, tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("x")
    code, err = dissect(capsys, *args_for(out))
    assert code == 2 and "exists and is not a folder" in err and out.read_text() == "x", err


def test_an_empty_folder_and_an_earlier_dissection_are_accepted(args_for, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    code, err = dissect(capsys, *args_for(out), "--no-report")
    assert code == 0, err
    assert read_our_dissection(out)["layers"] == [LAYER]
    code, err = dissect(capsys, *args_for(out), "--no-report")  # a rerun into our own output
    assert code == 0, err


@pytest.mark.parametrize("trace", RUN_TRACES + (".lock.process_1",))
def test_an_interrupted_run_of_ours_is_accepted(args_for, tmp_path, capsys, trace):
    out = tmp_path / "out"
    out.mkdir()
    (out / trace).mkdir() if trace in (".checkpoints", ".cache", ".incoming", ".outgoing") else (out / trace).touch()
    assert holds_our_dissection(out)
    code, err = dissect(capsys, *args_for(out), "--no-report")
    assert code == 0, err
    assert read_our_dissection(out)["layers"] == [LAYER]


@pytest.mark.parametrize("ours", [True, False])
@pytest.mark.parametrize("trace", [".cache", ".checkpoints", ".checkpoints/process_1", ".lock", ".lock.process_2",
                                   ".incoming", ".outgoing"])
def test_traces_count_as_ours_only_in_our_shape(args_for, tmp_path, capsys, trace, ours):
    """A home folder's ``.cache`` (pip, fontconfig...) or another tool's ``.lock`` is not a run of ours:
    the run that would take it for one would write beside the user's files (and remove that .cache)."""
    out = tmp_path / "out"
    out.mkdir()
    if trace == ".cache":
        (out / trace / ("process_1" if ours else "pip")).mkdir(parents=True)
        (out / trace / ("process_1" if ours else "pip") / ("layer_000_0_12.f32" if ours else "wheel")).touch()
    elif trace == ".checkpoints":
        (out / trace / ("3.orbax-checkpoint-tmp-171" if ours else "epoch=3.ckpt")).mkdir(parents=True)
    elif trace == ".checkpoints/process_1":  # a multi-process step being written (_PlainSteps)
        (out / trace / (".tmp-4" if ours else "epoch=4.ckpt")).mkdir(parents=True)
    elif trace in (".incoming", ".outgoing"):  # results being swapped in, or a user's folder of that name
        if ours:
            (out / trace / LAYER).mkdir(parents=True)
            (out / trace / LAYER / "scores.npz").touch()
            (out / trace / "plots").mkdir()
        else:
            (out / trace / "thesis").mkdir(parents=True)
            (out / trace / "thesis" / "chapter1.tex").write_text("mine")
    else:
        (out / trace).write_text(json.dumps({"pid": 1, "host": "h", "since": "x"}) if ours else "locked by vim\n")
    assert holds_our_dissection(out) == ours
    before = tree(out)
    code, err = dissect(capsys, *args_for(out), "--no-report")
    if ours:
        assert code == 0, err
    else:
        assert code == 2 and "holds no earlier hnd dissection" in err, err
        assert tree(out) == before


def test_a_run_killed_before_its_results_leaves_a_folder_the_next_run_accepts(args_for, tmp_path, capsys,
                                                                               monkeypatch):
    """A real interruption (Ctrl-C just before the results are written) leaves checkpoints, and no
    results: the same command then resumes in that folder."""
    import hnd_jax.pipeline.dissect as driver

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    every = ["--no-report", "--batch-size", "4", "--checkpoint-every", "1"]
    monkeypatch.setattr(driver, "publish_results", interrupted)
    code, err = dissect(capsys, *args_for(out), *every)
    assert code != 0 and "interrupted" in err, err
    monkeypatch.undo()
    assert (out / ".checkpoints").is_dir() and not (out / "dissection.json").exists()
    assert holds_our_dissection(out)
    code, err = dissect(capsys, *args_for(out), *every)
    assert code == 0 and "resumed from" in err, err


def test_check_out_folder_is_the_one_check():
    """The helper itself: an absent folder passes without being created; ``holds_ours`` is asked
    only for a non-empty folder."""
    import tempfile
    from pathlib import Path

    asked = []
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "new"
        assert check_out_folder(new, what="x", holds_ours=lambda p: asked.append(p) or False) == new
        assert not new.exists() and asked == []
        new.mkdir()
        check_out_folder(str(new), what="x", holds_ours=lambda p: asked.append(p) or False)
        assert asked == []
        (new / "f").touch()
        with pytest.raises(HndError, match=r"--thing .*: folder is not empty and holds no earlier x run"):
            check_out_folder(new, what="x run", holds_ours=lambda p: asked.append(p) or False, option="--thing")
        assert asked == [new]


# ------------------------------------------------------------------------------ 2. nothing stale
@pytest.fixture()
def reported(args_for, tmp_path, capsys):
    """OUT with a finished run of LAYER, its report (report.html, plots/, report_assets/), hnd
    report's index.html, and a user's notes.txt and own index.md."""
    from hnd_jax.reports.index import write_index

    out = tmp_path / "out"
    code, err = dissect(capsys, *args_for(out))
    assert code == 0, err
    assert (out / "report.html").is_file() and (out / "plots").is_dir()
    (out / "report_assets").mkdir(exist_ok=True)  # written when the dictionary has top images
    (out / "report_assets" / "L0.jpg").write_bytes(b"jpeg")
    write_index(out, [out])
    (out / "notes.txt").write_text("my notes\n")
    (out / "index.md").write_text("mine\n")
    return out


def test_a_rerun_with_another_layer_and_no_report_leaves_nothing_of_the_previous_run(args_for, reported, capsys):
    out = reported
    code, err = dissect(capsys, *args_for(out, OTHER), "--no-report")
    assert code == 0, err
    assert f"hnd: {out} held an earlier run's results of {LAYER}: replaced by this run's " in err, err  # said
    names = {p.name for p in out.iterdir()}
    assert names == {OTHER, "dissection.json", "notes.txt", "index.md"}, names
    assert (out / "notes.txt").read_text() == "my notes\n" and (out / "index.md").read_text() == "mine\n"
    assert json.loads((out / "dissection.json").read_text())["layers"] == [OTHER]


def test_a_rerun_with_a_report_writes_only_the_new_runs_report(args_for, reported, capsys):
    out = reported
    code, err = dissect(capsys, *args_for(out, OTHER))
    assert code == 0, err
    assert not (out / LAYER).exists() and (out / OTHER / "scores.npz").is_file()
    assert sorted(p.name for p in (out / "plots").iterdir()) == [OTHER]  # no plots of the old layer
    assert LAYER not in (out / "report.html").read_text() and OTHER in (out / "report.html").read_text()
    assert not (out / "report_assets" / "L0.jpg").exists() and (out / "notes.txt").is_file()


def test_a_users_index_html_is_never_removed(args_for, reported, capsys):
    out = reported
    (out / "index.html").write_text("<!DOCTYPE html><title>my page</title>")
    code, err = dissect(capsys, *args_for(out), "--no-report")
    assert code == 0, err
    assert (out / "index.html").read_text() == "<!DOCTYPE html><title>my page</title>"
    assert not (out / "report.html").exists() and not (out / "plots").exists()


def test_a_failed_rerun_keeps_the_previous_layers_and_report(args_for, reported, capsys, monkeypatch):
    out = reported
    before = tree(out)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish, "write_dissection_json", full)
    code, err = dissect(capsys, *args_for(out, OTHER), "--no-report")
    assert code == 2 and "no space left" in err.lower(), err
    after = tree(out)
    assert {k: v for k, v in after.items() if k in before} == before  # every earlier file, byte for byte
    added = after.keys() - before.keys()
    assert all(str(k).startswith(RUN_TRACES) for k in added), added  # staging and checkpoints only


def test_a_run_killed_during_the_swap_leaves_nothing_stale_after_the_rerun(args_for, reported, capsys, monkeypatch):
    """Killed after the old dissection.json left OUT (step 2): the rerun finishes the old run's removal."""
    out = reported
    real = os.replace

    def killed(src, dst):
        if str(src).endswith(os.path.join(publish.INCOMING, OTHER)):
            raise KeyboardInterrupt  # the kill, while the new layers are being moved in
        return real(src, dst)

    monkeypatch.setattr(publish.os, "replace", killed)
    code, err = dissect(capsys, *args_for(out, OTHER), "--no-report")
    assert code != 0 and "interrupted" in err, err
    monkeypatch.undo()
    assert not (out / "dissection.json").exists() and (out / publish.OUTGOING / "dissection.json").is_file()
    assert holds_our_dissection(out)
    code, err = dissect(capsys, *args_for(out, OTHER), "--no-report")
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {OTHER, "dissection.json", "notes.txt", "index.md"}


def test_the_report_names_are_the_ones_the_reports_write(tmp_path):
    """publish's list of report names is the reports' own (a renamed plots folder would go stale)."""
    from hnd_jax.reports import html, plots
    from hnd_jax.reports.index import INDEX_HTML, index_html

    assert set(publish.REPORT_NAMES) == {html.REPORT_HTML, html.ASSETS_DIR, plots.PLOTS_DIR}
    assert publish.INDEX_HTML == INDEX_HTML
    page = tmp_path / INDEX_HTML
    page.write_text(index_html(tmp_path, [], []), encoding="utf-8")
    assert publish._our_index(page)


# ------------------------------------------------------------------------------ 3. settings first
@pytest.mark.parametrize("option,value,expected", [
    ("--image-size", str(MAX_IMAGE_SIZE + 1), f"--image-size {MAX_IMAGE_SIZE + 1}: expected an integer from 1 to "
                                              f"{MAX_IMAGE_SIZE:,}"),
    ("--image-size", "0", "--image-size 0"),
    *SETTINGS_OUT_OF_RANGE,
])
def test_a_setting_out_of_range_creates_no_out(args_for, tmp_path, capsys, option, value, expected):
    out = tmp_path / "new_out"
    args = args_for(out)
    if option == "--image-size":
        args[args.index("--image-size") + 1] = value
        args_model = ["--model", "demo_cnn", "--random-init", "--dictionary", "synthetic:24", "--out", str(out),
                      "--image-size", value]
    else:
        args, args_model = args + [option, value], None
    code, err = dissect(capsys, *args)
    assert code == 2 and err.count("\n") == 0 and expected in err, err
    assert not out.exists()
    if args_model:
        code, err = dissect(capsys, *args_model)
        assert code == 2 and expected in err and not out.exists(), err


def test_scoring_config_bounds_the_image_size():
    assert ScoringConfig(image_size=MAX_IMAGE_SIZE).image_size == MAX_IMAGE_SIZE
    for bad in (MAX_IMAGE_SIZE + 1, 0, 2**40, True, 16.0):
        with pytest.raises(HndError, match="--image-size"):
            ScoringConfig(image_size=bad)


def test_the_api_refuses_a_bad_image_size_before_creating_out(tiny, acts, tmp_path):
    root, tax_path = tiny
    out = tmp_path / "new_out"
    with pytest.raises(HndError, match=f"--image-size {MAX_IMAGE_SIZE + 1}"):
        dissect_activations(acts, dictionary=root, layer=LAYER, out=out, scoring={"image_size": MAX_IMAGE_SIZE + 1},
                            taxonomy=tax_path)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_users_file_or_folder_named_like_the_layer_is_never_replaced(args_for, reported, capsys, kind):
    """Break test: `--layer mydir` into a finished OUT holding the user's `mydir/` replaced it with
    results (its data.txt gone); a file of that name became a folder. Only an earlier result of that
    layer (listed in OUT's dissection.json) may be replaced."""
    out = reported
    mine = out / OTHER
    if kind == "folder":
        mine.mkdir()
        (mine / "data.txt").write_text("precious")
    else:
        mine.write_text("precious")
    before = tree(out)
    code, err = dissect(capsys, *args_for(out, OTHER), "--no-report")
    assert code == 2 and f"{mine}: exists and is not an earlier result of layer {OTHER}" in err, err
    assert "\n" not in err.strip() and tree(out) == before
    code, err = dissect(capsys, *args_for(out), "--no-report")  # the earlier layer itself: replaced as before
    assert code == 0, err


def test_a_batch_size_past_every_stage_runs_with_batches_of_the_largest_stage(args_for, tmp_path, capsys,
                                                                              monkeypatch):
    """Break test: --batch-size 100000 on a small dictionary was refused by the memory plan ("needs
    about 43.9 GiB ... use --batch-size 51988"): every batch was padded to 100,000 rows."""
    import hnd_jax.npyfile as npyfile

    monkeypatch.setattr(npyfile, "memory_available", lambda: 4 << 30)  # the plan checks against 4 GiB
    out = tmp_path / "out"
    code, err = dissect(capsys, *args_for(out), "--no-report", "--batch-size", "100000")
    assert code == 0, err
    meta = json.loads((out / "dissection.json").read_text())
    assert meta["batch_size"] < 100000 and meta["run"]["batch_size"] == meta["batch_size"]
