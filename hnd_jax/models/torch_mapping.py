"""PyTorch ``state_dict`` <-> NNX module weights, by name, with every layout conversion.

Our modules carry PyTorch's module paths, so a tensor name is ``<module path>.<torch param>``
(``layer4.2.conv1.weight``). Per module type:

=================  ======================================  ==========================================
NNX module         PyTorch tensors                          conversion
=================  ======================================  ==========================================
``nnx.Conv``       ``weight`` [O,I,kh,kw], ``bias`` [O]     kernel = weight.transpose(2,3,1,0) (HWIO)
``nnx.Linear``     ``weight`` [out,in], ``bias`` [out]      kernel = weight.T, after permuting the
                                                            input features of a Linear that follows a
                                                            flatten (``torch_input_layout``)
``nnx.BatchNorm``  ``weight bias running_mean running_var`` scale, bias, mean, var;
                   (``num_batches_tracked`` ignored)
``PReLU``          ``weight`` [C]                           as is
``nnx.LayerNorm``  ``weight bias``                          scale, bias
any module         names in its ``TORCH_PARAMS``            as is (PyTorch layout kept: ViT
                                                            ``cls_token``/``pos_embed``, CLIP
                                                            ``class_embedding``, ``proj``,
                                                            ``attn.in_proj_weight``)
=================  ======================================  ==========================================

A module may carry its own ``nnx.Param`` attributes that PyTorch stores as bare ``nn.Parameter``s:
it lists their attribute names in a class attribute ``TORCH_PARAMS`` and stores them in PyTorch's
shape, so they map one to one. The root module's are named without a prefix (``cls_token``).

Flatten permutation: PyTorch flattens an NCHW map in C,H,W order (or W,H,C after MTCNN's
``permute(0,3,2,1)``); we flatten NHWC in H,W,C order, so the Linear's input features are
reordered: ``weight.reshape(out, *torch_order_dims).transpose(to H,W,C).reshape(out, -1)``.

Loading is all-or-nothing: every tensor is checked before anything is assigned, so a failed strict
load leaves the model untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnd_jax.errors import HndError
from hnd_jax.models.capture import module_names
from hnd_jax.models.layers import PReLU

IGNORED_SUFFIXES = (".num_batches_tracked",)
MAX_LISTED = 6


@dataclass(frozen=True)
class _Slot:
    """One PyTorch tensor of the model: where it lives and how its layout converts."""

    key: str
    variable: nnx.Variable
    torch_shape: tuple[int, ...]
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


class LoadResult(NamedTuple):
    """What a non-strict load skipped (both empty after a strict load)."""

    missing: list[str]
    unexpected: list[str]


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _linear_converters(module: nnx.Linear) -> tuple[Callable, Callable]:
    layout = getattr(module, "torch_input_layout", None)
    if layout is None:
        return (lambda w: w.T), (lambda k: k.T)
    order, (h, w, c) = layout
    dims = {"H": h, "W": w, "C": c}
    torch_dims = [dims[a] for a in order]
    to_hwc = [1 + order.index(a) for a in "HWC"]  # axes of [out, *torch_order] in H,W,C order
    from_hwc = [1 + "HWC".index(a) for a in order]

    def to_flax(weight: np.ndarray) -> np.ndarray:
        out = weight.shape[0]
        return weight.reshape(out, *torch_dims).transpose(0, *to_hwc).reshape(out, -1).T

    def to_torch(kernel: np.ndarray) -> np.ndarray:
        out = kernel.shape[1]
        return kernel.T.reshape(out, h, w, c).transpose(0, *from_hwc).reshape(out, -1)

    return to_flax, to_torch


def _module_slots(name: str, module: nnx.Module) -> list[_Slot]:
    def slot(param: str, variable, to_flax=_identity, to_torch=_identity, axes=None) -> _Slot:
        # PyTorch shape = our shape with axes reordered (``axes``); computed, never materialised.
        shape = tuple(variable.get_value().shape)
        torch_shape = shape if axes is None else tuple(shape[a] for a in axes)
        return _Slot(f"{name}.{param}" if name else param, variable, torch_shape, to_flax, to_torch)

    slots: list[_Slot] = []
    own_torch = tuple(getattr(type(module), "TORCH_PARAMS", ()))
    for param in own_torch:
        slots.append(slot(param, getattr(module, param)))
    if isinstance(module, nnx.Conv):
        slots.append(slot("weight", module.kernel, lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1),
                          axes=(3, 2, 0, 1)))
        if module.bias is not None:
            slots.append(slot("bias", module.bias))
    elif isinstance(module, nnx.Linear):
        to_flax, to_torch = _linear_converters(module)
        slots.append(slot("weight", module.kernel, to_flax, to_torch, axes=(1, 0)))
        if module.bias is not None:
            slots.append(slot("bias", module.bias))
    elif isinstance(module, nnx.BatchNorm):
        for param, variable in (("weight", module.scale), ("bias", module.bias), ("running_mean", module.mean),
                                ("running_var", module.var)):
            if variable is not None:
                slots.append(slot(param, variable))
    elif isinstance(module, PReLU):
        slots.append(slot("weight", module.weight))
    elif isinstance(module, nnx.LayerNorm):
        for param, variable in (("weight", module.scale), ("bias", module.bias)):
            if variable is not None:
                slots.append(slot(param, variable))
    else:
        own = [k for k, v in vars(module).items() if isinstance(v, nnx.Variable) and k not in own_torch]
        if own:
            raise TypeError(f"{type(module).__name__} at {name!r} has variables {own} but no PyTorch mapping")
    return slots


def torch_slots(model: nnx.Module) -> list[_Slot]:
    """Every PyTorch tensor the model expects, in ``named_modules()`` order."""
    slots: list[_Slot] = list(_module_slots("", model)) if getattr(type(model), "TORCH_PARAMS", ()) else []
    for name in module_names(model):
        module = _get_module(model, name)
        slots.extend(_module_slots(name, module))
    return slots


def _get_module(model: nnx.Module, name: str) -> nnx.Module:
    module = model
    for part in name.split("."):
        module = getattr(module, part)
    return module


def expected_torch_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """``{tensor name: PyTorch shape}`` the model expects (what ``state_dict()`` would hold)."""
    return {s.key: s.torch_shape for s in torch_slots(model)}


def _is_float(dtype: np.dtype) -> bool:
    """float16/32/64, and bfloat16 (an ml_dtypes extension type, numpy kind 'V')."""
    return dtype.kind == "f" or dtype.name == "bfloat16"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return f"{shown}, ... and {more} more" if more > 0 else shown


def load_torch_state_dict(model: nnx.Module, state: Mapping[str, np.ndarray], *, strict: bool = True) -> LoadResult:
    """Assign PyTorch-named tensors (numpy or anything ``np.asarray`` takes) into ``model`` in place.

    strict=True: every expected tensor present, no unexpected tensor (``num_batches_tracked`` is
    always ignored), every shape equal; otherwise one HndError lists the missing, unexpected and
    mismatched keys (long lists truncated with a count) and nothing is assigned. strict=False:
    missing and unexpected keys are returned instead, shape mismatches still fail.
    """
    slots = torch_slots(model)
    expected = {s.key for s in slots}
    given = {str(k): v for k, v in state.items()}
    missing = [s.key for s in slots if s.key not in given]
    unexpected = sorted(k for k in given if k not in expected and not k.endswith(IGNORED_SUFFIXES))
    arrays: dict[str, np.ndarray] = {}
    mismatched: list[str] = []
    for s in slots:
        if s.key not in given:
            continue
        try:
            value = np.asarray(given[s.key])
        except Exception as e:  # noqa: BLE001 - any non-array value is a user error here
            mismatched.append(f"{s.key} (not an array: {type(e).__name__})")
            continue
        if tuple(value.shape) != s.torch_shape:
            mismatched.append(f"{s.key}: {tuple(value.shape)} in file, {s.torch_shape} expected")
            continue
        if not _is_float(value.dtype):
            mismatched.append(f"{s.key}: dtype {value.dtype}, floating point expected")
            continue
        arrays[s.key] = value
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing [{_listing(missing)}]")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected [{_listing(unexpected)}]")
    if mismatched:
        problems.append(f"{len(mismatched)} with wrong shape or dtype [{_listing(mismatched)}]")
    if problems:
        raise HndError(f"PyTorch weights do not fit {type(model).__name__}: " + "; ".join(problems))
    for s in slots:
        if s.key in arrays:
            current = s.variable.get_value()
            converted = np.ascontiguousarray(s.to_flax(arrays[s.key].astype(np.float32, copy=False)))
            s.variable.set_value(jnp.asarray(converted, dtype=current.dtype))
    return LoadResult(missing=[] if strict else missing, unexpected=[] if strict else unexpected)


def export_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The inverse of :func:`load_torch_state_dict`: PyTorch names and layouts, float32 numpy.

    BatchNorm layers also get ``num_batches_tracked`` (int64 0), so the keys equal those of the
    PyTorch model's ``state_dict()``.
    """
    out: dict[str, np.ndarray] = {}
    for s in torch_slots(model):
        out[s.key] = np.ascontiguousarray(s.to_torch(np.asarray(s.variable.get_value(), np.float32)))
        if s.key.endswith(".running_var"):
            out[s.key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out
