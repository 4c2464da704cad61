"""Write the prepared Face Dictionary (``hnd dictionary prepare``): a tfds array_record dataset.

The images and masks are decoded and resized once, by the same code the PNG reader uses
(:class:`~hnd_jax.dictionary.published.PublishedDictionary`), so a PREP delivers exactly the
batches the ROOT would at that size and resample filter. The dataset is written by a
``tfds.core.GeneratorBasedBuilder`` (no TensorFlow needed for array_record + Tensor features,
shuffling disabled so records keep dictionary order), built in a temporary folder and renamed
onto PREP only when complete. The format is described in ``prepared.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from hnd_jax import __version__
from hnd_jax.atomic import atomic_dir, write_json
from hnd_jax.dictionary.decode import DEFAULT_RESAMPLE
from hnd_jax.dictionary.prepared import (
    GLOBAL_SPLIT,
    LOCAL_SPLIT,
    PREPARED_FORMAT,
    PREPARED_FORMAT_VERSION,
    PREPARED_LABELS,
    PREPARED_MARKER,
    PREPARED_TFDS_DIR,
    is_prepared,
    pack_masks,
)
from hnd_jax.dictionary.published import PublishedDictionary
from hnd_jax.errors import HndError
from hnd_jax.taxonomy import Taxonomy

BUILDER_NAME = "hnd_face_dictionary"
_BATCH = 32

_BUILDER_CLASS = None


def _builder_class():
    """The tfds builder class, defined on first use (importing tfds costs about a second)."""
    global _BUILDER_CLASS
    if _BUILDER_CLASS is not None:
        return _BUILDER_CLASS
    import tensorflow_datasets as tfds

    class HndFaceDictionary(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A Face Dictionary decoded and resized for one analysis size (see hnd_jax/dictionary/prepared.py)."""

        name = BUILDER_NAME
        # tfds looks for the builder's source file (checksums) through `importlib_resources`, a
        # package tfds does not declare and this environment lacks; a dotless module name makes
        # it fall back to `inspect.getfile`, which finds nothing: there are no checksums to read.
        __module__ = "hnd_face_dictionary_builder"
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "hnd-jax prepared format 1"}

        def __init__(self, *, source: PublishedDictionary, **kwargs: Any):
            self._source = source
            super().__init__(**kwargs)

        # tfds prints "Downloading and preparing dataset..." on stdout; nothing is downloaded here,
        # and stdout belongs to the CLI's own output, so these two messages are silenced.
        def _log_download_bytes(self) -> None:
            pass

        def _log_download_done(self) -> None:
            pass

        def _info(self):
            S, C = self._source.image_size, self._source.taxonomy.num_concepts
            return tfds.core.DatasetInfo(
                builder=self,
                description="hnd-jax prepared Face Dictionary",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=(S, S, 3), dtype=np.uint8),
                    "mask_bits": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
                    "labelled": tfds.features.Tensor(shape=(C,), dtype=np.bool_),
                    "family": tfds.features.Scalar(dtype=np.int32),
                    "group": tfds.features.Scalar(dtype=np.int32),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }),
                disable_shuffling=True,  # records must stay in dictionary order
            )

        def _split_generators(self, dl_manager):
            splits = {LOCAL_SPLIT: self._generate_examples(LOCAL_SPLIT)}
            if any(len(g) for g in self._source._global_group.values()):
                splits[GLOBAL_SPLIT] = self._generate_examples(GLOBAL_SPLIT)
            return splits

        def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
            src = self._source
            C = src.taxonomy.num_concepts
            if split == LOCAL_SPLIT:
                for batch in src.local_batches(_BATCH, with_masks=True):
                    for b in range(len(batch)):
                        i = int(batch.index[b])
                        labelled = batch.labelled[b]
                        yield i, {
                            "image": batch.images[b],
                            "mask_bits": pack_masks(batch.masks[b][labelled]),
                            "labelled": labelled,
                            "family": int(batch.family[b]),
                            "group": -1,
                            "index": i,
                        }
                return
            key = 0
            no_labels = np.zeros((C,), dtype=bool)
            for f, fam in enumerate(src.taxonomy.global_families):
                for batch in src.global_batches(fam.name, _BATCH):
                    for b in range(len(batch)):
                        yield key, {
                            "image": batch.images[b],
                            "mask_bits": np.zeros((0,), dtype=np.uint8),
                            "labelled": no_labels,
                            "family": f,
                            "group": int(batch.group[b]),
                            "index": int(batch.index[b]),
                        }
                        key += 1

    _BUILDER_CLASS = HndFaceDictionary
    return HndFaceDictionary


def prepare_dictionary(
    root: str | Path,
    out: str | Path,
    image_size: int,
    *,
    taxonomy: Taxonomy | None = None,
    image_resample: str = DEFAULT_RESAMPLE,
    skip_bad: bool = False,
    index_files: Mapping[str, str] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Decode, resize and write the dictionary at ``root`` as a PREP folder at ``out``.

    Every file is validated first (a full scan, like ``hnd dictionary check``), so a bad file stops
    the run before anything is written (or is skipped and counted with ``skip_bad``). ``out`` is
    replaced atomically; an existing ``out`` is only replaced when it is a PREP and ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not (overwrite and is_prepared(out)):
        what = "a prepared dictionary (use --overwrite)" if is_prepared(out) else "not a prepared dictionary"
        raise HndError(f"{out}: already exists and is {what}; choose another --out")
    if Path(root).resolve() == out.resolve():
        raise HndError(f"{out}: --out must differ from the dictionary root")
    source = PublishedDictionary(
        root,
        image_size,
        taxonomy=taxonomy,
        image_resample=image_resample,
        skip_bad=skip_bad,
        validate=True,
        index_files=index_files,
        num_workers=num_workers,
    )
    if source.num_local == 0:
        raise HndError(f"{root}: no local images left to prepare")
    say = log or (lambda _msg: None)
    say(f"validated {source.num_local} local images; writing {out} at {source.image_size}x{source.image_size}")

    import tensorflow_datasets as tfds

    tax = source.taxonomy
    with atomic_dir(out) as tmp:
        build_dir = tmp / "_build"
        builder = _builder_class()(source=source, data_dir=str(build_dir), file_format="array_record")
        tfds.display_progress_bar(False)  # our own log lines say what happens; keep stderr readable
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
            )
        finally:
            tfds.display_progress_bar(True)
        shutil.move(str(builder.data_dir), str(tmp / PREPARED_TFDS_DIR))
        shutil.rmtree(build_dir)
        labels = {"labelled": source.labelled, "family": source.family}
        offsets, offset = {}, 0
        for i, fam in enumerate(tax.global_families):
            groups = source.global_group_of(fam.name)
            labels[f"global_group_{i}"] = groups
            offsets[fam.name] = {"offset": offset, "count": int(len(groups))}
            offset += len(groups)
        np.savez_compressed(tmp / PREPARED_LABELS, **labels)
        scan = source.scan
        write_json(tmp / PREPARED_MARKER, {
            "format": PREPARED_FORMAT,
            "format_version": PREPARED_FORMAT_VERSION,
            "created_by": f"hnd-jax {__version__}",
            "image_size": source.image_size,
            "image_resample": source.image_resample,
            "mask_packing": "np.packbits per labelled concept, row-major S*S bits, concept-axis order",
            "taxonomy": tax.to_dict(),
            "taxonomy_fingerprint": tax.fingerprint,
            "source": {
                "path": str(Path(root).resolve()),
                "content_sha256": source.identity()["content_sha256"],
                "skipped": source.skipped,
                "problems": list(source.layout.problems.messages),
                "ignored_visualisations": source.layout.ignored_visualisations,
                "image_size_range": scan.size_range() if scan else None,
            },
            "num_local": source.num_local,
            "num_global": offset,
            "global_families": offsets,
            "local_images": source.local_image_paths,
            "global_images": {f.name: source.global_image_paths(f.name) for f in tax.global_families},
        })
    say(f"wrote {out}")
    return out
