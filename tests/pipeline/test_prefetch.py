"""The read-ahead thread (hnd_jax.pipeline.prefetch) and what the driver makes of it: --tally, --prefetch,
errors from the reading thread, timings.split.input_wait."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.pipeline.config import RunConfig
from hnd_jax.pipeline.prefetch import Prefetch
from tests.pipeline.fakes import TinyDictionary, TinyNet

BATCH = 4


def reader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("hnd-")]


# ---------------------------------------------------------------------------------------- Prefetch
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_in_order_with_transform(depth):
    got = list(Prefetch(range(50), depth, transform=lambda x: x * x))
    assert got == [x * x for x in range(50)]
    assert not reader_threads()


@pytest.mark.parametrize("depth", [0, 2])
def test_error_mid_way_is_raised_as_it_is_after_the_items_before_it(depth):
    boom = HndError("dictionary/parts/007.png: not a readable image")
    closed = []

    def reader():
        try:
            for i in range(10):
                if i == 4:
                    raise boom
                yield i
        finally:
            closed.append(threading.current_thread().name)

    seen = []
    with pytest.raises(HndError) as info:
        for item in Prefetch(reader(), depth):
            seen.append(item)
    assert info.value is boom and str(info.value) == "dictionary/parts/007.png: not a readable image"
    assert seen == [0, 1, 2, 3]
    assert closed  # the generator was finalised
    assert not reader_threads()


def test_error_in_transform_propagates():
    def transform(x):
        if x == 2:
            raise ValueError("bad batch 2")
        return x

    ahead = Prefetch(range(5), 2, transform=transform)
    assert next(ahead) == 0 and next(ahead) == 1
    with pytest.raises(ValueError, match="bad batch 2"):
        next(ahead)
    with pytest.raises(StopIteration):  # finished for good
        next(ahead)


def test_close_stops_the_reader_early_and_closes_the_generator_in_its_thread():
    produced, closed_in = [], []

    def reader():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    ahead = Prefetch(reader(), 2, name="hnd-test-reader")
    assert next(ahead) == 0
    ahead.close()
    assert closed_in == ["hnd-test-reader"]
    assert len(produced) <= 5  # read ahead at most depth (+ the one in hand), not the whole source
    assert not reader_threads()


def test_reads_ahead_while_the_consumer_works_and_times_the_wait():
    def slow_reader():
        for i in range(4):
            time.sleep(0.1)
            yield i

    ahead = Prefetch(slow_reader(), 2)
    t0 = time.perf_counter()
    for _ in ahead:
        time.sleep(0.1)  # the consumer's compute: reading the next item overlaps it
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.8 - 0.05  # 0.8 s if reading and computing alternated (a lower bound when they overlap)
    assert 0.05 <= ahead.wait <= elapsed  # at least the first read was waited for


def test_bad_depth():
    with pytest.raises(ValueError):
        Prefetch([], -1)


# ---------------------------------------------------------------------------------------- settings
def test_run_config_checks_tally_and_prefetch():
    assert RunConfig(tally="cells", prefetch=0).tally == "cells"
    with pytest.raises(HndError, match="--tally 'fast'"):
        RunConfig(tally="fast")
    with pytest.raises(HndError, match="--prefetch -1"):
        RunConfig(prefetch=-1)


def test_cli_offers_tally_and_prefetch():
    import argparse

    from hnd_jax.cli import dissect as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["dissect", "--activations", "a.npy", "--dictionary", "d", "--out", "o",
                              "--tally", "dense", "--prefetch", "0"])
    assert args.tally == "dense" and args.prefetch == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["dissect", "--activations", "a.npy", "--dictionary", "d", "--out", "o", "--tally", "x"])


# ---------------------------------------------------------------------------------------- the driver
def activations_file(tmp_path, dic, seed=0):
    """A [N, U, h, w] file with ties at the quantile and exact zeros (ReLU-like)."""
    rng = np.random.default_rng(seed)
    acts = np.maximum(rng.normal(size=(dic.num_local, 5, 3, 3)), 0).astype(np.float32)
    acts[::5, 2] = 1.0  # ties
    path = tmp_path / "acts.npy"
    np.save(path, acts)
    return path


def dissect_file(path, dic, out, **run):
    from hnd_jax.pipeline.dissect import dissect_activations

    dissect_activations(path, dictionary=dic, layer="conv", out=out, scoring={"image_size": 12, "quantile": 0.1},
                        run={"batch_size": BATCH, "progress": "none", **run})
    return json.loads((out / "dissection.json").read_text())


def test_tally_kernels_give_identical_results_through_the_driver(tmp_path):
    dic = TinyDictionary()
    path = activations_file(tmp_path, dic)
    results = {}
    for method in ("runs", "cells", "dense"):
        meta = dissect_file(path, dic, tmp_path / method, tally=method)
        assert meta["tally"] == method and meta["run"]["tally"] == method
        with np.load(tmp_path / method / "conv" / "scores.npz") as data:
            results[method] = {k: data[k] for k in ("intersection", "union", "iou", "thresholds", "top_concept")}
    assert results["runs"]["intersection"].sum() > 0  # something fires and overlaps
    for method in ("cells", "dense"):
        for key, value in results["runs"].items():
            np.testing.assert_array_equal(results[method][key], value, err_msg=f"{method}: {key}")
    meta = dissect_file(path, dic, tmp_path / "auto", tally="auto")
    assert meta["tally"] == "runs"  # auto on a CPU mesh (tally.auto_method)


def test_tally_kernel_is_not_part_of_the_fingerprint(tmp_path):
    """A run checkpointed with one kernel resumes with another: the counts do not depend on it."""
    from hnd_jax.pipeline.dissect import Dissection
    from hnd_jax.pipeline.source_file import FileActivations
    from hnd_jax.scoring.config import ScoringConfig
    from hnd_jax.sharding import make_data_mesh

    dic = TinyDictionary()
    path = activations_file(tmp_path, dic)
    prints = []
    for method, depth in (("runs", 2), ("cells", 0)):
        source = FileActivations(path, "conv", dic)
        d = Dissection(source, dic, ScoringConfig(image_size=12), RunConfig(tally=method, prefetch=depth),
                       tmp_path / "out", make_data_mesh(1), kind="activations", dictionary_spec=None)
        prints.append(d.fingerprint)
        source.close(completed=True)
    assert prints[0] == prints[1]


class FailingDictionary(TinyDictionary):
    """Raises an HndError while reading the masks of pass 2, after ``good`` batches."""

    def __init__(self, good=2, **kw):
        super().__init__(**kw)
        self.good = good

    def local_batches(self, batch_size, *, with_masks=True, **kw):
        for i, batch in enumerate(super().local_batches(batch_size, with_masks=with_masks, **kw)):
            if with_masks and i == self.good:
                raise HndError("faces/0009/mouth.png: not a readable mask")
            yield batch


def test_reader_error_mid_way_reaches_the_caller_as_the_same_one_line_error(tmp_path):
    dic = FailingDictionary()
    path = activations_file(tmp_path, dic)
    with pytest.raises(HndError) as info:
        dissect_file(path, dic, tmp_path / "out", checkpoint_every=1)
    assert str(info.value) == "faces/0009/mouth.png: not a readable mask"
    assert not (tmp_path / "out" / "dissection.json").exists()
    assert not reader_threads()
    with pytest.raises(HndError, match="^faces/0009/mouth.png: not a readable mask$"):
        from hnd_jax.pipeline.dissect import dissect_model

        dissect_model(TinyNet(), layers=("conv1",), dictionary=FailingDictionary(), out=tmp_path / "model",
                      scoring={"image_size": 12}, run={"batch_size": BATCH, "progress": "none"})
    assert not reader_threads()


def test_cli_prints_a_reader_error_as_one_line(tmp_path, monkeypatch, capsys):
    """Through hnd's own error handling: exit 2, one line, no traceback."""
    from hnd_jax.cli import main as cli_main
    from hnd_jax.pipeline import dissect as dissect_mod

    dic = FailingDictionary()
    path = activations_file(tmp_path, dic)
    real_open = dissect_mod._open_dictionary
    monkeypatch.setattr(dissect_mod, "_open_dictionary", lambda spec, size, tax, **kw: real_open(dic, size, tax))
    code = cli_main.main(["dissect", "--activations", str(path), "--dictionary", "whatever", "--layer", "conv",
                          "--image-size", "12", "--out", str(tmp_path / "out"), "--batch-size", str(BATCH),
                          "--no-report", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == ["hnd: error: faces/0009/mouth.png: not a readable mask"]


class SlowDictionary(TinyDictionary):
    """Every batch with masks takes ``delay`` seconds to read."""

    delay = 0.15

    def local_batches(self, batch_size, *, with_masks=True, **kw):
        for batch in super().local_batches(batch_size, with_masks=with_masks, **kw):
            if with_masks:
                time.sleep(self.delay)
            yield batch


def test_model_run_records_how_long_the_device_waited_for_input(tmp_path):
    from hnd_jax.pipeline.dissect import dissect_model

    dic = SlowDictionary()
    out = tmp_path / "out"
    dissect_model(TinyNet(), layers=("conv1",), dictionary=dic, out=out, scoring={"image_size": 12},
                  run={"batch_size": BATCH, "progress": "none", "cache_budget": "0"})
    timings = json.loads((out / "dissection.json").read_text())["timings"]
    wait = timings["split"]["input_wait"]
    slow = SlowDictionary.delay * (dic.num_local // BATCH)  # pass 2 reads masks: 6 slow batches
    assert isinstance(wait, float)
    # the forward and tally of a tiny batch take milliseconds: the loop mostly waited for the reader
    assert 0.5 * slow <= wait <= timings["total"]
    assert timings["split"]["data"] >= slow


def test_input_wait_on_a_fast_reader_is_a_small_part(tmp_path):
    from hnd_jax.pipeline.dissect import dissect_model

    out = tmp_path / "out"
    dissect_model(TinyNet(), layers=("conv1",), dictionary=TinyDictionary(), out=out, scoring={"image_size": 12},
                  run={"batch_size": BATCH, "progress": "none", "prefetch": 3})
    timings = json.loads((out / "dissection.json").read_text())["timings"]
    assert 0.0 <= timings["split"]["input_wait"] < timings["total"]
