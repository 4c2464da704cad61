"""One run at a time per output folder (DESIGN.md §7): an exclusive lock on ``OUT/.lock``.

Two dissections writing the same OUT would interleave checkpoints and results. The lock is an
``fcntl.flock`` on an open file that the run holds until it ends: the kernel releases it when the
process dies, however it dies, so a lock left by a killed run is never stale -- the next run takes
it over and says so. The file records who holds it (pid, host, start time) so the refusal can name
the process. In a multi-process run each process locks its own file (``.lock.process_<i>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from hnd_jax.errors import HndError


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text()[:4096])
        return f"process {int(info['pid'])} on {str(info['host'])[:64]} (since {str(info['since'])[:32]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def locked_out(out: str | Path, process_index: int = 0, process_count: int = 1) -> Iterator[str | None]:
    """Hold OUT's lock for the block; HndError naming the holder when another run has it.

    Yields None, or who held the lock last when that run ended without releasing it (a killed
    run; recorded in dissection.json). Creates OUT if needed (OSError when impossible).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (".lock" if process_count == 1 else f".lock.process_{process_index}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HndError(f"{out}: another dissection is writing here ({_holder(path)}); wait for it or "
                           "choose another --out") from None
        taken_over = _holder(path) if os.pread(fd, 4096, 0).strip() else None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield taken_over
        finally:
            os.ftruncate(fd, 0)  # a clean end leaves an empty (free) lock file
    finally:
        os.close(fd)
