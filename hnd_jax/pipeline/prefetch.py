"""Read ahead of the device: a background thread fills a bounded queue of batches (DESIGN.md §3).

Reading, decoding and mask unpacking are host work that can run while the device (or the host
tally) computes the previous batch. :class:`Prefetch` runs an iterator in one daemon thread, ``depth``
items ahead, optionally applying ``transform`` to each item there (the model source pads, preprocesses
and ``jax.device_put``-s the next batch's images, so the host-to-device copy overlaps the current
forward). The consumer sees the items in order, exactly as the iterator yields them.

* ``wait``: seconds the consumer spent blocked on the queue (the time the device waited for input;
  ``dissection.json``'s ``timings.split.input_wait``).
* An exception raised by the iterator or ``transform`` in the thread is re-raised, as it is (same
  object, so an :class:`~hnd_jax.errors.HndError` stays a one-line error), by the consumer's
  ``next()`` at the position where it happened: the items before it are delivered first.
* :meth:`close` (also on ``with`` exit, and on exhaustion) stops the thread: it finishes the item it
  is reading, closes the iterator in its own thread (a generator's ``finally`` blocks run there) and
  exits; queued items are dropped. A killed process loses only read-ahead items, which the driver
  never counted (checkpoints refer to consumed batches only), so resume is unaffected.
* ``depth == 0`` reads in the consumer's thread (no read-ahead), still timing ``wait``.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator

_ITEM, _END, _ERROR = 0, 1, 2
_POLL_S = 0.05


class Prefetch:
    """Iterate ``iterable`` ``depth`` items ahead in a background thread (see the module docstring).

    iterable:  any iterable (a generator is closed in the reading thread when the prefetch stops).
    depth:     items kept ready (>= 0; 0: no thread).
    transform: applied to every item in the reading thread (default: none).
    """

    def __init__(self, iterable: Iterable[Any], depth: int = 2, *, transform: Callable[[Any], Any] | None = None,
                 name: str = "hnd-prefetch"):
        if depth < 0:
            raise ValueError(f"prefetch depth {depth}: expected >= 0")
        self.wait = 0.0
        self._iterator = iter(iterable)
        self._transform = transform
        self._depth = int(depth)
        self._done = False
        self._thread: threading.Thread | None = None
        if self._depth:
            self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ reading thread
    def _put(self, entry: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._iterator:
                if self._stop.is_set():
                    return
                if self._transform is not None:
                    item = self._transform(item)
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # handed to the consumer as it is
            self._put((_ERROR, exc))
        finally:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - a failing close must not hide the first error
                    pass

    # ------------------------------------------------------------------ consumer
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        t = time.perf_counter()
        try:
            if self._thread is None:
                try:
                    item = next(self._iterator)
                except StopIteration:
                    self._done = True
                    raise
                return item if self._transform is None else self._transform(item)
            kind, item = self._queue.get()
        finally:
            self.wait += time.perf_counter() - t
        if kind == _ITEM:
            return item
        self.close()
        if kind == _ERROR:
            raise item
        raise StopIteration

    def close(self) -> None:
        """Stop reading ahead and wait for the reading thread to finish its current item."""
        self._done = True
        if self._thread is None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            return
        self._stop.set()
        while True:  # unblock a put in progress
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
