"""Backend selection and argument checks shared by every op in :mod:`edgert.ops`.

Order of preference for ``backend="auto"``: the CUDA kernel for CUDA tensors
(when compiled and usable), the C++ CPU kernel for CPU tensors, and the pure
PyTorch reference otherwise. The reference is the ground truth in tests.

Which native backend runs is not decided here: :func:`resolve` asks the backend
registry of the libedgert build that can address the tensors' memory
(``edgert._edgert`` for CPU tensors, ``edgert._edgert_cuda`` for CUDA tensors),
through the same ``edgert_backend_select`` a C host calls with
``EDGERT_BACKEND_AUTO``; Python only adds the fallback to the reference.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

import edgert._edgert as _edgert
from edgert._info import EdgertError, cuda_module

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
    fixed = ("" if all(s is None for s in shape)
             else " = [" + ", ".join("*" if s is None else str(s) for s in shape) + "]")
    where = f" on {device}" if device is not None else ""
    message = f"{name}: expected contiguous {want} {layout}{fixed}{where}, got {describe(t)}"
    if not dtype_ok:
        raise TypeError(message)
    raise ValueError(message)


_CUDA_UNAVAILABLE = "backend='cuda' requested but the CUDA kernels are not compiled in or no device is usable"


def native_module(device: torch.device) -> Optional[ModuleType]:
    """The extension whose libedgert can address memory on ``device`` (None if this install has none)."""
    if device.type == "cpu":
        return _edgert
    if device.type == "cuda":
        return cuda_module()
    return None


@functools.lru_cache(maxsize=None)
def _cpu_choice(backend: str) -> str:
    # For host memory the registry's answer does not depend on the buffers: ask once.
    return _edgert.backend_select(backend, [])


def resolve(backend: Backend, device: torch.device, tensors: Sequence[torch.Tensor]) -> str:
    """Picks the concrete backend for ``tensors`` (all on ``device``); raises if the request cannot run.

    "torch" runs the reference. "auto", "cpu" and "cuda" are resolved by libedgert's backend
    registry from the tensors' addresses (pass every tensor the kernel touches); "auto" falls
    back to "torch" where no native kernel can run (no CUDA module, no usable device, another
    device type) and while tracing (``torch.jit.trace``, ``torch.onnx.export``, ``torch.export``), so an
    exported graph holds the reference's standard operators.
    """
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of auto, cuda, cpu, torch; got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "auto" and (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
                              or torch.compiler.is_exporting()):
        return "torch"  # a trace (ONNX export, TorchScript) records the reference's ops; native calls are opaque
    on_cuda = device.type == "cuda"
    if backend == "cuda" and not on_cuda:
        raise ValueError(f"backend='cuda' needs CUDA tensors, got tensors on {device}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
    if device.type == "cpu":
        return _cpu_choice(backend)
    module = native_module(device)
    if module is None:
        if backend == "auto":
            return "torch"
        raise RuntimeError(_CUDA_UNAVAILABLE)
    try:
        chosen = module.backend_select(backend, [t.data_ptr() for t in tensors if t.numel()])
    except EdgertError as e:  # EDGERT_ERR_BACKEND_UNAVAILABLE (an explicit "cuda" only)
        raise RuntimeError(f"{_CUDA_UNAVAILABLE}: {e}") from e
    # Device memory that the registry will not run (no usable device): the reference.
    return chosen if chosen == "cuda" else "torch"


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
    """Backends that can run on ``device`` here, per libedgert's registry (the reference always can)."""
    device = torch.device(device)
    found = ["torch"]
    module = native_module(device)
    if module is not None and _registry(module)[device.type]["usable"]:
        found.insert(0, device.type)
    return found


@functools.lru_cache(maxsize=None)
def _registry(module: ModuleType) -> dict:
    return module.backends()
