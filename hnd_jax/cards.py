"""Model cards: what hnd-jax needs to know about a checkpoint family, as a small TOML file.

A card says which architecture to build (a name from :mod:`hnd_jax.models.registry`), with which
head and input size, how images must be preprocessed so that activations match the original
model's, which layers to dissect by default, what the model was trained for, and where its weights
come from. Cards are data, not code: one file per checkpoint family.

Where cards are found by name (:func:`cards_dirs`, first match wins):

1. ``$HND_MODELS_DIR``: a user's own folder(s) (several joined with ``os.pathsep``); a card there
   shadows a built-in card of the same name;
2. the built-in cards: the repository's top-level ``models/`` folder is their single source of
   truth. A wheel carries a copy made at build time (``setup.py`` copies ``models/*.toml`` into
   ``hnd_jax/bundled_cards/``), which is used when present; a source checkout or an editable
   install reads ``models/`` itself.

A path to any ``.toml`` file works too (``--model my.toml``); ``hnd card new`` writes one.

Card format (all keys are checked; an unknown key is an error, so typos do not go unnoticed)::

    name = "age"                        # must equal the file stem (models/age.toml)
    architecture = "resnet50"           # registry name
    head = "mlp"                        # optional: passed to build_model(head=...)
    num_outputs = 1                     # optional: passed to build_model(num_outputs=...), <= MAX_NUM_OUTPUTS
    input_size = 128                    # side of the square input, pixels, <= MAX_INPUT_SIZE
    default_layers = ["layer4.2.conv1"] # PyTorch module paths
    source_format = "..."               # what the original weights file is
    trained_for = "..."
    citation = "..."                    # optional
    notes = "..."                       # optional

    [model_kwargs]                      # optional extra keyword arguments of build_model
    image_size = 128                    # (<= MAX_INPUT_SIZE)

    [preprocessing]
    resize = "bicubic"                  # PIL filter: nearest|box|bilinear|hamming|bicubic|lanczos
    divide_by = 255.0                   # x = uint8 / divide_by ...
    mean = []                           # ... then (x - mean) / std per channel, when given
    std = []
    face_crop = "none"                  # "none" or "mtcnn": what the original pipeline did first
    face_crop_note = ""

    [weights]
    file = "age.pth"                    # the original file name, for messages
    instructions = "..."                # where to get it (never downloaded by hnd-jax)
    package = ""                        # optional: weights shipped inside an installed package...
    package_path = ""                   # ...at this path relative to the package folder
    rename = [["^avgpool\\.1\\.", "fc.0."]]   # regex rules applied to the file's keys (first match wins)
    ignore = ["^cnn\\."]               # regexes of keys in the file that the model does not use
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hnd_jax.errors import HndError, nested_too_deeply

__all__ = [
    "ModelCard",
    "Preprocessing",
    "WeightsSource",
    "builtin_cards_dir",
    "cards_dir",
    "cards_dirs",
    "list_cards",
    "load_card",
    "RESIZE_FILTERS",
    "MAX_INPUT_SIZE",
    "MAX_NUM_OUTPUTS",
    "MAX_PARAMETERS",
]

#: PIL resampling filters a card may name.
RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
FACE_CROPS = ("none", "mtcnn")

#: Most head outputs a card may ask for (``num_outputs``, ``hnd card new --num-outputs``): 2**21 =
#: 2,097,152. The largest heads of real face and vision models are far below it (ImageNet-21k: 21,843
#: classes; ArcFace on MS1MV3: 93,431 identities; Glint360K: 360,232) and it still holds a full
#: classifier over WebFace42M, the largest identity-labelled face set (2,059,906 identities). A
#: larger value is a typo (``--num-outputs 1000000000`` once ran ``hnd layers`` out of memory).
MAX_NUM_OUTPUTS = 2 ** 21

#: Largest input side a card may ask for (``input_size``, ``model_kwargs.image_size``, ``hnd card new
#: --input-size``), in pixels. Face models take 112 (ArcFace), 160 (FaceNet), 224-448 (ResNet, ViT,
#: CLIP, FaRL) or 518 px (DINOv2); none takes more than 1024. Beyond it a head that flattens the last
#: map, or a ViT's position embedding, grows with the square of the side into tens of GB.
MAX_INPUT_SIZE = 1024

#: Most parameters (and batch-norm statistics) the model of a card written by ``hnd card new`` may
#: have: 2**33, 8.6e9 (32 GiB of float32). The two bounds above do not bound the model: an IResNet's
#: ``num_outputs`` is its embedding width, fed by a 25,088-wide flatten (``--num-outputs 1000000``:
#: 2.5e10 parameters, 94 GiB). Real face models are far below it (IResNet-100: 6.5e7; ViT-B/16: 8.7e7;
#: ViT-H: 6.3e8); the largest real combination, a ResNet-152 trunk with a full WebFace42M classifier
#: (2,059,906 x 2048), has 4.3e9.
MAX_PARAMETERS = 2 ** 33


def size_bound_error(what: str, value: Any, maximum: int, unit: str = "", *, option: bool = False) -> HndError | None:
    """The one-line error for a card size ``value`` that is not a positive integer up to ``maximum``
    (None when it is one). ``what``: the file and key (``CARD.toml: num_outputs``), or with ``option``
    the command-line option (``--num-outputs``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 < value <= maximum:
        return None
    shown = value if isinstance(value, numbers.Integral) and not isinstance(value, bool) else repr(value)
    named = f"{what} {shown}" if option else f"{what} = {value!r}"
    return HndError(f"{named}: expected a positive integer, at most {maximum}{unit} (the largest a face model "
                    f"needs; see hnd_jax/cards.py)")


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB pixels become the model's float32 input: resize, ``/ divide_by``, ``(x-mean)/std``."""

    resize: str = "bicubic"
    divide_by: float = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    face_crop: str = "none"
    face_crop_note: str = ""


@dataclass(frozen=True)
class WeightsSource:
    """Where a card's weights come from and how the file's key names map onto the model's."""

    file: str = ""
    instructions: str = ""
    package: str = ""
    package_path: str = ""
    rename: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()

    def packaged_file(self) -> Path | None:
        """The weights file shipped inside an installed package, or None (no package / not installed)."""
        if not self.package:
            return None
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.package_path
        return path if path.is_file() else None

    def map_keys(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the card's ``ignore`` then ``rename`` rules to a state dict's keys (order kept)."""
        ignore = [re.compile(p) for p in self.ignore]
        rules = [(re.compile(p), r) for p, r in self.rename]
        out: dict[str, Any] = {}
        for key, value in state.items():
            if any(p.search(key) for p in ignore):
                continue
            new = key
            for pattern, repl in rules:
                new, count = pattern.subn(repl, key, count=1)
                if count:
                    break
            out[new] = value
        return out


@dataclass(frozen=True)
class ModelCard:
    """One checkpoint family (see the module docstring for the file format)."""

    name: str
    architecture: str
    input_size: int
    default_layers: tuple[str, ...]
    source_format: str
    trained_for: str
    preprocessing: Preprocessing
    weights: WeightsSource
    head: str | None = None
    num_outputs: int | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    citation: str = ""
    notes: str = ""
    path: Path | None = None

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model(self.architecture, rngs=..., **kwargs)``."""
        kw: dict[str, Any] = dict(self.model_kwargs)
        if self.head is not None:
            kw["head"] = self.head
        if self.num_outputs is not None:
            kw["num_outputs"] = self.num_outputs
        return kw

    def source_text(self) -> str:
        """The card file's text (copied beside converted weights)."""
        if self.path is None:
            raise HndError(f"model card '{self.name}' was not read from a file")
        return self.path.read_text(encoding="utf-8")

    def missing_weights_message(self) -> str:
        """One line telling the user where the weights come from and what to run."""
        where = self.weights.instructions or "no public source is known; use your own checkpoint"
        file = self.weights.file or "FILE"
        return (
            f"model '{self.name}' needs weights: pass --weights {file} (the original checkpoint) or a folder made by "
            f"`hnd convert --model {self.name} --weights {file} --out DIR`. {where} (hnd-jax never downloads anything)"
        )


# --------------------------------------------------------------------------------------------
# Locating and parsing cards.
# --------------------------------------------------------------------------------------------


#: Where a wheel keeps its copy of ``models/*.toml`` (written by setup.py's build_py; not in git).
BUNDLED_CARDS = Path(__file__).resolve().parent / "bundled_cards"
#: The repository's cards, the single source of truth (source checkouts and editable installs).
REPOSITORY_CARDS = Path(__file__).resolve().parent.parent / "models"


def builtin_cards_dir() -> Path:
    """The built-in cards: the wheel's bundled copy when installed from one, else the repository's."""
    if BUNDLED_CARDS.is_dir() and any(BUNDLED_CARDS.glob("*.toml")):
        return BUNDLED_CARDS
    return REPOSITORY_CARDS


def cards_dirs() -> list[Path]:
    """Folders searched for a card name, in order: ``$HND_MODELS_DIR`` entries, then the built-ins."""
    env = os.environ.get("HND_MODELS_DIR", "")
    user = [Path(p) for p in env.split(os.pathsep) if p]
    for folder in user:
        if not folder.is_dir():
            raise HndError(f"HND_MODELS_DIR: {folder} is not a folder (it should hold .toml model cards)")
    return user + [builtin_cards_dir()]


def cards_dir() -> Path:
    """The first folder searched: ``$HND_MODELS_DIR`` (its first entry) or the built-in cards."""
    return cards_dirs()[0]


def _card_files() -> dict[str, Path]:
    """``{name: path}`` of every card found by name (earlier folders shadow later ones)."""
    found: dict[str, Path] = {}
    for folder in cards_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def list_cards() -> list[ModelCard]:
    """Every card found by name (see :func:`cards_dirs`), sorted by name."""
    files = _card_files()
    if not files:
        where = ", ".join(str(d) for d in cards_dirs())
        raise HndError(f"no model cards found in {where} (set HND_MODELS_DIR to a folder of .toml cards)")
    return [load_card(files[name]) for name in sorted(files)]


def load_card(name_or_path: str | Path | ModelCard) -> ModelCard:
    """A card by name (``models/<name>.toml``) or by path to a ``.toml`` file."""
    if isinstance(name_or_path, ModelCard):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or os.sep in text:
        if not path.is_file():
            raise HndError(f"{path}: model card file not found")
        return _parse_card(path, expect_stem=False)
    files = _card_files()
    path = files.get(text)
    if path is None:
        known = sorted(files)
        import difflib

        close = difflib.get_close_matches(text, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        where = ", ".join(str(d) for d in cards_dirs())
        raise HndError(
            f"unknown model '{text}': no card {text}.toml in {where} (known: {', '.join(known) or 'none'}){hint}"
        )
    return _parse_card(path, expect_stem=True)


_TOP_KEYS = {
    "name", "architecture", "head", "num_outputs", "input_size", "default_layers", "source_format",
    "trained_for", "citation", "notes", "model_kwargs", "preprocessing", "weights",
}
_PRE_KEYS = {"resize", "divide_by", "mean", "std", "face_crop", "face_crop_note"}
_WEIGHT_KEYS = {"file", "instructions", "package", "package_path", "rename", "ignore"}


class _Reader:
    """Typed access to one TOML table with error messages that name the file and key."""

    def __init__(self, path: Path, table: Mapping[str, Any], where: str, allowed: set[str]):
        self.path, self.table, self.where = path, table, where
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise HndError(f"{path}: unknown key {where}{unknown[0]!r} (expected one of {', '.join(sorted(allowed))})")

    def _fail(self, key: str, expected: str) -> HndError:
        return HndError(f"{self.path}: {self.where}{key} = {self.table.get(key)!r}: expected {expected}")

    def str(self, key: str, default: str | None = None) -> str:
        if key not in self.table:
            if default is None:
                raise HndError(f"{self.path}: missing key {self.where}{key}")
            return default
        value = self.table[key]
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def int(self, key: str, default: int | None = None, required: bool = True, maximum: int | None = None,
            unit: str = "") -> int | None:
        if key not in self.table:
            if required and default is None:
                raise HndError(f"{self.path}: missing key {self.where}{key}")
            return default
        value = self.table[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self._fail(key, "a positive integer")
        if maximum is not None and value > maximum:
            raise size_bound_error(f"{self.path}: {self.where}{key}", value, maximum, unit)
        return value

    def float(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise self._fail(key, "a positive number")
        return float(value)

    def floats(self, key: str) -> tuple[float, ...] | None:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise self._fail(key, "a list of numbers")
        if value and len(value) not in (1, 3):
            raise self._fail(key, "1 or 3 numbers (one per RGB channel)")
        return tuple(float(v) for v in value) or None

    def strs(self, key: str, required: bool = False) -> tuple[str, ...]:
        if key not in self.table and required:
            raise HndError(f"{self.path}: missing key {self.where}{key}")
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)


def _parse_card(path: Path, *, expect_stem: bool) -> ModelCard:
    """Parse and check one card; ``expect_stem``: cards found by name must be called ``<name>.toml``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HndError(f"{path}: not a valid TOML model card ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise nested_too_deeply(path) from None
    top = _Reader(path, data, "", _TOP_KEYS)
    name = top.str("name")
    if expect_stem and name != path.stem:
        raise HndError(f"{path}: name = {name!r} must equal the file name stem {path.stem!r}")

    pre_table = data.get("preprocessing", {})
    if not isinstance(pre_table, dict):
        raise HndError(f"{path}: [preprocessing] must be a table")
    pre = _Reader(path, pre_table, "preprocessing.", _PRE_KEYS)
    resize = pre.str("resize", "bicubic").lower()
    if resize not in RESIZE_FILTERS:
        raise HndError(f"{path}: preprocessing.resize = {resize!r}: expected one of {', '.join(RESIZE_FILTERS)}")
    mean, std = pre.floats("mean"), pre.floats("std")
    if (mean is None) != (std is None):
        raise HndError(f"{path}: preprocessing.mean and preprocessing.std must be given together")
    if std is not None and any(s <= 0 for s in std):
        raise HndError(f"{path}: preprocessing.std = {list(std)}: expected positive numbers")
    face_crop = pre.str("face_crop", "none")
    if face_crop not in FACE_CROPS:
        raise HndError(f"{path}: preprocessing.face_crop = {face_crop!r}: expected one of {', '.join(FACE_CROPS)}")
    preprocessing = Preprocessing(
        resize=resize,
        divide_by=pre.float("divide_by", 255.0),
        mean=mean,
        std=std,
        face_crop=face_crop,
        face_crop_note=pre.str("face_crop_note", ""),
    )

    w_table = data.get("weights", {})
    if not isinstance(w_table, dict):
        raise HndError(f"{path}: [weights] must be a table")
    wr = _Reader(path, w_table, "weights.", _WEIGHT_KEYS)
    rename_raw = w_table.get("rename", [])
    if not isinstance(rename_raw, list) or not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(s, str) for s in r) for r in rename_raw
    ):
        raise HndError(f"{path}: weights.rename must be a list of [pattern, replacement] string pairs")
    for pattern in [r[0] for r in rename_raw] + list(wr.strs("ignore")):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise HndError(f"{path}: weights rule {pattern!r} is not a valid regular expression ({exc})") from None
    weights = WeightsSource(
        file=wr.str("file", ""),
        instructions=wr.str("instructions", ""),
        package=wr.str("package", ""),
        package_path=wr.str("package_path", ""),
        rename=tuple((r[0], r[1]) for r in rename_raw),
        ignore=wr.strs("ignore"),
    )

    model_kwargs = data.get("model_kwargs", {})
    if not isinstance(model_kwargs, dict):
        raise HndError(f"{path}: [model_kwargs] must be a table")
    if "image_size" in model_kwargs:
        _Reader(path, model_kwargs, "model_kwargs.", set(model_kwargs)).int("image_size", maximum=MAX_INPUT_SIZE,
                                                                            unit=" px")
    layers = top.strs("default_layers", required=True)
    if not layers:
        raise HndError(f"{path}: default_layers is empty; name at least one layer")
    head = data.get("head")
    if head is not None and not isinstance(head, str):
        raise HndError(f"{path}: head = {head!r}: expected a string")
    return ModelCard(
        name=name,
        architecture=top.str("architecture"),
        input_size=int(top.int("input_size", maximum=MAX_INPUT_SIZE, unit=" px")),
        default_layers=layers,
        source_format=top.str("source_format"),
        trained_for=top.str("trained_for"),
        preprocessing=preprocessing,
        weights=weights,
        head=head,
        num_outputs=top.int("num_outputs", required=False, maximum=MAX_NUM_OUTPUTS),
        model_kwargs=dict(model_kwargs),
        citation=top.str("citation", ""),
        notes=top.str("notes", ""),
        path=path.resolve(),
    )
