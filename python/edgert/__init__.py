"""edgert: an embedded edge runtime for continuous learning of lightweight models.

The native kernels live in :mod:`edgert._edgert` (CPU) and, when built with CUDA,
:mod:`edgert._edgert_cuda`; :mod:`edgert.ops` dispatches between them and the
pure-PyTorch references. ``import edgert`` never needs a GPU, a driver or torch.
"""
from __future__ import annotations

from edgert._info import EdgertError, PacketError, cuda_available, info, version

__version__ = version()
__all__ = ["EdgertError", "PacketError", "__version__", "cuda_available", "info", "version"]
