"""Checkpoints of the accumulator states, so that a killed run resumes where it stopped.

Layout: ``OUT/.checkpoints/`` is an orbax :class:`~orbax.checkpoint.CheckpointManager` directory
(one process) or ``OUT/.checkpoints/process_<i>/`` (one per host in multi-host runs: every host
checkpoints its own slice's states). Each step is an ``ocp.args.Composite`` of

* one item per stage reached so far (``pass1``, ``pass2``, ``global_0``, ...): that stage's
  accumulator states as host arrays (the merged final states of finished stages, the running ones
  of the current stage), flattened to ``leaf_<i>`` entries because orbax refuses zero-size arrays
  and dotted layer names make poor keys;
* ``meta``: JSON with the stage name, the next batch index, the fingerprint of the run
  (:mod:`hnd_jax.pipeline.fingerprint`) and the saved items.

Items are restored one at a time, each into the structure of its accumulators' own ``init()``: a
later stage's accumulators may depend on an earlier stage's results (pass 2 needs the thresholds),
so the driver restores pass 1, finalizes it, builds pass 2, then restores pass 2. No restore
template is written by hand.

orbax writes a step under a temporary name and renames it when complete, so a ``kill -9`` during a
save leaves the previous step intact. Only one step is kept. orbax is imported on first use (about
0.4 s of start-up that a run which never checkpoints does not pay).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hnd_jax.errors import HndError
from hnd_jax.pipeline.fingerprint import canonical, fingerprint_differences
from hnd_jax.results import CHECKPOINTS_DIR
from hnd_jax.sharding import to_host


def _ocp():
    """orbax, imported on first use. Its absl warnings (e.g. removing the unfinished step a
    ``kill -9`` left) are routine on resume and would break one-line error output: errors only."""
    import logging

    import orbax.checkpoint as ocp

    logging.getLogger("absl").setLevel(logging.ERROR)
    return ocp


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint holds: the stage, the next batch to process, and the state leaves."""

    stage: str
    next_batch: int
    step: int
    items: tuple[str, ...] = ()


def checkpoint_dir(out: Path, process_index: int = 0, process_count: int = 1) -> Path:
    base = Path(out) / CHECKPOINTS_DIR
    return base if process_count == 1 else base / f"process_{process_index}"


def _flat(tree: Any) -> dict[str, np.ndarray]:
    leaves = [np.asarray(x) for x in jax.tree.leaves(to_host(tree))]
    flat = {f"leaf_{i:05d}": x for i, x in enumerate(leaves) if x.size > 0}
    return flat or {"empty": np.zeros(1, np.int8)}  # orbax needs at least one array


class RunCheckpoints:
    """Save / find / restore the accumulator states of one run (see module docstring)."""

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any], *, process_count: int = 1):
        self.directory = Path(directory).absolute()
        self.fingerprint = canonical(fingerprint)
        # Several processes: orbax's managers coordinate saves across processes (a primary host writes
        # the metadata), so one process's private checkpoint is written without its data; each
        # process writes plain files instead (:class:`_PlainSteps`, the same atomic-rename rule).
        self._plain = _PlainSteps(self.directory) if process_count > 1 else None
        self._manager = None
        self._step = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def manager(self):
        """The orbax ``CheckpointManager`` of a single-process run (created, and orbax imported, on
        first use: ``hnd --help`` and small runs skip it). Several processes never use it."""
        if self._manager is None:
            ocp = _ocp()
            self.directory.mkdir(parents=True, exist_ok=True)
            options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
            self._manager = ocp.CheckpointManager(self.directory, options=options)
            self._step = self._manager.latest_step() or 0
        return self._manager

    def _latest_step(self) -> int | None:
        return self._plain.latest() if self._plain is not None else self.manager.latest_step()

    def exists(self) -> bool:
        return self.directory.exists() and any(p.name.isdigit() for p in self.directory.iterdir())

    def clear(self) -> None:
        """Forget any previous run (``--fresh``, or after a run completed)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._plain is not None:  # OUT/.checkpoints/process_<i>: the last process to clear removes the parent
            with contextlib.suppress(OSError):
                self.directory.parent.rmdir()
        self._step = 0

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    # ------------------------------------------------------------------ save / restore
    def save(self, stage: str, next_batch: int, items: dict[str, Any]) -> None:
        """Checkpoint ``items`` (item name -> pytree of arrays) as the run's state before batch
        ``next_batch`` of ``stage``."""
        meta = {
            "stage": stage,
            "next_batch": int(next_batch),
            "fingerprint": self.fingerprint,
            "items": sorted(items),
        }
        if self._plain is not None:
            self._step = (self._plain.latest() or 0) + 1
            self._plain.save(self._step, {name: _flat(tree) for name, tree in items.items()}, meta)
            return
        ocp = _ocp()
        args = {name: ocp.args.StandardSave(_flat(tree)) for name, tree in items.items()}
        manager = self.manager
        self._step += 1
        manager.save(self._step, args=ocp.args.Composite(**args, meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()

    def find(self) -> Resumed | None:
        """The latest checkpoint of this run, or None. A checkpoint of a DIFFERENT run raises HndError."""
        if not self.exists():
            return None
        step = self._latest_step()
        if step is None:
            return None
        try:
            if self._plain is not None:
                meta = self._plain.meta(step)
            else:
                ocp = _ocp()
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            diffs = fingerprint_differences(meta.get("fingerprint", {}), self.fingerprint)
            stage, next_batch = str(meta["stage"]), int(meta["next_batch"])
            items = tuple(str(x) for x in meta.get("items", ()))
        except HndError:
            raise
        except Exception as exc:  # garbage or an older layout in the metadata
            raise HndError(f"{self.directory}: the checkpoint metadata is not readable ({type(exc).__name__}); "
                           "rerun with --fresh to start over") from None
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise HndError(
                f"{self.directory}: an interrupted run with different settings is here ({shown}); "
                "refusing to resume: rerun with --fresh to start over"
            )
        return Resumed(stage=stage, next_batch=next_batch, step=step, items=items)

    def restore(self, resumed: Resumed, item: str, template: Any) -> Any:
        """The saved ``item``, rebuilt with the structure, dtypes and shardings of ``template``
        (its accumulators' ``init()`` states). HndError when it is missing or does not fit."""
        if item not in resumed.items:
            raise HndError(f"{self.directory}: the checkpoint has no state for {item!r}; rerun with --fresh")
        leaves, treedef = jax.tree.flatten(template)
        host = [np.asarray(jax.device_get(x)) for x in leaves]
        abstract = _flat(host)
        ocp = _ocp()
        try:
            if self._plain is not None:
                flat = self._plain.item(resumed.step, item)
            else:
                flat = getattr(self.manager.restore(
                    resumed.step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})), item)
        except Exception as exc:  # a checkpoint from an incompatible hnd-jax layout
            raise HndError(f"{self.directory}: cannot read the checkpoint ({type(exc).__name__}); "
                           "rerun with --fresh to start over") from None
        restored = []
        for i, (ref, h) in enumerate(zip(leaves, host)):
            value = np.asarray(flat[f"leaf_{i:05d}"]).astype(h.dtype) if h.size > 0 else h
            if value.shape != h.shape:
                raise HndError(f"{self.directory}: checkpoint leaf {i} of {item} has shape {value.shape}, expected "
                               f"{h.shape}; rerun with --fresh")
            sharding = getattr(ref, "sharding", None)
            restored.append(jax.device_put(value, sharding) if isinstance(ref, jax.Array) else value)
        return jax.tree.unflatten(treedef, restored)


class _PlainSteps:
    """Checkpoint steps as plain files: ``<dir>/<step>/<item>.npz`` and ``meta.json``.

    A step is written under ``<dir>/.tmp-<step>`` and renamed to ``<dir>/<step>`` when complete (a
    ``kill -9`` mid-save leaves the previous step intact); older steps are removed after.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    def latest(self) -> int | None:
        if not self.directory.is_dir():
            return None
        steps = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and (p / "meta.json").is_file()]
        return max(steps) if steps else None

    def save(self, step: int, items: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> None:
        import json
        import os

        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, flat in items.items():
            with open(tmp / f"{name}.npz", "wb") as fh:
                np.savez(fh, **flat)
                fh.flush()
                os.fsync(fh.fileno())
        with open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.directory / str(step)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.directory.iterdir():
            if old.name != str(step) and (old.name.isdigit() or old.name.startswith(".tmp-")):
                shutil.rmtree(old, ignore_errors=True)

    def meta(self, step: int) -> dict[str, Any]:
        import json

        return json.loads((self.directory / str(step) / "meta.json").read_text())

    def item(self, step: int, name: str) -> dict[str, np.ndarray]:
        with np.load(self.directory / str(step) / f"{name}.npz", allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
