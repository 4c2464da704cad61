"""Refuse an output folder that holds someone else's files (DESIGN.md §7: never clobber user data).

A command that writes into ``--out`` (``hnd dissect``, ``hnd demo``) may replace what an earlier run
of *the same command* wrote there, and nothing else. :func:`check_out_folder` is the one check they
share, run before any work and before any file is written: OUT must be absent, an empty folder, or a
folder that the command's own ``holds_ours`` test recognises as its earlier output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hnd_jax.errors import HndError


def check_out_folder(out: str | Path, *, what: str, holds_ours: Callable[[Path], bool],
                     option: str = "--out") -> Path:
    """OUT as a Path when it may be written; HndError (one line naming ``option``) otherwise.

    out:        the folder as given (an empty string is refused: ``Path('')`` would be the current folder).
    what:       the command's output in words, for the message (``'hnd dissection'``).
    holds_ours: True when a non-empty folder holds an earlier output of the command (its marker
                files, checked tightly enough that a user's file of the same name is not taken for ours).
    option:     the option that named OUT, for the message.

    Raises HndError when ``out`` is empty, exists and is not a folder, or is a non-empty folder
    holding no earlier output of the command. Writes nothing.
    """
    if isinstance(out, str) and not out.strip():
        raise HndError(f"{option} {out!r}: empty folder name; give the output folder")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise HndError(f"{option} {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not holds_ours(path):
        raise HndError(f"{option} {path}: folder is not empty and holds no earlier {what}; choose a new folder")
    return path
