"""Backend selection and argument checks shared by every op in :mod:`edgert.ops`.

Order of preference for ``backend="auto"``: the CUDA kernel for CUDA tensors
(when compiled and usable), the C++ CPU kernel for CPU tensors, and the pure
PyTorch reference otherwise. The reference is the ground truth in tests.
"""
from __future__ import annotations

from types import ModuleType
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

from edgert import _edgert
from edgert._info import cuda_available, cuda_module

Backend = Literal["auto", "cuda", "cpu", "torch"]
BACKENDS: tuple[str, ...] = ("cuda", "cpu", "torch")
ArrayLike = Union[torch.Tensor, np.ndarray]

_DTYPE_NAMES = {
    torch.float16: "float16",
    torch.float32: "float32",
    torch.float64: "float64",
    torch.complex64: "complex64",
    torch.complex128: "complex128",
    torch.int32: "int32",
    torch.uint32: "uint32",
    torch.int64: "int64",
    torch.uint8: "uint8",
}


def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """Wraps a NumPy array without copying; passes tensors through."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _contiguous(t: torch.Tensor) -> bool:
    # An empty tensor has no memory to lay out; its strides are arbitrary.
    return t.numel() == 0 or t.is_contiguous()


def describe(t: torch.Tensor) -> str:
    """'float32 [2, 3] on cpu' (plus ' (non-contiguous)')."""
    dtype = _DTYPE_NAMES.get(t.dtype, str(t.dtype).replace("torch.", ""))
    text = f"{dtype} {list(t.shape)} on {t.device}"
    return text if _contiguous(t) else text + " (non-contiguous)"


def check_tensor(
    t: torch.Tensor,
    name: str,
    dtypes: Sequence[torch.dtype],
    shape: Sequence[Optional[int]],
    layout: str,
    device: Optional[torch.device] = None,
) -> None:
    """Raises TypeError (dtype) or ValueError (shape/device/contiguity) naming what was expected.

    ``shape`` entries of None match any size; ``layout`` names the dims, e.g. "[G, Nr, Nt]".
    """
    dtype_ok = t.dtype in dtypes
    shape_ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    device_ok = device is None or t.device == device
    if dtype_ok and shape_ok and device_ok and _contiguous(t):
        return
    want = "|".join(_DTYPE_NAMES.get(d, str(d)) for d in dtypes)
    fixed = "" if all(s is None for s in shape) else " = [" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    where = f" on {device}" if device is not None else ""
    message = f"{name}: expected contiguous {want} {layout}{fixed}{where}, got {describe(t)}"
    if not dtype_ok:
        raise TypeError(message)
    raise ValueError(message)


def resolve(backend: Backend, device: torch.device) -> str:
    """Picks the concrete backend for tensors on ``device``; raises if the request cannot run."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of auto, cuda, cpu, torch; got {backend!r}")
    on_cuda = device.type == "cuda"
    if backend == "auto":
        if on_cuda:
            return "cuda" if cuda_available() else "torch"
        return "cpu" if device.type == "cpu" else "torch"
    if backend == "cuda":
        if not on_cuda:
            raise ValueError(f"backend='cuda' needs CUDA tensors, got tensors on {device}")
        if not cuda_available():
            raise RuntimeError("backend='cuda' requested but the CUDA kernels are not compiled in or no device is usable")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
    return backend


def native(backend: str) -> ModuleType:
    """The extension module implementing ``backend`` ("cpu" or "cuda")."""
    if backend == "cuda":
        module = cuda_module()
        assert module is not None
        return module
    return _edgert


def stream_of(t: torch.Tensor) -> int:
    """The current CUDA stream handle for ``t``'s device (0 for CPU tensors)."""
    if t.device.type != "cuda":
        return 0
    return int(torch.cuda.current_stream(t.device).cuda_stream)


def same_device(name_to_tensor: dict[str, torch.Tensor]) -> torch.device:
    """Returns the common device or raises naming the tensor that differs."""
    items = list(name_to_tensor.items())
    device = items[0][1].device
    for name, t in items[1:]:
        if t.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} like {items[0][0]}, got {describe(t)}")
    return device


def available_backends(device: Union[str, torch.device] = "cpu") -> list[str]:
    """Backends that can run on ``device`` here (the reference always can)."""
    device = torch.device(device)
    found = ["torch"]
    if device.type == "cpu":
        found.insert(0, "cpu")
    elif device.type == "cuda" and cuda_available():
        found.insert(0, "cuda")
    return found
