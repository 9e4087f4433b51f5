"""Spatially-adaptive convolution (SRVC): every P x P patch of a frame has its own 3x3 kernel.

Convention: the frame [N, Cin, H, W] is tiled into P x P patches of contiguous pixels
(grid ceil(H/P) x ceil(W/P); pixels past the frame edge are zeros). Patch p of image n
is convolved with ``kernels[n, i, j]`` [F, Cin, 3, 3] (conv2d weight layout) plus
``bias[n, i, j]`` [F], and the 3x3 window sees **zeros outside its own patch**: each
patch is processed independently, which is what makes the kernels spatially adaptive
and lets any tiling run in parallel. The output [N, F, H, W] is cropped to the frame.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F

from edgert.ops._dispatch import (
    ArrayLike,
    Backend,
    as_tensor,
    check_tensor,
    native,
    resolve,
    same_device,
    stream_of,
)

Activation = Literal["relu", "none"]
_ACTIVATIONS = {"none": 0, "relu": 1}
DEFAULT_PATCH = 5


def patch_grid(height: int, width: int, patch: int = DEFAULT_PATCH) -> tuple[int, int]:
    """(ceil(H/P), ceil(W/P)): the number of patch rows and columns of a frame."""
    return -(-height // patch), -(-width // patch)


def adaptive_conv_reference(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor,
                            patch: int = DEFAULT_PATCH, activation: Activation = "relu") -> torch.Tensor:
    """Pure-PyTorch (differentiable) reference: unfold each zero-ringed patch, one bmm per patch.

    Args:
        x: [N, Cin, H, W] frames.
        kernels: [N, Ph, Pw, F, Cin, 3, 3] per-patch kernels, Ph = ceil(H/P), Pw = ceil(W/P).
        bias: [N, Ph, Pw, F] per-patch biases.
    Returns:
        [N, F, H, W] = act(conv3x3(patch, kernel) + bias) with zeros outside each patch.
    """
    n, c_in, h, w = x.shape
    gh, gw = patch_grid(h, w, patch)
    f_out = kernels.shape[3]
    if n == 0 or h == 0 or w == 0 or f_out == 0:
        return x.new_zeros((n, f_out, h, w))
    padded = F.pad(x, (0, gw * patch - w, 0, gh * patch - h))
    # [N, Cin, gh, P, gw, P] -> [N*gh*gw, Cin, P, P]
    patches = padded.reshape(n, c_in, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n * gh * gw, c_in, patch, patch)
    columns = F.unfold(F.pad(patches, (1, 1, 1, 1)), kernel_size=3)  # [B, Cin*9, P*P]
    weights = kernels.reshape(n * gh * gw, f_out, c_in * 9)
    result = torch.bmm(weights, columns) + bias.reshape(n * gh * gw, f_out, 1)
    # [N, gh, gw, F, P, P] -> [N, F, gh, P, gw, P] -> [N, F, H', W'] -> crop
    result = result.reshape(n, gh, gw, f_out, patch, patch).permute(0, 3, 1, 4, 2, 5)
    result = result.reshape(n, f_out, gh * patch, gw * patch)[:, :, :h, :w]
    if activation == "relu":
        result = torch.relu(result)
    return result.contiguous()


class _AdaptiveConvFunction(torch.autograd.Function):
    """Native forward; backward recomputes through the reference (the forward is the hot path)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor, patch: int,
                activation: Activation, backend: str) -> torch.Tensor:
        ctx.save_for_backward(x, kernels, bias)
        ctx.patch, ctx.activation = patch, activation
        n, _, h, w = x.shape
        out = torch.empty((n, kernels.shape[3], h, w), dtype=torch.float32, device=x.device)
        native(backend).adaptive_conv(x.detach(), kernels.detach(), bias.detach(), patch, _ACTIVATIONS[activation],
                                      out, stream_of(x))
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, kernels, bias = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(need) for t, need in zip((x, kernels, bias), ctx.needs_input_grad[:3])]
            x_in, kernels_in, bias_in = inputs
            out = adaptive_conv_reference(x_in, kernels_in, bias_in, patch=ctx.patch, activation=ctx.activation)
            wanted = [t for t in inputs if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_out)) if wanted else iter(())
        return tuple(next(grads) if t.requires_grad else None for t in inputs) + (None, None, None)


def adaptive_conv(x: ArrayLike, kernels: ArrayLike, bias: ArrayLike, patch: int = DEFAULT_PATCH,
                  activation: Activation = "relu", *, backend: Backend = "auto") -> torch.Tensor:
    """Spatially-adaptive 3x3 convolution (see the module docstring for the convention).

    Args:
        x: float32 [N, Cin, H, W] (Cin = 3 in SRVC), contiguous.
        kernels: float32 [N, ceil(H/P), ceil(W/P), F, Cin, 3, 3].
        bias: float32 [N, ceil(H/P), ceil(W/P), F].
        patch: patch side P (5 in SRVC).
        activation: "relu" (default) or "none".
        backend: "auto", "cuda", "cpu" or "torch" (the differentiable reference).

    Returns:
        float32 [N, F, H, W]. Differentiable in x, kernels and bias on every backend
        (native forward, reference backward).
    """
    x, kernels, bias = as_tensor(x, "x"), as_tensor(kernels, "kernels"), as_tensor(bias, "bias")
    if not isinstance(patch, int) or patch <= 0:
        raise ValueError(f"patch: expected a positive int, got {patch!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    check_tensor(x, "x", (torch.float32,), (None, None, None, None), "[N, Cin, H, W]")
    n, c_in, h, w = x.shape
    gh, gw = patch_grid(h, w, patch)
    check_tensor(kernels, "kernels", (torch.float32,), (n, gh, gw, None, c_in, 3, 3),
                 "[N, ceil(H/P), ceil(W/P), F, Cin, 3, 3]")
    check_tensor(bias, "bias", (torch.float32,), (n, gh, gw, kernels.shape[3]), "[N, ceil(H/P), ceil(W/P), F]")
    device = same_device({"x": x, "kernels": kernels, "bias": bias})
    chosen = resolve(backend, device, (x, kernels, bias))
    if chosen == "torch":
        return adaptive_conv_reference(x, kernels, bias, patch, activation)
    return _AdaptiveConvFunction.apply(x, kernels, bias, patch, activation, chosen)
