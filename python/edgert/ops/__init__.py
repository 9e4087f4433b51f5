"""Hot-path ops: CUDA kernel -> C++ CPU kernel -> pure-PyTorch reference.

Every op takes torch tensors (NumPy arrays are wrapped without copying), checks
dtype/shape/device/contiguity with messages naming what was expected, and
accepts ``backend="auto"|"cuda"|"cpu"|"torch"``. The ``*_reference`` functions
are the ground truth used by the parity tests.
"""
from edgert.ops._dispatch import available_backends
from edgert.ops.block_average import block_average, block_average_reference
from edgert.ops.sparse import sparse_gather, sparse_gather_reference, sparse_patch, sparse_patch_reference

__all__ = [
    "available_backends",
    "block_average",
    "block_average_reference",
    "sparse_gather",
    "sparse_gather_reference",
    "sparse_patch",
    "sparse_patch_reference",
]
