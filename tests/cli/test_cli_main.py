"""The CLI is a thin layer: help works, user errors are one line with exit code 2, no traceback."""

import subprocess
import sys

import pytest

from hnd_jax.cli.main import SUBCOMMAND_MODULES


def run_hnd(*args, **kw):
    return subprocess.run([sys.executable, "-m", "hnd_jax.cli.main", *args], capture_output=True, text=True, **kw)


def test_help_lists_subcommands():
    res = run_hnd("--help")
    assert res.returncode == 0
    for cmd in ("demo", "dictionary", "dissect", "layers", "convert", "extract", "report", "compare"):
        assert cmd in res.stdout


def test_user_error_is_one_line_without_traceback(tmp_path):
    res = run_hnd("dissect", "--activations", str(tmp_path / "a.npy"), "--dictionary", "synthetic",
                  "--out", str(tmp_path / "o"), "--layer", "l")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "--image-size" in res.stderr


HEAVY_MODULES = ("flax", "orbax", "optax", "matplotlib", "tensorflow_datasets", "jax")


@pytest.mark.parametrize("command", [[], *[[name] for name in SUBCOMMAND_MODULES]])
def test_help_imports_no_heavy_library(command):
    """``hnd --help`` and ``hnd <command> --help`` must start fast: no JAX, Flax, orbax, optax,
    matplotlib or TFDS import before the work starts (issue 9; 1.7 s -> 0.16 s measured)."""
    code = (
        "import sys\n"
        "from hnd_jax.cli.main import main\n"
        "try:\n"
        f"    main({[*command, '--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout[-300:]


# ---------------------------------------------------------------------------------------------
# The one rule at the top (issue 12): expected failures are one line and exit 2; bugs keep their
# traceback; --debug / HND_DEBUG=1 show it.
# ---------------------------------------------------------------------------------------------

import csv  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402

from hnd_jax.cli import dictionary as cli_dictionary  # noqa: E402
from hnd_jax.cli.main import main  # noqa: E402
from hnd_jax.errors import HndError  # noqa: E402

EXPECTED = [
    (HndError("bad.csv: something wrong"), "bad.csv: something wrong"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x.png"), "/data/x.png: No such file"),
    (PermissionError(errno.EACCES, "Permission denied", "/out/dissection.json"), "/out/dissection.json: Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device", "/out/state"), "/out/state: no space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "/out"), "/out: Read-only file system"),
    (MemoryError(), "out of memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (csv.Error("field larger than field limit (131072)"), "invalid CSV: field larger"),
    (json.JSONDecodeError("Expecting value", "{not json", 1), "invalid JSON at line 1 column 2"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not valid utf-8"),
]


def _failing(exc):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize("exc,words", EXPECTED, ids=[type(e).__name__ for e, _ in EXPECTED])
def test_expected_failures_are_one_line_exit_2(monkeypatch, capsys, exc, words):
    monkeypatch.delenv("HND_DEBUG", raising=False)
    monkeypatch.setattr(cli_dictionary, "run_check", _failing(exc))
    code = main(["dictionary", "check", "anything"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("hnd: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert words in err, err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    monkeypatch.setattr(cli_dictionary, "run_check", _failing(PermissionError(errno.EACCES, "Permission denied", "/x")))
    argv = ["dictionary", "check", "anything"]
    if how == "flag":
        argv = ["--debug", *argv]
        monkeypatch.delenv("HND_DEBUG", raising=False)
    else:
        monkeypatch.setenv("HND_DEBUG", "1")
    with pytest.raises(PermissionError):
        main(argv)


def test_hnd_debug_0_is_off(monkeypatch, capsys):
    monkeypatch.setenv("HND_DEBUG", "0")
    monkeypatch.setattr(cli_dictionary, "run_check", _failing(HndError("x")))
    assert main(["dictionary", "check", "anything"]) == 2


@pytest.mark.parametrize("bug", [KeyError("k"), ZeroDivisionError(), TypeError("t"), AttributeError("a")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    monkeypatch.delenv("HND_DEBUG", raising=False)
    monkeypatch.setattr(cli_dictionary, "run_check", _failing(bug))
    with pytest.raises(type(bug)):
        main(["dictionary", "check", "anything"])


def test_broken_pipe_in_process_is_quiet(monkeypatch, capsys):
    monkeypatch.delenv("HND_DEBUG", raising=False)
    monkeypatch.setattr(cli_dictionary, "run_check", _failing(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    assert main(["dictionary", "check", "anything"]) == 141  # as if killed by SIGPIPE, like git | head
    assert capsys.readouterr().err == ""


def test_broken_pipe_in_a_real_pipe_has_no_traceback(pristine_fixture):
    """`hnd dictionary check ROOT --json | head`: the reader is gone before the output is written."""
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("HND_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hnd_jax.cli.main", "dictionary", "check", str(pristine_fixture.root), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    proc.stdout.close()  # like `head` exiting before the first line arrives
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert code == 141


def test_os_error_in_a_subprocess_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = run_hnd("dictionary", "synth", str(blocker / "sub"), "--images", "10")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("hnd: error: ") and res.stderr.count("\n") == 1 and str(blocker) in res.stderr
