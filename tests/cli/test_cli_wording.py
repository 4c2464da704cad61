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
