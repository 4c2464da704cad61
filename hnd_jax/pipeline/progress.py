"""Progress of the long stages, on stderr: tqdm bars on a terminal, plain lines in logs.

Modes (``RunConfig.progress`` / ``--progress``):

* ``auto``: bars when stderr is a terminal, plain lines otherwise (pod and SLURM job logs);
* ``bar``: always bars; ``plain``: always lines; ``none``: nothing.

A plain line is printed about every 10% of a stage's images or 30 seconds, and when it ends, with the rate and the ETA; every mode prints the stage's time when it ends (except
``none``), so the time appears right after the stage, not after the next stage's output. A stage
ended by an error or an interruption says where it stopped (``stopped after S s at N/M img``), not
"done": ``close(completed=False)``, or ``with StageProgress(...)`` which decides it from the exception.
"""

from __future__ import annotations

import sys
import time

from hnd_jax.errors import raise_if_stopped

PLAIN_EVERY_S = 30.0
PLAIN_EVERY_FRACTION = 0.1


def resolve_mode(mode: str | bool) -> str:
    """``'bar' | 'plain' | 'none'`` for a requested mode (``True``/``False`` mean auto/none)."""
    if mode is True:
        mode = "auto"
    if mode is False or mode is None:
        return "none"
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "plain"
    return mode


class StageProgress:
    """Progress of one stage over ``total`` images, starting at ``initial`` (a resumed stage)."""

    def __init__(self, desc: str, total: int, *, mode: str, initial: int = 0, unit: str = "img"):
        self.desc, self.total, self.mode, self.unit = desc, int(total), resolve_mode(mode), unit
        self.done = self.start_done = int(min(initial, total))
        self.t0 = self.t_last = time.perf_counter()
        self.last_done = self.done
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, dynamic_ncols=True,
                            file=sys.stderr, leave=False)

    def _line(self, text: str) -> None:
        print(f"hnd: {self.desc}: {text}", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        raise_if_stopped()  # a Ctrl-C whose KeyboardInterrupt a gc callback swallowed still stops the run
        self.done += int(n)
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "plain":
            now = time.perf_counter()
            step = max(1, int(self.total * PLAIN_EVERY_FRACTION))
            if self.done - self.last_done >= step or now - self.t_last >= PLAIN_EVERY_S:
                self.t_last, self.last_done = now, self.done
                rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
                eta = (self.total - self.done) / rate if rate > 0 else float("inf")
                self._line(f"{self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, ETA {eta:.0f} s")

    def note(self, text: str) -> None:
        """A status line for the stage (e.g. an epoch's loss): the bar's postfix, or a plain line."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif self.mode == "plain":
            self._line(text)

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """End the stage: "done" when the block finished, "stopped ... at N/M" when Ctrl-C
        (KeyboardInterrupt), SIGTERM (:class:`~hnd_jax.errors.Terminated`) or an error ended it; never
        swallows it. An error before any image was done (a bad input found first) adds no line: its own
        one line says what went wrong."""
        quiet = exc_type is not None and issubclass(exc_type, Exception) and self.done == self.start_done
        self.close(completed=exc_type is None, say=not quiet)
        return False

    def close(self, completed: bool = True, *, say: bool = True) -> float:
        """End the stage; print its time (bar and plain modes); return the seconds it took.
        ``completed=False`` (an error or an interruption ended it): say where it stopped, not "done".
        ``say=False``: print nothing (the bar is still closed)."""
        seconds = self.seconds = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.close()
        if self.mode != "none" and say:
            if completed:
                rate = (self.done - self.start_done) / max(seconds, 1e-9)
                self._line(f"done in {seconds:.1f} s ({self.done - self.start_done} {self.unit}, {rate:.1f} {self.unit}/s)")
            else:
                self._line(f"stopped after {seconds:.1f} s at {self.done}/{self.total} {self.unit}")
        return seconds
