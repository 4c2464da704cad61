"""Build hook: ship the model cards of the top-level ``models/`` folder inside the package.

``models/*.toml`` (and its README) stay the single source of truth in the repository; when a wheel
(or a regular, non-editable install) is built, they are copied into ``hnd_jax/bundled_cards/`` of
the build tree, where :func:`hnd_jax.cards.builtin_cards_dir` finds them. An editable install reads
``models/`` directly, so nothing is copied into the source tree. Everything else is in setup.cfg.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CARDS = ROOT / "models"


class build_py_with_cards(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "hnd_jax" / "bundled_cards"
        target.mkdir(parents=True, exist_ok=True)
        cards = sorted(CARDS.glob("*.toml"))
        if not cards:
            raise RuntimeError(f"no model cards in {CARDS}: the package would ship without its cards")
        for path in cards + [CARDS / "README.md"]:
            shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": build_py_with_cards})
