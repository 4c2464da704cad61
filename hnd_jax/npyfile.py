"""Read ``.npy`` files and ``.npz`` members that a user does not control, within honest bounds.

NumPy trusts an array's header: a 200-byte ``.npy`` that claims shape ``(10**12,)`` makes
``np.load`` try to allocate terabytes (a ``MemoryError`` traceback) or map past the end of the
file. DESIGN.md §7: readers of untrusted files check claimed sizes against what the file can hold
*before* allocating. This module does that, and nothing else:

* :func:`read_npy_header` / :meth:`NpzReader.header`: the header only (shape, dtype, order), after
  checking that the bytes it claims fit in the file (``.npy``) or in the member (``.npz``), that the
  dtype holds no Python objects (those are pickles), and that it is not bigger than 10 kB;
* :func:`load_npy` (optionally memory-mapped) and :meth:`NpzReader.read` / :func:`load_npz`: the
  data, read only after the check; an ``.npz`` member is read with exactly the claimed number of
  bytes, so a member that inflates to more is never inflated past that;
* :func:`finite_float32`: converts a block to float32 and tells NaN, inf and float32 overflow apart.

An ``.npz`` member's claimed size is also checked against its compressed size: ``np.savez`` stores
members (ratio 1) and ``np.savez_compressed`` deflates them (ratio at most 1032:1, the limit of
deflate); other compression methods are refused. Every failure is an
:class:`~hnd_jax.errors.HndError` naming the file (and member).
"""

from __future__ import annotations

import ast
import math
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hnd_jax.errors import HndError, one_line

__all__ = [
    "ArrayHeader",
    "read_npy_header",
    "load_npy",
    "NpzReader",
    "load_npz",
    "finite_float32",
    "MAX_HEADER_BYTES",
    "MAX_DEFLATE_RATIO",
]

#: Largest ``.npy`` header read (NumPy's own default limit for untrusted files).
MAX_HEADER_BYTES = 10_000
#: Deflate cannot expand more than about 1032:1; a member claiming more is forged.
MAX_DEFLATE_RATIO = 1032
_MAGIC = b"\x93NUMPY"

#: What a corrupt or hostile file can make the parsing steps raise.
_PARSE_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, struct.error, SyntaxError, TypeError,
                 KeyError, IndexError, UnicodeDecodeError, MemoryError, RecursionError, OverflowError,
                 zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error)


@dataclass(frozen=True)
class ArrayHeader:
    """What an ``.npy`` header claims.

    shape: the array shape (non-negative ints); dtype: its NumPy dtype (never an object dtype);
    fortran_order: column-major data; data_offset: bytes from the start of the ``.npy`` (or member)
    to the data; nbytes: ``prod(shape) * dtype.itemsize``, checked to fit in the file or member.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int
    nbytes: int

    @property
    def ndim(self) -> int:
        return len(self.shape)



def _parse_header(fh: Any, where: str) -> ArrayHeader:
    """Parse the magic and header of an ``.npy`` stream positioned at its start (bounded reads)."""
    magic = fh.read(8)
    if len(magic) < 8 or magic[:6] != _MAGIC:
        raise HndError(f"{where}: not a NumPy .npy array (bad magic bytes)")
    major, minor = magic[6], magic[7]
    if (major, minor) == (1, 0):
        raw = fh.read(2)
        if len(raw) < 2:
            raise HndError(f"{where}: .npy header is truncated")
        (hlen,) = struct.unpack("<H", raw)
        prefix = 10
    elif (major, minor) in ((2, 0), (3, 0)):
        raw = fh.read(4)
        if len(raw) < 4:
            raise HndError(f"{where}: .npy header is truncated")
        (hlen,) = struct.unpack("<I", raw)
        prefix = 12
    else:
        raise HndError(f"{where}: .npy format version {major}.{minor} is not supported (1.0, 2.0 or 3.0)")
    if hlen > MAX_HEADER_BYTES:
        raise HndError(f"{where}: .npy header of {hlen} bytes is longer than {MAX_HEADER_BYTES} (forged?)")
    text_bytes = fh.read(hlen)
    if len(text_bytes) < hlen:
        raise HndError(f"{where}: .npy header is truncated")
    try:
        text = text_bytes.decode("latin1" if major < 3 else "utf8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd escapes in a forged header warn while parsing
            header = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError, TypeError) as exc:
        raise HndError(f"{where}: .npy header is not readable ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise HndError(f"{where}: .npy header must hold exactly 'descr', 'fortran_order' and 'shape'")
    shape, fortran, descr = header["shape"], header["fortran_order"], header["descr"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise HndError(f"{where}: .npy header has shape {str(shape)[:80]}; expected a tuple of non-negative ints")
    if len(shape) > 64:
        raise HndError(f"{where}: .npy header claims {len(shape)} dimensions (at most 64)")
    if not isinstance(fortran, bool):
        raise HndError(f"{where}: .npy header has fortran_order {str(fortran)[:20]}; expected True or False")
    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, MemoryError) as exc:
        raise HndError(f"{where}: .npy header has an unknown dtype ({one_line(exc)[:80]})") from None
    if dtype.hasobject:
        raise HndError(
            f"{where}: holds Python objects (a pickle inside the array); refusing to read it -- save plain "
            "numeric arrays, e.g. np.save(f, np.asarray(x, dtype=np.float32))"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    return ArrayHeader(tuple(shape), dtype, fortran, prefix + hlen, nbytes)


def _check_fits(header: ArrayHeader, available: int, where: str, what: str) -> ArrayHeader:
    if header.nbytes > available:
        raise HndError(
            f"{where}: header claims shape {header.shape} of {header.dtype} = {header.nbytes} bytes, but the "
            f"{what} holds only {max(available, 0)} bytes after its header (truncated or forged)"
        )
    return header


def read_npy_header(path: str | Path) -> ArrayHeader:
    """The header of an ``.npy`` file, after checking that its data fits in the file.

    Raises HndError (one line naming the file) for a missing file, bad magic or header, an object
    dtype, or a claimed size larger than the file.
    """
    path = Path(path)
    if not path.is_file():
        raise HndError(f"{path}: .npy file not found")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = _parse_header(fh, str(path))
    except HndError:
        raise
    except _PARSE_ERRORS as exc:
        raise HndError(f"{path}: not a readable .npy file ({one_line(exc)})") from None
    return _check_fits(header, size - header.data_offset, str(path), "file")


def load_npy(path: str | Path, *, mmap_mode: str | None = None) -> np.ndarray:
    """An ``.npy`` array, loaded (or memory-mapped with ``mmap_mode='r'``) only after
    :func:`read_npy_header` accepted it. Never unpickles."""
    read_npy_header(path)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except _PARSE_ERRORS as exc:
        raise HndError(f"{path}: not a readable .npy file ({one_line(exc)})") from None


class NpzReader:
    """An ``.npz`` archive whose members are checked before they are inflated.

    ``keys``: member names without ``.npy``, in archive order. Use as a context manager or call
    :meth:`close`. Raises HndError naming the file (and member) for anything unreadable.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise HndError(f"{self.path}: .npz file not found")
        self._infos: dict[str, zipfile.ZipInfo] = {}
        try:
            self._zip = zipfile.ZipFile(self.path)
            for info in self._zip.infolist():
                if not info.filename or info.filename.endswith("/"):
                    continue
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in self._infos:
                    raise HndError(f"{self.path}: the archive holds '{info.filename[:80]}' twice")
                self._infos[key] = info
        except HndError:
            raise
        except _PARSE_ERRORS as exc:
            raise HndError(f"{self.path}: not a readable .npz archive ({one_line(exc)})") from None
        self.keys: tuple[str, ...] = tuple(self._infos)

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _where(self, key: str) -> str:
        return f"{self.path}: array '{key}'"

    def _info(self, key: str) -> zipfile.ZipInfo:
        info = self._infos.get(key)
        if info is None:
            raise HndError(f"{self.path}: no array '{key}' (found: {', '.join(self.keys) or 'none'})")
        where = self._where(key)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise HndError(f"{where}: stored member claims {info.file_size} bytes but holds {info.compress_size}")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
                raise HndError(
                    f"{where}: claims {info.file_size} bytes from {info.compress_size} compressed, more than deflate "
                    "can produce (forged)"
                )
        else:
            raise HndError(f"{where}: compression method {info.compress_type} is not supported (numpy writes "
                           "stored or deflated members)")
        return info

    def header(self, key: str) -> ArrayHeader:
        """The header of member ``key`` after checking its data fits in the member."""
        info = self._info(key)
        where = self._where(key)
        try:
            with self._zip.open(info) as fh:
                header = _parse_header(fh, where)
        except HndError:
            raise
        except _PARSE_ERRORS as exc:
            raise HndError(f"{where}: not readable ({one_line(exc)})") from None
        return _check_fits(header, info.file_size - header.data_offset, where, "member")

    def read(self, key: str) -> np.ndarray:
        """Member ``key`` as a (writable) array; inflates exactly the bytes its checked header claims.

        HndError when those bytes exceed the memory available now (:func:`memory_available`): a few
        MB of deflated zeros can honestly claim gigabytes, and an ``.npz`` member is read whole."""
        header = self.header(key)
        where = self._where(key)
        free = memory_available()
        if free is not None and header.nbytes > free:
            from hnd_jax.pipeline.sizes import format_size

            raise HndError(f"{where}: needs {format_size(header.nbytes)} uncompressed, more than the "
                           f"{format_size(free)} of memory available (an .npz member is read whole; "
                           "a .npy file is read memory-mapped)")
        try:
            with self._zip.open(self._infos[key]) as fh:
                fh.read(header.data_offset)
                buf = bytearray(header.nbytes)
                got = read_fully(memoryview(buf), lambda view, _: fh.readinto(view))
        except _PARSE_ERRORS as exc:
            raise HndError(f"{where}: not readable ({one_line(exc)})") from None
        if got != header.nbytes:
            raise HndError(f"{where}: member ends after {got} of {header.nbytes} data bytes (truncated)")
        arr = np.frombuffer(buf, dtype=header.dtype)
        order = "F" if header.fortran_order else "C"
        return arr.reshape(header.shape, order=order)


def read_fully(view: memoryview, read: Callable[[memoryview, int], int | None]) -> int:
    """Fill the bytes of ``view`` with ``read(rest_of_view, bytes_so_far)`` (a ``readinto`` or
    ``preadv``) until it is full or ``read`` returns 0 (the end of the data); returns the bytes read,
    which the caller compares with what the header promised (a truncated file reads fewer)."""
    got = 0
    while got < view.nbytes:
        n = read(view[got:], got)
        if not n:
            break
        got += n
    return got


def memory_available(proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory available to a new allocation now: Linux ``MemAvailable``, lowered to what
    this process's memory cgroup still allows (``memory.max - memory.current``, cgroup v2; or
    ``memory.limit_in_bytes - memory.usage_in_bytes``, v1) where one limits it (containers, SLURM,
    Kubernetes: there MemAvailable is the whole machine's). None where nothing is known.
    ``proc`` / ``cgroup_root``: where to read them (tests)."""
    available = None
    try:
        with open(f"{proc}/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    left = _cgroup_memory_left(proc, cgroup_root)
    if left is not None:
        available = left if available is None else min(available, left)
    return available


def _cgroup_memory_left(proc: str, cgroup_root: str) -> int | None:
    """Bytes this process's memory cgroup allows beyond its current use (None: no limit found)."""
    try:
        with open(f"{proc}/self/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2 unified
            files = (f"{cgroup_root}{path.rstrip('/')}/memory.max", f"{cgroup_root}{path.rstrip('/')}/memory.current")
        elif "memory" in controllers.split(","):  # v1
            base = f"{cgroup_root}/memory{path.rstrip('/')}"
            files = (f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes")
        else:
            continue
        try:
            with open(files[0], encoding="utf-8") as fh:
                limit = fh.read().strip()
            with open(files[1], encoding="utf-8") as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # no limit (v1 says ~2**63)
            continue
        return max(0, int(limit) - used)
    return None


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every member of an ``.npz`` archive, each checked before it is inflated (archive order)."""
    with NpzReader(path) as npz:
        return {key: npz.read(key) for key in npz.keys}


_F32_MAX = float(np.finfo(np.float32).max)


def finite_float32(block: Any, where: str, *, first_index: int = 0, item: str = "image") -> np.ndarray:
    """``block`` as float32, or HndError when a value is not a finite float32.

    ``block`` is any array-like whose first axis counts items (images); ``where`` names the file
    (and array) for the message; ``first_index`` is the position of ``block[0]`` in the file, so the
    message names the first bad item. Three failures are told apart (the first bad item decides):
    NaN, inf (already infinite in the source), and finite values whose magnitude exceeds the float32
    maximum (about 3.4e38) -- overflow, e.g. float64 activations of 1e300.
    """
    src = np.asarray(block)
    with np.errstate(over="ignore", invalid="ignore"):
        out = src.astype(np.float32)
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    rows = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim else bad.reshape(1)
    row = int(np.argmax(rows))
    row_src = src[row] if src.ndim else src
    row_src = np.asarray(row_src)
    at = first_index + row
    if row_src.dtype.kind in "fc" and np.isnan(row_src).any():
        raise HndError(f"{where} has NaN values (first at {item} {at})")
    if row_src.dtype.kind in "fc" and np.isinf(row_src).any():
        raise HndError(f"{where} has inf values (first at {item} {at})")
    peak = float(np.max(np.abs(row_src.astype(np.float64))))
    raise HndError(
        f"{where} has values that overflow float32 (|x| up to {peak:.3g} > {_F32_MAX:.3g}; first at {item} {at}); "
        "rescale the activations before saving them"
    )
