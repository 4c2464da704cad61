"""Wording of the CLI's one-line errors and help texts that a break test as a new user found wrong
(each test fails on the old wording): the line names the option or file and says what is wrong."""

from __future__ import annotations

import contextlib
import io

import pytest

from hnd_jax.cli.main import main


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(capsys, *argv) -> str:
    """Run hnd in-process; assert exit 2 and one ``hnd: error:`` line; return that line."""
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("hnd: error: ") and "Traceback" not in err, err
    return err.strip()


def _help(*cmd) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main([*cmd, "--help"])
    return " ".join(buf.getvalue().split())  # argparse wraps lines: compare the words


# ---- a. a ViT or CLIP model at another size: the fixed patch grid, not a flattening head ----------


@pytest.mark.parametrize("card, size, grid", [("vit_tiny_patch16_224", 160, "14x14"),
                                              ("clip_vit_b16", 160, "14x14")])
def test_a_vit_at_another_image_size_names_its_fixed_patch_grid(tmp_path, capsys, card, size, grid):
    err = _one_line_error(capsys, "dissect", "--model", card, "--random-init", "--dictionary", "synthetic:4",
                          "--out", tmp_path / "o", "--image-size", size, "--no-report", "--progress", "none")
    assert f"{card} was built for 224x224 inputs" in err and f"got {size}x{size}" in err, err
    assert "flattens" not in err and "position embedding" in err and f"fixed {grid} grid of 16x16 patches" in err, err


def test_a_flattening_head_at_another_image_size_still_says_so(tmp_path, capsys):
    """The iresnet head flattens its 7x7 map: that is the right reason there."""
    err = _one_line_error(capsys, "dissect", "--model", "iresnet18", "--random-init", "--dictionary", "synthetic:4",
                          "--out", tmp_path / "o", "--image-size", 64, "--no-report", "--progress", "none")
    assert "iresnet18 was built for 112x112 inputs (its head flattens a fixed feature map), got 64x64" in err, err


# ---- b. hnd dissect --help -------------------------------------------------------------------------


def test_b_dissect_help_names_card_list_and_says_image_size_sets_the_input_size():
    text = _help("dissect")
    assert "hnd layers lists them" not in text
    assert "a model card name (hnd card list shows them)" in text
    assert "with --model it is also the model's input size" in text


# ---- j. hnd layers --image-size has hnd dissect's bound ---------------------------------------------


def test_j_layers_refuses_an_image_size_dissect_refuses(capsys):
    from hnd_jax.scoring.tally import MAX_IMAGE_SIZE

    for size in (100000, MAX_IMAGE_SIZE + 1, 0):
        err = _one_line_error(capsys, "layers", "--model", "demo_cnn", "--image-size", size)
        assert f"--image-size {size}: expected 1..{MAX_IMAGE_SIZE}" in err, err
    code, out, err = _run(capsys, "layers", "--model", "demo_cnn", "--image-size", MAX_IMAGE_SIZE, "--json")
    assert code == 0, err


# ---- c. hnd dissect --out that cannot be a folder: one line naming --out, not a bare OS message -----


DISSECT = ["dissect", "--model", "demo_cnn", "--random-init", "--dictionary", "synthetic:4", "--image-size", 16,
           "--no-report", "--progress", "none"]


def test_c_dissect_out_that_is_a_file_names_the_option(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, "/dev/null"):
        err = _one_line_error(capsys, *DISSECT, "--out", out)
        assert err == f"hnd: error: --out {out}: exists and is not a folder", err
    err = _one_line_error(capsys, *DISSECT, "--out", afile / "sub")
    assert err.startswith(f"hnd: error: --out {afile / 'sub'}: cannot create the folder ("), err
    assert afile.read_text() == "mine"


def test_c_dissect_out_where_no_file_can_be_made_names_the_option(capsys):
    """/proc/self is a folder that takes no new files (as root too): the lock's line names --out, not
    .lock alone. hnd dissect refuses it earlier, as a folder holding files that are not a dissection's."""
    from hnd_jax.errors import HndError
    from hnd_jax.pipeline.outlock import locked_out

    err = _one_line_error(capsys, *DISSECT, "--out", "/proc/self")
    assert err == "hnd: error: --out /proc/self: folder is not empty and holds no earlier hnd dissection; " \
                  "choose a new folder", err
    with pytest.raises(HndError) as info:
        with locked_out("/proc/self"):
            pass
    assert str(info.value).startswith("--out /proc/self: cannot write a file in this folder (.lock: "), info.value


# ---- d. hnd extract into a read-only folder names --out, not its temporary file ----------------------


@pytest.fixture(scope="module")
def extract_inputs(tmp_path_factory):
    import numpy as np

    from hnd_jax.convert.checkpoint import load_model
    from hnd_jax.models.torch_mapping import export_torch_state_dict

    root = tmp_path_factory.mktemp("extract")
    model, _ = load_model("demo_cnn", None, random_init=True)
    np.savez(root / "w.npz", **export_torch_state_dict(model))
    np.save(root / "x.npy", np.zeros((2, 64, 64, 3), np.float32))
    return ["extract", "--model", "demo_cnn", "--weights", root / "w.npz", "--layer", "conv4",
            "--inputs", root / "x.npy", "--no-progress"]


def _read_only_folder(tmp_path):
    """A folder this process cannot create files in: a chmod 555 folder, or /sys for root (whom
    permissions do not stop); sysfs refuses new files to everyone."""
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, "/sys"):
        probe = os.path.join(candidate, ".hnd_probe")
        try:
            open(probe, "x").close()
        except OSError:
            return candidate
        os.unlink(probe)
    pytest.skip("no read-only folder here: root, and /sys takes new files")


def test_d_extract_into_a_read_only_folder_names_out_not_the_temporary_file(tmp_path, capsys, extract_inputs):
    out = f"{_read_only_folder(tmp_path)}/a.npy"
    err = _one_line_error(capsys, *extract_inputs, "--out", out)
    assert err.startswith(f"hnd: error: {out}: ") and ".tmp" not in err and "Permission denied" in err, err


def test_d_extract_onto_a_folder_or_under_a_file_names_out(tmp_path, capsys, extract_inputs):
    (tmp_path / "adir.npy").mkdir()
    err = _one_line_error(capsys, *extract_inputs, "--out", tmp_path / "adir.npy")
    assert err == f"hnd: error: {tmp_path / 'adir.npy'}: Is a directory", err
    (tmp_path / "afile").write_text("mine")
    err = _one_line_error(capsys, *extract_inputs, "--out", tmp_path / "afile" / "a.npy")
    assert err == (f"hnd: error: {tmp_path / 'afile' / 'a.npy'}: cannot create the folder {tmp_path / 'afile'} "
                   "(a file stands where a folder is needed)"), err


# ---- e. a FIFO or a folder listed as an image or mask: 'not a regular file', not 'not found' ---------


def _make_special(path, kind):
    import os

    path.unlink()
    if kind == "FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.mark.parametrize("kind, words", [("FIFO", "a FIFO"), ("folder", "a folder")])
def test_e_a_special_file_listed_as_an_image_is_not_a_regular_file(fresh_fixture, capsys, kind, words):
    image = fresh_fixture.rows[1].image
    _make_special(fresh_fixture.root / image, kind)
    err = _one_line_error(capsys, "dictionary", "check", fresh_fixture.root)
    assert f"{image}: image is not a regular file ({words}) (listed at " in err and "not found" not in err, err


def test_e_a_fifo_listed_as_a_mask_is_not_a_regular_file(fresh_fixture, capsys):
    row = next(r for r in fresh_fixture.rows if r.masks)
    mask = next(iter(row.masks.values()))
    _make_special(fresh_fixture.root / mask, "FIFO")
    err = _one_line_error(capsys, "dictionary", "check", fresh_fixture.root)
    assert f"{mask}: mask is not a regular file (a FIFO)" in err, err


def test_e_the_decoder_refuses_a_fifo_at_once_and_a_folder(tmp_path):
    """Below the index check (a file replaced after it): a FIFO with no writer is refused, not waited on
    (run in a subprocess with a timeout, as the old code blocked in open()); a folder is not 'not found'."""
    import os
    import subprocess
    import sys

    fifo, folder = tmp_path / "f.png", tmp_path / "d.png"
    os.mkfifo(fifo)
    folder.mkdir()
    code = ("import sys\nfrom hnd_jax.dictionary.decode import decode_image\nfrom hnd_jax.errors import BadInputError\n"
            "for p in sys.argv[1:]:\n    try:\n        decode_image(p)\n    except BadInputError as e:\n"
            "        print(e.kind, '|', e)\n")
    res = subprocess.run([sys.executable, "-c", code, str(fifo), str(folder)], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"missing_image | {fifo}: image is not a regular file (a FIFO)",
                                       f"missing_image | {folder}: image is not a regular file (a folder)"]


# ---- f. a torch checkpoint with complex (or other unreadable-dtype) tensors -------------------------


def _complex64():
    import torch
    return torch.zeros(3, dtype=torch.complex64)


def _complex128():
    import torch
    return torch.ones(2, dtype=torch.complex128)


def _uint16():
    import torch
    return torch.zeros(2, dtype=torch.uint16)


def _qint8():
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch, not gone
        return torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, torch.qint8)


@pytest.mark.parametrize("make, words, named", [
    (_complex64, "complex", "torch.ComplexFloatStorage"), (_complex128, "complex", "torch.ComplexDoubleStorage"),
    (_uint16, "unsigned integers wider than 8 bits", "torch.uint16"),
    (_qint8, "quantized", "torch._utils._rebuild_qtensor"),
], ids=["complex64", "complex128", "uint16", "qint8"])
def test_f_a_checkpoint_with_an_unreadable_dtype_says_so(tmp_path, capsys, make, words, named):
    torch = pytest.importorskip("torch", reason="torch writes the checkpoint")
    path = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(2), "odd": make()}, path)
    err = _one_line_error(capsys, "convert", "--model", "demo_cnn", "--weights", path, "--out", tmp_path / "c")
    assert f"{path}: a tensor here has an unsupported dtype, {words} (the pickle names '{named}')" in err, err
    assert "not a tensor, storage or dict" not in err and "float32" in err, err


def test_f_a_whole_model_is_still_refused_as_such(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="torch writes the checkpoint")
    path = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    err = _one_line_error(capsys, "convert", "--model", "demo_cnn", "--weights", path, "--out", tmp_path / "c")
    assert "refusing to load" in err and "whole model object" in err and "unsupported dtype" not in err, err


# ---- g. global folders the taxonomy does not name: problems in check, ignored when opening ------------


def test_g_check_reports_unknown_global_family_and_group_folders(fresh_fixture, capsys):
    import json
    import shutil

    from hnd_jax.dictionary import open_dictionary

    root = fresh_fixture.root
    code, out, err = _run(capsys, "dictionary", "check", root)
    assert code == 0 and "problems found: none" in out, err  # the clean fixture

    some_image = next((root / "non_localizable" / "Age" / "sixty_plus").iterdir())
    for folder in ("non_localizable/Age/ninety_plus", "non_localizable/Hair/blond", "non_localizable/.hidden"):
        (root / folder).mkdir(parents=True)
        shutil.copy(some_image, root / folder / some_image.name)
    code, out, err = _run(capsys, "dictionary", "check", root)
    assert code == 0, err
    assert "problems found: none" not in out, out
    assert "problems found (left out): 2 folders under the global root that the taxonomy does not name" in out, out
    lines = out.splitlines()
    assert "  non_localizable/Age/ninety_plus" in lines and "  non_localizable/Hair" in lines, out
    assert not any(".hidden" in line or "Hair/blond" in line for line in lines), out

    code, out, err = _run(capsys, "dictionary", "check", root, "--json")
    assert code == 0 and json.loads(out)["unknown_global_folders"] == ["non_localizable/Age/ninety_plus",
                                                                       "non_localizable/Hair"], out
    open_dictionary(str(root), 8)  # opening is not refused: the folders are only left out


# ---- h. a JSON or TOML file nested too deeply names the file ----------------------------------------

DEEP = 100_000  # far past Python's recursion limit: tomllib and json raise RecursionError


def test_h_a_deeply_nested_card_taxonomy_prepared_metadata_or_manifest_names_the_file(tmp_path, capsys):
    card = tmp_path / "deep.toml"
    card.write_text('name = "deep"\nx = ' + "[" * DEEP + "\n")
    deep_json = "[" * DEEP
    taxonomy = tmp_path / "deep.json"
    taxonomy.write_text(deep_json)
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "hnd_prepared.json").write_text(deep_json)
    converted = tmp_path / "conv"
    converted.mkdir()
    (converted / "manifest.json").write_text(deep_json)
    cases = [
        (["layers", "--model", card], card),
        (["dictionary", "check", "synthetic:4", "--taxonomy", taxonomy], taxonomy),
        (["dictionary", "check", prep], prep / "hnd_prepared.json"),
        (DISSECT[:3] + ["--weights", converted] + DISSECT[4:] + ["--out", tmp_path / "o"], converted / "manifest.json"),
    ]
    for argv, named in cases:
        err = _one_line_error(capsys, *argv)
        assert err == f"hnd: error: {named}: nested too deeply to read (RecursionError); the file is malformed or " \
                      "hostile", err


def test_h_a_deeply_nested_dissection_json_and_a_prepared_metadata_list_are_one_line(tmp_path, capsys):
    """The report's reader of dissection.json names the file (it printed the parser's bare text), and
    an hnd_prepared.json holding a JSON list is refused (it was an AttributeError traceback)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "dissection.json").write_text("[" * DEEP)
    err = _one_line_error(capsys, "report", out)
    assert err == f"hnd: error: {out / 'dissection.json'}: nested too deeply to read (RecursionError); the file " \
                  "is malformed or hostile", err
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "hnd_prepared.json").write_text("[1]")
    err = _one_line_error(capsys, "dictionary", "check", prep)
    assert f"{prep / 'hnd_prepared.json'}: not a hnd-jax prepared dictionary" in err, err
