"""The weights of a run are hashed once (model_source's docstring): a weights file by its bytes, a
converted folder, a module or random init by its parameter values.

Every sha256 computed while the model is resolved is recorded (``hashlib.sha256`` replaced by a
counting wrapper, so a new hashing path anywhere is seen); the ones that consumed at least half as
many bytes as the weights are hashes of the weights. The old code hashed a weights file twice: its
bytes (``weights.sha256``) and then the parameters read from them (``params_sha256``).
"""

from __future__ import annotations

import hashlib

import jax
import numpy as np
import pytest
from flax import nnx

from hnd_jax.pipeline.model_source import params_sha256, resolve_model


class HashCounter:
    """Records (bytes consumed, hex digest) of every sha256 whose digest is taken."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.done: list[tuple[int, str]] = []
        real, done = hashlib.sha256, self.done

        class Counting:
            def __init__(self, data=b"", **kwargs):
                self._h = real(data, **kwargs)
                self.n = len(data)

            def update(self, data):
                self.n += memoryview(data).nbytes
                self._h.update(data)

            def hexdigest(self):
                out = self._h.hexdigest()
                done.append((self.n, out))
                return out

            def digest(self):
                done.append((self.n, self._h.hexdigest()))
                return self._h.digest()

        monkeypatch.setattr(hashlib, "sha256", Counting)

    def over(self, nbytes: int) -> list[str]:
        """Digests of the hashes that consumed at least ``nbytes`` bytes."""
        return [digest for n, digest in self.done if n >= nbytes]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two different demo_cnn weights files and a converted folder of the first."""
    from hnd_jax.convert.checkpoint import convert_checkpoint, load_model
    from hnd_jax.models.torch_mapping import export_torch_state_dict

    root = tmp_path_factory.mktemp("weights")
    for seed, name in ((0, "a.npz"), (1, "b.npz")):
        model, _ = load_model("demo_cnn", None, random_init=True, seed=seed)
        np.savez(root / name, **export_torch_state_dict(model))
    convert_checkpoint("demo_cnn", root / "a.npz", root / "a_converted")
    return root


def weight_bytes(model) -> int:
    """Bytes of the model's parameter values."""
    return sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(nnx.state(model)))


def test_a_weights_file_is_hashed_once_by_its_bytes(weights, monkeypatch):
    path = weights / "a.npz"
    reference = hashlib.sha256(path.read_bytes()).hexdigest()  # before the counter is installed
    count = HashCounter(monkeypatch)
    source = resolve_model("demo_cnn", str(path))
    big = count.over(weight_bytes(source.module) // 2)
    assert big == [reference], count.done
    assert source.identity["weights"] == {"kind": "file", "path": str(path), "sha256": reference, "format": "npz"}
    assert "params_sha256" not in source.identity  # the parameters are read from those bytes


def test_another_file_has_another_identity_and_the_same_file_the_same(weights):
    a1 = resolve_model("demo_cnn", str(weights / "a.npz")).identity
    a2 = resolve_model("demo_cnn", str(weights / "a.npz")).identity
    b = resolve_model("demo_cnn", str(weights / "b.npz")).identity
    assert a1 == a2 and a1 != b and a1["weights"]["sha256"] != b["weights"]["sha256"]


def test_a_converted_folder_is_hashed_once_by_its_parameters(weights, monkeypatch):
    from_file = resolve_model("demo_cnn", str(weights / "a.npz")).module
    expected_params = params_sha256(from_file)
    file_digest = hashlib.sha256((weights / "a.npz").read_bytes()).hexdigest()
    count = HashCounter(monkeypatch)
    source = resolve_model("demo_cnn", str(weights / "a_converted"))
    big = count.over(weight_bytes(source.module) // 2)
    assert big == [expected_params], count.done  # the same parameters as the original file's
    assert source.identity["params_sha256"] == expected_params
    assert source.identity["weights"]["kind"] == "converted"
    assert source.identity["weights"]["sha256"] == file_digest  # the manifest's record, not rehashed


@pytest.mark.parametrize("how", ["random init", "module"])
def test_random_init_and_a_module_are_hashed_once_by_their_parameters(how, monkeypatch):
    from hnd_jax.convert.checkpoint import load_model

    module, _ = load_model("demo_cnn", None, random_init=True, seed=3)
    count = HashCounter(monkeypatch)
    if how == "random init":
        source = resolve_model("demo_cnn", random_init=True, seed=3)
    else:
        source = resolve_model(module, card="demo_cnn")
    big = count.over(weight_bytes(source.module) // 2)
    assert big == [source.identity["params_sha256"]], count.done
    assert len(big[0]) == 64
