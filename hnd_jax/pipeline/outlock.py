"""One run at a time per output folder (DESIGN.md §7): an exclusive lock on ``OUT/.lock``.

Two dissections writing the same OUT would interleave checkpoints and results. The lock is an
``fcntl.flock`` on an open file that the run holds until it ends: the kernel releases it when the
process dies, however it dies, so a lock left by a killed run is never stale -- the next run takes
it over and says so. The file records who holds it (pid, host, start time) so the refusal can name
the process. In a multi-process run process 0 locks ``.lock``, as a single process does (so a
single-process run and a multi-process run on the same OUT exclude each other too), and process
``i > 0`` locks ``.lock.process_<i>``.

A run that ends -- finished, or failed with its one-line error (:func:`hnd_jax.distributed.end_now`
included: a lost peer) -- removes its lock file, so that a finished OUT holds only results. It
removes the file *while still holding the lock*, and a run that takes the lock checks afterwards that
the file it locked is still the one at that path (same device and inode): a run that opened the
file just before it was removed, and got the lock when the old holder let go, would otherwise hold
a lock on a file nobody else can see any more while a third run locks a new one. It starts over on
the new file instead. A killed run (``kill -9``, a crash) cannot remove its file: its record stays,
and the next run says whose lock it took over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from hnd_jax.errors import HndError

#: Lock files of processes ``i > 0`` of a multi-process run: ``.lock.process_<i>``.
PROCESS_LOCK = ".lock.process_{}"


def lock_path(out: str | Path, process_index: int = 0) -> Path:
    """The lock file of process ``process_index`` (0 for a single process) in OUT."""
    return Path(out) / (".lock" if process_index == 0 else PROCESS_LOCK.format(int(process_index)))


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text()[:4096])
        return f"process {int(info['pid'])} on {str(info['host'])[:64]} (since {str(info['since'])[:32]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _still_there(fd: int, path: Path) -> bool:
    """Is the open file ``fd`` still the file at ``path`` (not removed, not replaced)?"""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def make_out_folder(out: Path) -> None:
    """Create the output folder OUT (and its parents) if needed; a one-line HndError naming ``--out``
    when OUT is an existing file (``/dev/null`` too) or cannot be created (a parent is a file, a
    read-only place)."""
    if out.exists() and not out.is_dir():
        raise HndError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # made a file meanwhile, or a dangling symlink
        raise HndError(f"--out {out}: exists and is not a folder") from None
    except OSError as exc:
        raise HndError(f"--out {out}: cannot create the folder ({exc.strerror or type(exc).__name__})") from None


def _open_lock_file(path: Path, out: Path) -> int:
    """``os.open`` the lock file; a one-line HndError naming ``--out`` when OUT takes no files."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, PermissionError):
            reason += ": a read-only folder? check its permissions or choose another --out"
        raise HndError(f"--out {out}: cannot write a file in this folder ({path.name}: {reason})") from None


def _lock(path: Path, out: Path) -> int:
    """Open and lock ``path``: the locked fd. HndError naming the holder when another run has it."""
    while True:
        fd = _open_lock_file(path, out)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HndError(f"{out}: another dissection is writing here ({_holder(path)}); wait for it or "
                           "choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        if _still_there(fd, path):
            return fd
        os.close(fd)  # the run that held it removed it as it ended: lock the file now at that path


class _Held:
    """A lock file this process holds; :meth:`remove` (once, from any thread) deletes it while the lock
    is still held; where deleting fails, leaves it empty (free). The fd is closed by the owner."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path
        self._mutex = threading.Lock()
        self._removed = False

    def remove(self) -> None:
        with self._mutex:
            if self._removed:
                return
            self._removed = True
            try:
                if _still_there(self.fd, self.path):
                    os.unlink(self.path)
                    return
            except OSError:
                pass
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)


@contextlib.contextmanager
def locked_out(out: str | Path, process_index: int = 0) -> Iterator[str | None]:
    """Hold OUT's lock for the block; HndError naming the holder when another run has it.

    Yields None, or who held the lock last when that run ended without releasing it (a killed
    run; recorded in dissection.json). Creates OUT if needed (HndError naming ``--out`` when impossible). The lock
    file is removed when the block ends, however it ends, and also when the process ends at once
    through :func:`hnd_jax.distributed.end_now` inside the block (a lost peer). The file depends only
    on ``process_index`` (:func:`lock_path`): process 0 of any run, and a single process, lock ``.lock``.
    """
    from hnd_jax.distributed import before_ending_now

    out = Path(out)
    make_out_folder(out)
    path = lock_path(out, process_index)
    fd = _lock(path, out)
    try:
        taken_over = _holder(path) if os.pread(fd, 4096, 0).strip() else None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        held = _Held(fd, path)
        with before_ending_now(held.remove):
            try:
                yield taken_over
            finally:
                if process_index == 0:
                    _remove_stale_process_locks(out)
                held.remove()
    finally:
        os.close(fd)


def _remove_stale_process_locks(out: Path) -> None:
    """Remove ``.lock.process_<i>`` files nobody holds (left by killed processes of an earlier
    multi-process run): each is locked first (a held one is skipped: its process removes it itself)
    and unlinked while locked; a run that opened it meanwhile finds it gone and locks a new file
    (:func:`_lock`'s check)."""
    for path in out.glob(PROCESS_LOCK.format("*")):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _still_there(fd, path):
                os.unlink(path)
        except OSError:  # held by a live process, or already gone
            pass
        finally:
            os.close(fd)
