"""End-to-end dissection of a tiny NNX model on a tiny in-memory dictionary (hnd_jax.pipeline)."""

from __future__ import annotations

import json
import threading

import jax
import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.pipeline import stages as stages_mod
from hnd_jax.pipeline.dissect import dissect_model
from hnd_jax.results import REQUIRED_KEYS
from hnd_jax.sharding import make_data_mesh
from tests.pipeline.fakes import TinyDictionary, TinyNet
from tests.pipeline.tiny_driver import BATCH, LAYERS, run

SHAPES = {"conv1": (12, 12, 4), "conv2": (6, 6, 6)}


def load(out, layer):
    with np.load(out / layer / "scores.npz") as data:
        return {k: data[k] for k in data.files}


def assert_same_results(a, b):
    for layer in LAYERS:
        ra, rb = load(a, layer), load(b, layer)
        assert sorted(ra) == sorted(rb)
        for key in ra:
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=f"{layer}/{key}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (cache in RAM) that other tests compare against."""
    out = tmp_path_factory.mktemp("ref")
    run(out)
    return out


def test_output_schema(reference):
    dic = TinyDictionary()
    tax = dic.taxonomy
    C = tax.num_concepts
    for layer, (h, w, U) in SHAPES.items():
        r = load(reference, layer)
        for key in REQUIRED_KEYS:
            assert key in r, key
        assert r["concepts"].tolist() == list(tax.concept_names)
        assert r["thresholds"].shape == (U,) and r["thresholds"].dtype == np.float32
        assert r["iou"].shape == (U, C) and r["iou"].dtype == np.float32
        assert r["local_probs"].shape == (U, C)
        assert r["localizable"].dtype == bool and r["region"].shape == (U,)
        for fam in tax.global_families:
            G = fam.num_groups
            assert r[f"global_groups_{fam.name}"].tolist() == list(fam.groups)
            assert r[f"global_probs_{fam.name}"].shape == (U, G)
            assert r[f"biased_{fam.name}"].dtype == bool
        assert r["top_images"].shape == (U, 4) and r["top_images"].dtype == np.int64
        assert r["top_maps"].shape == (U, 4, h, w) and r["top_maps"].dtype == np.float32
        assert (reference / layer / "units.csv").read_text().count("\n") == U + 1
    meta = json.loads((reference / "dissection.json").read_text())
    assert meta["layers"] == list(LAYERS)
    assert meta["model"]["params_sha256"] and meta["dictionary"]["kind"] == "tiny-test"
    assert meta["cache"]["mode"] == "ram" and meta["cache"]["images_from_cache"] == dic.num_local
    assert meta["devices"]["count"] == len(jax.devices()) and meta["devices"]["kind"]
    assert {"pass1", "pass2", "global", "finalize", "write", "total"} <= set(meta["timings"])
    assert sorted(meta["global_families"]["scored"]) == sorted(f.name for f in tax.global_families)
    # A completed run leaves no checkpoints or cache behind.
    assert not (reference / ".checkpoints").exists() and not (reference / ".cache").exists()


def test_top_maps_are_the_raw_maps_of_the_top_images(reference):
    """Independent check: recompute the activations with the plain model and compare."""
    from hnd_jax.models.capture import forward_with_layers

    dic = TinyDictionary()
    x = dic.images.astype(np.float32) / 255.0
    _, acts = forward_with_layers(TinyNet(seed=0), x, LAYERS)
    for layer in LAYERS:
        a = np.asarray(acts[layer])  # [N, h, w, U]
        r = load(reference, layer)
        m = a.max(axis=(1, 2))  # [N, U]
        for u in range(a.shape[-1]):
            expect = np.argsort(-m[:, u], kind="stable")[:4]
            np.testing.assert_array_equal(r["top_images"][u], expect)
            np.testing.assert_allclose(r["top_maps"][u], np.moveaxis(a[expect, :, :, u], 0, 0), rtol=1e-6, atol=1e-6)
        # Threshold = numpy.quantile over all raw values of the unit (independent reference).
        q = np.quantile(a.reshape(-1, a.shape[-1]), 1 - 0.05, axis=0)
        np.testing.assert_allclose(r["thresholds"], q, rtol=1e-6, atol=1e-6)


def test_equals_engine_on_separately_computed_activations(reference, tmp_path):
    """The --activations path (same engine, activations computed outside the pipeline) agrees."""
    from hnd_jax.models.capture import forward_with_layers
    from hnd_jax.pipeline.dissect import dissect_activations

    dic = TinyDictionary()
    model = TinyNet(seed=0)
    _, acts = forward_with_layers(model, dic.images.astype(np.float32) / 255.0, ["conv2"])
    arrays = {"local": np.moveaxis(np.asarray(acts["conv2"]), 3, 1)}  # NCHW
    for fam in dic.taxonomy.global_families:
        group = dic.global_group_of(fam.name)
        _, g = forward_with_layers(model, dic.global_images[fam.name].astype(np.float32) / 255.0, ["conv2"])
        g = np.moveaxis(np.asarray(g["conv2"]), 3, 1)
        for gi, gname in enumerate(fam.groups):
            arrays[f"{fam.name}/{gname}"] = g[group == gi]
    np.savez(tmp_path / "acts.npz", **arrays)
    out = tmp_path / "ext"
    dissect_activations(tmp_path / "acts.npz", dictionary=dic, layer="conv2", out=out,
                        scoring={"image_size": 12, "quantile": 0.05}, run={"batch_size": BATCH})
    ours, theirs = load(reference, "conv2"), load(out, "conv2")
    for key in ("thresholds", "intersection", "union", "top_concept", "localizable", "region", "top_images",
                "biased_Age", "biased_Gender"):
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    for key in ("iou", "local_probs", "global_probs_Age", "global_probs_skin_tone", "top_maps"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("mode", ["recompute", "disk"])
def test_cache_modes_give_identical_results(reference, tmp_path, monkeypatch, mode):
    if mode == "disk":
        monkeypatch.setattr("hnd_jax.pipeline.cache.RAM_SHARE", 0.0)  # fits the budget, not the RAM share
        run(tmp_path, cache_budget="1MiB")
    else:
        run(tmp_path, cache_budget="0")
    meta = json.loads((tmp_path / "dissection.json").read_text())
    assert meta["cache"]["mode"] == mode
    assert meta["cache"]["images_recomputed"] == (24 if mode == "recompute" else 0)
    assert_same_results(reference, tmp_path)


def test_budget_too_small_recomputes(tmp_path):
    run(tmp_path, cache_budget="1KiB")
    meta = json.loads((tmp_path / "dissection.json").read_text())
    assert meta["cache"]["mode"] == "recompute" and "exceed" in meta["cache"]["reason"]


def test_one_vs_eight_devices(reference, tmp_path):
    assert len(jax.devices()) == 8, "conftest sets 8 virtual CPU devices"
    run(tmp_path, mesh=make_data_mesh(1))
    assert_same_results(reference, tmp_path)


def test_two_simulated_processes_slice_and_merge(reference, tmp_path, monkeypatch):
    """Two 'hosts' (threads with their own process index and 4 devices each) equal one host.

    Only the all-gather is simulated (a barrier exchanging host states); the slicing and the fold of
    the gathered states (``merge_states`` with the accumulators' merge) are the production code.
    """
    local = threading.local()
    barrier = threading.Barrier(2)
    exchange: dict = {}
    lock = threading.Lock()
    calls = {0: 0, 1: 0}

    def fake_merge_across(merge, state):
        me = local.index
        key = calls[me]
        calls[me] += 1
        with lock:
            exchange[(key, me)] = stages_mod.to_host(state)
        barrier.wait()
        parts = [exchange[(key, p)] for p in (0, 1)]
        return stages_mod.merge_states(merge, parts, state)

    monkeypatch.setattr(stages_mod, "merge_across_processes", fake_merge_across)
    monkeypatch.setattr(stages_mod.jax, "process_index", lambda: local.index)
    monkeypatch.setattr(stages_mod.jax, "process_count", lambda: 2)
    errors = []
    seen: dict[int, list[int]] = {0: [], 1: []}

    class RecordingDictionary(TinyDictionary):
        def __init__(self, index):
            super().__init__()
            self.host = index

        def local_batches(self, *a, with_masks=True, **k):
            for batch in super().local_batches(*a, with_masks=with_masks, **k):
                if not with_masks:  # pass 1
                    seen[self.host].extend(batch.index.tolist())
                yield batch

    def host(index):
        local.index = index
        try:
            devs = jax.devices()[4 * index: 4 * index + 4]
            dissect_model(TinyNet(seed=0), layers=LAYERS, dictionary=RecordingDictionary(index), out=tmp_path,
                          scoring={"image_size": 12, "quantile": 0.05}, mesh=make_data_mesh(devices=devs),
                          run={"batch_size": BATCH, "checkpoint_every": 0, "progress": "none", "cache_budget": "1MiB"})
        except Exception as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=host, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert seen[0] == list(range(12)) and seen[1] == list(range(12, 24))  # own slices
    assert_same_results(reference, tmp_path)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_after", [3, 8, 19])
def test_resume_after_interruption_equals_uninterrupted(reference, tmp_path, monkeypatch, capfd, stop_after):
    """Interrupt after n batches (pass 1: 6 batches, pass 2: 6, then the global families), rerun."""
    count = {"n": 0}

    def hook():
        count["n"] += 1
        if count["n"] == stop_after:
            raise Interrupt

    monkeypatch.setattr(stages_mod, "_sleep_hook", hook)
    with pytest.raises(Interrupt):
        run(tmp_path)
    assert not (tmp_path / "dissection.json").exists()
    assert (tmp_path / ".checkpoints").exists()
    monkeypatch.setattr(stages_mod, "_sleep_hook", lambda: None)
    capfd.readouterr()
    run(tmp_path)
    err = capfd.readouterr().err
    stage = "pass1" if stop_after <= 6 else "pass2" if stop_after <= 12 else "global"
    assert f"resumed from {stage} at batch" in err
    assert_same_results(reference, tmp_path)
    assert not (tmp_path / ".checkpoints").exists()
    if stop_after == 8:  # resumed in pass 2 at batch 2: the lost RAM cache is recomputed for 4 batches
        cache = json.loads((tmp_path / "dissection.json").read_text())["cache"]
        assert (cache["mode"], cache["images_from_cache"], cache["images_recomputed"]) == ("ram", 0, 16)


def test_resume_in_pass2_reuses_a_disk_cache(reference, tmp_path, monkeypatch):
    monkeypatch.setattr("hnd_jax.pipeline.cache.RAM_SHARE", 0.0)
    count = {"n": 0}

    def hook():
        count["n"] += 1
        if count["n"] == 8:
            raise Interrupt

    monkeypatch.setattr(stages_mod, "_sleep_hook", hook)
    with pytest.raises(Interrupt):
        run(tmp_path)
    monkeypatch.setattr(stages_mod, "_sleep_hook", lambda: None)
    run(tmp_path)
    cache = json.loads((tmp_path / "dissection.json").read_text())["cache"]
    assert (cache["mode"], cache["images_from_cache"], cache["images_recomputed"]) == ("disk", 16, 0)
    assert_same_results(reference, tmp_path)


def test_refuses_to_resume_a_different_run_and_fresh_starts_over(reference, tmp_path, monkeypatch, capfd):
    def hook():
        raise Interrupt

    monkeypatch.setattr(stages_mod, "_sleep_hook", hook)
    with pytest.raises(Interrupt):
        run(tmp_path)
    monkeypatch.setattr(stages_mod, "_sleep_hook", lambda: None)
    with pytest.raises(HndError) as err:
        run(tmp_path, quantile=0.1)
    msg = str(err.value)
    assert "scoring.quantile: 0.05 -> 0.1" in msg and "--fresh" in msg and "\n" not in msg
    with pytest.raises(HndError) as err:
        run(tmp_path, model_seed=1)
    assert "model.params_sha256" in str(err.value) and "--fresh" in str(err.value)
    capfd.readouterr()
    run(tmp_path, fresh=True)
    assert "resumed" not in capfd.readouterr().err
    assert_same_results(reference, tmp_path)


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(HndError, match="cache-budget"):
        run(tmp_path, cache_budget="lots")
    with pytest.raises(HndError, match="image_size"):
        dissect_model(TinyNet(), layers=["conv1"], dictionary=TinyDictionary(), out=tmp_path, scoring={})
    with pytest.raises(HndError, match="conv9"):
        dissect_model(TinyNet(), layers=["conv9"], dictionary=TinyDictionary(), out=tmp_path,
                      scoring={"image_size": 12})
    assert not (tmp_path / "dissection.json").exists()


@pytest.mark.parametrize("process_count", [1, 3])
def test_a_resumed_global_family_reads_only_its_remaining_images(process_count):
    """The model source reads a family's slice [lo, hi) from batch ``first`` on: nothing before it
    (a resumed process once re-read and skipped its finished batches) and nothing past ``hi``
    (another process's images)."""
    from hnd_jax.dictionary.batching import process_slice
    from hnd_jax.pipeline.model_source import resolve_model
    from hnd_jax.pipeline.source_model import ModelActivations

    requested: list[int] = []

    class Recording(TinyDictionary):
        def global_batches(self, *a, **k):
            for batch in super().global_batches(*a, **k):
                requested.extend(batch.index.tolist())
                yield batch

    dic = Recording(per_group=5)
    family = dic.taxonomy.global_families[0].name
    n = len(dic.global_group_of(family))
    model = resolve_model(TinyNet())
    source = ModelActivations(model, ("conv1",), dic, make_data_mesh(1), 2, prefetch=0)
    for p in range(process_count):
        lo, hi = process_slice(0, n, p, process_count)
        for first in range(0, (hi - lo + 1) // 2 + 1):
            requested.clear()
            got = [i for b in source.family_batches(family, lo, hi, 2, first) for i in b.index.tolist()]
            assert got == requested == list(range(lo + 2 * first, hi)), (p, first)


def test_a_layer_with_an_empty_map_at_this_image_size_is_refused_up_front(tmp_path):
    """MTCNN's P-Net shrinks an 8-pixel image to 0 x 0 at conv3: the run once failed later with
    'cannot compute thresholds over 0 values (no local images?)', blaming the images."""
    with pytest.raises(HndError, match=r"layer conv3: its activation map is 32 x 0 x 0 at --image-size 8"):
        dissect_model("mtcnn_pnet", random_init=True, layers=["conv3"], dictionary="synthetic:24", out=tmp_path,
                      scoring={"image_size": 8})
    assert not any(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("fail_at", [1, 2])
def test_an_error_in_a_stage_is_one_line_until_an_image_was_done(tmp_path, monkeypatch, capfd, fail_at):
    """An error in the first batch of a stage (a bad input found first) is its own one line; after a
    batch was done the stage also says where it stopped (hnd_jax/pipeline/progress.py)."""
    calls = {"n": 0}
    update = stages_mod.StageRunner._update

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise HndError("bad batch")
        return update(self, *args)

    monkeypatch.setattr(stages_mod.StageRunner, "_update", failing)
    with pytest.raises(HndError, match="bad batch"):
        run(tmp_path, progress="plain")
    stopped = [l for l in capfd.readouterr().err.splitlines() if "stopped after" in l]
    if fail_at == 1:
        assert stopped == []
    else:
        assert len(stopped) == 1 and stopped[0].endswith(f" at {BATCH}/24 img"), stopped


@pytest.mark.parametrize("change, resumes", [
    ({"alpha": 0.2, "permutations": 50, "seed": 3, "iou_threshold": 0.01, "pair_factor": 1.1}, True),
    ({"quantile": 0.1}, False),  # pass 1's thresholds depend on it: the checkpoint is refused
])
def test_a_resumed_run_may_change_only_the_settings_finalize_reads(tmp_path, monkeypatch, capfd, change, resumes):
    """Significance, IoU cut and pairing are read only by the final scoring, so changing them after an
    interruption resumes (the result equals a fresh run with the new settings); a setting the passes'
    states depend on is still refused."""
    count = {"n": 0}

    def hook():
        count["n"] += 1
        if count["n"] == 8:  # in pass 2
            raise Interrupt

    monkeypatch.setattr(stages_mod, "_sleep_hook", hook)
    with pytest.raises(Interrupt):
        run(tmp_path / "out")
    monkeypatch.setattr(stages_mod, "_sleep_hook", lambda: None)
    capfd.readouterr()
    quantile = change.get("quantile", 0.05)
    scoring = {k: v for k, v in change.items() if k != "quantile"}
    if not resumes:
        with pytest.raises(HndError, match="scoring.quantile: 0.05 -> 0.1.*--fresh"):
            run(tmp_path / "out", quantile=quantile, scoring=scoring)
        return
    run(tmp_path / "out", scoring=scoring)
    assert "resumed from pass2 at batch" in capfd.readouterr().err
    run(tmp_path / "fresh", scoring=scoring)
    for layer in LAYERS:
        a, b = load(tmp_path / "out", layer), load(tmp_path / "fresh", layer)
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{layer}/{key}")
    settings = json.loads((tmp_path / "out" / "dissection.json").read_text())["settings"]
    assert all(settings[k] == v for k, v in change.items())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed one, on purpose
def test_a_ctrl_c_swallowed_by_a_gc_callback_still_stops_the_run(tmp_path, monkeypatch):
    """Break test: a SIGINT landing while JAX's gc callback ran was printed as "Exception ignored in
    _xla_gc_callback ... KeyboardInterrupt" and the run went on to exit 0. The handler remembers the
    stop (hnd_jax.errors.raise_interrupted) and the next step raises it."""
    import gc

    from hnd_jax import errors

    state = {"armed": False, "fired": False}

    def callback(phase, info):
        if state["armed"] and not state["fired"]:
            state["fired"] = True
            errors.raise_interrupted(2, None)  # what SIGINT does, here inside a gc callback

    def hook():
        state["armed"] = True
        gc.collect()  # the KeyboardInterrupt is swallowed ("Exception ignored in ...")
        state["armed"] = False

    gc.callbacks.append(callback)
    monkeypatch.setattr(stages_mod, "_sleep_hook", hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path)
    finally:
        gc.callbacks.remove(callback)
        errors.clear_stop()
    assert state["fired"] and not (tmp_path / "dissection.json").exists()
