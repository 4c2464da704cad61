"""Model cards: every card loads and builds, the HND paper facts are recorded, rename rules map the
published module names onto ours, and bad cards / missing weights give one-line errors."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
from flax import nnx

from hnd_jax.cards import ModelCard, cards_dir, list_cards, load_card
from hnd_jax.errors import HndError

PAPER_MODELS = {  # name: (architecture, input size, default layer, face crop) per the HND code/paper
    "age": ("resnet50", 128, "layer4.2.conv1", "none"),
    "gender": ("resnet50", 128, "layer4.2.conv1", "none"),
    "smile": ("resnet50", 200, "layer4.2.conv1", "none"),
    "fairface": ("resnet50", 112, "layer4.2.conv1", "mtcnn"),
    "beauty": ("resnet18", 224, "layer4.1.conv2", "none"),
    "facenet": ("inception_resnet_v1", 224, "block8.branch1", "mtcnn"),
}


def _abstract_model(card: ModelCard) -> nnx.Module:
    """The card's model with shapes only (nothing allocated: the MLP heads hold 67M parameters)."""
    return _abstract_build(card.architecture, tuple(sorted(card.build_kwargs().items())))


@functools.lru_cache(maxsize=None)
def _abstract_build(architecture: str, kwargs: tuple) -> nnx.Module:
    from hnd_jax.models.registry import build_model

    return nnx.eval_shape(lambda: build_model(architecture, rngs=nnx.Rngs(0), **dict(kwargs)))


def _expected_keys(card: ModelCard) -> dict[str, tuple[int, ...]]:
    from hnd_jax.models.torch_mapping import expected_torch_shapes

    return expected_torch_shapes(_abstract_model(card))


def test_expected_cards_exist():
    names = {c.name for c in list_cards()}
    assert set(PAPER_MODELS) | {"mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "inception_resnet_v1_vggface2", "demo_cnn"} <= names


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_models_record_the_published_setup(name):
    arch, size, layer, crop = PAPER_MODELS[name]
    card = load_card(name)
    assert (card.architecture, card.input_size, card.default_layers[0]) == (arch, size, layer)
    pre = card.preprocessing
    assert pre.resize == "bicubic" and pre.divide_by == 255.0 and pre.mean is None and pre.std is None
    assert pre.face_crop == crop and (crop == "none" or "MTCNN" in pre.face_crop_note)
    assert "2108.10360" in card.citation
    assert card.trained_for and card.source_format and card.weights.file


@pytest.mark.parametrize("card", list_cards(), ids=lambda c: c.name)
def test_every_card_builds_and_its_default_layers_exist(card):
    from hnd_jax.models.capture import module_names

    model = _abstract_model(card)
    names = set(module_names(model))
    assert set(card.default_layers) <= names, set(card.default_layers) - names


def _resnet_trunk(keys):
    return [k for k in keys if not k.startswith(("fc.", "classifier."))]


def test_age_and_gender_rules_map_the_published_mlp_names():
    """model_loader_age/gender.py: avgpool = Sequential(Flatten, Linear(32768,2048), ReLU, Linear(2048,512),
    ReLU, Linear(512,64), ReLU); fc = Linear(64,1) (age) or Sequential(Linear(64,2)) (gender)."""
    mlp = {"avgpool.1": (2048, 32768), "avgpool.3": (512, 2048), "avgpool.5": (64, 512)}
    for name, fc_prefix, outputs in (("age", "fc", 1), ("gender", "fc.0", 2)):
        card = load_card(name)
        expected = _expected_keys(card)
        original = {k: expected[k] for k in _resnet_trunk(expected)}
        for prefix, shape in mlp.items():
            original[f"{prefix}.weight"], original[f"{prefix}.bias"] = shape, shape[:1]
        original[f"{fc_prefix}.weight"], original[f"{fc_prefix}.bias"] = (outputs, 64), (outputs,)
        mapped = card.weights.map_keys(original)
        assert mapped == expected, (name, set(mapped) ^ set(expected))


def test_smile_rule_maps_fc0():
    card = load_card("smile")
    expected = _expected_keys(card)
    original = {k: expected[k] for k in _resnet_trunk(expected)}
    original.update({"fc.0.weight": (2, 2048), "fc.0.bias": (2,)})
    assert card.weights.map_keys(original) == expected


def test_fairface_rules_map_the_wrapper_names():
    """model_loader_fairface.py: FaceNetModel with self.model = resnet50 (trunk also registered as cnn.*),
    model.fc = Sequential(Flatten, Linear(32768,128)), model.classifier = Linear(128,4294)."""
    card = load_card("fairface")
    expected = _expected_keys(card)
    trunk = _resnet_trunk(expected)
    original = {f"model.{k}": expected[k] for k in trunk}
    # nn.Sequential(conv1, bn1, relu, maxpool, layer1..4) registers the same modules as cnn.0, cnn.1, cnn.4..7
    seq = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    for k in trunk:
        head, rest = k.split(".", 1)
        original[f"cnn.{seq[head]}.{rest}"] = expected[k]
    original.update({"model.fc.1.weight": (128, 32768), "model.fc.1.bias": (128,),
                     "model.classifier.weight": (4294, 128), "model.classifier.bias": (4294,)})
    assert card.weights.map_keys(original) == expected


def test_beauty_rules_map_the_scut_fbp5500_names():
    """SCUT-FBP5500 Nets.py ResNet-18: group1.{conv1,bn1} stem, layerX.Y.group1.{conv,bn}N blocks,
    layerX.0.downsample.{0,1}, group2.fullyconnected."""
    card = load_card("beauty")
    expected = _expected_keys(card)
    original = {}
    for k, shape in expected.items():
        if k.startswith(("conv1.", "bn1.")):
            original[f"group1.{k}"] = shape
        elif k.startswith("fc."):
            original[k.replace("fc.", "group2.fullyconnected.", 1)] = shape
        elif ".downsample." in k:
            original[k] = shape
        else:
            layer, block, rest = k.split(".", 2)
            original[f"{layer}.{block}.group1.{rest}"] = shape
    assert card.weights.map_keys(original) == expected
    assert expected["fc.weight"] == (1, 512)


def test_hnd_head_sizes_match_the_published_linear_layers():
    """The flattening heads only fit the published Linear(32768, ...) at the card's input size."""
    assert _expected_keys(load_card("age"))["fc.0.weight"] == (2048, 32768)
    assert _expected_keys(load_card("gender"))["fc.6.weight"] == (2, 64)
    assert _expected_keys(load_card("fairface"))["fc.weight"] == (128, 32768)
    assert _expected_keys(load_card("facenet"))["logits.weight"] == (8631, 512)


def test_mtcnn_cards_point_into_the_facenet_pytorch_wheel():
    import importlib.util

    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip("facenet-pytorch is not installed, so its packaged MTCNN weights cannot be located")
    for net in ("pnet", "rnet", "onet"):
        path = load_card(f"mtcnn_{net}").weights.packaged_file()
        assert path is not None and path.name == f"{net}.pt" and path.parent.name == "data"


def test_missing_weights_gives_instructions_without_download():
    from hnd_jax.convert.checkpoint import load_model

    with pytest.raises(HndError) as err:
        load_model("age", None)
    msg = str(err.value)
    assert "--weights" in msg and "hnd convert --model age" in msg and "age_3_val_loss_6.6400.pth" in msg
    assert "never downloads" in msg and "\n" not in msg


def test_card_by_path_and_models_dir_override(tmp_path, monkeypatch):
    src = cards_dir() / "smile.toml"
    copy = tmp_path / "smile.toml"
    shutil.copyfile(src, copy)
    assert load_card(str(copy)).name == "smile"
    copy.write_text(copy.read_text().replace("input_size = 200", "input_size = 96"))
    (tmp_path / "mine.toml").write_text((cards_dir() / "demo_cnn.toml").read_text().replace('"demo_cnn"', '"mine"', 1))
    monkeypatch.setenv("HND_MODELS_DIR", str(tmp_path))
    names = [c.name for c in list_cards()]
    assert "mine" in names and "age" in names and names.count("smile") == 1  # the user's folder adds to the built-ins
    assert load_card("smile").input_size == 96 and load_card("smile").path == copy.resolve()  # and shadows them
    assert load_card("age").architecture == "resnet50"
    with pytest.raises(HndError, match="unknown model 'agee'.*did you mean age"):
        load_card("agee")
    monkeypatch.setenv("HND_MODELS_DIR", str(tmp_path / "nope"))
    with pytest.raises(HndError, match="HND_MODELS_DIR.*not a folder"):
        load_card("age")


def test_unknown_card_suggests_close_names():
    with pytest.raises(HndError, match="did you mean smile"):
        load_card("smille")


MINIMAL_CARD = """name = "{name}"
architecture = "demo_cnn"
input_size = {size}
default_layers = ["conv4"]
source_format = "test"
trained_for = "test"
{top}
[preprocessing]
{pre}
[weights]
{weights}
"""


def _write_card(tmp_path: Path, name: str, *, size="64", top="", pre="", weights="") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(MINIMAL_CARD.format(name=name, size=size, top=top, pre=pre, weights=weights))
    return path


def test_minimal_card_is_valid(tmp_path):
    card = load_card(_write_card(tmp_path, "minimal", pre='mean = [0.5]\nstd = [0.25]'))
    assert card.preprocessing.mean == (0.5,) and card.preprocessing.std == (0.25,) and card.head is None


BAD_CARDS = {
    "unknown_key": (dict(top="input_sise = 3"), "unknown key 'input_sise'"),
    "wrong_type": (dict(size='"big"'), "input_size"),
    "bad_filter": (dict(pre='resize = "cubic"'), "preprocessing.resize"),
    "bad_regex": (dict(weights='rename = [["(", "x"]]'), "regular expression"),
    "mean_without_std": (dict(pre="mean = [0.5, 0.5, 0.5]"), "together"),
    "bad_face_crop": (dict(pre='face_crop = "dlib"'), "face_crop"),
    # a typo'd size once ran `hnd layers`/`hnd dissect` out of memory: bounded (MAX_NUM_OUTPUTS, MAX_INPUT_SIZE)
    "huge_num_outputs": (dict(top="num_outputs = 1000000000"),
                         "num_outputs = 1000000000: expected a positive integer, at most 2097152 ("),
    "num_outputs_one_over": (dict(top="num_outputs = 2097153"), "num_outputs = 2097153: expected"),
    "huge_input_size": (dict(size="100000"), "input_size = 100000: expected a positive integer, at most 1024 px"),
    "huge_model_kwargs_size": (dict(top="[model_kwargs]\nimage_size = 1025"), "model_kwargs.image_size = 1025: expected"),
}


def test_the_size_bounds_are_inclusive_and_hold_every_built_in_card(tmp_path):
    from hnd_jax.cards import MAX_INPUT_SIZE, MAX_NUM_OUTPUTS, list_cards

    assert MAX_NUM_OUTPUTS >= 2_059_906  # a full classifier over WebFace42M's identities still fits
    card = load_card(_write_card(tmp_path, "edge", size=str(MAX_INPUT_SIZE),
                                 top=f"num_outputs = {MAX_NUM_OUTPUTS}\n[model_kwargs]\nimage_size = {MAX_INPUT_SIZE}"))
    assert (card.input_size, card.num_outputs, card.model_kwargs) == (1024, 2 ** 21, {"image_size": 1024})
    for known in list_cards():
        assert known.input_size <= MAX_INPUT_SIZE and (known.num_outputs or 0) <= MAX_NUM_OUTPUTS, known.name


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_bad_cards_are_one_line_errors(tmp_path, case):
    kwargs, fragment = BAD_CARDS[case]
    path = _write_card(tmp_path, case, **kwargs)
    with pytest.raises(HndError) as err:
        load_card(path)
    msg = str(err.value)
    assert str(path) in msg and fragment in msg and "\n" not in msg, msg


def test_not_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("= = =")
    with pytest.raises(HndError, match="not a valid TOML"):
        load_card(path)


def test_name_must_match_file(tmp_path, monkeypatch):
    path = tmp_path / "other.toml"
    path.write_text((cards_dir() / "demo_cnn.toml").read_text())
    assert load_card(path).name == "demo_cnn"  # an explicit path may have any file name
    monkeypatch.setenv("HND_MODELS_DIR", str(tmp_path))
    with pytest.raises(HndError, match="must equal the file name stem"):
        load_card("other")


STANDARD_CARDS = {  # issue 13: named like the library the weights come from; head size from the file
    **{f"resnet{d}": ("resnet", 224) for d in (18, 34, 50, 101, 152)},
    **{f"iresnet{d}": ("iresnet", 112) for d in (18, 34, 50, 100)},
    **{f"vit_{s}_patch16_224": ("vit", 224) for s in ("tiny", "small", "base")},
    "clip_vit_b16": ("clip", 224),
}


@pytest.mark.parametrize("name", sorted(STANDARD_CARDS))
def test_standard_architecture_cards(name):
    family, size = STANDARD_CARDS[name]
    card = load_card(name)
    assert card.architecture == name and card.input_size == size and card.num_outputs is None
    pre = card.preprocessing
    if family == "resnet":
        assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225) and pre.divide_by == 255.0
    elif family in ("iresnet", "vit"):  # (x - 127.5) / 127.5
        assert pre.divide_by == 1.0 and pre.mean == (127.5,) * 3 and pre.std == (127.5,) * 3
    else:
        assert pre.mean == (0.48145466, 0.4578275, 0.40821073)
    if family in ("vit", "clip"):
        assert "AFTER" in card.notes  # the MLP hidden units are taken after the activation


def test_clip_card_keeps_only_the_image_tower():
    rules = load_card("clip_vit_b16").weights
    mapped = rules.map_keys({"visual.conv1.weight": 1, "visual.transformer.resblocks.0.ln_1.weight": 2,
                             "positional_embedding": 3, "transformer.resblocks.0.ln_1.weight": 4, "logit_scale": 5})
    assert mapped == {"conv1.weight": 1, "transformer.resblocks.0.ln_1.weight": 2}
