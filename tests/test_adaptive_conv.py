"""Adaptive (per-patch) convolution: semantics, gradients and input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgert import _edgert, ops


def _inputs(n=2, c_in=3, h=7, w=11, f_out=4, patch=5, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gh, gw = ops.patch_grid(h, w, patch)
    x = torch.randn(n, c_in, h, w, generator=gen, dtype=dtype)
    kernels = torch.randn(n, gh, gw, f_out, c_in, 3, 3, generator=gen, dtype=dtype)
    bias = torch.randn(n, gh, gw, f_out, generator=gen, dtype=dtype)
    return x, kernels, bias


def _per_patch_conv2d(x, kernels, bias, patch, activation):
    """Independent definition: conv2d (padding=1) on each isolated patch, pasted back."""
    n, _, h, w = x.shape
    f_out = kernels.shape[3]
    out = torch.zeros(n, f_out, h, w, dtype=x.dtype)
    gh, gw = ops.patch_grid(h, w, patch)
    for img in range(n):
        for i in range(gh):
            for j in range(gw):
                tile = x[img:img + 1, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
                y = F.conv2d(tile, kernels[img, i, j], bias[img, i, j], padding=1)
                out[img, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] = y[0]
    return torch.relu(out) if activation == "relu" else out


@pytest.mark.parametrize("patch", [1, 3, 5])
@pytest.mark.parametrize("activation", ["relu", "none"])
def test_reference_equals_per_patch_conv2d_float64(patch, activation):
    x, k, b = _inputs(patch=patch, dtype=torch.float64)
    expected = _per_patch_conv2d(x, k, b, patch, activation)
    got = ops.adaptive_conv_reference(x, k, b, patch, activation)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_native_gradients_match_reference():
    x, k, b = _inputs(n=1, h=6, w=9, f_out=3)
    leaves = [t.clone().requires_grad_() for t in (x, k, b)]
    ref_leaves = [t.clone().requires_grad_() for t in (x, k, b)]
    weight = torch.randn(1, 3, 6, 9)
    (ops.adaptive_conv(*leaves, patch=5, backend="cpu") * weight).sum().backward()
    (ops.adaptive_conv_reference(*ref_leaves, patch=5) * weight).sum().backward()
    for got, want in zip(leaves, ref_leaves):
        assert got.grad is not None and got.grad.abs().sum() > 0
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-5)


def test_reference_gradcheck_float64():
    x, k, b = _inputs(n=1, c_in=2, h=4, w=5, f_out=2, patch=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *t: ops.adaptive_conv_reference(*t, patch=3, activation="none"),
                                    [t.requires_grad_() for t in (x, k, b)])


def test_patches_are_independent():
    x, k, b = _inputs(n=1, h=10, w=10, f_out=4, patch=5)
    before = ops.adaptive_conv(x, k, b, 5)
    x2 = x.clone()
    x2[0, :, 0:5, 5:10] += 3.0  # only patch (0, 1) changes
    after = ops.adaptive_conv(x2, k, b, 5)
    changed = (after - before).abs().sum(dim=(0, 1)) > 0
    assert changed[0:5, 5:10].any()
    changed[0:5, 5:10] = False
    assert not changed.any()


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_rejects_bad_input(backend):
    x, k, b = _inputs()
    with pytest.raises(TypeError, match=r"x: expected contiguous float32 \[N, Cin, H, W\], got float64"):
        ops.adaptive_conv(x.double(), k, b, backend=backend)
    with pytest.raises(ValueError, match=r"kernels: expected contiguous float32 \[N, ceil\(H/P\), ceil\(W/P\), F, "
                                         r"Cin, 3, 3\] = \[2, 2, 3, \*, 3, 3, 3\], "
                                         r"got float32 \[2, 2, 2, 4, 3, 3, 3\]"):
        ops.adaptive_conv(x, k[:, :, :2].contiguous(), b, backend=backend)
    with pytest.raises(ValueError, match=r"bias: expected .*\[2, 2, 3, 4\], got float32 \[2, 2, 3, 5\]"):
        ops.adaptive_conv(x, k, torch.zeros(2, 2, 3, 5), backend=backend)
    with pytest.raises(ValueError, match=r"non-contiguous"):
        ops.adaptive_conv(x.transpose(2, 3).contiguous().transpose(2, 3), k, b, backend=backend)
    with pytest.raises(ValueError, match=r"patch: expected a positive int"):
        ops.adaptive_conv(x, k, b, patch=0, backend=backend)
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        ops.adaptive_conv(x, k, b, activation="gelu", backend=backend)


def test_raw_binding_checks_patch_grid():
    x, k, b = _inputs()
    out = torch.empty(2, 4, 7, 11)
    with pytest.raises(ValueError, match=r"kernels: expected float32 \[N, ceil\(H/P\), ceil\(W/P\), F, Cin, 3, 3\] "
                                         r"= \[2, 3, 4, \*, 3, 3, 3\]"):
        _edgert.adaptive_conv(x, k, b, 3, 1, out)  # the grid for P=3 is 3 x 4, not 2 x 3
    with pytest.raises(ValueError, match=r"out: expected float32 \[N, F, H, W\] = \[2, 4, 7, 11\]"):
        _edgert.adaptive_conv(x, k, b, 5, 1, torch.empty(2, 4, 7, 10))
    with pytest.raises(ValueError, match=r"activation must be 0 \(none\) or 1 \(relu\), got 7"):
        _edgert.adaptive_conv(x, k, b, 5, 7, out)
