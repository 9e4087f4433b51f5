"""Adaptive (per-patch) convolution vs the strongest formulations a user could write instead.

Peers, all in the same process and checked against ``ops.adaptive_conv_reference`` before they are timed:

* ``torch-eager (unfold+bmm)``: the reference itself (zero-padded patches, ``F.unfold``, one ``bmm``);
* ``torch-eager (grouped conv2d)``: every patch a group of one ``F.conv2d(..., groups=patches)``, the
  formulation that maps the op onto PyTorch's own convolution (2.5x faster than unfold+bmm here);
* ``torch.compile (unfold+bmm)`` (``--peers compile``): Inductor's fused version of the reference;
* ``numba-prange`` (CPU, numba installed): the kernel a user would write with ``@njit(parallel=True)``:
  prange over (image, patch row), per patch a zero-ringed tile and the kernel transposed to
  [Cin*9][F] so that the innermost loop runs over F (contiguous, vectorised by LLVM).

Rows carry ``flops = 2 N H W F Cin 9`` (the GEMM definition, zero-ring taps included), so the table's
%GEMM column is the fraction of the measured fp32 GEMM rate.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.harness import Row, compiled_peer, cuda_sync, measure, start_numba
from edgert import ops

try:
    import numba
except ModuleNotFoundError:  # optional (extra [bench]): the numba peer row is then skipped
    numba = None

# Parity of every peer with the reference, as for edgert's kernel in tests/test_ops_parity.py
# (float32 sums of Cin*9 + 1 terms in different orders).
RTOL, ATOL = 1e-4, 1e-4


def adaptive_conv_grouped(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor, patch: int = 5,
                          activation: ops.Activation = "relu") -> torch.Tensor:
    """The op as one grouped ``F.conv2d``: patches [1, patches*Cin, P, P], groups = patches, padding 1.

    Same shapes and convention as :func:`edgert.ops.adaptive_conv_reference` (zeros outside each patch).
    """
    n, c_in, h, w = x.shape
    gh, gw = ops.patch_grid(h, w, patch)
    f_out = kernels.shape[3]
    if n == 0 or h == 0 or w == 0 or f_out == 0:
        return x.new_zeros((n, f_out, h, w))
    patches = F.pad(x, (0, gw * patch - w, 0, gh * patch - h)).reshape(n, c_in, gh, patch, gw, patch)
    patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(1, n * gh * gw * c_in, patch, patch)
    y = F.conv2d(patches, kernels.reshape(n * gh * gw * f_out, c_in, 3, 3), bias.reshape(-1), padding=1,
                 groups=n * gh * gw)
    y = y.reshape(n, gh, gw, f_out, patch, patch).permute(0, 3, 1, 4, 2, 5)
    y = y.reshape(n, f_out, gh * patch, gw * patch)[:, :, :h, :w]
    return (torch.relu(y) if activation == "relu" else y).contiguous()


def _njit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The numba peer's compile options; without numba the kernel stays plain Python and is never called."""
    return numba.njit(parallel=True, cache=False, fastmath=False)(fn) if numba is not None else fn


_prange = numba.prange if numba is not None else range


@_njit
def _adaptive_conv_kernel(x, kernels, bias, patch, relu, out):
    n, c_in, h, w = x.shape
    gh, gw, f_out = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    tile_w = patch + 2
    taps = c_in * 9
    for item in _prange(n * gh):
        img, gy = item // gh, item % gh
        y0 = gy * patch
        ph = min(patch, h - y0)
        tile = np.zeros((c_in, tile_w, tile_w), dtype=np.float32)
        wt = np.empty((taps, f_out), dtype=np.float32)
        acc = np.empty(f_out, dtype=np.float32)
        for gx in range(gw):
            x0 = gx * patch
            pw = min(patch, w - x0)
            tile[:] = 0.0
            for c in range(c_in):
                for yy in range(ph):
                    for xx in range(pw):
                        tile[c, yy + 1, xx + 1] = x[img, c, y0 + yy, x0 + xx]
            for f in range(f_out):
                for c in range(c_in):
                    for t in range(9):
                        wt[c * 9 + t, f] = kernels[img, gy, gx, f, c, t // 3, t % 3]
            for yy in range(ph):
                for xx in range(pw):
                    for f in range(f_out):
                        acc[f] = bias[img, gy, gx, f]
                    for c in range(c_in):
                        for ky in range(3):
                            for kx in range(3):
                                v = tile[c, yy + ky, xx + kx]
                                row = wt[c * 9 + ky * 3 + kx]
                                for f in range(f_out):
                                    acc[f] += v * row[f]
                    for f in range(f_out):
                        a = acc[f]
                        out[img, f, y0 + yy, x0 + xx] = a if (a > 0.0 or not relu) else np.float32(0.0)


def adaptive_conv_numba(x: np.ndarray, kernels: np.ndarray, bias: np.ndarray, patch: int = 5,
                        activation: ops.Activation = "relu") -> np.ndarray:
    """The numba peer: float32 [N, Cin, H, W], [N, Ph, Pw, F, Cin, 3, 3], [N, Ph, Pw, F] -> [N, F, H, W].

    Same convention as the op (zeros outside each patch). Raises ModuleNotFoundError without numba.
    """
    if numba is None:
        raise ModuleNotFoundError("numba is not installed (extra [bench])")
    x = np.ascontiguousarray(x, dtype=np.float32)
    kernels = np.ascontiguousarray(kernels, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    n, _, h, w = x.shape
    out = np.zeros((n, kernels.shape[3], h, w), dtype=np.float32)
    if out.size:
        _adaptive_conv_kernel(x, kernels, bias, patch, activation == "relu", out)
    return out


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    shapes = [(1, 3, 135, 240, 32, 5)] if quick else [(1, 3, 270, 480, 32, 5), (1, 3, 180, 320, 32, 5),
                                                      (4, 3, 135, 240, 32, 5)]
    rows: list[Row] = []
    sync = cuda_sync(device)
    repeats = 10 if quick else 20
    gen = torch.Generator().manual_seed(0)
    use_numba = device.type == "cpu" and numba is not None
    if device.type == "cpu" and numba is None:
        print("numba not installed: peer skipped")
    numba_threads = start_numba(numba) if use_numba else 0  # the same threads as torch and edgert
    for n, c_in, h, w, f_out, patch in shapes:
        gh, gw = ops.patch_grid(h, w, patch)
        x = torch.randn(n, c_in, h, w, generator=gen).to(device)
        kernels = (0.3 * torch.randn(n, gh, gw, f_out, c_in, 3, 3, generator=gen)).to(device)
        bias = torch.randn(n, gh, gw, f_out, generator=gen).to(device)
        shape = f"[{n},{c_in},{h},{w}] F={f_out} P={patch}"
        flops = 2.0 * n * h * w * f_out * c_in * 9
        bytes_moved = 4.0 * (x.numel() + kernels.numel() + bias.numel() + n * f_out * h * w)

        def check(got: torch.Tensor) -> None:
            torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)

        def row(impl: str, fn: Callable[[], Any], **extra: Any) -> None:
            rows.append(Row("adaptive_conv", impl, str(device), "float32", shape,
                            measure(fn, repeats=repeats, sync=sync), bytes_moved, flops, extra=extra))

        with torch.no_grad():
            expected = ops.adaptive_conv_reference(x, kernels, bias, patch)
            row("torch-eager (unfold+bmm)", lambda: ops.adaptive_conv_reference(x, kernels, bias, patch), peer=True)
            check(adaptive_conv_grouped(x, kernels, bias, patch))
            row("torch-eager (grouped conv2d)", lambda: adaptive_conv_grouped(x, kernels, bias, patch), peer=True)
            if "compile" in peers:
                fn = compiled_peer(ops.adaptive_conv_reference, "adaptive_conv", check, x, kernels, bias, patch)
                if fn is not None:
                    row("torch.compile (unfold+bmm)", lambda: fn(x, kernels, bias, patch), peer=True)
            if use_numba:
                x_np, k_np, b_np = x.numpy(), kernels.numpy(), bias.numpy()
                # Parity before timing; this first call also compiles the kernel and starts numba's threads.
                check(torch.from_numpy(adaptive_conv_numba(x_np, k_np, b_np, patch)))
                row("numba-prange", lambda: adaptive_conv_numba(x_np, k_np, b_np, patch), peer=True,
                    threads=numba_threads)
            for backend in ops.available_backends(device):
                if backend == "torch":
                    continue
                check(ops.adaptive_conv(x, kernels, bias, patch, backend=backend))
                row(f"edgert-{backend}", lambda: ops.adaptive_conv(x, kernels, bias, patch, backend=backend))
                rows[-1].extra["fps"] = n / rows[-1].time.median
    return rows
