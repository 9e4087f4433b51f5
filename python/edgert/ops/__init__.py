"""Hot-path ops: CUDA kernel -> C++ CPU kernel -> pure-PyTorch reference.

Every op takes torch tensors (NumPy arrays are wrapped without copying), checks
dtype/shape/device/contiguity with messages naming what was expected, and
accepts ``backend="auto"|"cuda"|"cpu"|"torch"``. The ``*_reference`` functions
are the ground truth used by the parity tests.
"""
from edgert.ops._dispatch import available_backends
from edgert.ops.adaptive_conv import adaptive_conv, adaptive_conv_reference, patch_grid
from edgert.ops.block_average import block_average, block_average_reference
from edgert.ops.mmnet import (
    gaussian_denoise,
    gaussian_denoise_reference,
    hard_decision,
    indices_to_symbols,
    mmnet_detect,
    mmnet_detect_reference,
    pam_posterior,
    qam_constellation,
    qam_levels,
)
from edgert.ops.sparse import sparse_gather, sparse_gather_reference, sparse_patch, sparse_patch_reference

__all__ = [
    "adaptive_conv",
    "adaptive_conv_reference",
    "patch_grid",
    "available_backends",
    "block_average",
    "block_average_reference",
    "gaussian_denoise",
    "gaussian_denoise_reference",
    "hard_decision",
    "indices_to_symbols",
    "mmnet_detect",
    "mmnet_detect_reference",
    "pam_posterior",
    "qam_constellation",
    "qam_levels",
    "sparse_gather",
    "sparse_gather_reference",
    "sparse_patch",
    "sparse_patch_reference",
]
