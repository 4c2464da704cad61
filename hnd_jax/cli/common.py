"""Argument helpers shared by several subcommands (so every command spells them the same way)."""

from __future__ import annotations

import argparse


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


def not_yet(feature: str):
    """A placeholder command body for a feature that has not landed yet (clear message, exit 2)."""

    def run(args: argparse.Namespace) -> int:
        from hnd_jax.errors import HndError

        raise HndError(f"'{feature}' is not available yet in this version of hnd-jax")

    return run


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, names: tuple[str, ...],
                       defaults: dict | None = None) -> None:
    """Add ``--<field-name>`` options for the named fields of a settings dataclass.

    Help, metavar and choices come from each field's ``metadata`` and the shown default from the
    field itself (or ``defaults``), so the CLI never restates a default: ScoringConfig and RunConfig
    are the one place settings are stated and checked. Booleans become ``store_true`` flags.
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
