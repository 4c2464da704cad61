"""Read PyTorch ``.pt``/``.pth``/``.bin`` files without torch and without executing pickled code.

A PyTorch checkpoint is a pickle. Unpickling runs whatever callables the file names, so loading an
untrusted checkpoint with :func:`pickle.load` (or ``torch.load(weights_only=False)``) can run
arbitrary code. This module reads both on-disk formats with a *restricted* unpickler:

* the **zip format** (``torch.save`` since 1.6): ``<prefix>/data.pkl`` is the object pickle, every
  storage is a separate record ``<prefix>/data/<key>``, and ``<prefix>/byteorder`` says whether the
  storages are little- or big-endian (absent in old files: little);
* the **legacy format** (``_use_new_zipfile_serialization=False``, and every file from before 1.6,
  e.g. facenet-pytorch's MTCNN weights): five things back to back in one stream -- a pickled magic
  number, a pickled protocol version, a pickled ``sys_info`` dict, the object pickle, a pickled list of
  storage keys -- then, for each key in that order, an int64 element count and the raw little-endian
  bytes of the storage.

In both formats a tensor is pickled as a call to ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)`` whose ``storage`` argument is a *persistent id* naming a storage record. The
unpickler resolves every global through :meth:`_RestrictedUnpickler.find_class`, which only knows:

* ``collections.OrderedDict`` (state dicts are ordered dicts);
* the tensor/parameter rebuild functions, replaced by our own functions that build NumPy arrays;
* the ``torch.*Storage`` dtype classes, replaced by markers that only carry a NumPy dtype;
* ``torch.Size`` (a tuple), ``torch.Tensor`` / ``torch.nn.parameter.Parameter`` as type markers.

Any other global (``os.system``, ``builtins.eval``, a model class...) is refused *before* it could be
called, with an :class:`~hnd_jax.errors.HndError` naming the global and the file, and saying how to
re-save the file (``torch.save(model.state_dict(), f)``). Nothing from torch is imported.

Bounded work and memory (DESIGN.md §7): every claim of the file is checked before anything is
allocated. A tensor must fit in its storage and cannot have more elements than its storage holds
(a stride-0 "expanded" tensor of 25000 x 25000 from one element is refused, not materialised);
a zip storage record is inflated only up to the bytes its tensors use, and its declared size must
be possible for its compression (stored: equal; deflated: at most 1032:1); ``data.pkl`` is at most
:data:`MAX_PICKLE_BYTES`; containers nest at most :data:`MAX_DEPTH` levels; the arrays handed out
together hold at most :data:`MAX_COPY_FACTOR` times the storage bytes (tied weights share storage).
Markers handed to the unpickler are created fresh for every load and refuse ``BUILD``.
Float8 tensors (``torch.float8_e4m3fn`` / ``float8_e5m2``, saved with ``_rebuild_tensor_v3``) come
out as ``ml_dtypes`` float8 arrays.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import ml_dtypes
import numpy as np

from hnd_jax.capped_io import CappedReader
from hnd_jax.errors import HndError, one_line

__all__ = ["load_torch_file", "is_torch_zip", "LEGACY_MAGIC_NUMBER"]

#: First object of a legacy-format file (torch.serialization.MAGIC_NUMBER).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C

#: ``torch.<Name>`` storage classes and the element type of their data.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}


# --------------------------------------------------------------------------------------------
# Stand-ins for the torch objects a checkpoint pickle refers to.
# --------------------------------------------------------------------------------------------


class _Frozen:
    """Objects a pickle may hold but never modify: attribute assignment, deletion and BUILD
    (``__setstate__``) raise :class:`_Corrupt`, so one file cannot change state a later load sees.
    Subclasses set their slots with ``object.__setattr__`` and name themselves in ``_label``."""

    __slots__ = ()

    def _label(self) -> str:
        raise NotImplementedError

    def __setattr__(self, key: str, value: Any) -> None:
        raise _Corrupt(f"the pickle tries to modify '{self._label()}'")

    def __delattr__(self, key: str) -> None:
        raise _Corrupt(f"the pickle tries to modify '{self._label()}'")

    def __setstate__(self, state: Any) -> None:
        raise _Corrupt(f"the pickle tries to modify '{self._label()}' (BUILD on an allowed global)")


class _Marker(_Frozen):
    """An immutable stand-in for a torch class or dtype: equal by kind and name, refuses BUILD.

    ``dtype`` is the NumPy element type of a storage class or a ``torch.<dtype>`` object (None for
    the tensor type markers). Instances are made fresh for every load (:func:`_allowed_globals`).
    """

    __slots__ = ("kind", "name", "dtype")

    def __init__(self, kind: str, name: str, dtype: np.dtype | None = None):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def _label(self) -> str:
        return self.name


    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Marker) and (self.kind, self.name) == (other.kind, other.name)

    def __hash__(self) -> int:
        return hash((self.kind, self.name))

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _StorageType(name: str, dtype: np.dtype) -> _Marker:  # noqa: N802 - reads like the class it stands for
    return _Marker("storage", name, dtype)


def _TypeMarker(name: str) -> _Marker:  # noqa: N802
    return _Marker("type", name)


_TENSOR_TYPE_NAMES = ("torch.Tensor", "torch.nn.parameter.Parameter")
_TENSOR_TYPES = tuple(_TypeMarker(n) for n in _TENSOR_TYPE_NAMES)  # for comparisons only (equal by name)

#: ``torch.<dtype>`` objects (the ``dtype`` argument of ``_rebuild_tensor_v3``) and their NumPy types.
TORCH_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}

#: Largest ``data.pkl`` record read from a zip checkpoint (a state dict's pickle is a few MB).
MAX_PICKLE_BYTES = 256 << 20
#: Deepest nesting of dicts/lists/tuples accepted (state dicts nest 1-3 levels).
MAX_DEPTH = 100
#: The arrays of one file may hold at most this many times its storage bytes (plus 1 MiB).
MAX_COPY_FACTOR = 4
#: Deflate cannot expand more than about 1032:1.
MAX_DEFLATE_RATIO = 1032


@dataclass
class _Storage:
    """A storage named by a persistent id; its bytes are attached once they have been read.

    ``base``/``base_offset`` describe legacy *storage views* (files from torch < 1.0), which share
    the data of a root storage from an element offset on.
    """

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    base: "_Storage | None" = None
    base_offset: int = 0

    def array(self) -> np.ndarray:
        """The storage's elements as a 1-D array (after the bytes were attached)."""
        if self.base is not None:
            return self.base.array()[self.base_offset : self.base_offset + self.numel]
        if self.data is None:
            raise _Corrupt(f"storage '{self.key}' is referenced but its data was never stored")
        return self.data


@dataclass
class _LazyTensor:
    """A tensor whose storage bytes may not have been read yet (legacy files store them last).

    ``dtype`` is set for ``_rebuild_tensor_v3`` tensors over an untyped (byte) storage: offset,
    size and stride then count elements of ``dtype``. :func:`_checked_tensor` validated the
    geometry against the storage's element count when the tensor was rebuilt.
    """

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: np.dtype | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def element_dtype(self) -> np.dtype:
        return self.dtype if self.dtype is not None else self.storage.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.size) * self.element_dtype.itemsize

    def reach(self) -> int:
        """Elements of the storage (in ``element_dtype`` units) this tensor needs: last index + 1."""
        if 0 in self.size:
            return 0
        return self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride)) + 1

    def materialize(self) -> np.ndarray:
        data = self.storage.array()
        if self.dtype is not None and self.dtype != data.dtype:
            usable = data.shape[0] - data.shape[0] % self.dtype.itemsize
            data = data[:usable].view(self.dtype)
        itemsize = data.dtype.itemsize
        if 0 in self.size:
            return np.zeros(self.size, dtype=data.dtype)
        if self.reach() > data.shape[0]:
            raise _Corrupt(
                f"tensor of size {self.size} (offset {self.offset}, stride {self.stride}) reaches element "
                f"{self.reach() - 1} of a storage with {data.shape[0]}"
            )
        # Stride over unsigned ints of the same width: as_strided goes through __array_interface__, which
        # cannot name ml_dtypes' float8 types.
        bits = data.view(np.dtype(f"u{itemsize}")) if itemsize in (1, 2, 4, 8) else data
        view = np.lib.stride_tricks.as_strided(
            bits[self.offset :], shape=self.size, strides=tuple(st * itemsize for st in self.stride), writeable=False
        )
        # own, C-ordered memory: never aliases a shared storage
        return np.array(view, copy=True, order="C").view(data.dtype)


def _checked_tensor(tensor: _LazyTensor) -> _LazyTensor:
    """Refuse a tensor whose geometry its storage cannot honestly back (before any data is read)."""
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    if any(n < 0 for n in size) or any(st < 0 for st in stride) or offset < 0:
        raise _Corrupt(f"tensor with negative size/stride/offset {size}/{stride}/{offset}")
    if len(size) != len(stride):
        raise _Corrupt(f"tensor size {size} and stride {stride} differ in length")
    if len(size) > 64:
        raise _Corrupt(f"tensor with {len(size)} dimensions")
    storage = tensor.storage
    available = storage.numel
    dtype = tensor.element_dtype
    if tensor.dtype is not None and storage.dtype != dtype:
        available = storage.numel * storage.dtype.itemsize // dtype.itemsize
    if 0 in size:
        return tensor
    elements = math.prod(size)
    if elements > available:
        raise _Corrupt(
            f"tensor of size {size} with stride {stride} has {elements} elements but its storage holds "
            f"{available}: size/stride inconsistent with the storage (an expanded or overlapping view); "
            "re-save it with tensor.contiguous()"
        )
    if tensor.reach() > available:
        raise _Corrupt(
            f"tensor of size {size} (offset {offset}, stride {stride}) reaches element {tensor.reach() - 1} "
            f"of a storage with {available}"
        )
    return tensor


class _Corrupt(Exception):
    """Internal: the file is not a well-formed checkpoint (turned into a one-line HndError)."""


# --------------------------------------------------------------------------------------------
# Our replacements for torch's rebuild functions. Arguments are checked: they come from the file.
# --------------------------------------------------------------------------------------------


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Corrupt(f"tensor {what} is {str(value)[:60]}, expected a tuple of ints")
    return tuple(int(v) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: np.dtype | None = None) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise _Corrupt(f"tensor storage is {type(storage).__name__}, expected a storage record")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise _Corrupt(f"tensor storage offset is {str(storage_offset)[:40]}, expected an int")
    tensor = _LazyTensor(storage, int(storage_offset), _int_tuple(size, "size"), _int_tuple(stride, "stride"), dtype)
    return _checked_tensor(tensor)


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    dtype: Any = None,
    metadata: Any = None,
) -> _LazyTensor:
    """``torch._utils._rebuild_tensor_v3``: an untyped (byte) storage plus a ``torch.<dtype>``."""
    if not (isinstance(dtype, _Marker) and dtype.kind == "dtype"):
        raise _Corrupt(f"tensor dtype is {str(dtype)[:40]}, expected a torch dtype")
    return _rebuild_tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _LazyTensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    if not isinstance(data, _LazyTensor):
        raise _Corrupt(f"parameter data is {type(data).__name__}, expected a tensor")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> Any:
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2``: a tensor (subclass) with Python state.

    Only plain tensors and parameters are accepted; ``func`` must be one of our own rebuild
    functions (it was resolved by ``find_class``, so it cannot be anything else that is callable).
    """
    if not (isinstance(func, _Sealed) and func._name in _REBUILD_NAMES):
        raise _Corrupt(f"tensor rebuilt with {str(func)[:60]}, expected a tensor rebuild function")
    if new_type not in _TENSOR_TYPES:
        raise HndError(
            f"the checkpoint holds a tensor subclass {str(new_type)[:60]}; only torch.Tensor and Parameter are "
            "supported: re-save the weights with torch.save({k: v.detach().clone() for k, v in "
            "model.state_dict().items()}, f)", kind="unsafe_pickle")
    if not isinstance(args, tuple):
        raise _Corrupt("tensor rebuild arguments are not a tuple")
    return func(*args)


def _torch_size(*args: Any) -> tuple[int, ...]:
    if len(args) == 0:
        return ()
    return _int_tuple(args[0], "size")


class _Sealed(_Frozen):
    """A callable handed to the unpickler: it forwards calls and cannot be modified.

    A pickle can apply ``BUILD`` to any object it holds (setting attributes or ``__dict__`` items);
    on a plain function that would let one file change our functions' defaults for every later
    load. This wrapper has no ``__dict__`` and refuses attribute assignment.
    """

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Any, name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def _label(self) -> str:
        return self._name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


    def __repr__(self) -> str:
        return f"<{self._name}>"


_REBUILD_NAMES = frozenset({
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
})


def _allowed_globals() -> dict[str, Any]:
    """Every global a checkpoint pickle may name, and what it resolves to; nothing else is reachable.

    Built anew for every load, from immutable objects, so no file can change what a later load sees.
    """
    allowed: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,  # a built-in type: a pickle cannot set its attributes
        "torch._utils._rebuild_tensor": _Sealed(_rebuild_tensor, "torch._utils._rebuild_tensor"),
        "torch._utils._rebuild_tensor_v2": _Sealed(_rebuild_tensor_v2, "torch._utils._rebuild_tensor_v2"),
        "torch._utils._rebuild_tensor_v3": _Sealed(_rebuild_tensor_v3, "torch._utils._rebuild_tensor_v3"),
        "torch._utils._rebuild_parameter": _Sealed(_rebuild_parameter, "torch._utils._rebuild_parameter"),
        "torch._utils._rebuild_parameter_with_state": _Sealed(
            _rebuild_parameter_with_state, "torch._utils._rebuild_parameter_with_state"),
        "torch._tensor._rebuild_from_type_v2": _Sealed(_rebuild_from_type_v2, "torch._tensor._rebuild_from_type_v2"),
        "torch.Size": _Sealed(_torch_size, "torch.Size"),
        "torch.storage.UntypedStorage": _StorageType("UntypedStorage", np.dtype(np.uint8)),
    }
    allowed.update({name: _TypeMarker(name) for name in _TENSOR_TYPE_NAMES})
    allowed.update({f"torch.{name}": _StorageType(name, dt) for name, dt in STORAGE_DTYPES.items()})
    allowed.update({f"torch.{name}": _Marker("dtype", f"torch.{name}", dt) for name, dt in TORCH_DTYPES.items()})
    return allowed


#: How to fix a refused file, appended to every refusal.
RESAVE_HINT = (
    "re-save the weights alone with torch.save(model.state_dict(), f) (for a training checkpoint: "
    "torch.save(ckpt['model'], f) or the entry that holds the state_dict)"
)


# --------------------------------------------------------------------------------------------
# The restricted unpickler.
# --------------------------------------------------------------------------------------------


def _refuse_out_of_band(self: Any) -> None:
    raise _Corrupt("the pickle uses a bytearray or out-of-band buffer, which torch never writes")


class _RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python unpickler, on purpose
    """Unpickler that resolves only :func:`_allowed_globals` and hands storages out by key.

    ``encoding='latin1'`` reads Python 2 pickles (old checkpoints) the way ``torch.load`` advises.

    It is the pure-Python unpickler, not the C one: the C unpickler allocates the length a
    ``BINBYTES`` opcode claims *before* reading (4 GB from a 1 kB file), the Python one reads
    through ``file.read(n)``, which our files cap at what they hold. ``BYTEARRAY8`` (which
    preallocates in both) and out-of-band buffers are refused; torch writes neither. A checkpoint's
    pickle is small (metadata only: the tensor data lives elsewhere), so speed does not matter here.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001
    for _opcode in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_opcode[0]] = _refuse_out_of_band
    del _opcode

    def __init__(self, fh: IO[bytes], path: Path, storages: dict[str, _Storage] | None, legacy: bool):
        super().__init__(fh, encoding="latin1")
        self._allowed = _allowed_globals()  # fresh, immutable markers for this load only
        self._path = path
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class docstring
        # Python 2 names (protocol < 3 pickles write e.g. '__builtin__'): show and look up the modern name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qualified = f"{module}.{name}"
        try:
            return self._allowed[qualified]
        except KeyError:
            unsupported = _unsupported_dtype(module, name)
            if unsupported:
                raise HndError(
                    f"{self._path}: a tensor here has an unsupported dtype, {unsupported} (the pickle names "
                    f"'{qualified[:120]}'); hnd reads {', '.join(TORCH_DTYPES)}: re-save the weights as real "
                    "floating-point tensors (e.g. {k: v.real.float() for k, v in state_dict.items()})",
                    kind="unsupported_dtype",
                ) from None
            raise HndError(
                f"{self._path}: refusing to load: the pickle asks for the global '{qualified[:120]}', "
                f"which is not a tensor, storage or dict ({_what_it_is(module, name)}; hnd never executes code "
                f"from a checkpoint): {RESAVE_HINT}",
                kind="unsafe_pickle",
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        if self._storages is None:
            raise _Corrupt(f"unexpected persistent id {str(pid)[:60]} outside the object pickle")
        if not isinstance(pid, tuple) or not pid:
            raise _Corrupt(f"persistent id {str(pid)[:60]} is not a tuple")
        typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise HndError(
                f"{self._path}: refusing to load: the pickle refers to a '{str(typename)[:40]}' record; only "
                f"tensors and storages are supported: {RESAVE_HINT}",
                kind="unsafe_pickle",
            )
        if self._legacy:
            if len(pid) != 6:
                raise _Corrupt(f"legacy storage id has {len(pid)} fields, expected 6")
            _, storage_type, key, _location, numel, view_metadata = pid
        else:
            if len(pid) != 5:
                raise _Corrupt(f"storage id has {len(pid)} fields, expected 5")
            _, storage_type, key, _location, numel = pid
            view_metadata = None
        if not (isinstance(storage_type, _Marker) and storage_type.kind == "storage"):
            raise _Corrupt(f"storage type {str(storage_type)[:60]} is not a torch storage class")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise _Corrupt(f"storage '{key[:40]}' has element count {str(numel)[:40]}")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        elif storage.dtype != storage_type.dtype:
            raise _Corrupt(f"storage '{key}' is used as both {storage.dtype} and {storage_type.dtype}")
        if view_metadata is None:
            return storage
        # Legacy storage view (torch < 1.0): (view_key, element offset, element count) into the root.
        if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3):
            raise _Corrupt(f"storage view metadata {view_metadata!r}")
        view_key, offset, view_size = view_metadata
        view_key = view_key.decode("ascii") if isinstance(view_key, bytes) else str(view_key)
        view = self._storages.get(view_key)
        if view is None:
            if not (isinstance(offset, int) and isinstance(view_size, int) and 0 <= offset and offset + view_size <= numel):
                raise _Corrupt(f"storage view {view_metadata!r} outside its storage of {numel} elements")
            view = self._storages[view_key] = _Storage(view_key, storage.dtype, view_size, base=storage, base_offset=offset)
        return view


def _materialize(obj: Any, budget: list[int], depth: int = 0) -> Any:
    """Replace every lazy tensor in a nested dict/list/tuple structure with its NumPy array.

    ``budget`` is ``[bytes left]``: the arrays of one file together may not exceed it. Nesting
    deeper than :data:`MAX_DEPTH` is refused (no RecursionError).
    """
    if depth > MAX_DEPTH:
        raise _Corrupt(f"containers nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, _LazyTensor):
        budget[0] -= obj.nbytes
        if budget[0] < 0:
            raise _Corrupt(
                "its tensors together would take more than "
                f"{MAX_COPY_FACTOR} times the bytes of their storages (many tensors over one storage)"
            )
        return obj.materialize()
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _materialize(v, budget, depth + 1)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialize(v, budget, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, budget, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, budget, depth + 1) for v in obj)
    return obj


def _tensors(obj: Any, depth: int = 0) -> Iterator[_LazyTensor]:
    """Every lazy tensor in a nested structure (bounded depth, like :func:`_materialize`)."""
    if depth > MAX_DEPTH:
        raise _Corrupt(f"containers nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, _LazyTensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, depth + 1)


def _budget(storages: dict[str, "_Storage"]) -> list[int]:
    return [MAX_COPY_FACTOR * sum(s.numel * s.dtype.itemsize for s in storages.values() if s.base is None) + (1 << 20)]


def _native(raw: bytes | memoryview, dtype: np.dtype, big_endian: bool) -> np.ndarray:
    """Bytes of a storage as a 1-D array of ``dtype`` in the machine's byte order."""
    arr = np.frombuffer(raw, dtype=dtype)
    if big_endian and dtype.itemsize > 1:
        swapped = arr.view(np.dtype(f"u{dtype.itemsize}")).byteswap()
        arr = swapped.view(dtype)
    return arr


# --------------------------------------------------------------------------------------------
# The two file formats.
# --------------------------------------------------------------------------------------------


def is_torch_zip(path: str | Path) -> bool:
    """True for the zip-based format (any zip with a ``*/data.pkl`` record)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())


def _check_record_size(info: zipfile.ZipInfo) -> None:
    """The size a zip record declares must be possible for its compression (checked before reading)."""
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise _Corrupt(f"record '{info.filename[:80]}' declares {info.file_size} bytes but stores {info.compress_size}")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
            raise _Corrupt(f"record '{info.filename[:80]}' declares {info.file_size} bytes from {info.compress_size} "
                           "compressed, more than deflate can produce")
    else:
        raise _Corrupt(f"record '{info.filename[:80]}' uses compression method {info.compress_type} "
                       "(torch writes stored records)")


def _read_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int) -> bytes:
    """Exactly ``nbytes`` from the start of a record: never inflates more than that."""
    _check_record_size(info)
    if info.file_size < nbytes:
        raise _Corrupt(f"record '{info.filename[:80]}' has {info.file_size} bytes, expected at least {nbytes}")
    with zf.open(info) as fh:
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise _Corrupt(f"record '{info.filename[:80]}' ends after {len(data)} of {nbytes} bytes")
    return data


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        pkl_names = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl_names) != 1:
            raise _Corrupt(f"expected one data.pkl record in the zip, found {len(pkl_names)}")
        prefix = pkl_names[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in infos:
            info = infos[f"{prefix}byteorder"]
            order = _read_record(zf, info, min(info.file_size, 16)).decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise _Corrupt(f"unknown byteorder record '{order[:16]}'")
            big_endian = order == "big"
        pkl_info = infos[pkl_names[0]]
        if pkl_info.file_size > MAX_PICKLE_BYTES:
            raise _Corrupt(f"data.pkl declares {pkl_info.file_size} bytes (a state dict's pickle is far smaller)")
        storages: dict[str, _Storage] = {}
        unpickler = _RestrictedUnpickler(io.BytesIO(_read_record(zf, pkl_info, pkl_info.file_size)), path, storages,
                                         legacy=False)
        result = unpickler.load()
        # Bytes each storage must supply: up to the last element any of its tensors uses (the metadata's
        # own claim), never more than the storage's declared size.
        need: dict[str, int] = {}
        for tensor in _tensors(result):
            root = tensor.storage if tensor.storage.base is None else tensor.storage.base
            extra = 0 if tensor.storage.base is None else tensor.storage.base_offset * root.dtype.itemsize
            used = extra + tensor.reach() * tensor.element_dtype.itemsize
            need[root.key] = max(need.get(root.key, 0), used)
        for key, storage in storages.items():
            if storage.base is not None:
                continue
            record = f"{prefix}data/{key}"
            info = infos.get(record)
            if info is None:
                raise _Corrupt(f"storage record '{record[:80]}' is missing")
            full = storage.numel * storage.dtype.itemsize
            _check_record_size(info)
            if info.file_size < full:
                raise _Corrupt(f"storage record '{record[:80]}' has {info.file_size} bytes, expected {full}")
            used = min(full, need.get(key, 0))
            used -= used % storage.dtype.itemsize
            # Only the prefix the tensors use is inflated and kept; materialize() never reads past it.
            storage.data = _native(_read_record(zf, info, used), storage.dtype, big_endian)
    return _materialize(result, _budget(storages))


def _read_exact(fh: IO[bytes], n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise _Corrupt(f"file ends inside {what} ({len(data)} of {n} bytes)")
    return data


def _load_legacy(path: Path) -> Any:
    file_size = path.stat().st_size
    with open(path, "rb") as raw_fh:
        fh = CappedReader(raw_fh, file_size)  # a forged string length cannot make read(n) allocate n
        head = fh.read(262)
        if len(head) > 261 and head[257:262] == b"ustar":
            raise HndError(
                f"{path}: a tar-based PyTorch checkpoint (torch < 0.1.10) is not supported; "
                "re-save it with a recent torch: torch.save(torch.load(f), f2)"
            )
        fh.seek(0)

        def plain_load() -> Any:
            return _RestrictedUnpickler(fh, path, None, legacy=True).load()

        try:
            magic = plain_load()
        except HndError:
            raise
        except Exception:  # not a pickle at all
            what = ("a Git LFS pointer, not the file it points to: fetch it with 'git lfs pull'"
                    if head.startswith(b"version https://git-lfs") else
                    "an HTML page (a download link's error page?)" if head.lstrip()[:1] == b"<" else
                    "neither a zip archive nor a legacy torch pickle")
            raise HndError(f"{path}: not a PyTorch checkpoint ({what})") from None
        if magic != LEGACY_MAGIC_NUMBER:
            raise HndError(f"{path}: not a PyTorch checkpoint (a pickle, but without torch's magic number)")
        protocol = plain_load()
        if protocol != 1001:
            raise _Corrupt(f"unsupported legacy protocol version {protocol!r}, expected 1001")
        sys_info = plain_load()
        if not isinstance(sys_info, dict):
            raise _Corrupt("legacy sys_info record is not a dict")
        storages: dict[str, _Storage] = {}
        result = _RestrictedUnpickler(fh, path, storages, legacy=True).load()
        keys = plain_load()
        if not isinstance(keys, list):
            raise _Corrupt("legacy storage key list is not a list")
        for key in keys:
            key = key.decode("ascii") if isinstance(key, bytes) else str(key)
            storage = storages.get(key)
            if storage is None:
                raise _Corrupt(f"legacy storage key '{key}' was not referenced by any tensor")
            (numel,) = struct.unpack("<q", _read_exact(fh, 8, f"the size of storage '{key}'"))
            if numel != storage.numel:
                raise _Corrupt(f"storage '{key}' holds {numel} elements, the pickle said {storage.numel}")
            nbytes = numel * storage.dtype.itemsize
            if nbytes > file_size - fh.tell():  # checked before reading: a bogus count must not allocate
                raise _Corrupt(f"file ends inside the data of storage '{key}' ({nbytes} bytes announced)")
            raw = _read_exact(fh, nbytes, f"the data of storage '{key}'")
            storage.data = _native(raw, storage.dtype, big_endian=False)  # torch writes these little-endian
    return _materialize(result, _budget(storages))



def load_torch_file(path: str | Path) -> Any:
    """Load a PyTorch checkpoint as plain Python containers holding NumPy arrays.

    Tensors and parameters become ``np.ndarray`` (own memory, C order, the tensor's dtype; bfloat16
    as ``ml_dtypes.bfloat16``); ``OrderedDict``/dict/list/tuple/str/int/float stay as they are.
    Raises :class:`HndError` (one line, naming the file) for a missing, truncated or corrupt file
    and for any pickle that names a global outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise HndError(f"{path}: checkpoint file not found")
    try:
        if is_torch_zip(path):
            return _load_zip(path)
        if zipfile.is_zipfile(path):
            raise HndError(f"{path}: a zip archive without a data.pkl record is not a PyTorch checkpoint")
        return _load_legacy(path)
    except HndError:
        raise
    except _Corrupt as exc:
        raise HndError(f"{path}: corrupt PyTorch checkpoint: {exc}", kind="corrupt") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError, TypeError,
            KeyError, IndexError, AttributeError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError,
            NotImplementedError, zipfile.LargeZipFile, OSError, RuntimeError, zlib.error) as exc:
        raise HndError(
            f"{path}: truncated or corrupt PyTorch checkpoint ({type(exc).__name__}: {one_line(exc, 120)})", kind="corrupt"
        ) from None


#: The globals a checkpoint pickle may name (everything else is refused).
ALLOWED_GLOBALS: tuple[str, ...] = tuple(sorted(_allowed_globals()))


#: torch dtype families hnd has no NumPy dtype for: (prefix of the dtype or storage name, words).
_UNSUPPORTED_DTYPE_FAMILIES = (
    ("complex", "complex"), ("cfloat", "complex"), ("cdouble", "complex"), ("chalf", "complex"),
    ("q", "quantized"), ("uint", "unsigned integers wider than 8 bits"), ("int", "sub-byte integers"),
    ("bits", "raw bits"), ("float", "a floating-point format without a NumPy dtype"),
)


def _unsupported_dtype(module: str, name: str) -> str | None:
    """Words for a torch storage class or dtype that hnd does not read (``torch.ComplexFloatStorage``
    and ``torch.complex64``: 'complex'; ``torch.uint16``: 'unsigned integers wider than 8 bits'), or
    None when the global is neither (a model object, optimizer state, ...: refused as such)."""
    if (module, name) == ("torch._utils", "_rebuild_qtensor"):  # how torch saves a quantized tensor
        return "quantized"
    if module != "torch":
        return None
    stem = name[: -len("Storage")] if name.endswith("Storage") else name
    if not stem:
        return None
    words = next((w for prefix, w in _UNSUPPORTED_DTYPE_FAMILIES if stem.lower().startswith(prefix)), None)
    if words is None and name.endswith("Storage"):
        words = "a storage type hnd does not know"
    return words


def _what_it_is(module: str, name: str) -> str:
    """A hint of what a refused global is, for the message."""
    if module.startswith("torch.nn") or module.startswith("torchvision") or module.startswith("timm"):
        return "the file holds a whole model object, not only its weights"
    if module.startswith("torch.optim"):
        return "the file holds optimizer state"
    if module == "argparse" or name == "Namespace":
        return "the file holds an argparse.Namespace (training options)"
    if module.startswith("numpy"):
        return "the file holds NumPy objects"
    return "it is not part of a state_dict"
