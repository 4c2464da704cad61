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
