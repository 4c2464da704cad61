"""User-facing errors.

Anything a user can cause (a bad file, a wrong value, a missing dataset) raises :class:`HndError`
with a one-line message that names the file or value and says what was expected. The CLI prints
``hnd: error: <message>`` on stderr and exits with code 2, never a traceback. Library callers can
catch :class:`HndError` like any exception.
"""

from __future__ import annotations

from typing import Any


class HndError(Exception):
    """A problem with user input or environment, reported as one line (CLI exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, *, kind: str | None = None):
        # Keep messages to one line: a multi-line message would read like a traceback.
        super().__init__(" ".join(str(message).split()))
        self.kind = kind  # machine-readable category, e.g. "missing_mask" (used by --skip-bad counts)


class Terminated(BaseException):
    """SIGTERM arrived (``scancel``, Kubernetes, ``timeout``): the run stops like an interrupt, exit
    143 (128 + SIGTERM). A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    swallows it. Raised by :func:`raise_terminated`."""

    exit_code = 143


#: The stop a signal asked for (KeyboardInterrupt or Terminated) until the command ends; see
#: :func:`raise_if_stopped`.
_PENDING: type[BaseException] | None = None


def raise_terminated(signum: int, frame: Any) -> None:
    """The SIGTERM handler of hnd's commands (installed by ``hnd_jax.cli.main``, and again by
    ``hnd_jax.distributed.initialize`` after JAX's preemption notifier replaced it)."""
    global _PENDING
    _PENDING = Terminated
    raise Terminated()


def raise_interrupted(signum: int, frame: Any) -> None:
    """The SIGINT handler of hnd's commands: KeyboardInterrupt, as Python's own, and remembered."""
    global _PENDING
    _PENDING = KeyboardInterrupt
    raise KeyboardInterrupt()


def raise_if_stopped() -> None:
    """Raise the stop a signal asked for, if one did and the run is still going. A signal handler's
    exception raised inside a garbage-collector callback (JAX frees device buffers from one) is
    printed as "Exception ignored" and lost; long loops call this once per step so that Ctrl-C or
    SIGTERM still stops the run (:class:`hnd_jax.pipeline.progress.StageProgress` does)."""
    if _PENDING is not None:
        raise _PENDING()


def clear_stop() -> None:
    """Forget a signal's stop (a command starts or has ended; ``main`` also runs in-process)."""
    global _PENDING
    _PENDING = None


class BadInputError(HndError):
    """A data file that cannot be used as it is (missing, corrupt, wrong shape, unknown concept...).

    ``kind`` names the category so that ``--skip-bad`` can count what it skipped per kind.
    """


def one_line(value: Any, limit: int = 160) -> str:
    """``value`` (a message or an exception) as one line of at most ``limit`` characters: white space
    folded, ``...`` where it was cut, an exception without a message named by its type."""
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nested_too_deeply(path: Any) -> HndError:
    """The one-line error for a JSON or TOML file whose nesting exhausted the parser's recursion
    (``RecursionError``): it names the file, which the top-level handler cannot know."""
    return HndError(f"{path}: nested too deeply to read (RecursionError); the file is malformed or hostile")
