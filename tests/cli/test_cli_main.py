"""The CLI is a thin layer: help works, user errors are one line with exit code 2, no traceback."""

import subprocess
import sys


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
