"""A read-only file wrapper whose reads never ask for more than the file still holds.

Parsers of untrusted files often read a record with ``fh.read(length)``, the length taken from the
file itself, and a buffered file allocates ``length`` bytes before reading: a forged length of
2 GB in a 300-byte file allocates 2 GB (the pickle module's string opcodes, PIL's PNG reader at the
end of a truncated ``IDAT`` chunk). :class:`CappedReader` caps every request at the bytes left in
the file, so no read can allocate more than the file's honest size (DESIGN.md §7).
"""

from __future__ import annotations

import io
from typing import IO, Any


class CappedReader(io.RawIOBase):
    """Wrap a seekable binary file of ``size`` bytes; ``read(n)`` returns at most what is left."""

    def __init__(self, fh: IO[bytes], size: int):
        super().__init__()
        self._fh = fh
        self._size = int(size)

    def _left(self) -> int:
        return max(0, self._size - self._fh.tell())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        left = self._left()
        return self._fh.read(left if n is None or n < 0 else min(n, left))

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        return self._fh.readinto(view[: min(len(view), self._left())])

    def readline(self, limit: int | None = -1) -> bytes:
        left = self._left()
        return self._fh.readline(left if limit is None or limit < 0 else min(limit, left))

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(pos, whence)

    def tell(self) -> int:
        return self._fh.tell()
