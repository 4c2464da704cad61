"""One line, not a C++ stack trace, when the coordinator of a multi-process run is lost; no gloo chatter.

DESIGN.md §6 and issue 10: "if a peer dies, the others end with one line naming the lost process".
:mod:`hnd_jax.distributed` does this in Python for every peer but one. Process 0 hosts JAX's
coordination service; when it dies, JAX's C++ client in every other process calls ``LOG(FATAL)``
("Terminating process because the JAX distributed service detected fatal errors ... the leader task
was preempted/died ...") and aborts, with a stack trace, before Python runs again. Python cannot
catch an abort, and ``jax.distributed.initialize`` (0.10) takes no callback for it.

So the only place left to turn that abort into our one line is *another process*. Before JAX is
imported, :func:`supervise` forks: the child does the real work; the parent (the PID that users,
schedulers and tests see) only

* copies the child's stderr to its own, line by line (a progress bar's ``\\r`` ends a line too), and
  from JAX's fatal pattern on (:data:`FATAL`) drops the rest: the fatal line and its stack trace. A
  line that usually precedes it (:data:`PRELUDE`, "Polled an error from coordination service") is
  held back for :data:`HOLD_SECONDS` and released if no fatal line follows: nothing else is lost;
* copies the child's stdout to its own the same way, dropping only gloo's "[Gloo] Rank N is
  connected to K peer ranks. Expected number of connected peer ranks is : K" reports
  (:data:`GLOO_CONNECTED`), which gloo writes with ``std::cout`` each time a CPU process opens its
  collectives, with no setting to turn them off (jaxlib 0.10); a report of fewer peers than
  expected is passed on;
* when the child then ends by a signal or a non-zero code, prints ``hnd: error: lost process 0
  (the coordinator, ...): <reason>`` (:func:`lost_line`) and exits 2 (:data:`EXIT_LOST`), unless
  the child had already printed an ``hnd: error:`` line itself (then it exits 2 silently);
* otherwise ends exactly as the child did: the same exit code, or the same signal re-raised (after
  ``hnd: interrupted`` / ``hnd: terminated`` for SIGINT / SIGTERM, which end the child by their
  default action only while it waits for its peers to join);
* forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the child, and SIGTSTP/SIGCONT (job control).

Why a fork and not a wrapper command: all three subcommands (``dissect``, ``extract``, ``bench``)
get it from :func:`hnd_jax.distributed.joined` with no change to how users start hnd; ``os.fork``
before JAX's import copies only Python's state (no XLA threads yet), so the child continues the
same call as if nothing happened. The child is in its own process group, so a terminal's Ctrl-C
(sent to the foreground group) reaches it once, through the parent. ``prctl(PR_SET_PDEATHSIG,
SIGKILL)`` (Linux) kills the child when the parent dies, even by ``kill -9`` (the parent forks
from its main thread, which lives as long as the parent does); ``getppid()`` is checked after it,
for a parent that died before the call. Where ``os.fork`` is missing, JAX is
already imported (a library caller, a test in-process) or this process already is a supervised
child, :func:`supervise` returns at once: no fork, JAX's own message stays as it was. A single
process never calls it.

When stderr (stdout) is a terminal, the child's stderr (stdout) is a pseudo-terminal of the same
size (``pty``), so that progress bars, ``isatty`` checks and C's stdio buffering still see a
terminal; otherwise a pipe.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from typing import Callable

#: Exit code when the coordinator was lost (the CLI's code for expected failures).
EXIT_LOST = 2
#: JAX's fatal line when its distributed service fails (jaxlib 0.10, ``client.h``), or any line
#: saying the leader task died.
FATAL = re.compile(rb"Terminating process because the JAX distributed service detected fatal errors"
                   rb"|leader task\b.{0,40}\b(?:died|preempted)")
#: An absl-format warning or error about the coordination service or preemption sync, which JAX
#: prints just before the fatal line ("Polled an error from coordination service", "Failed to
#: retrieve preemption notice from coordination service").
PRELUDE = re.compile(rb"^[WEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*(?:[Cc]oordination|preemption)")
#: Seconds a :data:`PRELUDE` line is held back waiting for the fatal line.
HOLD_SECONDS = 10.0
#: Bytes of held-back output kept at most (a flood after a prelude is released, not stored).
HOLD_LIMIT = 1 << 16
#: gloo's report on stdout (std::cout, no switch to turn it off) each time a CPU process opens its
#: collectives with the other processes: ``[Gloo] Rank 0 is connected to 3 peer ranks. Expected
#: number of connected peer ranks is : 3``. Groups: rank, connected, expected.
GLOO_CONNECTED = re.compile(rb"\[Gloo\] Rank (\d+) is connected to (\d+) peer ranks\. "
                            rb"Expected number of connected peer ranks is : (\d+)\r?\n?")
#: The fixed pieces of that report (gloo writes them, and the numbers between, one by one).
GLOO_PIECES = re.compile(rb"\[Gloo\] Rank | is connected to | peer ranks\. Expected number of connected peer ranks is : ")
#: Signals the parent passes on to the child.
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGCONT")
_PR_SET_PDEATHSIG = 1
_CHILD = False


def lost_line(fatal: bytes, *, joining: bool = False) -> str:
    """The one line (without ``hnd: error: ``) for JAX's fatal text ``fatal`` (bytes, one or more
    lines): while the processes were still joining (``joining``: the child said it was waiting and
    not yet that all had joined), that process 0 has fewer processes than this one's
    ``--process-id`` (the coordinator refused it: "Unexpected task registered") or else that not all
    of them came; else process 0 when it names the leader task; else the one ``/task:K`` it names,
    if any."""
    text = " ".join(fatal.decode("utf-8", "replace").split())
    status = re.search(r"absl::Status: ([A-Z_]+: [^.]{0,120})", text)
    jax_says = f" (JAX: {status.group(1)})" if status else ""
    unexpected = re.search(r"Unexpected task registered with task=(\d+)", text)
    if joining and unexpected:  # this --process-id is not below process 0's --num-processes
        return (f"process 0 (the coordinator) was started with a smaller --num-processes: it has no process "
                f"{unexpected.group(1)}; start every process with the same --num-processes{jax_says}")
    if joining:
        return ("not every process joined in time (--peer-timeout): start all of them with the same --coordinator "
                f"HOST:PORT and --num-processes, with process 0 running and HOST:PORT reachable{jax_says}")
    if "leader task" in text:
        return ("lost process 0 (the coordinator, which hosts JAX's coordination service): it stopped answering; "
                f"it was killed, crashed or its host is unreachable{jax_says}")
    tasks = sorted(set(re.findall(r"/task:(\d+)", text)), key=int)
    if len(tasks) == 1:
        return f"lost process {tasks[0]} (JAX's distributed service reported it unhealthy){jax_says}"
    return f"lost a peer process (JAX's distributed service detected fatal errors){jax_says}"


class FatalFilter:
    """Copies bytes to ``write`` line by line, dropping JAX's fatal message and what follows.

    feed(data) with any chunking; tick(now) releases a held prelude after :data:`HOLD_SECONDS` and a
    partial line once output pauses; close() at the end. ``fatal``: the first fatal line (bytes) or
    None; ``said_error``: an ``hnd: error:`` line was passed on; ``joining``: the child said it waits
    for the other processes (``hnd: joining``) and has not yet said they all joined (``hnd: joined``).
    """

    def __init__(self, write: Callable[[bytes], None], *, keep: bool = False):
        self.write = write
        self.keep = keep  # --debug: pass the fatal message and what follows on too (still recorded)
        self.fatal: bytes | None = None
        self.said_error = False
        self.joining = False
        self._partial = b""
        self._held: list[bytes] = []
        self._held_since: float | None = None

    def feed(self, data: bytes, now: float | None = None) -> None:
        self._partial += data
        while True:
            ends = [i for i in (self._partial.find(b"\n"), self._partial.find(b"\r")) if i >= 0]
            if not ends:
                break
            cut = min(ends) + 1
            line, self._partial = self._partial[:cut], self._partial[cut:]
            self._line(line, time.monotonic() if now is None else now)

    def _line(self, line: bytes, now: float) -> None:
        if self.fatal is not None:
            if self.keep:
                self.write(line)
            return
        if FATAL.search(line):
            if self.keep:
                self._release()
                self.write(line)
            self.fatal, self._held, self._held_since = line, [], None
            return
        if self._held_since is None and PRELUDE.match(line):
            self._held_since = now
        if self._held_since is not None:
            self._held.append(line)
            if sum(map(len, self._held)) > HOLD_LIMIT:
                self._release()
            return
        self._out(line)

    def _out(self, line: bytes) -> None:
        if line.startswith(b"hnd: error:"):
            self.said_error = True
        elif line.startswith((b"hnd: joining", b"hnd: joined")):  # distributed.JOINING / JOINED
            self.joining = line.startswith(b"hnd: joining")
        self.write(line)

    def _release(self) -> None:
        held, self._held, self._held_since = self._held, [], None
        for line in held:
            self._out(line)

    def tick(self, now: float, quiet: bool = False) -> None:
        """``quiet``: no output arrived for a moment (a partial line, e.g. a prompt, is passed on)."""
        if self._held_since is not None and now - self._held_since > HOLD_SECONDS:
            self._release()
        if quiet and self._partial and self._held_since is None and self.fatal is None:
            partial, self._partial = self._partial, b""
            self._out(partial)

    def close(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, b""
            self._line(partial, time.monotonic())
        if self.fatal is None:
            self._release()


class GlooFilter:
    """Copies bytes to ``write`` line by line, dropping gloo's connection reports (:data:`GLOO_CONNECTED`).

    A report on a line of its own is dropped when its count of connected peers is the expected one (a
    report of fewer peers is passed on). gloo's threads write their reports to ``std::cout`` piece by
    piece at the same time, so the pieces of several reports can interleave across lines
    (``[Gloo] Rank [Gloo] Rank 2 is connected to 3 ... : 3[Gloo] Rank 1 is connected to 3 is ...``):
    a line made only of a report's fixed pieces (:data:`GLOO_PIECES`), numbers and spaces is dropped
    too (its counts cannot be read back). hnd's own lines always hold words of their own.
    The same interface as :class:`FatalFilter`: feed(data), tick(now, quiet), close().
    """

    def __init__(self, write: Callable[[bytes], None]):
        self.write = write
        self._partial = b""

    def feed(self, data: bytes, now: float | None = None) -> None:
        self._partial += data
        while True:
            cut = self._partial.find(b"\n") + 1
            if not cut:
                break
            line, self._partial = self._partial[:cut], self._partial[cut:]
            self._line(line)

    def _line(self, line: bytes) -> None:
        found = GLOO_CONNECTED.match(line)
        if found and found.end() == len(line):
            if found.group(2) == found.group(3):
                return
        elif GLOO_PIECES.search(line) and not GLOO_PIECES.sub(b"", line).strip(b"0123456789 \r\n"):
            return
        self.write(line)

    def tick(self, now: float, quiet: bool = False) -> None:
        # a pause mid-line (a prompt) passes the partial line on, unless it may be part of a report
        if quiet and self._partial and not GLOO_PIECES.search(self._partial) and b"[Gloo" not in self._partial:
            partial, self._partial = self._partial, b""
            self.write(partial)

    def close(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, b""
            self._line(partial)


def _writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:  # closed (or a reader gone): keep draining the child so that it never blocks
            pass
    return write


_write_stderr = _writer(2)


def _set_parent_death_signal() -> None:
    """Linux: SIGKILL this process when its parent dies. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _pair(fd: int) -> tuple[int, int]:
    """(read end for the parent, write end for the child's ``fd``, 1 or 2): a pty sized like the
    terminal when ``fd`` is one, else a pipe."""
    if os.isatty(fd):
        try:
            import fcntl
            import pty
            import termios

            master, slave = pty.openpty()
            attrs = termios.tcgetattr(slave)
            attrs[1] &= ~termios.OPOST  # no '\n' -> '\r\n': pass the bytes through unchanged
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            return master, slave
        except (OSError, ImportError):
            pass
    return os.pipe()


def supervise(*, keep_trace: bool = False) -> None:
    """Fork; return in the child (which carries on with the run); in the parent, supervise the
    child and end the process (never returns). Returns at once, without forking, when there is
    no ``os.fork``, JAX is already imported, or this process is already a supervised child.
    ``keep_trace`` (``--debug``): JAX's fatal message and stack trace are passed on, not dropped;
    the one line still follows them.

    What the launcher handed down must not break the hand-over (tests/test_supervise.py launches
    under each):

    * the forwarded signals are blocked from before the fork until the parent's handlers are in
      place, so a signal sent to the parent in between waits instead of being lost (an ignored
      disposition, e.g. under ``nohup`` or a job runner, would otherwise drop it; Linux keeps a
      blocked signal pending even when it is ignored) or killing the parent alone;
    * a launcher's blocked mask is lifted for these signals in both processes;
    * SIGCHLD set to "ignore" would make the kernel reap the child before ``waitpid`` sees its
      status, so the parent sets it back to the default (the child keeps what it inherited).
    """
    global _CHILD
    if _CHILD or not hasattr(os, "fork") or "jax" in sys.modules or "jaxlib" in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = _pair(2)
    out_read, out_write = _pair(1)
    parent = os.getpid()
    signals = _forwarded_signals()
    masked = hasattr(signal, "pthread_sigmask")
    if masked:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    sigchld = getattr(signal, "SIGCHLD", None)
    pid = os.fork()
    if pid == 0:
        _CHILD = True
        os.close(read_end)
        os.close(out_read)
        _set_parent_death_signal()
        if os.getppid() != parent:  # the parent died before prctl: nobody would see our output
            os.kill(os.getpid(), signal.SIGKILL)
        os.setpgid(0, 0)
        os.dup2(write_end, 2)
        os.dup2(out_write, 1)
        os.close(write_end)
        os.close(out_write)
        if masked:  # the forwarded signals must reach the work too
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        return
    os.close(write_end)
    os.close(out_write)
    if sigchld is not None:
        signal.signal(sigchld, signal.SIG_DFL)
    try:
        _supervise(pid, read_end, out_read, keep_trace=keep_trace)
    except BaseException as err:  # never fall through into the child's work
        _write_stderr(f"hnd: error: the supervisor of process {pid} failed: {err!r}\n".encode())
        os._exit(EXIT_LOST)


def _forwarded_signals() -> set[int]:
    """The signals the supervisor passes on to the child (Ctrl-Z included) on this platform."""
    names = (*FORWARDED, "SIGTSTP")
    return {getattr(signal, name) for name in names if hasattr(signal, name)}


def _forward(pid: int) -> None:
    """Install the parent's handlers, then unblock the signals :func:`supervise` blocked (a signal
    that arrived in between is delivered now, to the handler)."""
    def handler(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def stop(signum, _frame):  # Ctrl-Z: stop the child, then this process (as a shell expects)
        handler(signum, _frame)
        os.kill(os.getpid(), signal.SIGSTOP)

    for signum in _forwarded_signals():
        signal.signal(signum, stop if signum == getattr(signal, "SIGTSTP", None) else handler)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _forwarded_signals())


def _supervise(pid: int, err: int, out: int, *, keep_trace: bool = False) -> None:
    """Copy the child's stderr (read end ``err``) through :class:`FatalFilter` and its stdout (``out``)
    through :class:`GlooFilter` until it has ended, then end like it (:func:`_end_like`)."""
    _forward(pid)
    fatal = FatalFilter(_write_stderr, keep=keep_trace)
    filters = {err: fatal, out: GlooFilter(_writer(1))}
    reading = set(filters)
    status: int | None = None
    ended_at = 0.0
    while True:
        ready: list[int] = []
        if reading:
            ready, _, _ = select.select(sorted(reading), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 1 << 16)
                except OSError:  # a pty whose other side is closed
                    data = b""
                if data:
                    filters[fd].feed(data)
                else:
                    reading.discard(fd)
        now = time.monotonic()
        for fd, filt in filters.items():
            filt.tick(now, quiet=fd not in ready)
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG if reading else 0)
            if done:
                status, ended_at = st, time.monotonic()
        # the child ended: read what is left; a grandchild holding a pipe open does not keep us here
        if status is not None and (not reading or time.monotonic() - ended_at > 1.0):
            break
    for filt in filters.values():
        filt.close()
    _end_like(status, fatal)


def _end_like(status: int, filt: FatalFilter) -> None:
    """End this process: the lost-coordinator line (exit 2), or exactly as the child ended."""
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + signum
    if filt.fatal is not None and (signum or code != 0):
        if not filt.said_error:
            _write_stderr(f"hnd: error: {lost_line(filt.fatal, joining=filt.joining)}\n".encode())
        os._exit(EXIT_LOST)
    if signum:
        stopped = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}.get(signum)
        if stopped:  # the child was still joining (its handlers were off): the line its handler prints
            _write_stderr(f"hnd: {stopped}\n".encode())
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(code)
