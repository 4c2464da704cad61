"""Entry point of the ``hnd`` console script.

Each subcommand lives in its own module under ``hnd_jax.cli`` with a ``register(subparsers)``
function that adds its parser and sets ``func`` (called with the parsed namespace; returns an exit
code or None). The modules only parse arguments and call the library.

The one rule at the top (DESIGN.md §5, §7): every *expected* failure -- a user error
(:class:`~hnd_jax.errors.HndError`), the operating system saying no (``OSError``: a missing or
unreadable file, ``PermissionError``, a full disk), running out of memory or recursion depth, a CSV,
JSON or text-decoding error -- is printed as one line ``hnd: error: ...`` on stderr with exit code 2
and no traceback. A closed output pipe (``hnd ... --json | head``) ends quietly (exit 2). ``hnd
--debug`` or ``HND_DEBUG=1`` shows the traceback instead. Anything else is a bug in hnd-jax and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import importlib
import json
import os
import sys
from typing import Iterator, Sequence

from hnd_jax import __version__
from hnd_jax.cli.common import input_options
from hnd_jax.errors import HndError, Terminated, clear_stop, one_line, raise_interrupted, raise_terminated

SUBCOMMAND_MODULES = ("demo", "dictionary", "dissect", "layers", "card", "convert", "extract", "report", "compare",
                      "bench")

#: Exit code of every expected failure.
EXIT_ERROR = 2
#: Exit code when the reader of stdout went away (``hnd card list | head -1``): what a shell reports for
#: a command killed by SIGPIPE (128 + 13), as ``git`` and coreutils end; not 2, nothing was wrong with the input.
EXIT_PIPE = 141

#: Exceptions that are the user's or the environment's doing, never a bug in hnd-jax.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    HndError,
    OSError,  # includes PermissionError, FileNotFoundError, ENOSPC, BrokenPipeError
    MemoryError,
    RecursionError,
    csv.Error,
    json.JSONDecodeError,
    UnicodeError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hnd",
        description="Hierarchical Network Dissection of face models in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"hnd-jax {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of one line (also: HND_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"hnd_jax.cli.{name}").register(subparsers)
    return parser


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` on the command line or ``HND_DEBUG`` set to anything but '', 0, false, no."""
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get("HND_DEBUG", "").strip().lower() not in ("", "0", "false", "no")



#: Frames (module, function; None: any function) that put an out-of-memory error in the scoring after
#: the passes: the per-layer scores and the significance tests (DESIGN.md §2c) hold [images, units]
#: arrays per family, which --batch-size and --cache-budget do not change.
_FINALIZE_FRAMES = (("hnd_jax.scoring.significance", None), ("hnd_jax.scoring.engine", "finalize"))


def memory_advice(exc: BaseException) -> str:
    """What to change after a MemoryError, from where it was raised (its traceback's frames)."""
    tb = exc.__traceback__
    while tb is not None:
        module, function = tb.tb_frame.f_globals.get("__name__"), tb.tb_frame.f_code.co_name
        if any(module == m and f in (None, function) for m, f in _FINALIZE_FRAMES):
            return ("while scoring the layer after the passes (scores and significance tests, [images, units] "
                    "arrays per family), which --batch-size and --cache-budget do not change: use a machine with "
                    "more memory or a layer with fewer units")
        tb = tb.tb_next
    return ("the input or a setting asks for more memory than this machine has (for hnd dissect, extract "
            "and bench: a smaller --batch-size or --cache-budget)")


def error_message(exc: BaseException) -> str:
    """The one line printed for an expected failure (never file content: only names and reasons)."""
    if isinstance(exc, HndError):
        return one_line(str(exc), limit=2000)
    if isinstance(exc, OSError):
        reason = exc.strerror or one_line(str(exc), 400) or type(exc).__name__
        if exc.errno == errno.ENOSPC:
            reason = "no space left on device (free some space and run again)"
        elif isinstance(exc, PermissionError):
            reason = f"{reason} (check the file's permissions or choose another path)"
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        where = " -> ".join(os.fsdecode(n) if isinstance(n, (str, bytes)) else str(n) for n in names)
        return one_line(f"{where}: {reason}" if where else reason, 400)
    if isinstance(exc, MemoryError):
        return "out of memory" + (f" ({one_line(str(exc), 400)})" if str(exc) else "") + ": " + memory_advice(exc)
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (RecursionError); the file is malformed or hostile"
    if isinstance(exc, UnicodeDecodeError):
        return f"text is not valid {exc.encoding} (byte {exc.start}: {exc.reason})"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    if isinstance(exc, csv.Error):
        return f"invalid CSV: {one_line(str(exc), 400)}"
    return f"{type(exc).__name__}: {one_line(str(exc), 400)}"


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the exit-time flush cannot fail again
    (the recipe of the Python docs, 'Note on SIGPIPE')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (e.g. captured)
        pass


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Within the block SIGTERM (``scancel``, ``kubectl delete``, ``timeout``) raises
    :class:`~hnd_jax.errors.Terminated` like Ctrl-C raises KeyboardInterrupt, so that a run ends with
    one line and its clean-up runs. A launcher's "ignore" is kept; the previous handler comes back
    after (``main`` is also called in-process)."""
    import signal

    clear_stop()
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, raise_terminated)
        previous_int = signal.getsignal(signal.SIGINT)
        if previous_int is signal.default_int_handler:  # remembered too (errors.raise_if_stopped)
            signal.signal(signal.SIGINT, raise_interrupted)
    except ValueError:  # not the main thread: leave signals alone
        previous = previous_int = None
    try:
        yield
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        clear_stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        with _sigterm_stops(), input_options(args):
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the rule, not at interpreter exit
    except KeyboardInterrupt:
        print("hnd: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("hnd: terminated", file=sys.stderr)
        return Terminated.exit_code
    except BrokenPipeError:
        if debug_requested(args):
            raise
        _silence_stdout()  # the reader went away (`| head`): nothing to report
        return EXIT_PIPE
    except EXPECTED_ERRORS as exc:
        if debug_requested(args):
            raise
        print(f"hnd: error: {error_message(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_ERROR)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
