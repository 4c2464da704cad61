"""The supervisor of multi-process runs (hnd_jax/supervise.py): JAX's abort when the coordinator is
lost becomes one line; everything else passes through unchanged. Fake children, no JAX: fast.
The real case (kill -9 of process 0) is in tests/pipeline/test_multiprocess.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hnd_jax import supervise as sv
from hnd_jax.distributed import DistributedOptions, joined

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the supervisor needs os.fork (POSIX)")

# What jaxlib 0.10.2 printed in the surviving process when process 0 was killed (abridged addresses).
PRELUDE = (b"W1130 13:21:24.311169    5125 preemption_sync_manager.cc:147] Failed to retrieve preemption notice "
           b"from coordination service: UNAVAILABLE: Socket closed\n"
           b"Additional GRPC error information from remote target coordination_service:\n"
           b"E1130 13:20:12.886125     510 coordination_service_agent.cc:289] Polled an error from coordination "
           b"service (this can be an error from this or another task).\n")
FATAL = (b"F1130 13:20:12.886167     510 client.h:80] Terminating process because the JAX distributed service "
         b"detected fatal errors. This most likely indicates that another task died; see the other task logs for "
         b"more details. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader "
         b"task was preempted/died/restarted unexpectedly or this task is experiencing network issues.\n")
STACK = (b":UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:\"Socket closed\"}\n"
         b"*** Check failure stack trace: ***\n"
         b"    @     0x7fd9d0640634  absl::lts_20260107::log_internal::LogMessage::SendToLog()\n"
         b"    @     0x7fd9df8a71f5  (unknown)\n")
#: How a fake child waits for a signal. Not one long ``time.sleep``: CPython runs a Python signal
#: handler between bytecodes, so a signal landing after the last check and before the sleep's
#: syscall waits for the whole sleep (the suite once hung 20 s here, one run in five under pytest).
WAIT_FOR_SIGNAL = "for _ in range(1200):\n    time.sleep(0.05)\n"
BEFORE = b"pass1 12/24 images\rpass1 24/24 images\rresumed from pass1\n"


def filtered(chunks, now=0.0, keep=False):
    out = []
    f = sv.FatalFilter(out.append, keep=keep)
    for chunk in chunks:
        f.feed(chunk, now=now)
    f.close()
    return b"".join(out), f


@pytest.mark.parametrize("size", [1, 7, 64, 10**6])
def test_filter_drops_the_fatal_message_and_its_prelude_in_any_chunking(size):
    data = BEFORE + PRELUDE + FATAL + STACK + b"more after the fatal line\n"
    out, f = filtered([data[i:i + size] for i in range(0, len(data), size)])
    assert out == BEFORE
    assert f.fatal == FATAL and not f.said_error


@pytest.mark.parametrize("size", [1, 7, 10**6])
def test_with_debug_the_filter_keeps_the_fatal_message_and_its_stack_but_still_records_it(size):
    """--debug: the trace a developer needs passes on (the one line still follows, from the fatal line)."""
    data = BEFORE + PRELUDE + FATAL + STACK + b"more after the fatal line\n"
    out, f = filtered([data[i:i + size] for i in range(0, len(data), size)], keep=True)
    assert out == data
    assert f.fatal == FATAL


def test_debug_reaches_the_supervisor(monkeypatch):
    monkeypatch.delenv("HND_DEBUG", raising=False)
    from hnd_jax.cli.main import build_parser
    from hnd_jax.distributed import options_from_args

    for argv, debug in ((["--debug"], True), ([], False)):
        args = build_parser().parse_args([*argv, "dissect", "--activations", "a.npy", "--dictionary", "d", "--out", "o",
                                          "--coordinator", "h:1",
                                          "--num-processes", "2", "--process-id", "0"])
        assert options_from_args(args).debug is debug


def test_filter_passes_everything_through_without_a_fatal_line():
    data = BEFORE + PRELUDE + b"hnd: error: lost process 1 (no sign of life for 4 s)\n" + b"no newline at the end"
    out, f = filtered([data])
    assert out == data
    assert f.fatal is None and f.said_error


def test_a_held_prelude_is_released_when_no_fatal_line_follows_in_time():
    out = []
    f = sv.FatalFilter(out.append)
    f.feed(BEFORE + PRELUDE, now=100.0)
    assert b"".join(out) == BEFORE  # held
    f.tick(100.0 + sv.HOLD_SECONDS / 2)
    assert b"".join(out) == BEFORE
    f.tick(100.0 + sv.HOLD_SECONDS + 1)
    assert b"".join(out) == BEFORE + PRELUDE
    f.feed(FATAL + STACK, now=200.0)  # a fatal line later still ends the copying
    f.close()
    assert b"".join(out) == BEFORE + PRELUDE and f.fatal == FATAL


def test_a_partial_line_is_passed_on_when_output_pauses():
    out = []
    f = sv.FatalFilter(out.append)
    f.feed(b"done 3/8", now=0.0)
    assert out == []
    f.tick(0.1, quiet=True)
    assert out == [b"done 3/8"]


def test_the_lost_line_names_the_process():
    assert sv.lost_line(FATAL).startswith("lost process 0 (the coordinator, which hosts JAX's coordination service)")
    assert "(JAX: UNAVAILABLE: Failed to send RPC to coordination service)" in sv.lost_line(FATAL)
    unhealthy = (b"F0101 client.h:80] Terminating process because the JAX distributed service detected fatal "
                 b"errors. absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):"
                 b" /job:jax_worker/replica:0/task:1")
    assert sv.lost_line(unhealthy).startswith("lost process 1 (JAX's distributed service reported it unhealthy)")
    assert sv.lost_line(b"Terminating process because the JAX distributed service detected fatal errors.") \
        .startswith("lost a peer process")


def run_child(body: str, timeout: float = 30, **popen) -> subprocess.CompletedProcess:
    """A python process that calls supervise() and then runs ``body`` as the (fake) child."""
    code = "import os, sys, signal, time\nfrom hnd_jax.supervise import supervise\nsupervise()\n" + \
        textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout, **popen)


def test_a_child_that_aborts_with_jax_fatal_message_ends_with_one_line():
    body = f"""
    sys.stderr.write({BEFORE.decode()!r}); sys.stderr.flush()
    print("stdout is untouched", flush=True)
    os.write(2, {(PRELUDE + FATAL + STACK).decode()!r}.encode())
    os.abort()
    """
    r = run_child(body)
    assert r.returncode == sv.EXIT_LOST, r.stderr
    assert r.stdout == b"stdout is untouched\n"
    assert r.stderr.startswith(BEFORE)
    rest = r.stderr[len(BEFORE):]
    assert rest.startswith(b"hnd: error: lost process 0 (the coordinator") and rest.count(b"\n") == 1, rest
    assert rest.endswith(b"\n")


def aborting_child(line: str, fatal: bytes) -> str:
    """The body of a fake child that prints ``line``, then JAX's ``fatal`` text, and aborts."""
    return f"""
    sys.stderr.write({line + chr(10)!r}); sys.stderr.flush()
    os.write(2, {fatal.decode()!r}.encode())
    os.abort()
    """


def test_a_child_that_printed_its_own_line_first_is_not_named_twice():
    r = run_child(aborting_child("hnd: error: lost process 0 (the coordinator stopped answering: x)", FATAL + STACK))
    assert r.returncode == 2
    assert r.stderr == b"hnd: error: lost process 0 (the coordinator stopped answering: x)\n"


@pytest.mark.parametrize("body, code", [
    ("sys.stderr.write('E0101 00:00:00.0 1 x.cc:1] Polled an error from coordination service\\nbye'); sys.exit(3)", 3),
    ("sys.stderr.write('plain\\n'); sys.stderr.flush(); os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
    ("sys.stderr.write('plain\\n'); sys.stderr.flush(); os.abort()", -signal.SIGABRT),
    # the OOM killer's signal: it has no handler to reset (the supervisor once failed with EINVAL here)
    ("sys.stderr.write('plain\\n'); sys.stderr.flush(); os.kill(os.getpid(), signal.SIGKILL)", -signal.SIGKILL),
    ("print('fine')", 0),
])
def test_without_the_fatal_message_the_parent_ends_as_the_child_did(body, code):
    r = run_child(body)
    assert r.returncode == code, r.stderr
    expected = {3: b"E0101 00:00:00.0 1 x.cc:1] Polled an error from coordination service\nbye", 0: b"",
                -signal.SIGTERM: b"plain\nhnd: terminated\n"}
    assert r.stderr == expected.get(code, b"plain\n")
    assert b"hnd: error" not in r.stderr


def test_signals_reach_the_child_and_kill_9_of_the_parent_kills_the_child(tmp_path):
    body = """
    signal.signal(signal.SIGTERM, lambda *a: (print("child got SIGTERM", flush=True), os._exit(5)))
    print(os.getpid(), os.getppid(), flush=True)
    """
    code = "import os, sys, signal, time\nfrom hnd_jax.supervise import supervise\nsupervise()\n" + \
        textwrap.dedent(body) + WAIT_FOR_SIGNAL
    for sig, expect in ((signal.SIGTERM, 5), (signal.SIGKILL, -signal.SIGKILL)):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        child, parent = map(int, p.stdout.readline().split())
        assert parent == p.pid and child != p.pid
        p.send_signal(sig)
        try:
            assert p.wait(timeout=20) == expect
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung after {sig!r}: parent {_signal_state(p.pid)} | child {_signal_state(child)}")
        if sig == signal.SIGTERM:
            assert p.stdout.read() == b"child got SIGTERM\n"
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{child}") and _alive(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)
        p.stdout.close()
        p.stderr.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie waits for init to reap it
    except OSError:
        return False


def test_no_fork_once_jax_is_imported_or_for_a_single_process(monkeypatch):
    code = ("import os, sys\nsys.modules.setdefault('jax', object())\nfrom hnd_jax.supervise import supervise\n"
            "pid = os.getpid()\nsupervise()\nprint(os.getpid() == pid)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout == b"True\n", out.stderr

    def boom():
        raise AssertionError("a single process must not fork")

    monkeypatch.setattr(sv, "supervise", boom)
    with joined(DistributedOptions()) as several:
        assert several is False


def _supervised_on_a_terminal(body: str, fd: int, rows: int, cols: int) -> tuple[bytes, bytes]:
    """Run a supervised child (``body``) whose ``fd`` (1 or 2) is a terminal of ``rows`` x ``cols``
    and whose other stream is a pipe; returns (the pipe's bytes, what the terminal received)."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    code = "import os, sys, signal, time\nfrom hnd_jax.supervise import supervise\nsupervise()\n" + \
        textwrap.dedent(body)
    streams = {"stdout": slave, "stderr": subprocess.PIPE} if fd == 1 else {"stdout": subprocess.PIPE, "stderr": slave}
    p = subprocess.Popen([sys.executable, "-c", code], **streams)
    os.close(slave)
    piped = (p.stderr if fd == 1 else p.stdout).read()
    assert p.wait(timeout=20) == 0
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: nobody has the terminal open any more
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return piped, seen.replace(b"\r\n", b"\n")


def test_on_a_terminal_the_child_still_sees_a_terminal_of_the_same_size():
    body = """
    import fcntl, termios, struct
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(2, termios.TIOCGWINSZ, b"\\0" * 8))[:2]
    print(os.isatty(2), rows, cols, flush=True)
    sys.stderr.write("bar 1/2\\rbar 2/2\\n"); sys.stderr.flush()
    """
    assert _supervised_on_a_terminal(body, 2, 33, 123) == (b"True 33 123\n", b"bar 1/2\rbar 2/2\n")


def test_the_three_commands_parse_without_importing_jax():
    """supervise() forks only while JAX is not imported: a module-level ``import jax`` in a
    subcommand would silently turn the supervisor off for every command."""
    code = textwrap.dedent("""
    import sys
    from hnd_jax.cli.main import build_parser
    from hnd_jax.cli.common import input_options
    parser = build_parser()
    for argv in (["bench", "--distributed"],
                 ["extract", "--model", "m", "--layer", "l", "--dictionary", "d", "--out", "o.npz", "--distributed"],
                 ["dissect", "--activations", "a.npy", "--dictionary", "d", "--out", "o", "--distributed"]):
        with input_options(parser.parse_args(argv)):
            assert "jax" not in sys.modules and "jaxlib" not in sys.modules, argv[0]
    print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr.decode()[-2000:]


def _launch(code: str, launcher: str) -> subprocess.Popen:
    """Start ``code`` under a launcher that left SIGTERM ignored, blocked or default, or SIGCHLD
    ignored (what ``nohup``-like wrappers and job runners hand down). The launcher is a small Python
    process that sets that up and execs ``code`` in the same PID (no ``preexec_fn``: forking this
    multi-threaded test process to run Python code can deadlock)."""
    prepare = {
        "default": "",
        "SIGTERM ignored": "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "SIGTERM blocked": "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})",
        "SIGCHLD ignored": "signal.signal(signal.SIGCHLD, signal.SIG_IGN)",
    }[launcher]
    exec_code = f"import os, signal, sys\n{prepare}\nos.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])\n"
    return subprocess.Popen([sys.executable, "-c", exec_code, code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _signal_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith(("State", "Sig", "Shd")))
    except OSError:
        return "gone"


@pytest.mark.parametrize("launcher", ["default", "SIGTERM ignored", "SIGTERM blocked", "SIGCHLD ignored"])
def test_a_signal_sent_before_the_parent_is_ready_still_reaches_the_child(launcher):
    """The race CI hit: the child printed (so the test signalled) before the parent had installed
    its handlers. The parent here is held back 1 s after the fork to make the race certain; the
    signal must wait for it, never kill the parent alone (default) or vanish (ignored)."""
    code = ("import os, signal, time\nimport hnd_jax.supervise as sv\n"
            "real = sv._supervise\n"
            "sv._supervise = lambda pid, *fds, **kw: (time.sleep(1), real(pid, *fds, **kw))\n"
            "sv.supervise()\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('child got SIGTERM', flush=True), os._exit(5)))\n"
            "print(os.getpid(), flush=True)\n" + WAIT_FOR_SIGNAL)
    p = _launch(code, launcher)
    try:
        child = int(p.stdout.readline())
        p.send_signal(signal.SIGTERM)
        try:
            code = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung: parent {_signal_state(p.pid)} | child {_signal_state(child)}")
        assert code == 5, p.stderr.read().decode()[-2000:]
        assert p.stdout.read() == b"child got SIGTERM\n"
    finally:
        if p.poll() is None:
            p.kill()


def test_the_exit_code_survives_a_launcher_that_ignores_sigchld():
    """With SIGCHLD ignored the kernel reaps the child at once and waitpid fails (ECHILD): the
    parent once printed a traceback and then ran the work a second time itself."""
    code = ("import os, sys\nfrom hnd_jax.supervise import supervise\nsupervise()\n"
            "print('work', flush=True)\nsys.exit(3)\n")
    p = _launch(code, "SIGCHLD ignored")
    out, err = p.communicate(timeout=30)
    assert (p.returncode, out, err) == (3, b"work\n", b"")


def test_a_process_whose_peers_never_joined_says_so():
    """JAX aborts a process whose peers do not join in time (DEADLINE_EXCEEDED on RegisterTask);
    the child had said it was joining, so the line says what to check, not 'lost a peer'."""
    deadline = (b"F1130 15:08:07.937334   14483 client.h:80] Terminating process because the JAX distributed "
                b"service detected fatal errors. This most likely indicates that another task died; see the "
                b"other task logs for more details. absl::Status: DEADLINE_EXCEEDED: Deadline Exceeded\n"
                b"RPC: /xla.coordination.CoordinationService/RegisterTask\n")
    r = run_child(aborting_child("hnd: joining (process 0 of 2, --coordinator 127.0.0.1:1): waiting up to 60 s",
                                 deadline + STACK))
    assert r.returncode == 2
    lines = r.stderr.decode().splitlines()
    assert lines[0].startswith("hnd: joining") and len(lines) == 2, r.stderr
    assert lines[1].startswith("hnd: error: not every process joined in time (--peer-timeout)")
    out, f = filtered([b"hnd: joining (x)\n", b"hnd: joined as process 0 of 2\n"])
    assert not f.joining  # joined: a later fatal error is a lost peer again


def test_a_process_id_beyond_the_coordinators_count_says_so():
    """Process 0 started with --num-processes 2, this one with --num-processes 3 --process-id 2: the
    coordinator refuses task 2 at once (what jaxlib 0.10.2 printed, abridged)."""
    refused = (b"F1130 16:27:34.607997   16993 client.h:80] Terminating process because the JAX distributed "
               b"service detected fatal errors. This most likely indicates that another task died; see the other "
               b"task logs for more details. absl::Status: INVALID_ARGUMENT: Unexpected task registered with "
               b"task=2\n\nRPC: /xla.coordination.CoordinationService/RegisterTask\n")
    assert sv.lost_line(refused.split(b"\n")[0], joining=True) == (  # FatalFilter.fatal: the fatal line
        "process 0 (the coordinator) was started with a smaller --num-processes: it has no process 2; start every "
        "process with the same --num-processes (JAX: INVALID_ARGUMENT: Unexpected task registered with task=2)")
    r = run_child(aborting_child("hnd: joining (process 2 of 3, --coordinator 127.0.0.1:1): waiting up to 60 s",
                                 refused + STACK))
    assert r.returncode == 2
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 2 and lines[1].startswith("hnd: error: process 0 (the coordinator) was started with a "
                                                   "smaller --num-processes: it has no process 2"), r.stderr


GLOO = b"[Gloo] Rank %d is connected to %d peer ranks. Expected number of connected peer ranks is : %d\n"
OURS = b"layer feat: 6 units, 1 localizable (17%)\n  top concepts (paired units): right_cheek 1\n"


def gloo_filtered(chunks):
    out = []
    f = sv.GlooFilter(out.append)
    for chunk in chunks:
        f.feed(chunk)
    f.close()
    return b"".join(out)


@pytest.mark.parametrize("size", [1, 5, 40, 10**6])
def test_gloo_connection_reports_are_dropped_in_any_chunking(size):
    short = GLOO % (1, 2, 3)  # fewer peers than expected: a real problem, kept
    data = GLOO % (3, 3, 3) + OURS + GLOO % (0, 1, 1) + short + b"[Gloo] something else\n" + GLOO % (2, 3, 3)
    out = gloo_filtered([data[i:i + size] for i in range(0, len(data), size)])
    assert out == OURS + short + b"[Gloo] something else\n"


@pytest.mark.parametrize("size", [1, 7, 10**6])
def test_gloo_reports_written_at_once_by_two_threads_are_dropped_too(size):
    """Seen in the suite: two of gloo's threads interleaved inside one line; the line filter passed
    '[Gloo] Rank [Gloo] Rank 0 is connected ... : 3' and '3 is connected ... : 3' on."""
    outer, inner = GLOO % (3, 3, 3), GLOO % (0, 3, 3)
    # and as the suite saw it later: pieces of three reports shuffled across three lines
    shuffled = (b"[Gloo] Rank [Gloo] Rank 2 is connected to 3 peer ranks. Expected number of connected peer ranks "
                b"is : 3[Gloo] Rank 1 is connected to 3 is connected to 3\n3 peer ranks. Expected number of connected "
                b"peer ranks is : 3\n peer ranks. Expected number of connected peer ranks is : 3\n")
    data = OURS + outer[:12] + inner + outer[12:] + OURS + shuffled + (GLOO % (1, 2, 3)) + b"rank 3 is 3\n"
    assert outer[:12] == b"[Gloo] Rank "
    expected = OURS + OURS + GLOO % (1, 2, 3) + b"rank 3 is 3\n"  # a short count and our own words pass
    assert gloo_filtered([data[i:i + size] for i in range(0, len(data), size)]) == expected


def test_the_gloo_filter_passes_a_partial_line_on_when_output_pauses_and_at_the_end():
    out = []
    f = sv.GlooFilter(out.append)
    f.feed(b"Continue? [y/N] ")
    assert out == []
    f.tick(0.0, quiet=False)
    assert out == []
    f.tick(0.1, quiet=True)
    assert out == [b"Continue? [y/N] "]
    assert gloo_filtered([OURS + b"no newline"]) == OURS + b"no newline"


def test_a_child_whose_gloo_prints_on_stdout_shows_only_its_own_output():
    """gloo writes with std::cout straight to fd 1 (not through Python): the parent drops the reports."""
    body = f"""
    os.write(1, {(GLOO % (0, 3, 3) + GLOO % (1, 3, 3)).decode()!r}.encode())
    sys.stdout.write({OURS.decode()!r}); sys.stdout.flush()
    os.write(1, {(GLOO % (0, 1, 1)).decode()!r}.encode())
    sys.stderr.write("hnd: joined as process 0 of 2\\n"); sys.stderr.flush()
    sys.exit(4)
    """
    r = run_child(body)
    assert (r.returncode, r.stdout, r.stderr) == (4, OURS, b"hnd: joined as process 0 of 2\n")


def test_on_a_terminal_the_childs_stdout_is_a_terminal_of_the_same_size_too():
    """The child's stdout goes through the parent (to drop gloo's reports); on a terminal it stays a
    terminal (what isatty() checks and C's stdio buffering see)."""
    body = f"""
    import fcntl, termios, struct
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(1, termios.TIOCGWINSZ, b"\\0" * 8))[:2]
    sys.stderr.write(f"{{os.isatty(1)}} {{rows}} {{cols}}\\n"); sys.stderr.flush()
    os.write(1, {(GLOO % (0, 1, 1)).decode()!r}.encode())
    print("results line")
    """
    assert _supervised_on_a_terminal(body, 1, 21, 77) == (b"True 21 77\n", b"results line\n")
