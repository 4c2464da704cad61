"""Argument helpers shared by several subcommands (so every command spells them the same way)."""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator


def add_taxonomy_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--taxonomy",
        metavar="FILE",
        default=None,
        help="taxonomy JSON with your own concepts, regions and families (default: the Face Dictionary)",
    )


def add_dictionary_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--dictionary",
        metavar="ROOT|PREP|synthetic",
        required=required,
        help="a Face Dictionary root (published layout), a prepared dataset, or 'synthetic'",
    )
    add_untrusted_input_args(parser)


def add_untrusted_input_args(parser: argparse.ArgumentParser) -> None:
    """``--allow-outside-root`` and ``--max-image-pixels`` (DESIGN.md §7).

    :func:`input_options` (called by ``hnd``'s ``main`` for every command) turns them into the
    process-wide defaults of the dictionary readers, so a command needs no code of its own for them.
    """
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        default=None,
        help="let index files name images and masks outside the dictionary ROOT (../, absolute paths, "
        "symlinks leading out); refused by default",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=None,
        metavar="N",
        help="refuse images whose header declares more than N pixels, before decoding them "
        "(default 64000000, or $HND_MAX_IMAGE_PIXELS)",
    )


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, names: tuple[str, ...],
                       defaults: dict | None = None, helps: dict | None = None) -> None:
    """Add ``--<field-name>`` options for the named fields of a settings dataclass.

    Help, metavar and choices come from each field's ``metadata`` and the shown default from the
    field itself (or ``defaults``), so the CLI never restates a default: ScoringConfig and RunConfig
    are the one place settings are stated and checked. ``helps`` (field name -> text) replaces a
    field's help where one command gives the setting a further meaning. Booleans become
    ``store_true`` flags.
    """
    from dataclasses import MISSING, fields

    by_name = {f.name: f for f in fields(config_cls)}
    for name in names:
        f = by_name[name]
        meta = dict(f.metadata)
        default = (defaults or {}).get(name, f.default if f.default is not MISSING else None)
        flag = meta.pop("flag", "--" + name.replace("_", "-"))
        meta.setdefault("dest", name)
        help_text = meta.pop("help")
        help_text = (helps or {}).get(name, help_text)
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_text, dest=meta["dest"])
            continue
        kind = type(default) if default is not None else int
        if "choices" not in meta:
            meta.setdefault("type", kind)
        shown = "" if default is None else f" (default: {default})"
        parser.add_argument(flag, default=default, help=help_text + shown, **meta)


def config_values(args: argparse.Namespace, config_cls: type, names: tuple[str, ...]) -> dict:
    """The parsed values of the options :func:`add_config_options` added, as a dict of fields."""
    return {name: getattr(args, name) for name in names}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


@contextlib.contextmanager
def input_options(args: argparse.Namespace) -> Iterator[None]:
    """Within the block, the readers' process-wide defaults follow ``--allow-outside-root`` and
    ``--max-image-pixels``; the previous defaults come back afterwards (``main`` may be called
    several times in one process, e.g. by tests)."""
    allow = getattr(args, "allow_outside_root", None)
    pixels = getattr(args, "max_image_pixels", None)
    if not allow and pixels is None:
        yield
        return
    from hnd_jax.dictionary import decode, layout

    old_allow, old_pixels = layout.allow_outside_root_default(), decode.max_image_pixels_setting()
    try:
        if allow:
            layout.set_allow_outside_root(True)
        if pixels is not None:
            decode.set_max_image_pixels(pixels)
        yield
    finally:
        layout.set_allow_outside_root(old_allow)
        decode.set_max_image_pixels(old_pixels)


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (``args.no_progress``): the commands that show progress all spell it so."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress output (default: a bar on a terminal, lines with rate and ETA in logs)")


def progress_mode(args: argparse.Namespace) -> str:
    """The :mod:`hnd_jax.pipeline.progress` mode for ``--no-progress``."""
    return "none" if args.no_progress else "auto"
