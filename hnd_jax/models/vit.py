"""Vision transformers with PyTorch module names: timm's ViT and the CLIP ViT image tower.

timm layout (``timm.models.vision_transformer.VisionTransformer``, class-token pooling; Dosovitskiy
et al., ICLR 2021)::

    patch_embed.proj          Conv2d(3, D, P, stride P)          -> [N, gh, gw, D] (a conv map)
    patch_embed               flattened patches                  -> [N, gh*gw, D]
    cls_token [1,1,D], pos_embed [1, 1+gh*gw, D]                  (parameters of the root module)
    blocks.N                  x + attn(norm1(x)); x + mlp(norm2(x))
    blocks.N.{norm1, attn, attn.qkv, attn.proj, norm2, mlp, mlp.fc1, mlp.fc2}
    norm                      LayerNorm (eps 1e-6)
    head                      Linear(D, num_classes) on the class token

CLIP layout (OpenAI ``clip/model.py`` ``VisionTransformer``, the same names in open_clip; Radford
et al., ICML 2021)::

    conv1 (no bias), class_embedding [D], positional_embedding [1+gh*gw, D], ln_pre,
    transformer.resblocks.N.{ln_1, attn (in_proj_weight, in_proj_bias, out_proj), ln_2,
                             mlp.c_fc, mlp.c_proj}, ln_post (class token only), proj [D, out]

LayerNorm eps 1e-5; MLP activation QuickGELU ``x * sigmoid(1.702 x)`` for OpenAI's weights (and
FaRL's, trained from them), exact GELU for open_clip's own trainings (``quick_gelu=False``).

Dissection (DESIGN.md section 3; :mod:`hnd_jax.models.capture`): every token activation
``[N, tokens, C]`` is returned as a map ``[N, gh, gw, C]`` over the patch grid (NHWC inside; NCHW
``[N, C, gh, gw]`` in ``hnd extract`` files), class token dropped, patch tokens row-major. A 224 px
ViT-B/16 gives a 14x14 grid: each unit's map is upsampled from 14x14 to the mask size for IoU, so
one cell covers a 16x16 pixel patch (like ResNet-50's layer4 at 7x7 covers 32x32).

Layers worth dissecting: ``blocks.N`` / ``transformer.resblocks.N`` (the residual stream after
block N) and the MLP hidden units ``blocks.N.mlp.fc1`` / ``transformer.resblocks.N.mlp.c_fc``.
**The MLP hidden layer is returned AFTER its activation**: our ``fc1`` (``c_fc``) module applies
the Linear and then GELU (QuickGELU), because the hidden units of a transformer MLP are the
activated ones; in timm/CLIP the activation is a separate module (``mlp.act`` / ``mlp.gelu``), so
a PyTorch forward hook on ``fc1`` sees the values before GELU and a hook on ``mlp.act`` sees ours.
The pre-activation values are not exposed. Weights are unaffected (``fc1.weight``/``fc1.bias``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.layers import (
    Sequential, check_image_batch, conv2d, draw_numpy, linear, ones_init, torch_default_kernel_init, zeros_init,
)

ViTConfig = tuple[int, int, int]  # (width D, depth, heads)

TIMM_VITS: dict[str, ViTConfig] = {
    "vit_tiny_patch16_224": (192, 12, 3),
    "vit_small_patch16_224": (384, 12, 6),
    "vit_base_patch16_224": (768, 12, 12),
}
CLIP_VITS: dict[str, tuple[ViTConfig, int]] = {  # name: ((width, layers, heads), output dim)
    "clip_vit_b16": ((768, 12, 12), 512),
}
VIT_PATCH = 16
VIT_INPUT = 224


def _normal_init(std: float):
    """N(0, std^2) drawn with numpy from the jax key (no per-shape XLA compile; see layers.py)."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        if isinstance(key, jax.core.Tracer):  # built under a trace (nnx.eval_shape, jit)
            return std * jax.random.normal(key, tuple(shape), dtype)
        return jax.device_put(draw_numpy(key, tuple(shape), dtype, lambda rng, n: rng.normal(0.0, std, n)))

    return init


def layer_norm(features: int, *, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """``nn.LayerNorm(features, eps)``; two-pass variance (``use_fast_variance=False``), as PyTorch."""
    return nnx.LayerNorm(features, epsilon=eps, use_fast_variance=False, scale_init=ones_init, bias_init=zeros_init,
                         rngs=rngs)


def gelu(x: jax.Array) -> jax.Array:
    """``nn.GELU()``: the exact, erf-based GELU."""
    return jax.nn.gelu(x, approximate=False)


def quick_gelu(x: jax.Array) -> jax.Array:
    """CLIP's ``QuickGELU``: ``x * sigmoid(1.702 * x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


class LinearAct(nnx.Linear):
    """A Linear followed by its activation, captured as one module (the activated hidden units).

    Still an ``nnx.Linear`` for the weight mapper (``fc1.weight``/``fc1.bias``); see the module
    docstring for why the MLP's first layer is captured after its activation.
    """

    def __init__(self, in_features: int, out_features: int, *, quick: bool, rngs: nnx.Rngs):
        super().__init__(in_features, out_features, kernel_init=torch_default_kernel_init, bias_init=zeros_init,
                         rngs=rngs)
        self.quick = bool(quick)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        return quick_gelu(y) if self.quick else gelu(y)


def _attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention per head: q, k, v [N, H, T, d] -> [N, H, T, d] (scale 1/sqrt(d))."""
    scores = jnp.einsum("nhtd,nhsd->nhts", q * (q.shape[-1] ** -0.5), k)
    return jnp.einsum("nhts,nhsd->nhtd", jax.nn.softmax(scores, axis=-1), v)


def _split_heads(x: jax.Array, heads: int) -> jax.Array:
    n, t, c = x.shape
    return x.reshape(n, t, heads, c // heads).transpose(0, 2, 1, 3)


def _merge_heads(x: jax.Array) -> jax.Array:
    n, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, t, h * d)


# ------------------------------------------------------------------------------------- timm


class PatchEmbed(nnx.Module):
    """timm ``PatchEmbed``: ``proj`` conv (P x P, stride P), then flatten to [N, gh*gw, D]."""

    def __init__(self, patch: int, dim: int, *, rngs: nnx.Rngs):
        self.proj = conv2d(3, dim, patch, stride=patch, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.proj(x)
        return y.reshape(y.shape[0], -1, y.shape[-1])


class Attention(nnx.Module):
    """timm ``Attention``: ``qkv`` Linear(D, 3D) -> heads -> softmax attention -> ``proj``."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = int(heads)
        self.qkv = linear(dim, 3 * dim, rngs=rngs)
        self.proj = linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).transpose(2, 0, 3, 1, 4)
        return self.proj(_merge_heads(_attention(qkv[0], qkv[1], qkv[2])))


class Mlp(nnx.Module):
    """timm ``Mlp``: ``fc1`` (+ GELU, captured after it) then ``fc2``."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = LinearAct(dim, hidden, quick=False, rngs=rngs)
        self.fc2 = linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.fc1(x))


class Block(nnx.Module):
    """timm ``Block`` (pre-norm): ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.norm1 = layer_norm(dim, eps=1e-6, rngs=rngs)
        self.attn = Attention(dim, heads, rngs=rngs)
        self.norm2 = layer_norm(dim, eps=1e-6, rngs=rngs)
        self.mlp = Mlp(dim, 4 * dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _fixed_grid(image_size: int, patch: int) -> str:
    """Why a ViT takes one input size only: the learned position embedding fixes the patch grid."""
    side = image_size // patch
    return f"its position embedding has one entry per patch of a fixed {side}x{side} grid of {patch}x{patch} patches"


def _grid(arch: str, image_size: int, patch: int, height: int, width: int) -> tuple[int, int]:
    if height != image_size or width != image_size:
        raise HndError(
            f"{arch} was built for {image_size}x{image_size} inputs ({_fixed_grid(image_size, patch)}), "
            f"got {height}x{width}"
        )
    return image_size // patch, image_size // patch


class VisionTransformer(nnx.Module):
    """timm ``VisionTransformer`` with a class token (module docstring). Output: [N, num_classes]."""

    TORCH_PARAMS = ("cls_token", "pos_embed")

    def __init__(self, dim: int, depth: int, heads: int, *, num_classes: int = 1000, image_size: int = VIT_INPUT,
                 patch: int = VIT_PATCH, name: str = "vit", rngs: nnx.Rngs):
        if image_size % patch or image_size < patch:
            raise HndError(f"{name}: image_size {image_size} must be a positive multiple of the patch size {patch}")
        if int(num_classes) < 1:
            raise HndError(f"{name} needs num_outputs >= 1, got {num_classes}")
        self.arch_name, self.image_size, self.patch = name, int(image_size), int(patch)
        tokens = 1 + (image_size // patch) ** 2
        self.cls_token = nnx.Param(_normal_init(1e-6)(rngs.params(), (1, 1, dim)))
        self.pos_embed = nnx.Param(_normal_init(0.02)(rngs.params(), (1, tokens, dim)))
        self.patch_embed = PatchEmbed(patch, dim, rngs=rngs)
        self.blocks = Sequential(*[Block(dim, heads, rngs=rngs) for _ in range(depth)])
        self.norm = layer_norm(dim, eps=1e-6, rngs=rngs)
        self.head = linear(dim, int(num_classes), rngs=rngs)

    def token_grid(self, height: int, width: int) -> tuple[int, int, int]:
        """(prefix tokens, gh, gw) for an input of ``height`` x ``width`` (see capture.py)."""
        return (1, *_grid(self.arch_name, self.image_size, self.patch, height, width))

    def __call__(self, x: jax.Array) -> jax.Array:
        check_image_batch(x, self.arch_name, size=(self.image_size, self.image_size),
                          fixed_by=_fixed_grid(self.image_size, self.patch))
        x = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...]
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ------------------------------------------------------------------------------------- CLIP


class MultiheadAttention(nnx.Module):
    """``nn.MultiheadAttention(D, heads)`` self-attention: ``in_proj_weight`` [3D, D], ``out_proj``."""

    TORCH_PARAMS = ("in_proj_weight", "in_proj_bias")

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = int(heads)
        # Stored in PyTorch's [3D, D] layout (applied as x @ W.T), so the mapper copies it as is.
        self.in_proj_weight = nnx.Param(torch_default_kernel_init(rngs.params(), (3 * dim, dim)))
        self.in_proj_bias = nnx.Param(zeros_init(rngs.params(), (3 * dim,)))
        self.out_proj = linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        qkv = x @ self.in_proj_weight[...].T + self.in_proj_bias[...]
        q, k, v = (_split_heads(t, self.heads) for t in jnp.split(qkv, 3, axis=-1))
        return self.out_proj(_merge_heads(_attention(q, k, v)))


class ClipMlp(nnx.Module):
    """CLIP's ``mlp = Sequential(c_fc, gelu, c_proj)``; ``c_fc`` is captured after (Quick)GELU."""

    def __init__(self, dim: int, *, quick_gelu: bool, rngs: nnx.Rngs):
        self.c_fc = LinearAct(dim, 4 * dim, quick=quick_gelu, rngs=rngs)
        self.c_proj = linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(self.c_fc(x))


class ResidualAttentionBlock(nnx.Module):
    """CLIP ``ResidualAttentionBlock``: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, dim: int, heads: int, *, quick_gelu: bool, rngs: nnx.Rngs):
        # OpenAI's definition order (attn, ln_1, mlp, ln_2): named_modules() and state_dict() follow it.
        self.attn = MultiheadAttention(dim, heads, rngs=rngs)
        self.ln_1 = layer_norm(dim, eps=1e-5, rngs=rngs)
        self.mlp = ClipMlp(dim, quick_gelu=quick_gelu, rngs=rngs)
        self.ln_2 = layer_norm(dim, eps=1e-5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
    """CLIP ``Transformer``: ``resblocks`` (batch-first here; OpenAI's runs [T, N, D], same values)."""

    def __init__(self, dim: int, layers: int, heads: int, *, quick_gelu: bool, rngs: nnx.Rngs):
        self.resblocks = Sequential(
            *[ResidualAttentionBlock(dim, heads, quick_gelu=quick_gelu, rngs=rngs) for _ in range(layers)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.resblocks(x)


class ClipVisionTransformer(nnx.Module):
    """The CLIP image tower (module docstring). Output: the image embedding [N, output_dim]."""

    TORCH_PARAMS = ("class_embedding", "positional_embedding", "proj")

    def __init__(self, dim: int, layers: int, heads: int, *, output_dim: int = 512, image_size: int = VIT_INPUT,
                 patch: int = VIT_PATCH, quick_gelu: bool = True, name: str = "clip_vit", rngs: nnx.Rngs):
        if image_size % patch or image_size < patch:
            raise HndError(f"{name}: image_size {image_size} must be a positive multiple of the patch size {patch}")
        if int(output_dim) < 1:
            raise HndError(f"{name} needs num_outputs (embedding size) >= 1, got {output_dim}")
        self.arch_name, self.image_size, self.patch = name, int(image_size), int(patch)
        scale = dim ** -0.5
        tokens = 1 + (image_size // patch) ** 2
        self.class_embedding = nnx.Param(_normal_init(scale)(rngs.params(), (dim,)))
        self.positional_embedding = nnx.Param(_normal_init(scale)(rngs.params(), (tokens, dim)))
        self.proj = nnx.Param(_normal_init(scale)(rngs.params(), (dim, int(output_dim))))
        self.conv1 = conv2d(3, dim, patch, stride=patch, bias=False, rngs=rngs)
        self.ln_pre = layer_norm(dim, eps=1e-5, rngs=rngs)
        self.transformer = Transformer(dim, layers, heads, quick_gelu=quick_gelu, rngs=rngs)
        self.ln_post = layer_norm(dim, eps=1e-5, rngs=rngs)

    def token_grid(self, height: int, width: int) -> tuple[int, int, int]:
        """(prefix tokens, gh, gw) for an input of ``height`` x ``width`` (see capture.py)."""
        return (1, *_grid(self.arch_name, self.image_size, self.patch, height, width))

    def __call__(self, x: jax.Array) -> jax.Array:
        check_image_batch(x, self.arch_name, size=(self.image_size, self.image_size),
                          fixed_by=_fixed_grid(self.image_size, self.patch))
        x = self.conv1(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding[...], (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...]
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj[...]


def build_vit(arch: str, *, num_classes: int = 1000, image_size: int = VIT_INPUT, rngs: nnx.Rngs) -> VisionTransformer:
    """timm ``vit_{tiny,small,base}_patch16_224`` with ``num_classes`` outputs."""
    dim, depth, heads = TIMM_VITS[arch]
    return VisionTransformer(dim, depth, heads, num_classes=num_classes, image_size=image_size, name=arch, rngs=rngs)


def build_clip_vit(arch: str, *, output_dim: int | None = None, image_size: int = VIT_INPUT, quick_gelu: bool = True,
                   rngs: nnx.Rngs) -> ClipVisionTransformer:
    """CLIP ``ViT-B/16`` image tower (``quick_gelu``: OpenAI's activation; False for exact GELU)."""
    (dim, layers, heads), out = CLIP_VITS[arch]
    return ClipVisionTransformer(dim, layers, heads, output_dim=out if output_dim is None else output_dim,
                                 image_size=image_size, quick_gelu=quick_gelu, name=arch, rngs=rngs)


__all__ = [
    "CLIP_VITS", "TIMM_VITS", "VIT_INPUT", "VIT_PATCH", "ClipVisionTransformer", "VisionTransformer", "build_clip_vit",
    "build_vit", "gelu", "quick_gelu",
]
