"""Minimal CUDA device arrays for the GPU tests that need no CUDA build of torch and no cupy.

:class:`DeviceArray` owns ``cudaMalloc`` memory (through ctypes and the CUDA toolkit's ``libcudart``) and
exports it with ``__dlpack__`` (a legacy ``"dltensor"`` capsule, what edgert's bindings read), so the raw
bindings of ``edgert._edgert_cuda`` can be checked on a GPU by a virtual environment holding the CPU torch
wheel. Copies go through ``cudaMemcpy`` on the legacy default stream, after the kernels the bindings launch
there (stream 0). Test helper only: no pooling, no streams, contiguous arrays.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

import numpy as np

_H2D, _D2H = 1, 2
_KDL_CUDA = 2
_DL_CODES = {"i": 0, "u": 1, "f": 2, "c": 5}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]
_NO_DELETER = _DELETER()  # the DeviceArray owns the memory; the capsule only borrows it

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _load_cudart() -> Optional[ctypes.CDLL]:
    names = [ctypes.util.find_library("cudart"), "libcudart.so.13", "libcudart.so.12", "libcudart.so",
             "/usr/local/cuda/lib64/libcudart.so"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.cudaMemset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        return lib
    return None


_CUDART = _load_cudart()


def unavailable_reason() -> Optional[str]:
    """None when device arrays can be made here, else why not."""
    if _CUDART is None:
        return "libcudart not found (CUDA toolkit's lib64 not on the loader path)"
    count = ctypes.c_int(0)
    err = _CUDART.cudaGetDeviceCount(ctypes.byref(count))
    if err != 0:
        return f"cudaGetDeviceCount failed: {_CUDART.cudaGetErrorString(err).decode()}"
    return None if count.value > 0 else "no CUDA device"


def _check(err: int, what: str) -> None:
    if err != 0:
        assert _CUDART is not None
        raise RuntimeError(f"{what}: {_CUDART.cudaGetErrorString(err).decode()}")


class _Allocation:
    def __init__(self, nbytes: int) -> None:
        assert _CUDART is not None
        self.ptr = ctypes.c_void_p()
        _check(_CUDART.cudaMalloc(ctypes.byref(self.ptr), max(nbytes, 1)), "cudaMalloc")

    def __del__(self) -> None:
        if _CUDART is not None and self.ptr:
            _CUDART.cudaFree(self.ptr)


class DeviceArray:
    """A contiguous array in device memory: ``shape``, numpy ``dtype``, ``__dlpack__``, :meth:`numpy`."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, allocation: Optional[_Allocation] = None,
                 offset: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self._alloc = allocation if allocation is not None else _Allocation(self.nbytes)
        self._offset = offset
        self._shape_c = (ctypes.c_int64 * max(len(self.shape), 1))(*self.shape)
        code = _DL_CODES[self.dtype.kind]
        self._managed = _DLManagedTensor(
            _DLTensor(self._alloc.ptr.value, _DLDevice(_KDL_CUDA, 0), len(self.shape),
                      _DLDataType(code, self.dtype.itemsize * 8, 1), self._shape_c, None, offset),
            None, _NO_DELETER)

    @classmethod
    def from_numpy(cls, a: np.ndarray) -> DeviceArray:
        a = np.ascontiguousarray(a)
        out = cls(a.shape, a.dtype)
        assert _CUDART is not None
        if a.nbytes:
            _check(_CUDART.cudaMemcpy(out._ptr(), a.ctypes.data, a.nbytes, _H2D), "cudaMemcpy to the device")
        return out

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray:
        """Filled with 0xFF bytes (NaN for floats), so that an element a kernel forgot to write shows."""
        out = cls(shape, dtype)
        assert _CUDART is not None
        if out.nbytes:
            _check(_CUDART.cudaMemset(out._ptr(), 0xFF, out.nbytes), "cudaMemset")
        return out

    def _ptr(self) -> int:
        return int(self._alloc.ptr.value or 0) + self._offset

    def numpy(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        assert _CUDART is not None
        if self.nbytes:
            _check(_CUDART.cudaMemcpy(out.ctypes.data, self._ptr(), self.nbytes, _D2H), "cudaMemcpy to the host")
        return out

    def view_bytes(self, offset: int, nbytes: int, dtype: np.dtype) -> DeviceArray:
        """A 1-D view of ``nbytes`` bytes at byte ``offset`` of this (uint8) array, as ``dtype``."""
        dtype = np.dtype(dtype)
        assert self.dtype == np.uint8 and 0 <= offset and offset + nbytes <= self.nbytes
        assert nbytes % dtype.itemsize == 0
        return DeviceArray((nbytes // dtype.itemsize,), dtype, self._alloc, self._offset + offset)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (_KDL_CUDA, 0)

    def __dlpack__(self, stream: object = None, **_: object) -> object:
        return _capsule_new(ctypes.addressof(self._managed), b"dltensor", None)
