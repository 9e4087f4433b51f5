"""DNNGrad block averaging (OneAdapt): |gradient| averaged over channels and b x b blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgert.ops._dispatch import ArrayLike, Backend, as_tensor, check_tensor, native, resolve, stream_of

DEFAULT_BLOCK = 16


def block_average_reference(grad: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Pure-PyTorch reference: mean over C and each block of |grad|; edge blocks use valid pixels only.

    avg_pool2d with ceil_mode and zero padding would divide edge blocks by b*b, so
    the sum is pooled and divided by the per-block count of valid pixels instead.
    """
    n, c, h, w = grad.shape
    rows, cols = -(-h // block), -(-w // block)
    if n == 0 or h == 0 or w == 0:
        return grad.new_zeros((n, rows, cols))
    if c == 0:
        return grad.new_zeros((n, rows, cols))
    magnitude = grad.abs().sum(dim=1, keepdim=True)
    padded = F.pad(magnitude, (0, cols * block - w, 0, rows * block - h))
    sums = F.avg_pool2d(padded, block, stride=block, divisor_override=1)[:, 0]
    valid_h = torch.clamp(h - torch.arange(rows, device=grad.device) * block, max=block)
    valid_w = torch.clamp(w - torch.arange(cols, device=grad.device) * block, max=block)
    counts = (valid_h[:, None] * valid_w[None, :]).to(grad.dtype) * c
    return sums / counts


def block_average(grad: ArrayLike, block: int = DEFAULT_BLOCK, *, backend: Backend = "auto") -> torch.Tensor:
    """DNNGrad block averaging.

    Args:
        grad: float32 [N, C, H, W] input gradient (torch tensor or NumPy array), contiguous.
        block: block side b (16 in OneAdapt, one macroblock).
        backend: "auto" (CUDA kernel for CUDA tensors, C++ for CPU), "cuda", "cpu" or "torch".

    Returns:
        float32 [N, ceil(H/b), ceil(W/b)] on grad's device: mean |grad| over channels and each
        block; partial edge blocks average their valid pixels.
    """
    grad = as_tensor(grad, "grad")
    check_tensor(grad, "grad", (torch.float32,), (None, None, None, None), "[N, C, H, W]")
    if not isinstance(block, int) or block <= 0:
        raise ValueError(f"block: expected a positive int, got {block!r}")
    chosen = resolve(backend, grad.device, (grad,))
    if chosen == "torch":
        return block_average_reference(grad, block)
    n, _, h, w = grad.shape
    out = torch.empty((n, -(-h // block), -(-w // block)), dtype=torch.float32, device=grad.device)
    native(chosen).block_average(grad.detach(), block, out, stream_of(grad))
    return out
