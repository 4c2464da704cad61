"""ViTs (timm layout) and the CLIP ViT image tower against their PyTorch originals; token maps.

- timm ViTs: timm's own ``VisionTransformer`` (``timm.create_model``, random weights; see
  timm_ref.py for how it imports without torchvision).
- CLIP ViT-B/16 image tower: a faithful twin of OpenAI's clip/model.py (same module names; torch's
  own ``nn.MultiheadAttention``) in hnd_models_torch_refs.py; open_clip is not installed here.

Weights are random with randomised LayerNorm affine parameters and class/position embeddings,
copied with ``load_torch_state_dict``; outputs and dissectable layers agree within 1e-4 relative.
Token layers are compared after the documented conversion, written here independently: drop the
class token, read patch tokens row-major into the grid. Numerics run at 64 px (a 4x4 grid, 3
blocks) to keep compiles short; the 224 px models are checked for names and shapes only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from hnd_jax.models.capture import forward_with_layers, list_layers, tokens_to_map
from hnd_jax.models.registry import build_model
from hnd_jax.models.torch_mapping import export_torch_state_dict, load_torch_state_dict
from hnd_jax.models.vit import ClipVisionTransformer, VisionTransformer

from hnd_models_torch_refs import TorchClipVisionTransformer, numpy_state_dict, relative_error, torch_forward_with_hooks
from timm_ref import import_timm

TOL = 1e-4


def _randomize(model: nn.Module, seed: int) -> None:
    """LayerNorm affine params and the bare embedding parameters away from their 1/0/tiny defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name in ("cls_token", "pos_embed", "class_embedding", "positional_embedding"):
            p = getattr(model, name, None)
            if p is not None:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _as_map(tokens: np.ndarray, grid: int) -> np.ndarray:
    """Reference conversion: [N, 1 + g*g, C] -> [N, g, g, C] (class token dropped, row-major)."""
    n, t, c = tokens.shape
    assert t == 1 + grid * grid
    out = np.empty((n, grid, grid, c), tokens.dtype)
    for i in range(grid):
        for j in range(grid):
            out[:, i, j, :] = tokens[:, 1 + i * grid + j, :]
    return out


def _compare(model, tmodel, x, pairs, grid):
    """pairs: {our layer: torch module whose hook output is the same activation}."""
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, list(pairs.values()))
    out, acts = forward_with_layers(model, x, list(pairs))
    assert relative_error(out, ref_out) < TOL
    for ours, theirs in pairs.items():
        ref = ref_acts[theirs]
        ref = _as_map(ref, grid) if ref.ndim == 3 else ref
        assert acts[ours].shape == ref.shape, (ours, acts[ours].shape, ref.shape)
        assert relative_error(acts[ours], ref) < TOL, ours


def test_vit_tiny_matches_timm():
    timm = import_timm()
    torch.manual_seed(0)
    tmodel = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, img_size=64, depth=3).eval()
    _randomize(tmodel, 0)
    state = numpy_state_dict(tmodel)
    model = VisionTransformer(192, 3, 3, num_classes=7, image_size=64, name="vit_tiny_patch16_224", rngs=nnx.Rngs(0))
    load_torch_state_dict(model, state)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    pairs = {
        "patch_embed.proj": "patch_embed.proj", "patch_embed": "patch_embed", "blocks.0.norm1": "blocks.0.norm1",
        "blocks.0.attn.qkv": "blocks.0.attn.qkv", "blocks.0.attn": "blocks.0.attn", "blocks.1": "blocks.1",
        "blocks.2.mlp.fc1": "blocks.2.mlp.act",  # ours is AFTER the GELU: timm's act module output
        "blocks.2.mlp.fc2": "blocks.2.mlp.fc2", "blocks.2": "blocks.2", "norm": "norm",
    }
    # timm's patch_embed returns [N, 16, C] (no class token): compare it as a map directly.
    ref_out, ref_acts = torch_forward_with_hooks(tmodel, x, ["patch_embed"])
    _, acts = forward_with_layers(model, x, ["patch_embed"])
    assert relative_error(acts["patch_embed"], ref_acts["patch_embed"].reshape(2, 4, 4, 192)) < TOL
    del pairs["patch_embed"]
    _compare(model, tmodel, x, pairs, grid=4)
    exported = export_torch_state_dict(model)
    assert list(exported) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_fc1_is_after_gelu_not_before():
    """The documented choice is real: our fc1 differs from timm's fc1 hook (pre-GELU) output."""
    timm = import_timm()
    torch.manual_seed(1)
    tmodel = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, depth=1).eval()
    model = VisionTransformer(192, 1, 3, num_classes=3, image_size=32, rngs=nnx.Rngs(0))
    load_torch_state_dict(model, numpy_state_dict(tmodel))
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    _, ref = torch_forward_with_hooks(tmodel, x, ["blocks.0.mlp.fc1", "blocks.0.mlp.act"])
    _, acts = forward_with_layers(model, x, ["blocks.0.mlp.fc1"])
    ours = np.asarray(acts["blocks.0.mlp.fc1"])
    assert relative_error(ours, _as_map(ref["blocks.0.mlp.act"], 2)) < TOL
    assert relative_error(ours, _as_map(ref["blocks.0.mlp.fc1"], 2)) > 0.01
    assert ours.min() >= -0.2  # GELU's minimum is about -0.17


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"])
def test_timm_vit_names_and_shapes(arch):
    """Same tensors (names, shapes, order) as timm's model at 224 px; layers on the 14x14 grid."""
    timm = import_timm()
    tmodel = timm.create_model(arch, pretrained=False, num_classes=10)
    model = build_model(arch, num_outputs=10)
    exported = export_torch_state_dict(model)
    assert [(k, v.shape) for k, v in exported.items()] == [(k, tuple(v.shape)) for k, v in tmodel.state_dict().items()]
    layers = dict(list_layers(model, 224))
    width = tmodel.embed_dim
    assert layers["blocks.11"] == (14, 14, width) and layers["blocks.11.mlp.fc1"] == (14, 14, 4 * width)
    assert layers["patch_embed.proj"] == (14, 14, width) and "head" not in layers
    torch_names = {n for n, _ in tmodel.named_modules()}
    assert set(layers) <= torch_names


@pytest.mark.parametrize("quick_gelu", [True, False])  # OpenAI/FaRL weights; open_clip's own (nn.GELU)
def test_clip_vit_matches_openai_layout(quick_gelu):
    torch.manual_seed(2)
    tmodel = TorchClipVisionTransformer(input_resolution=64, width=96, layers=2, heads=4, output_dim=32,
                                        quick_gelu=quick_gelu).eval()
    _randomize(tmodel, 2)
    state = numpy_state_dict(tmodel)
    model = ClipVisionTransformer(96, 2, 4, output_dim=32, image_size=64, quick_gelu=quick_gelu, rngs=nnx.Rngs(0))
    load_torch_state_dict(model, state)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    pairs = {
        "conv1": "conv1", "ln_pre": "ln_pre", "transformer.resblocks.0.attn": "transformer.resblocks.0.attn",
        "transformer.resblocks.0.mlp.c_fc": "transformer.resblocks.0.mlp.gelu",  # after QuickGELU
        "transformer.resblocks.1": "transformer.resblocks.1", "transformer": "transformer",
    }
    _compare(model, tmodel, x, pairs, grid=4)
    exported = export_torch_state_dict(model)
    assert list(exported) == list(state)


def test_clip_vit_b16_structure():
    tmodel = TorchClipVisionTransformer()
    model = build_model("clip_vit_b16")
    exported = export_torch_state_dict(model)
    assert [(k, v.shape) for k, v in exported.items()] == [(k, tuple(v.shape)) for k, v in tmodel.state_dict().items()]
    layers = dict(list_layers(model, 224))
    assert layers["transformer.resblocks.11"] == (14, 14, 768)
    assert layers["transformer.resblocks.11.mlp.c_fc"] == (14, 14, 3072)
    assert "ln_post" not in layers  # the pooled class token is not a map


def test_tokens_to_map_rules():
    t = np.arange(2 * 10 * 3).reshape(2, 10, 3)
    m = np.asarray(tokens_to_map(t, 1, 3, 3))
    assert m.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(m[:, 1, 2], t[:, 1 + 1 * 3 + 2])
    regs = np.arange(2 * 13 * 3).reshape(2, 13, 3)  # class + 4 register tokens + 2x4 patches
    np.testing.assert_array_equal(np.asarray(tokens_to_map(regs, 5, 2, 4))[:, 1, 0], regs[:, 5 + 4])
    assert tokens_to_map(t[:, 0], 1, 3, 3).shape == (2, 3)  # pooled: unchanged
    assert tokens_to_map(t[:, :7], 1, 3, 3).shape == (2, 7, 3)  # other token count: unchanged


def test_wrong_input_size_is_one_line_error():
    from hnd_jax.errors import HndError

    with pytest.raises(HndError, match="built for 224x224"):
        list_layers(build_model("vit_tiny_patch16_224"), 112)


def test_extract_writes_token_maps_as_nchw(tmp_path):
    """`hnd extract` of a ViT layer: [N, C, gh, gw], the NCHW transpose of the captured map."""
    from hnd_jax.convert.checkpoint import load_model
    from hnd_jax.convert.extract import run_extract

    x = np.random.default_rng(5).normal(size=(2, 224, 224, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = run_extract("vit_tiny_patch16_224", None, ["blocks.0.mlp.fc1"], out=tmp_path / "a.npz",
                      inputs=tmp_path / "x.npy", random_init=True)
    with np.load(out) as z:
        got = z["blocks.0.mlp.fc1"]
    assert got.shape == (2, 768, 14, 14)
    model, _ = load_model("vit_tiny_patch16_224", None, random_init=True)
    _, acts = forward_with_layers(model, x, ["blocks.0.mlp.fc1"])
    np.testing.assert_allclose(got, np.asarray(acts["blocks.0.mlp.fc1"]).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
