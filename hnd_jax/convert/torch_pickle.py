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
called, with an :class:`~hnd_jax.errors.HndError` naming the global and the file. Nothing from torch
is imported.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from hnd_jax.errors import HndError

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


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Marker for a ``torch.<Name>Storage`` class: only its element dtype matters to us."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class _TypeMarker:
    """Marker for ``torch.Tensor`` / ``torch.nn.Parameter`` when they appear as arguments."""

    name: str


_TENSOR_TYPES = (_TypeMarker("torch.Tensor"), _TypeMarker("torch.nn.parameter.Parameter"))


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
    """A tensor whose storage bytes may not have been read yet (legacy files store them last)."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def materialize(self) -> np.ndarray:
        data = self.storage.array()
        itemsize = data.dtype.itemsize
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise _Corrupt(f"tensor with negative size/stride/offset {self.size}/{self.stride}/{self.offset}")
        if len(self.size) != len(self.stride):
            raise _Corrupt(f"tensor size {self.size} and stride {self.stride} differ in length")
        if 0 in self.size:
            return np.zeros(self.size, dtype=data.dtype)
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride))
        if last >= data.shape[0]:
            raise _Corrupt(
                f"tensor of size {self.size} (offset {self.offset}, stride {self.stride}) reaches element "
                f"{last} of a storage with {data.shape[0]}"
            )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=tuple(st * itemsize for st in self.stride), writeable=False
        )
        return np.array(view, copy=True, order="C")  # own, C-ordered memory: never aliases a shared storage


class _Corrupt(Exception):
    """Internal: the file is not a well-formed checkpoint (turned into a one-line HndError)."""


# --------------------------------------------------------------------------------------------
# Our replacements for torch's rebuild functions. Arguments are checked: they come from the file.
# --------------------------------------------------------------------------------------------


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _Corrupt(f"tensor {what} is {value!r}, expected a tuple of ints")
    return tuple(int(v) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise _Corrupt(f"tensor storage is {type(storage).__name__}, expected a storage record")
    if not isinstance(storage_offset, int):
        raise _Corrupt(f"tensor storage offset is {storage_offset!r}, expected an int")
    return _LazyTensor(storage, int(storage_offset), _int_tuple(size, "size"), _int_tuple(stride, "stride"))


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
    if not any(func is f for f in _REBUILD_FUNCTIONS):
        raise _Corrupt(f"tensor rebuilt with {func!r}, expected a tensor rebuild function")
    if new_type not in _TENSOR_TYPES:
        raise _Corrupt(f"tensor of type {new_type!r}: only torch.Tensor and Parameter are supported")
    if not isinstance(args, tuple):
        raise _Corrupt("tensor rebuild arguments are not a tuple")
    return func(*args)


def _torch_size(*args: Any) -> tuple[int, ...]:
    if len(args) == 0:
        return ()
    return _int_tuple(args[0], "size")


class _Sealed:
    """A callable handed to the unpickler: it forwards calls and cannot be modified.

    A pickle can apply ``BUILD`` to any object it holds (setting attributes or ``__dict__`` items);
    on a plain function that would let one file change our functions' defaults for every later
    load. This wrapper has no ``__dict__`` and refuses attribute assignment.
    """

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Any, name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setattr__(self, key: str, value: Any) -> None:
        raise _Corrupt(f"the pickle tries to modify '{self._name}'")

    def __repr__(self) -> str:
        return f"<{self._name}>"


_REBUILD_TENSOR = _Sealed(_rebuild_tensor, "torch._utils._rebuild_tensor")
_REBUILD_TENSOR_V2 = _Sealed(_rebuild_tensor_v2, "torch._utils._rebuild_tensor_v2")
_REBUILD_PARAMETER = _Sealed(_rebuild_parameter, "torch._utils._rebuild_parameter")
_REBUILD_PARAMETER_WITH_STATE = _Sealed(_rebuild_parameter_with_state, "torch._utils._rebuild_parameter_with_state")
_REBUILD_FUNCTIONS = (_REBUILD_TENSOR, _REBUILD_TENSOR_V2, _REBUILD_PARAMETER, _REBUILD_PARAMETER_WITH_STATE)

#: Every global a checkpoint pickle may name, and what it resolves to. Nothing else is reachable.
_ALLOWED_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": OrderedDict,  # a built-in type: a pickle cannot set its attributes
    "torch._utils._rebuild_tensor": _REBUILD_TENSOR,
    "torch._utils._rebuild_tensor_v2": _REBUILD_TENSOR_V2,
    "torch._utils._rebuild_parameter": _REBUILD_PARAMETER,
    "torch._utils._rebuild_parameter_with_state": _REBUILD_PARAMETER_WITH_STATE,
    "torch._tensor._rebuild_from_type_v2": _Sealed(_rebuild_from_type_v2, "torch._tensor._rebuild_from_type_v2"),
    "torch.Size": _Sealed(_torch_size, "torch.Size"),
    "torch.Tensor": _TENSOR_TYPES[0],
    "torch.nn.parameter.Parameter": _TENSOR_TYPES[1],
}
_ALLOWED_GLOBALS.update({f"torch.{name}": _StorageType(name, dt) for name, dt in STORAGE_DTYPES.items()})


# --------------------------------------------------------------------------------------------
# The restricted unpickler.
# --------------------------------------------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS` and hands storages out by key.

    ``encoding='latin1'`` reads Python 2 pickles (old checkpoints) the way ``torch.load`` advises.
    """

    def __init__(self, fh: IO[bytes], path: Path, storages: dict[str, _Storage] | None, legacy: bool):
        super().__init__(fh, encoding="latin1")
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
            return _ALLOWED_GLOBALS[qualified]
        except KeyError:
            raise HndError(
                f"{self._path}: refusing to load: the pickle asks for the global '{qualified}', "
                "which is not a tensor, storage or dict (hnd never executes code from a checkpoint)",
                kind="unsafe_pickle",
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        if self._storages is None:
            raise _Corrupt(f"unexpected persistent id {pid!r} outside the object pickle")
        if not isinstance(pid, tuple) or not pid:
            raise _Corrupt(f"persistent id {pid!r} is not a tuple")
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise HndError(
                f"{self._path}: refusing to load: the pickle refers to a '{typename}' record; only tensors "
                "and storages are supported (save a state_dict, not a whole module)",
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
        if not isinstance(storage_type, _StorageType):
            raise _Corrupt(f"storage type {storage_type!r} is not a torch storage class")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if not isinstance(numel, int) or numel < 0:
            raise _Corrupt(f"storage '{key}' has element count {numel!r}")
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


def _materialize(obj: Any) -> Any:
    """Replace every lazy tensor in a nested dict/list/tuple structure with its NumPy array."""
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v) for v in obj)
    return obj


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


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl_names = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl_names) != 1:
            raise _Corrupt(f"expected one data.pkl record in the zip, found {len(pkl_names)}")
        prefix = pkl_names[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in names:
            order = zf.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise _Corrupt(f"unknown byteorder record '{order}'")
            big_endian = order == "big"
        storages: dict[str, _Storage] = {}
        unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkl_names[0])), path, storages, legacy=False)
        result = unpickler.load()
        for key, storage in storages.items():
            if storage.base is not None:
                continue
            record = f"{prefix}data/{key}"
            if record not in names:
                raise _Corrupt(f"storage record '{record}' is missing")
            raw = zf.read(record)
            need = storage.numel * storage.dtype.itemsize
            if len(raw) < need:
                raise _Corrupt(f"storage record '{record}' has {len(raw)} bytes, expected {need}")
            storage.data = _native(raw[:need], storage.dtype, big_endian)
    return _materialize(result)


def _read_exact(fh: IO[bytes], n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise _Corrupt(f"file ends inside {what} ({len(data)} of {n} bytes)")
    return data


def _load_legacy(path: Path) -> Any:
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
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
        except Exception as exc:  # not a pickle at all
            raise HndError(
                f"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy torch pickle: {_short(exc)})"
            ) from None
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
    return _materialize(result)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


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
            KeyError, IndexError, AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise HndError(
            f"{path}: truncated or corrupt PyTorch checkpoint ({type(exc).__name__}: {_short(exc)})", kind="corrupt"
        ) from None


#: The globals a checkpoint pickle may name (everything else is refused).
ALLOWED_GLOBALS: tuple[str, ...] = tuple(sorted(_ALLOWED_GLOBALS))
