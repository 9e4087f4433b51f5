"""Every op rejects wrong dtype/shape/device/non-contiguous input naming what was expected."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgert
from edgert import _edgert, ops


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_block_average_rejects_bad_input(backend):
    with pytest.raises(TypeError, match=r"grad: expected contiguous float32 \[N, C, H, W\], got float64"):
        ops.block_average(torch.zeros(1, 3, 8, 8, dtype=torch.float64), backend=backend)
    with pytest.raises(ValueError, match=r"grad: expected .*\[N, C, H, W\], got float32 \[3, 8, 8\]"):
        ops.block_average(torch.zeros(3, 8, 8), backend=backend)
    with pytest.raises(ValueError, match=r"non-contiguous"):
        ops.block_average(torch.zeros(1, 3, 8, 16)[..., ::2], backend=backend)
    with pytest.raises(ValueError, match=r"block: expected a positive int"):
        ops.block_average(torch.zeros(1, 3, 8, 8), 0, backend=backend)


def test_block_average_accepts_numpy():
    grad = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    out = ops.block_average(grad, 4)
    torch.testing.assert_close(out, ops.block_average_reference(torch.from_numpy(grad), 4))


def test_native_binding_checks_independently():
    # The extension validates on its own too (callers may bypass edgert.ops).
    with pytest.raises(ValueError, match=r"out: expected float32 \[N, ceil\(H/b\), ceil\(W/b\)\] = \[1, 1, 1\]"):
        _edgert.block_average(torch.zeros(1, 1, 4, 4), 4, torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match=r"grad: expected an array"):
        _edgert.block_average([1, 2, 3], 4, torch.zeros(1, 1, 1))


def test_cuda_backend_unavailable_is_a_clear_error():
    if edgert.cuda_available():
        pytest.skip("CUDA is usable here")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        ops.block_average(torch.zeros(1, 1, 4, 4), backend="cuda")
