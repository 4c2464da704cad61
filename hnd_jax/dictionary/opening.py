"""One entry point for every Face Dictionary source: ``open_dictionary(spec, image_size)``.

``spec`` is one of

* a ROOT folder in the published layout (``Attributes.csv``, ``Action_Units.csv``, ``Parts.csv``,
  ``non_localizable/``),
* a PREP folder written by ``hnd dictionary prepare`` (recognised by its ``hnd_prepared.json``),
* ``synthetic``, ``synthetic:N`` or ``synthetic:N:SEED`` (defaults N=600, SEED=0): the procedural
  dictionary of ``hnd_jax.dictionary.synthetic.generate``, written once in the published layout into a cache
  folder and then read by the same reader as a real ROOT.

Nothing is ever downloaded: a missing ROOT gets instructions (see ``data/README.md``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from hnd_jax.dictionary.base import FaceDictionary
from hnd_jax.dictionary.decode import DEFAULT_RESAMPLE
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import Taxonomy, default_taxonomy

SYNTHETIC = "synthetic"
DEFAULT_SYNTHETIC_IMAGES = 600
DEFAULT_SYNTHETIC_SEED = 0

MISSING_ROOT_HELP = (
    "Face Dictionary not found at {path}: download the Face Dictionary yourself (hnd-jax downloads "
    "nothing) and pass its root folder (the one holding Attributes.csv, Action_Units.csv, Parts.csv "
    "and non_localizable/), e.g. data/face_dictionary (see data/README.md), or use 'synthetic'"
)


def parse_synthetic_spec(spec: str) -> tuple[int, int] | None:
    """``synthetic[:N[:SEED]]`` -> (N, SEED); None when ``spec`` is not a synthetic spec."""
    parts = str(spec).split(":")
    if parts[0] != SYNTHETIC:
        return None
    if len(parts) > 3:
        raise HndError(f"dictionary {spec!r}: expected synthetic, synthetic:N or synthetic:N:SEED")
    try:
        n = int(parts[1]) if len(parts) > 1 and parts[1] else DEFAULT_SYNTHETIC_IMAGES
        seed = int(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_SYNTHETIC_SEED
    except ValueError:
        raise HndError(f"dictionary {spec!r}: N and SEED of synthetic:N:SEED must be integers") from None
    if n < 1 or seed < 0:
        raise HndError(f"dictionary {spec!r}: N must be >= 1 and SEED >= 0")
    return n, seed


def cache_dir() -> Path:
    """``$HND_CACHE`` if set, else ``~/.cache/hnd_jax``."""
    env = os.environ.get("HND_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hnd_jax"


def synthetic_root(num_images: int, seed: int, taxonomy: Taxonomy | None = None) -> Path:
    """The published-layout synthetic dictionary for (N, SEED), generated once and cached.

    The cache folder is ``<cache>/synthetic/<N>-<SEED>`` (plus the taxonomy fingerprint for a
    non-default taxonomy). It is written under a temporary name and renamed when complete, so an
    interrupted generation is never mistaken for a finished one.
    """
    tax = taxonomy or default_taxonomy()
    name = f"{num_images}-{seed}"
    if tax.fingerprint != default_taxonomy().fingerprint:
        name += f"-{tax.fingerprint}"
    final = cache_dir() / "synthetic" / name
    if final.is_dir():
        return final
    try:
        from hnd_jax.dictionary.synthetic.generate import write_synthetic_dictionary
    except ImportError as exc:
        raise HndError(f"the synthetic Face Dictionary generator is not available in this version ({exc})") from None
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=final.parent))
    try:
        out = work / "dictionary"
        write_synthetic_dictionary(out, num_images=num_images, seed=seed, taxonomy=tax)
        try:
            os.replace(out, final)
        except OSError:
            if not final.is_dir():  # a concurrent writer may have won the race: both are identical
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def open_dictionary(
    spec: str | os.PathLike,
    image_size: int,
    *,
    taxonomy: Taxonomy | None = None,
    image_resample: str = DEFAULT_RESAMPLE,
    skip_bad: bool = False,
    index_files: Mapping[str, str] | None = None,
    num_workers: int | None = None,
    allow_outside_root: bool | None = None,
) -> FaceDictionary:
    """Open a Face Dictionary (ROOT, PREP or ``synthetic[:N[:SEED]]``) at analysis size ``image_size``.

    ``image_resample`` is the filter of the model card (PIL bicubic by default); a PREP must have been
    prepared with the same size and filter. ``skip_bad`` decodes every file when opening and leaves
    bad rows out (counted in ``.skipped``); otherwise bad files raise BadInputError, structural
    problems at open time and undecodable files when their batch is read. ``allow_outside_root``
    accepts index paths that resolve outside ROOT (None: the process default, False unless the CLI's
    ``--allow-outside-root`` set it; DESIGN.md §7).
    """
    from hnd_jax.dictionary.prepared import PreparedDictionary, is_prepared
    from hnd_jax.dictionary.published import PublishedDictionary

    synthetic = parse_synthetic_spec(str(spec))
    if synthetic is not None:
        root = synthetic_root(*synthetic, taxonomy=taxonomy)
    else:
        root = Path(spec).expanduser()
        if not root.exists():
            raise HndError(MISSING_ROOT_HELP.format(path=root))
        if not root.is_dir():
            raise HndError(f"{root}: a Face Dictionary is a folder (ROOT or PREP), not a file")
        if is_prepared(root):
            if index_files:
                raise HndError(f"{root}: index_files only apply to a published-layout root, not a prepared dictionary")
            return PreparedDictionary(
                root, image_size, taxonomy=taxonomy, image_resample=image_resample, num_workers=num_workers
            )
    return PublishedDictionary(
        root,
        image_size,
        taxonomy=taxonomy,
        image_resample=image_resample,
        skip_bad=skip_bad,
        index_files=index_files,
        num_workers=num_workers,
        allow_outside_root=allow_outside_root,
    )

