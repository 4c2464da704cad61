"""The model cards ship inside the wheel and are found by the installed package (issue 13); an
editable install reads the repository's models/ folder.

Builds the wheel from a copy of the project (``pip wheel --no-deps --no-build-isolation``: no
network; setuptools from this environment), checks that every ``models/*.toml`` is in it under
``hnd_jax/bundled_cards/`` with the same bytes, installs it into a temporary ``--target`` folder and
runs the card lookup and ``hnd layers --model age`` there in a fresh interpreter, from a folder
where the repository is not importable. Takes ~20-60 s on a busy 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "hnd_jax", "models"]


def _pip(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=600)


def copy_project(src):
    """The files a build needs, copied into ``src`` (no caches, no cards bundled by an earlier build)."""
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "bundled_cards"))
        else:
            shutil.copyfile(path, src / name)


@pytest.fixture(scope="module")
def wheel_and_site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    copy_project(src)
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), ".", cwd=src)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("hnd_jax-*.whl")
    site = tmp / "site"
    installed = _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return wheel, site


def test_every_card_is_in_the_wheel(wheel_and_site):
    wheel, _ = wheel_and_site
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
        cards = sorted((ROOT / "models").glob("*.toml"))
        assert len(cards) >= 20
        for card in cards:
            member = f"hnd_jax/bundled_cards/{card.name}"
            assert member in members, member
            assert zf.read(member) == card.read_bytes(), member
        assert "hnd_jax/bundled_cards/README.md" in members
        assert not [m for m in members if m.startswith("models/")], "cards must live inside the package"


def _run_installed(site: Path, cwd: Path, code: str, env_extra: dict | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HND_MODELS_DIR")}
    env.update({"PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu", **(env_extra or {})})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_installed_package_finds_its_cards(wheel_and_site, tmp_path):
    _, site = wheel_and_site
    code = (
        "import hnd_jax, hnd_jax.cards as c; from pathlib import Path\n"
        "print(Path(hnd_jax.__file__).resolve().parent.parent)\n"
        "print(c.builtin_cards_dir())\n"
        "print(' '.join(card.name for card in c.list_cards()))\n"
        "from hnd_jax.cli.main import main\n"
        "raise SystemExit(main(['layers', '--model', 'age']))\n"
    )
    done = _run_installed(site, tmp_path, code)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert Path(lines[0]) == site.resolve()  # the installed copy, not the repository
    assert Path(lines[1]) == (site / "hnd_jax" / "bundled_cards").resolve()
    expected = sorted(p.stem for p in (ROOT / "models").glob("*.toml"))
    assert sorted(lines[2].split()) == expected
    assert any(line.startswith("* layer4.2.conv1") for line in lines), done.stdout[-2000:]

    # A user's folder adds to the bundled cards.
    (tmp_path / "mine.toml").write_text((ROOT / "models" / "demo_cnn.toml").read_text().replace('"demo_cnn"', '"mine"', 1))
    done = _run_installed(site, tmp_path, "import hnd_jax.cards as c; print(c.load_card('mine').architecture, "
                          "c.load_card('resnet50').architecture)", {"HND_MODELS_DIR": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.split() == ["demo_cnn", "resnet50"], done.stderr[-2000:]


def test_editable_install_reads_the_repository_cards(tmp_path):
    """PEP 660 editable wheel of a copy of the project: no card copy is made, the source's models/ is used.

    The editable wheel is built with setuptools' backend (what ``pip install -e`` calls) and its .pth
    is processed first in an interpreter started without site (``-S``); this environment's
    site-packages (numpy...) come after it, so another hnd_jax install there cannot answer first.
    """
    src = tmp_path / "src"
    src.mkdir()
    copy_project(src)
    (src / "models" / "only_in_source.toml").write_text(
        (ROOT / "models" / "demo_cnn.toml").read_text().replace('"demo_cnn"', '"only_in_source"', 1))
    built = subprocess.run([sys.executable, "-c", "from setuptools import build_meta; import sys; "
                            "print(build_meta.build_editable(sys.argv[1]))", str(tmp_path / "dist")],
                           cwd=src, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = tmp_path / "dist" / built.stdout.split()[-1]
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        assert not [m for m in zf.namelist() if "bundled_cards" in m]
        zf.extractall(site)
    assert not (src / "hnd_jax" / "bundled_cards").exists()  # nothing copied into the source tree
    code = ("import site, sys, sysconfig; site.addsitedir(sys.argv[1]); "
            "site.addsitedir(sysconfig.get_paths()['purelib']); site.addsitedir(sysconfig.get_paths()['platlib']); "
            "import hnd_jax.cards as c; print(c.builtin_cards_dir()); print(c.load_card('only_in_source').architecture)")
    done = subprocess.run([sys.executable, "-S", "-c", code, str(site)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in os.environ.items()
                                                       if k not in ("PYTHONPATH", "HND_MODELS_DIR")})
    assert done.returncode == 0, done.stderr[-2000:]
    folder, arch = done.stdout.split()
    assert Path(folder) == (src / "models").resolve() and arch == "demo_cnn"
