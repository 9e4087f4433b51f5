"""Runtime information: version, compiled backends, devices, build flags."""
from __future__ import annotations

import functools
import importlib
import platform
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Optional

import edgert._edgert as _edgert

EdgertError = _edgert.EdgertError
PacketError = _edgert.PacketError


@functools.lru_cache(maxsize=1)
def cuda_module() -> Optional[ModuleType]:
    """The CUDA extension module if it was built, else None (imports without a driver)."""
    try:
        return importlib.import_module("edgert._edgert_cuda")
    except ImportError:
        return None


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when the CUDA kernels are compiled in and a CUDA device is usable (per the CUDA build's registry)."""
    module = cuda_module()
    return bool(module is not None and module.backends()["cuda"]["usable"])


def version() -> str:
    """The libedgert version string (one source: the VERSION file)."""
    return _edgert.version()


@dataclass
class RuntimeInfo:
    """What ``edgert info`` prints."""

    version: str
    build_flags: str
    python: str
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    torch: Optional[str] = None
    torch_threads: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"edgert {self.version}", f"  build:   {self.build_flags}", f"  python:  {self.python}"]
        if self.torch:
            lines.append(f"  torch:   {self.torch} ({self.torch_threads} threads)")
        for name, b in self.backends.items():
            state = "usable" if b["usable"] else ("compiled, not usable" if b["compiled"] else "not compiled")
            lines.append(f"  backend {name:<5} {state:<22} {b['detail']}")
        return "\n".join(lines)


def info() -> RuntimeInfo:
    """Collects version, backends (CPU, CUDA), devices and build flags.

    The CPU entry comes from ``edgert._edgert``'s backend registry, the CUDA entry from the CUDA
    build's registry when that module exists (the CPU build reports CUDA as not compiled in).
    """
    backends = {"cpu": dict(_edgert.backends()["cpu"])}
    module = cuda_module()
    backends["cuda"] = dict((module if module is not None else _edgert).backends()["cuda"])
    result = RuntimeInfo(version=version(), build_flags=_edgert.build_flags(), python=platform.python_version(),
                         backends=backends)
    try:
        import torch

        result.torch = torch.__version__
        result.torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    return result
