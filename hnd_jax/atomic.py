"""Write files so that an interrupted run never leaves a half-written file under the final name.

Everything hnd-jax writes as a result goes through these helpers: write to a temporary name in the
same directory, flush, then ``os.replace`` onto the final name (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_default_mode(path: Path, base: int) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; results are shared files, so apply the umask instead."""
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def _naming(final: Path) -> Iterator[None]:
    """An OSError in the block names ``final``, the file the user asked for, instead of the
    temporary name beside it (``.a.npy.0eup921s.tmp.npy``) that the user never chose. Same errno,
    hence the same subclass (``OSError(errno.EACCES, ...)`` is a PermissionError), so the caller's handling (and the CLI's one line, e.g. for a read-only folder) is kept."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from None  # errno picks the subclass


def _make_parent(final: Path) -> None:
    """Create the folder of ``final``; an OSError names ``final`` and the folder, with the reason
    in words when a file stands where a folder is needed (``--out afile/a.npy``)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        in_the_way = exc.errno in (errno.EEXIST, errno.ENOTDIR)
        reason = "a file stands where a folder is needed" if in_the_way else (exc.strerror or str(exc))
        raise OSError(exc.errno, f"cannot create the folder {final.parent} ({reason})", str(final)) from None


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it onto ``final``.

    On an exception the temporary file is removed and ``final`` is left as it was.
    ``suffix`` lets writers that insist on an extension (``np.savez`` adds ``.npz``) use it.
    """
    final = Path(final)
    _make_parent(final)
    with _naming(final):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _give_default_mode(tmp_path, 0o666)
        with _naming(final):  # e.g. final is a folder: the temporary name would mean nothing to the user
            os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(final: str | Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(final: str | Path, text: str) -> None:
    write_bytes(final, text.encode("utf-8"))


def write_json(final: str | Path, obj: Any) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npz(final: str | Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """``np.savez_compressed`` (or ``np.savez``) written atomically. Compression is deflate level 1:
    ``np.load`` reads it like any ``.npz``; level 1 is several times faster than numpy's default
    level 6 on float arrays, for files a little larger."""
    if not compressed:
        with atomic_path(final, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return
    import zipfile

    with atomic_path(final, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
            for key, value in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and move it onto ``final`` when complete."""
    final = Path(final)
    _make_parent(final)
    with _naming(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _give_default_mode(tmp, 0o777)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
