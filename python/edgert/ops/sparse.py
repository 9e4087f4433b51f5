"""Sparse delta patching: apply (and read back) a sparse update to a flat weight buffer.

Conventions shared by every backend:

* ``weights``: float32 or float16 [P], contiguous, patched in place.
* ``indices``: int32 or uint32 [K], strictly increasing, each in [0, P).
* ``values``: float32 or float16 [K].
* mode "add": ``weights[indices[k]] = round(float(weights[indices[k]]) + float(values[k]))``,
  the sum taken in float32 and rounded once (to nearest even) to the weights' dtype;
  mode "set": ``weights[indices[k]] = values[k]`` converted to the weights' dtype.
* Every index is checked before anything is written: on ValueError (out of range,
  unsorted or duplicate) the weights are byte-identical to before.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

import edgert._edgert as _edgert
from edgert.ops._dispatch import ArrayLike, Backend, as_tensor, check_tensor, native, resolve, same_device, stream_of

_FLOATS = (torch.float32, torch.float16)
_INDICES = (torch.int32, torch.uint32)
_MODES = {"add": 0, "set": 1}
Mode = Union[str, int]


def _mode_name(mode: Mode) -> str:
    if isinstance(mode, str) and mode in _MODES:
        return mode
    if isinstance(mode, int) and not isinstance(mode, bool) and mode in _MODES.values():
        return "add" if mode == 0 else "set"
    raise ValueError(f"mode: expected 'add' or 'set' (or 0 / 1), got {mode!r}")


def _validate_indices(op: str, indices: torch.Tensor, size: int) -> torch.Tensor:
    """int64 copy of ``indices`` after the same checks as the native kernels (first bad position wins)."""
    idx = indices.to(torch.int64)
    if idx.numel() == 0:
        return idx
    out_of_range = (idx < 0) | (idx >= size)
    unsorted = torch.zeros_like(out_of_range)
    unsorted[1:] = idx[1:] <= idx[:-1]
    bad = torch.nonzero(out_of_range | unsorted)
    if bad.numel():
        pos = int(bad[0, 0])
        value = int(idx[pos])
        if bool(out_of_range[pos]):
            raise ValueError(f"{op}: index {value} at position {pos} is out of range [0, {size})")
        raise ValueError(f"{op}: indices must be strictly increasing: position {pos} holds {value} "
                         f"after {int(idx[pos - 1])}")
    return idx


def sparse_patch_reference(weights: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                           mode: Mode = "add") -> None:
    """Pure-PyTorch reference of :func:`sparse_patch` (in place, same checks and rounding)."""
    name = _mode_name(mode)
    idx = _validate_indices("sparse_patch", indices, weights.shape[0])
    if idx.numel() == 0:
        return
    if name == "add":
        weights[idx] = (weights[idx].to(torch.float32) + values.to(torch.float32)).to(weights.dtype)
    elif values.dtype == weights.dtype:
        weights[idx] = values
    else:
        weights[idx] = values.to(torch.float32).to(weights.dtype)


def sparse_gather_reference(weights: torch.Tensor, indices: torch.Tensor,
                            out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Pure-PyTorch reference of :func:`sparse_gather`."""
    dtype = weights.dtype if out_dtype is None else out_dtype
    idx = _validate_indices("sparse_gather", indices, weights.shape[0])
    return weights[idx].to(dtype)


def _fast_path_ok(weights: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> bool:
    """True for well-formed 1-D contiguous inputs on one device, none requiring grad
    (anything else takes the checked path)."""
    return (not (weights.requires_grad or indices.requires_grad or values.requires_grad)
            and weights.dtype in _FLOATS and indices.dtype in _INDICES and values.dtype in _FLOATS
            and weights.dim() == 1 and indices.dim() == 1 and values.shape == indices.shape
            and weights.is_contiguous() and indices.is_contiguous() and values.is_contiguous()
            and weights.device == indices.device == values.device)


def _check(weights: torch.Tensor, indices: torch.Tensor) -> torch.device:
    check_tensor(weights, "weights", _FLOATS, (None,), "[P]")
    check_tensor(indices, "indices", _INDICES, (None,), "[K]")
    return same_device({"weights": weights, "indices": indices})


def sparse_patch(weights: ArrayLike, indices: ArrayLike, values: ArrayLike, mode: Mode = "add", *,
                 backend: Backend = "auto") -> None:
    """Applies a sparse update to ``weights`` in place.

    Args:
        weights: float32|float16 [P] (torch tensor or NumPy array; NumPy arrays are
            patched in place through a zero-copy view).
        indices: int32|uint32 [K], strictly increasing, each < P.
        values: float32|float16 [K].
        mode: "add" (0) or "set" (1); see the module docstring for the rounding.
        backend: "auto" (CUDA kernel for CUDA tensors, C++ for CPU), "cuda", "cpu" or "torch".

    Raises:
        TypeError: a dtype is not one of the above.
        ValueError: a shape/device mismatch, a bad mode, or an index out of range,
            unsorted or repeated; the weights are then unchanged.
    """
    weights, indices, values = as_tensor(weights, "weights"), as_tensor(indices, "indices"), as_tensor(values, "values")
    name = mode if mode == "add" or mode == "set" else _mode_name(mode)
    if backend in ("auto", "cpu") and _fast_path_ok(weights, indices, values) and weights.device.type == "cpu":
        # The common CPU call, where microseconds matter for small patches: NumPy views
        # cross into the binding several times faster than torch's Python-level
        # __dlpack__, and the binding re-checks dtype, shape and contiguity in C++.
        if indices.shape[0]:  # (an empty update has nothing to check or write)
            _edgert.sparse_patch(weights.numpy(), indices.numpy(), values.numpy(), name, 0)
        return
    device = _check(weights, indices)
    check_tensor(values, "values", _FLOATS, (indices.shape[0],), "[K]")
    same_device({"weights": weights, "values": values})
    chosen = resolve(backend, device, (weights, indices, values))
    if chosen == "torch":
        sparse_patch_reference(weights, indices, values, name)
        return
    native(chosen).sparse_patch(weights, indices, values, name, stream_of(weights))


def sparse_gather(weights: ArrayLike, indices: ArrayLike, *, out_dtype: Optional[torch.dtype] = None,
                  backend: Backend = "auto") -> torch.Tensor:
    """Reads ``weights[indices]`` (for undo and verification of a patch).

    Args:
        weights: float32|float16 [P].
        indices: int32|uint32 [K], strictly increasing, each < P.
        out_dtype: torch.float32 or torch.float16; default the weights' dtype.
        backend: "auto", "cuda", "cpu" or "torch".

    Returns:
        out_dtype [K] on the weights' device.
    """
    weights, indices = as_tensor(weights, "weights"), as_tensor(indices, "indices")
    device = _check(weights, indices)
    dtype = weights.dtype if out_dtype is None else out_dtype
    if dtype not in _FLOATS:
        raise TypeError(f"out_dtype: expected torch.float32 or torch.float16, got {out_dtype!r}")
    chosen = resolve(backend, device, (weights, indices))
    if chosen == "torch":
        return sparse_gather_reference(weights, indices, dtype)
    if chosen == "cpu" and not (weights.requires_grad or indices.requires_grad):
        out = torch.empty(indices.shape[0], dtype=dtype)
        if indices.shape[0]:
            _edgert.sparse_gather(weights.numpy(), indices.numpy(), out.numpy(), 0)  # see sparse_patch
        return out
    out = torch.empty(indices.shape[0], dtype=dtype, device=device)
    native(chosen).sparse_gather(weights, indices, out, stream_of(weights))
    return out
