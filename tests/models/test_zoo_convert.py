"""`hnd convert` for the new layouts: a torch.save'd state dict -> converter -> the same outputs.

For each built-in card (torchvision resnet18, arcface_torch iresnet18, timm vit_tiny_patch16_224,
CLIP clip_vit_b16) a PyTorch model with random weights is saved with ``torch.save(state_dict)``,
loaded by the card (original file) and converted (orbax folder), and both must reproduce the
PyTorch outputs within 1e-4 relative. The cards leave ``num_outputs`` out, so the head size comes
from the file (fc.weight / head.weight / proj) and is recorded in the converted folder.

Speed: the ViT and CLIP tests shrink the architecture's depth/width for the test
(``monkeypatch`` of the registry's config tables); the card, its key rules and the converter are
the real ones. CLIP's file is a full CLIP state dict: the text-tower keys must be ignored.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hnd_jax.convert.checkpoint import MANIFEST, convert_checkpoint, load_model
from hnd_jax.models.capture import forward_with_layers

from hnd_models_torch_refs import (
    TorchClipVisionTransformer, randomize_batchnorm, relative_error, torch_forward_with_hooks, torch_iresnet,
    torch_resnet,
)
from timm_ref import import_timm

TOL = 1e-4


def _roundtrip(tmp_path, card, state, tmodel, x, layer, expect_outputs, torch_layer=None):
    """Save ``state`` with torch.save, load it by ``card`` and convert it; compare with ``tmodel``.

    ``torch_layer``: the PyTorch module whose hook output equals our ``layer`` (default: same name).
    """
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    torch_layer = torch_layer or layer
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, [torch_layer])
    model, loaded_card = load_model(card, path)
    assert loaded_card.num_outputs == expect_outputs  # inferred from the file's head
    out, acts = forward_with_layers(model, x, [layer])
    assert relative_error(out, ref_out) < TOL
    ref = ref_acts[torch_layer]
    if ref.ndim == 3:  # transformer tokens: class token dropped, row-major grid
        g = int(round((ref.shape[1] - 1) ** 0.5))
        ref = ref[:, 1:].reshape(ref.shape[0], g, g, ref.shape[2])
    assert relative_error(acts[layer], ref) < TOL
    folder = convert_checkpoint(card, path, tmp_path / "converted")
    assert json.loads((folder / MANIFEST).read_text())["num_outputs"] == expect_outputs
    for again in (load_model(card, folder)[0], load_model(None, folder)[0]):
        again_out, again_acts = forward_with_layers(again, x, [layer])  # same compiled forward: same bits
        np.testing.assert_array_equal(np.asarray(again_out), np.asarray(out))
        np.testing.assert_array_equal(np.asarray(again_acts[layer]), np.asarray(acts[layer]))


def test_torchvision_resnet18_with_a_fine_tuned_head(tmp_path):
    torch.manual_seed(0)
    tmodel = torch_resnet("resnet18", "fc", 7).eval()
    randomize_batchnorm(tmodel, 0)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    _roundtrip(tmp_path, "resnet18", tmodel.state_dict(), tmodel, x, "layer4.1", expect_outputs=7)


def test_arcface_iresnet18(tmp_path):
    torch.manual_seed(1)
    tmodel = torch_iresnet("iresnet18", num_features=128).eval()
    randomize_batchnorm(tmodel, 1)
    x = np.random.default_rng(1).uniform(-1, 1, size=(1, 112, 112, 3)).astype(np.float32)
    _roundtrip(tmp_path, "iresnet18", tmodel.state_dict(), tmodel, x, "layer4.1.conv2", expect_outputs=128)


def test_timm_vit_tiny(tmp_path, monkeypatch):
    from hnd_jax.models import vit

    timm = import_timm()
    monkeypatch.setitem(vit.TIMM_VITS, "vit_tiny_patch16_224", (192, 2, 3))  # 2 blocks instead of 12
    torch.manual_seed(2)
    tmodel = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, depth=2).eval()
    with torch.no_grad():
        tmodel.cls_token.normal_(0, 0.5)
    x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
    _roundtrip(tmp_path, "vit_tiny_patch16_224", tmodel.state_dict(), tmodel, x, "blocks.1", expect_outputs=5)


def test_clip_vit_b16_card_reads_a_full_clip_state_dict(tmp_path, monkeypatch):
    from hnd_jax.models import vit

    monkeypatch.setitem(vit.CLIP_VITS, "clip_vit_b16", ((64, 2, 4), 512))  # narrow and shallow for speed
    torch.manual_seed(3)
    tmodel = TorchClipVisionTransformer(width=64, layers=2, heads=4, output_dim=48).eval()
    state = {f"visual.{k}": v for k, v in tmodel.state_dict().items()}
    # The text tower of a CLIP checkpoint, with names that collide with the image tower's once
    # "visual." is stripped: the card must ignore them.
    state.update({
        "positional_embedding": torch.zeros(77, 64), "transformer.resblocks.0.attn.in_proj_weight": torch.zeros(9, 9),
        "token_embedding.weight": torch.zeros(10, 64), "ln_final.weight": torch.ones(64),
        "text_projection": torch.zeros(64, 48), "logit_scale": torch.tensor(4.6),
    })
    x = np.random.default_rng(3).normal(size=(1, 224, 224, 3)).astype(np.float32)
    _roundtrip(tmp_path, "clip_vit_b16", state, tmodel, x, "transformer.resblocks.1.mlp.c_fc", expect_outputs=48,
               torch_layer="transformer.resblocks.1.mlp.gelu")  # our c_fc is after QuickGELU


def test_stated_head_size_is_not_overridden(tmp_path):
    """A card that states num_outputs keeps it: a file with another head size is a strict-load error."""
    from hnd_jax.errors import HndError

    torch.manual_seed(4)
    tmodel = torch_resnet("resnet18", "fc", 7)
    path = tmp_path / "w.pth"
    torch.save(tmodel.state_dict(), path)
    card = (tmp_path / "r18_3.toml")
    from hnd_jax.cards import load_card

    text = load_card("resnet18").source_text().replace('head = "fc"', 'head = "fc"\nnum_outputs = 3')
    card.write_text(text.replace('name = "resnet18"', 'name = "r18_3"'))
    with pytest.raises(HndError, match=r"fc.weight: \(7, 512\) in file, \(3, 512\) expected"):
        load_model(str(card), path)
