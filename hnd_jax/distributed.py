"""Several processes on one run: joining, agreeing on the settings, and ending when a peer is lost.

DESIGN.md §6. ``hnd dissect``, ``hnd extract`` and ``hnd bench`` start every process of a TPU pod,
GPU cluster or SLURM job the same way:

* ``--distributed``: :func:`jax.distributed.initialize` with JAX's cluster auto-detection (Cloud TPU,
  SLURM, Open MPI, Kubernetes);
* ``--coordinator HOST:PORT --num-processes N --process-id I``: any other cluster, and loopback tests.

On CPU backends the collectives go through gloo (``jax_cpu_collectives_implementation``, set before
initialising; it only affects the CPU client), which is what lets several CPU processes on one
machine run the real multi-process path.

A lost peer never hangs the others (:class:`PeerWatch`): every process bumps a counter in the
coordination service's key-value store every ``interval`` seconds and watches everyone else's; a
peer whose counter stands still for ``--peer-timeout`` seconds is lost, and so is one that reported
an error (:func:`report_failure`). A collective that fails because its peer went away (gloo:
"connection closed by peer") asks the watch which process it was. Either way the process prints one
line ``hnd: error: lost process K (...)`` and ends with exit code 2 without JAX's shutdown barrier
(which would wait for the dead peer). JAX's own heartbeat timeout is set above ``--peer-timeout`` so
that this line comes first.

Before any work the processes compare their run fingerprints (:func:`agree_across_processes`):
settings, model and weights, dictionary. When they differ, every process prints the same one line
naming the first difference (``scoring.quantile: 0.005 on process 0, 0.1 on process 1``), exit 2.
Right after joining they compare their ``--num-processes`` the same way (:func:`agree_on_process_count`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from hnd_jax.errors import HndError, Terminated, one_line, raise_terminated

#: Seconds without a sign of life after which a peer process is declared lost (``--peer-timeout``).
DEFAULT_PEER_TIMEOUT = 120.0
#: Seconds the processes wait at least for each other to join at the start (``--peer-timeout`` when
#: longer): processes of one job legitimately start seconds apart (imports, container start-up).
JOIN_TIMEOUT_FLOOR = 60
#: Seconds a finished process waits at JAX's shutdown barrier for process 0 (which writes OUT and
#: the report after the last merge).
SHUTDOWN_TIMEOUT = 6 * 3600
#: Exit code of a process that ends because a peer was lost (the CLI's code for expected failures).
EXIT_LOST_PEER = 2
_PREFIX = "hnd"


@dataclass(frozen=True)
class DistributedOptions:
    """How this process joins the others (all None/False: a single process).

    auto: ``--distributed``; coordinator ``HOST:PORT``, num_processes, process_id: the explicit form;
    peer_timeout: seconds (> 0) after which a silent peer is lost; debug: ``--debug`` (the supervisor
    passes JAX's fatal message and stack trace on after its one line, instead of dropping them).
    """

    auto: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    peer_timeout: float = DEFAULT_PEER_TIMEOUT
    debug: bool = False

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator is not None

    def check(self) -> None:
        """HndError naming the option when the combination is incomplete or out of range."""
        explicit = (self.coordinator, self.num_processes, self.process_id)
        if self.auto and any(v is not None for v in explicit):
            raise HndError("--distributed detects the cluster itself: do not combine it with --coordinator, "
                           "--num-processes or --process-id")
        if any(v is not None for v in explicit) and any(v is None for v in explicit):
            raise HndError("--coordinator HOST:PORT, --num-processes N and --process-id I go together: give all three")
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise HndError(f"--coordinator {self.coordinator!r}: expected HOST:PORT (e.g. 10.0.0.1:1234)")
            if self.num_processes < 1:
                raise HndError(f"--num-processes {self.num_processes}: expected a positive integer")
            if not 0 <= self.process_id < self.num_processes:
                raise HndError(f"--process-id {self.process_id}: expected 0..{self.num_processes - 1}")
        if not self.peer_timeout > 0:
            raise HndError(f"--peer-timeout {self.peer_timeout}: expected a positive number of seconds")


def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """``--distributed``, ``--coordinator``, ``--num-processes``, ``--process-id``, ``--peer-timeout``."""
    g = parser.add_argument_group("several processes (TPU pod hosts, GPU nodes, SLURM tasks)")
    g.add_argument("--distributed", action="store_true",
                   help="join the other processes with JAX's auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes)")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="address of process 0's coordinator (with --num-processes and --process-id)")
    g.add_argument("--num-processes", type=int, metavar="N", default=None, help="number of processes")
    g.add_argument("--process-id", type=int, metavar="I", default=None, help="this process's index, 0..N-1")
    g.add_argument("--peer-timeout", type=float, metavar="SECONDS", default=DEFAULT_PEER_TIMEOUT,
                   help="end with an error when a peer shows no sign of life this long, or when not every "
                        f"process has joined this long (at least {JOIN_TIMEOUT_FLOOR} s) after the start "
                        "(default: %(default)s)")


def options_from_args(args: argparse.Namespace) -> DistributedOptions:
    return DistributedOptions(auto=bool(getattr(args, "distributed", False)),
                              coordinator=getattr(args, "coordinator", None),
                              num_processes=getattr(args, "num_processes", None),
                              process_id=getattr(args, "process_id", None),
                              peer_timeout=float(getattr(args, "peer_timeout", DEFAULT_PEER_TIMEOUT)),
                              debug=_debug(args))


def _debug(args: argparse.Namespace) -> bool:
    from hnd_jax.cli.main import debug_requested

    return debug_requested(args)


_WATCH: "PeerWatch | None" = None


#: The line a process prints before it waits for the others, and the one after all have joined
#: (:mod:`hnd_jax.supervise` reads them: JAX aborts a process whose peers never join).
JOINING, JOINED = "hnd: joining", "hnd: joined"


def initialize(options: DistributedOptions) -> bool:
    """Join the other processes (once per interpreter); start the peer watch. False: single process.

    Prints ``hnd: joining ...`` before waiting (:func:`join_timeout_for` seconds at most: JAX then aborts
    the process, and its supervisor names the cause) and ``hnd: joined ...`` after. Replaces the
    SIGTERM handler JAX's preemption notifier installs (it would swallow SIGTERM: the run went on)
    with one that raises :class:`~hnd_jax.errors.Terminated`. Raises HndError when the options are
    incomplete, the coordinator's host does not resolve, process 0's port is taken, or JAX cannot
    join (no cluster detected, ...).
    """
    global _WATCH
    options.check()
    if not options.enabled:
        return False
    import jax

    if _WATCH is not None or jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    join_timeout = join_timeout_for(options.peer_timeout)
    kwargs: dict[str, Any] = dict(
        initialization_timeout=join_timeout,
        heartbeat_timeout_seconds=int(options.peer_timeout * 2 + 10),
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT,
    )
    if options.auto:
        where, who = "--distributed", "this process"
    else:
        _check_coordinator(options)
        kwargs.update(coordinator_address=options.coordinator, num_processes=options.num_processes,
                      process_id=options.process_id)
        where, who = f"--coordinator {options.coordinator}", f"process {options.process_id} of {options.num_processes}"
    print(f"{JOINING} ({who}, {where}): waiting up to {join_timeout} s for every process", file=sys.stderr,
          flush=True)
    try:
        with _signals_end_at_once():
            jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as exc:  # no cluster detected, ...
        raise HndError(f"{where}: could not join the other processes ({' '.join(str(exc).split())[:300]})") from None
    # JAX's preemption notifier, started by initialize, replaced SIGTERM's handler with one that only logs
    signal.signal(signal.SIGTERM, raise_terminated)
    print(f"{JOINED} as process {jax.process_index()} of {jax.process_count()}", file=sys.stderr, flush=True)
    _WATCH = PeerWatch(jax.process_index(), jax.process_count(), options.peer_timeout)
    _WATCH.start()
    return True


def join_timeout_for(peer_timeout: float) -> int:
    """Whole seconds to wait for every process to join: ``peer_timeout`` rounded up, at least
    :data:`JOIN_TIMEOUT_FLOOR`."""
    return max(JOIN_TIMEOUT_FLOOR, int(-(-float(peer_timeout) // 1)))


def _check_coordinator(options: DistributedOptions) -> None:
    """HndError, before JAX is asked, for what JAX reports badly: a host name that does not resolve
    (JAX retried it until the timeout) and, on process 0, a port already in use (JAX's gRPC server
    failed to bind and the process crashed with a segmentation fault)."""
    import socket

    host, _, port = options.coordinator.rpartition(":")
    host = host.strip("[]")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise HndError(f"--coordinator {options.coordinator}: cannot resolve the host {host!r} "
                       f"({one_line(exc, 120)})") from None
    if options.process_id == 0 and port_in_use(int(port)):
        raise HndError(f"--coordinator {options.coordinator}: port {port} is already in use on this host (another "
                       "run's coordinator?): give every run its own port")


def port_in_use(port: int) -> bool:
    """Is a socket listening on TCP ``port`` of this host (any address, IPv4 or IPv6)? Probed by
    binding where JAX's coordinator binds (``[::]``, dual stack; ``0.0.0.0`` without IPv6), with
    SO_REUSEADDR as gRPC does, so a previous run's sockets in TIME_WAIT do not count."""
    import errno
    import socket

    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                continue  # this family cannot bind here: try the next
            return False
    return False


@contextlib.contextmanager
def _signals_end_at_once() -> Iterator[None]:
    """SIGINT and SIGTERM take their default action (the process ends at once) while JAX waits for
    the others to join: that wait is one C++ call, during which a Python handler would not run
    until the join timeout. The supervisor then prints ``hnd: interrupted``/``terminated``. A signal
    the launcher ignores stays ignored; the handlers come back after."""
    saved = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) != signal.SIG_IGN:
            saved[signum] = signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _client():
    from jax._src import distributed as _dist  # the coordination service client (no public accessor)

    client = _dist.global_state.client
    if client is None:
        raise HndError("jax.distributed is not initialized")
    return client


class PeerWatch:
    """A daemon thread: sign of life every ``interval`` s; a peer silent for ``timeout`` s is lost.

    States in the key-value store under ``hnd/alive/<i>`` (a counter), ``hnd/done/<i>`` (finished
    normally: no longer watched), ``hnd/failed/<i>`` (ended with an error: lost at once) and
    ``hnd/ended/<i>`` (ends because a peer failed: what process 0 waits for before it goes).
    """

    def __init__(self, index: int, count: int, timeout: float):
        self.index, self.count, self.timeout = index, count, float(timeout)
        self.interval = max(0.2, min(5.0, self.timeout / 10))
        self._stop = threading.Event()
        self._lost: str | None = None
        self._lost_event = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hnd-peer-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        client = _client()
        beats = 0
        seen: dict[int, tuple[str, float]] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                beats += 1
                client.key_value_set(f"{_PREFIX}/alive/{self.index}", str(beats), allow_overwrite=True)
                state = dict(client.key_value_dir_get(f"{_PREFIX}/"))
            except Exception as exc:  # the coordinator (process 0) is gone
                if self.index != 0:
                    self._declare(f"lost process 0 (the coordinator stopped answering: {one_line(exc)})")
                    return
                state = {}
            for peer in range(self.count):
                if peer == self.index or f"{_PREFIX}/done/{peer}" in state:
                    continue
                failed = state.get(f"{_PREFIX}/failed/{peer}")
                if failed is not None:
                    with contextlib.suppress(Exception):  # the coordinator is alive: tell it we go
                        client.key_value_set(f"{_PREFIX}/ended/{self.index}", "1", allow_overwrite=True)
                    self._declare(f"lost process {peer} (it stopped with an error: {failed})")
                    return
                value = state.get(f"{_PREFIX}/alive/{peer}", "")
                last = seen.get(peer)
                if last is None or last[0] != value:
                    seen[peer] = (value, now)
                elif now - last[1] > self.timeout:
                    self._declare(f"lost process {peer} (no sign of life for {self.timeout:g} s: "
                                  "it was killed, crashed or its host is unreachable)")
                    return
            self._stop.wait(self.interval)

    def _declare(self, message: str) -> None:
        self._lost = message
        self._lost_event.set()
        end_lost(message)

    def peer_failed(self, what: str, exc: BaseException) -> None:
        """A collective failed (``what``, e.g. 'the merge after pass1'): wait (bounded) for the
        watch to name the lost process, then end this process with that line."""
        if not self._lost_event.wait(self.timeout + 3 * self.interval + 5):
            end_lost(f"a peer process was lost during {what} ({one_line(exc)})")
        end_lost(self._lost or f"a peer process was lost during {what}")

    def wait_for_peers_to_end(self, limit: float) -> None:
        """Process 0 after it reported its failure: wait (at most ``limit`` s) until every peer has
        ended or finished, so that the end of JAX's coordination service aborts nobody."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                state = dict(_client().key_value_dir_get(f"{_PREFIX}/"))
            except Exception:
                return
            if all(any(f"{_PREFIX}/{what}/{peer}" in state for what in ("ended", "done", "failed"))
                   for peer in range(self.count) if peer != self.index):
                time.sleep(0.2)  # their last line and exit, after the key
                return
            time.sleep(0.1)

    def finish(self) -> None:
        """This process is done: peers stop watching it."""
        try:
            _client().key_value_set(f"{_PREFIX}/done/{self.index}", "1", allow_overwrite=True)
        except Exception:
            pass
        self._stop.set()

    def report_failure(self, message: str) -> None:
        """This process ends with an error: peers end at once, naming it."""
        try:
            _client().key_value_set(f"{_PREFIX}/failed/{self.index}", one_line(message, 200), allow_overwrite=True)
        except Exception:
            pass
        self._stop.set()


_ENDING = threading.Lock()
_BEFORE_END: list[Callable[[], None]] = []


@contextlib.contextmanager
def before_ending_now(fn: Callable[[], None]) -> Iterator[None]:
    """Within the block, :func:`end_now` calls ``fn()`` (its errors ignored) before the process ends:
    what a ``finally`` would have done, e.g. remove OUT's lock file (:mod:`hnd_jax.pipeline.outlock`).
    ``fn`` may run in another thread (the peer watch) while the block's own thread is still working."""
    _BEFORE_END.append(fn)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _BEFORE_END.remove(fn)


def end_now(message: str | None, code: int, *, error: bool = True) -> None:
    """Run the :func:`before_ending_now` callbacks, print ``hnd: error: <message>`` (``hnd: <message>``
    with ``error=False``: an interrupt) if any, and end now with ``code``, skipping the interpreter's
    exit handlers (JAX's shutdown barrier would wait for a peer that never comes). The first caller
    wins: a second thread arriving here waits for the first to end the process, so exactly one line
    is printed."""
    if not _ENDING.acquire(blocking=False):
        while True:
            time.sleep(3600)
    try:
        for fn in list(_BEFORE_END):
            with contextlib.suppress(Exception):
                fn()
        if message:
            print(f"hnd: {'error: ' if error else ''}{message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def end_lost(message: str) -> None:
    """A peer is lost: one line, exit :data:`EXIT_LOST_PEER`."""
    end_now(message, EXIT_LOST_PEER)


def guarded_collective(what: str, fn, *args, **kwargs):
    """Run a collective; when it fails and a peer watch runs, end with the lost process's line."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        watch = _WATCH
        if watch is None or isinstance(exc, HndError):
            raise
        watch.peer_failed(what, exc)
        raise  # not reached


def _leave_together(what: str) -> None:
    """Every process ends at the same point (all raised the same error): meet at a barrier (bounded
    by the peer timeout), then the coordinator waits a moment so that the others end first (when
    process 0's coordination service disappears, JAX aborts the clients still connected to it)."""
    import jax

    if _WATCH is None:
        return
    _WATCH._stop.set()
    try:
        _client().wait_at_barrier(f"{_PREFIX}/leave/{what}", int(_WATCH.timeout * 1000))
    except Exception:
        pass
    if jax.process_index() == 0:
        time.sleep(1.0 + _WATCH.interval)


class SettingsDiffer(HndError):
    """The processes were started with different settings (every process raises it at once)."""


@contextlib.contextmanager
def joined(options: DistributedOptions) -> Iterator[bool]:
    """Within the block this process is joined to the others (yields True; False: single process).

    On leaving normally the peers are told this process is done. On an error with several
    processes, the one line the CLI prints for it (:func:`hnd_jax.cli.main.error_message`; a
    traceback for a bug) is printed here, the peers are told so that they end at once naming this
    process, and the process exits without JAX's shutdown barrier (the peers would never reach it).
    Single process: errors pass through unchanged.

    Several processes: first :func:`hnd_jax.supervise.supervise` forks (before JAX is imported), so
    that a lost coordinator, which makes JAX abort this process, still ends with one line.
    """
    if options.enabled:
        options.check()
        from hnd_jax.supervise import supervise

        supervise(keep_trace=options.debug)  # the parent never returns from here: it ends as the child did
    if not initialize(options):
        yield False
        return
    try:
        agree_on_process_count(options)
        yield True
    except SettingsDiffer as exc:  # every process found the same difference: no peer to tell
        _leave_together("settings")
        end_now(str(exc), exc.exit_code)
    except BaseException as exc:
        from hnd_jax.cli.main import EXPECTED_ERRORS, debug_requested, error_message

        stopped = isinstance(exc, (KeyboardInterrupt, Terminated))
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C (forwarded by the supervisor): as main() does
            message, code = "interrupted", 130
        elif isinstance(exc, Terminated):  # SIGTERM (scancel, kubectl delete, timeout)
            message, code = "terminated", Terminated.exit_code
        elif isinstance(exc, EXPECTED_ERRORS) and not debug_requested():
            message, code = error_message(exc), getattr(exc, "exit_code", 2)
        else:
            import traceback

            traceback.print_exc()
            message, code = f"{type(exc).__name__}: {one_line(exc)}", 1
        if _WATCH is not None:
            _WATCH.report_failure(message)
            if _WATCH.index == 0:  # the coordinator goes last: its end would abort the peers' JAX clients
                _WATCH.wait_for_peers_to_end(3 * _WATCH.interval + 1)
        end_now(message, code, error=not stopped)
    else:
        if _WATCH is not None:
            _WATCH.finish()


# ---------------------------------------------------------------------------------------- agreement
def comparable(fingerprint: Mapping[str, Any], per_process: tuple[str, ...] = ("process",)) -> dict[str, Any]:
    """The fingerprint without its per-process fields."""
    return {k: v for k, v in fingerprint.items() if k not in per_process}


def first_difference(a: Any, b: Any) -> tuple[str, Any, Any] | None:
    """(dotted key, value in a, value in b) of the first difference in sorted key order, or None
    (:func:`hnd_jax.pipeline.fingerprint.differing_keys`, the walk the resume check uses too)."""
    from hnd_jax.pipeline.fingerprint import differing_keys

    if isinstance(a, Mapping) and isinstance(b, Mapping):
        found = differing_keys(a, b)
        return found[0] if found else None
    return None if a == b else ("", a, b)


def disagreement(fingerprints: list[Any]) -> str | None:
    """The one line naming the first process whose fingerprint differs from process 0's, or None."""
    from hnd_jax.pipeline.fingerprint import short_value

    for i, fp in enumerate(fingerprints[1:], start=1):
        found = first_difference(fingerprints[0], fp)
        if found:
            key, a, b = found
            return (f"the processes were started with different settings: {key or 'run'}: {short_value(a, 80)} on process 0, "
                    f"{short_value(b, 80)} on process {i} (start every process with the same command and files)")
    return None


_AGREE_COUNT = [0]


def exchange(what: str, value: Any) -> list[Any]:
    """Every process's JSON-able ``value`` in process order, through the coordination service's
    key-value store (no device collective: works before any compilation). A process that does not
    answer within the peer timeout ends this one (:func:`end_lost`). Single process: ``[value]``."""
    import jax

    if jax.process_count() == 1 or not jax.distributed.is_initialized():
        return [value]  # no coordination service (one process, or processes simulated in tests)
    client = _client()
    _AGREE_COUNT[0] += 1
    key = f"{_PREFIX}/exchange/{what}/{_AGREE_COUNT[0]}"
    client.key_value_set(f"{key}/{jax.process_index()}", json.dumps(value, sort_keys=True))
    timeout = _WATCH.timeout if _WATCH is not None else DEFAULT_PEER_TIMEOUT
    values = []
    for peer in range(jax.process_count()):
        deadline = time.monotonic() + timeout
        while True:  # short waits, so that the peer watch can end this process meanwhile
            try:
                values.append(json.loads(client.blocking_key_value_get(f"{key}/{peer}", 1000)))
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    end_lost(f"lost process {peer} (it did not report its {what} within {timeout:g} s: "
                             f"{one_line(exc)})")
    return values


def agree_across_processes(fingerprint: Mapping[str, Any]) -> None:
    """Compare ``fingerprint`` (canonical JSON; per-process fields removed by the caller, see
    :func:`comparable`) with every other process's, before any work. :class:`SettingsDiffer` on
    every process (the same line) when they differ. Single process: nothing to compare."""
    message = disagreement(exchange("settings", fingerprint))
    if message:
        raise SettingsDiffer(message)


def agree_on_process_count(options: DistributedOptions) -> None:
    """Every process must have been started with the same ``--num-processes``. JAX uses process 0's
    count: a process given a larger one still joins (``joined as process 1 of 2``) and the run would
    go on, unless its ``--process-id`` is beyond process 0's count (the coordinator refuses it, see
    :func:`hnd_jax.supervise.lost_line`); process 0 given a larger count than the others waits for
    processes that never come (the join timeout). :class:`SettingsDiffer` on every process (the
    same line) naming the first process whose count differs from process 0's. With
    ``--distributed`` every count is None: nothing differs."""
    counts = exchange("--num-processes", options.num_processes)
    for i, n in enumerate(counts[1:], start=1):
        if n != counts[0]:
            raise SettingsDiffer(f"the processes were started with different --num-processes: {counts[0]} on "
                                 f"process 0, {n} on process {i} (start every process with the same "
                                 "--coordinator, --num-processes and settings)")


def agree_on_resume_stage(stage: str | None) -> None:
    """Every process must resume in the same stage (a stage's states are merged by a collective all
    processes join). They differ only when a process was killed between the merge that ended a stage
    and its checkpoint of it; the merged states it lacks are not in its own slice's checkpoint, so
    the run starts over. :class:`SettingsDiffer` (every process) naming the stages."""
    stages = exchange("checkpoint stage", stage or "pass1")
    if len(set(stages)) > 1:
        where = ", ".join(f"{s} on process {i}" for i, s in enumerate(stages))
        raise SettingsDiffer(f"the processes' checkpoints are at different stages ({where}): "
                             "rerun every process with --fresh")

