"""`hnd card new` (hnd_jax/cli/card.py, hnd_jax/card_template.py): the written card loads, builds the
stated architecture with the stated sizes, and bad requests are one-line errors (exit 2)."""

from __future__ import annotations

import argparse

import pytest
from flax import nnx

from hnd_jax.card_template import PRESETS, card_text
from hnd_jax.cards import load_card
from hnd_jax.cli import card as card_cli
from hnd_jax.errors import HndError
from hnd_jax.models.capture import list_layers


def _run(argv):
    parser = argparse.ArgumentParser(prog="hnd")
    card_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _build(card):
    from hnd_jax.convert.checkpoint import build_from_card

    return build_from_card(card)


def test_round_trip_resnet_with_flattening_head(tmp_path):
    out = tmp_path / "my_age.toml"
    assert _run(["card", "new", "--arch", "resnet18", "--head", "mlp", "--num-outputs", "3", "--input-size", "96",
                 "--preprocess", "imagenet", "--layer", "layer4.1.conv1", "--out", str(out)]) == 0
    card = load_card(out)
    assert (card.name, card.architecture, card.head, card.num_outputs, card.input_size) == \
        ("my_age", "resnet18", "mlp", 3, 96)
    assert card.default_layers == ("layer4.1.conv1",) and card.model_kwargs == {"image_size": 96}
    pre = card.preprocessing
    assert pre.mean == PRESETS["imagenet"].mean and pre.std == PRESETS["imagenet"].std and pre.resize == "bilinear"
    model = _build(card)
    out_shape = nnx.eval_shape(lambda: model(__import__("jax").numpy.zeros((1, 96, 96, 3)))).shape
    assert out_shape == (1, 3)
    assert dict(list_layers(model, 96))["layer4.1.conv1"] == (3, 3, 512)


def test_round_trip_defaults_per_architecture(tmp_path):
    for arch, size, layer, preset in (("iresnet50", 112, "layer4.2.conv2", "signed"),
                                      ("vit_small_patch16_224", 224, "blocks.11", "signed"),
                                      ("clip_vit_b16", 224, "transformer.resblocks.11", "clip")):
        out = tmp_path / f"{arch}_mine.toml"
        _run(["card", "new", "--arch", arch, "--out", str(out)])
        card = load_card(out)
        assert (card.input_size, card.default_layers, card.num_outputs) == (size, (layer,), None)
        assert card.preprocessing.mean == PRESETS[preset].mean
        model = nnx.eval_shape(lambda card=card: _build(card))
        from hnd_jax.models.capture import module_names

        assert layer in module_names(model)


def test_vit_at_another_size_records_it(tmp_path):
    out = tmp_path / "vit96.toml"
    _run(["card", "new", "--arch", "vit_tiny_patch16_224", "--input-size", "96", "--out", str(out)])
    card = load_card(out)
    assert card.model_kwargs == {"image_size": 96}
    assert dict(list_layers(_build(card), 96))["blocks.11"] == (6, 6, 192)


@pytest.mark.parametrize("argv,fragment", [
    (["--arch", "resnet5O"], "unknown architecture 'resnet5O'"),
    (["--arch", "resnet18", "--head", "mpl"], "--head 'mpl'"),
    (["--arch", "resnet18", "--preprocess", "imagenett"], "--preprocess 'imagenett'"),
    (["--arch", "resnet18", "--input-size", "8"], "--input-size 8"),
    (["--arch", "resnet18", "--resize", "cubic"], "--resize 'cubic': expected one of"),  # the option, not a temp file
    (["--arch", "iresnet50", "--input-size", "128"], "built for 112x112"),
    (["--arch", "resnet18", "--layer", "layer4.2"], "--layer layer4.2: not a layer"),
    (["--arch", "resnet18", "--layer", "fc"], "--layer fc: not a conv-like map"),
    # sizes (hnd_jax/cards.py MAX_NUM_OUTPUTS, MAX_INPUT_SIZE): named by the option, never a temporary file
    (["--arch", "resnet18", "--num-outputs", "1000000000"], "--num-outputs 1000000000: expected a positive integer, "
                                                             "at most 2097152 ("),
    (["--arch", "iresnet50", "--num-outputs", "2097153"], "--num-outputs 2097153: expected"),
    (["--arch", "resnet18", "--num-outputs", "0"], "--num-outputs 0: expected a positive integer"),
    (["--arch", "resnet18", "--num-outputs", "-3"], "--num-outputs -3: expected a positive integer"),
    (["--arch", "vit_tiny_patch16_224", "--input-size", "1040"], "--input-size 1040: expected a positive integer, "
                                                                  "at most 1024 px ("),
    (["--arch", "resnet18", "--input-size", "0"], "--input-size 0: expected a positive integer"),
])
def test_bad_requests_are_one_line_errors(tmp_path, argv, fragment):
    out = tmp_path / "x.toml"
    with pytest.raises(HndError) as err:
        _run(["card", "new", *argv, "--out", str(out)])
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "x.toml"
    out.write_text("mine")
    with pytest.raises(HndError, match="exists"):
        _run(["card", "new", "--arch", "resnet18", "--out", str(out)])
    assert out.read_text() == "mine"
    _run(["card", "new", "--arch", "resnet18", "--out", str(out), "--force"])
    assert load_card(out).architecture == "resnet18"


def test_card_list(capsys):
    assert _run(["card", "list"]) == 0
    text = capsys.readouterr().out
    assert "resnet152" in text and "iresnet100" in text and "clip_vit_b16" in text


def test_template_names():
    with pytest.raises(HndError, match="card name"):
        card_text("bad name", "resnet18")


def test_sizes_at_the_bounds_are_written_and_over_them_exit_2(tmp_path, capsys):
    """The real command: the largest allowed head and input are written and traced; one more is one line, exit 2."""
    from hnd_jax.cli.main import main

    out = tmp_path / "edge.toml"
    assert main(["card", "new", "--arch", "resnet18", "--head", "fc", "--num-outputs", "2097152", "--input-size", "1024",
                 "--out", str(out)]) == 0
    card = load_card(out)
    assert (card.num_outputs, card.input_size) == (2 ** 21, 1024)
    assert dict(list_layers(nnx.eval_shape(lambda: _build(card)), 1024))["layer4.1"] == (32, 32, 512)
    capsys.readouterr()
    for option, value in (("--num-outputs", "2097153"), ("--input-size", "1025")):
        bad = tmp_path / "bad.toml"
        assert main(["card", "new", "--arch", "resnet18", option, value, "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hnd: error: {option} {value}: expected") and err.count("\n") == 1, err
        assert not bad.exists()


def test_a_model_too_large_for_any_face_model_is_refused(tmp_path):
    """IResNet's num_outputs is its embedding width behind a 512 x 7 x 7 = 25,088-wide flatten: 1,000,000 passes
    the output bound but is 2.5e10 parameters (94 GiB); refused by the parameter bound (MAX_PARAMETERS = 2**33)
    with one line naming the option, while the largest real combination (ResNet-152 trunk, full WebFace42M
    classifier at the output bound) is written."""
    import re

    out = tmp_path / "x.toml"
    with pytest.raises(HndError) as err:
        _run(["card", "new", "--arch", "iresnet50", "--num-outputs", "1000000", "--out", str(out)])
    msg = str(err.value)
    m = re.match(r"iresnet50 --num-outputs 1000000 at --input-size 112 would have ([0-9.e+]+) parameters \(", msg)
    assert m and "\n" not in msg and str(tmp_path) not in msg and "tmp" not in msg, msg
    assert 25088 * 1_000_000 <= float(m[1]) < 1.01 * 25088 * 1_000_000  # the embedding's weight dominates
    assert not out.exists()
    assert _run(["card", "new", "--arch", "resnet152", "--num-outputs", str(2 ** 21), "--out", str(out)]) == 0
