"""OUT's lock (hnd_jax/pipeline/outlock.py): one run at a time, and no lock file left behind.

The file is removed when the run ends (finished, failed, or ended at once by a lost peer), while
the lock is still held; a run that locked the old file just as it was removed notices and locks the
new one, so two runs never both think they hold OUT. A killed run's file stays and is taken over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import ExitStack

import pytest

from hnd_jax.errors import HndError
from hnd_jax.pipeline import outlock
from hnd_jax.pipeline.outlock import lock_path, locked_out


def lock_files(out) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".lock"))


@pytest.mark.parametrize("index, name", [(0, ".lock"), (1, ".lock.process_1"), (3, ".lock.process_3")])
def test_the_lock_file_is_removed_when_the_block_ends(tmp_path, index, name):
    with locked_out(tmp_path, index) as taken_over:
        assert taken_over is None
        assert lock_files(tmp_path) == [name]
        info = json.loads((tmp_path / name).read_text())
        assert info["pid"] == os.getpid()
    assert lock_files(tmp_path) == []


def test_the_lock_file_is_removed_when_the_run_fails(tmp_path):
    with pytest.raises(HndError, match="bad input"):
        with locked_out(tmp_path):
            raise HndError("bad input")
    assert lock_files(tmp_path) == []


def test_a_second_run_is_refused_while_the_first_holds_it_and_may_start_after(tmp_path):
    with locked_out(tmp_path):
        with pytest.raises(HndError, match=f"another dissection is writing here \\(process {os.getpid()} on "):
            with locked_out(tmp_path):
                pass
        assert lock_files(tmp_path) == [".lock"]  # the refused run did not remove the holder's file
    with locked_out(tmp_path) as taken_over:
        assert taken_over is None  # the first run ended normally: nothing to take over


def test_single_and_multi_process_runs_on_one_out_exclude_each_other(tmp_path):
    """Process 0 of any run locks .lock (as a single process does), so runs of any process count
    collide there; process 1 of another run locks its own file but its process 0 is refused."""
    with locked_out(tmp_path):
        with pytest.raises(HndError, match="another dissection is writing here"):
            with locked_out(tmp_path, 0):
                pass
        with locked_out(tmp_path, 1):
            assert lock_files(tmp_path) == [".lock", ".lock.process_1"]


def test_a_run_that_locked_the_file_as_it_was_removed_locks_the_new_one(tmp_path, monkeypatch):
    """The race the removal could open: run B opens .lock while run A holds it; A ends (removes the
    file, then lets go) before B's flock; B's flock then succeeds on the removed file. B must not
    keep that lock (a run C would lock a new .lock and both would write OUT): it locks the file now
    at the path, and C is refused."""
    real_flock = outlock.fcntl.flock
    first = ExitStack()
    first.enter_context(locked_out(tmp_path))  # run A
    calls = []

    def flock_after_a_ends(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            first.close()  # A ends between B's open and B's flock
        return real_flock(fd, op)

    monkeypatch.setattr(outlock.fcntl, "flock", flock_after_a_ends)
    with locked_out(tmp_path):  # run B
        monkeypatch.setattr(outlock.fcntl, "flock", real_flock)
        assert len(calls) == 2  # it started over on the new file (its inode number may be the old one's)
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(HndError, match="another dissection is writing here"):
            with locked_out(tmp_path):  # run C
                pass
    assert lock_files(tmp_path) == []


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_process_ended_at_once_by_a_lost_peer_removes_its_lock_file(tmp_path):
    """end_now (the peer watch's thread, os._exit: no finally runs) removes the file first."""
    r = run_python(f"""
        import threading, time
        from hnd_jax.distributed import end_now
        from hnd_jax.pipeline.outlock import locked_out
        with locked_out({str(tmp_path)!r}, 1):
            threading.Thread(target=end_now, args=("lost process 0 (test)", 2)).start()
            time.sleep(30)
        print("not reached")
    """)
    assert r.returncode == 2 and r.stderr == "hnd: error: lost process 0 (test)\n" and r.stdout == "", r.stderr
    assert lock_files(tmp_path) == []


def test_a_killed_run_leaves_its_record_and_the_next_run_takes_it_over(tmp_path):
    r = run_python(f"""
        import os, signal
        from hnd_jax.pipeline.outlock import locked_out
        with locked_out({str(tmp_path)!r}):
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert r.returncode == -9
    assert lock_files(tmp_path) == [".lock"]
    with locked_out(tmp_path) as taken_over:
        assert taken_over.startswith(f"process {int(r.stdout)} on ")
    assert lock_files(tmp_path) == []


def test_a_lock_file_that_cannot_be_removed_is_left_empty(tmp_path, monkeypatch):
    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    with locked_out(tmp_path):
        monkeypatch.setattr(outlock.os, "unlink", refuse)
    monkeypatch.undo()
    assert (tmp_path / ".lock").read_text() == ""  # free: the next run takes it without a word
    with locked_out(tmp_path) as taken_over:
        assert taken_over is None


def test_lock_path_names():
    assert lock_path("o").name == ".lock" and lock_path("o", 2).name == ".lock.process_2"


def test_runs_hammering_one_out_never_hold_it_together(tmp_path):
    """Real processes take and leave OUT's lock in a tight loop; each marks its tenure with a file
    created exclusively (O_EXCL): a second holder at the same time would find the mark there."""
    worker = f"""
        import os, sys, time
        from hnd_jax.errors import HndError
        from hnd_jax.pipeline.outlock import locked_out
        out, mark = {str(tmp_path)!r}, {str(tmp_path / "held")!r}
        held = refused = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                with locked_out(out):
                    os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # FileExistsError: two holders
                    os.unlink(mark)
                    held += 1
            except HndError:
                refused += 1
        print(held, refused)
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(worker)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    counts = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]
        counts.append([int(x) for x in out.split()])
    assert sum(held for held, _ in counts) > 4 and sum(refused for _, refused in counts) > 0, counts
    assert lock_files(tmp_path) == []


def test_process_0_removes_the_lock_files_killed_processes_left_but_not_held_ones(tmp_path):
    """A killed multi-process run leaves .lock.process_<i>; the next run's process 0 (or a single
    process) removes those nobody holds as it ends, and never one a live process holds."""
    (tmp_path / ".lock.process_1").write_text('{"pid": 1}')  # left by a killed process
    (tmp_path / ".lock.process_3").write_text("")
    with locked_out(tmp_path, 2):  # another live process of a run holds its own file
        with locked_out(tmp_path):
            pass
        assert lock_files(tmp_path) == [".lock.process_2"]
    assert lock_files(tmp_path) == []
