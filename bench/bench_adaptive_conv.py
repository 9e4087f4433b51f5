"""Adaptive (per-patch) convolution vs the unfold+bmm PyTorch formulation (the reference)."""
from __future__ import annotations

import torch

from bench.harness import Row, compiled_peer, cuda_sync, measure
from edgert import ops


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    shapes = [(1, 3, 135, 240, 32, 5)] if quick else [(1, 3, 270, 480, 32, 5), (1, 3, 180, 320, 32, 5),
                                                      (4, 3, 135, 240, 32, 5)]
    rows: list[Row] = []
    sync = cuda_sync(device)
    repeats = 10 if quick else 20
    gen = torch.Generator().manual_seed(0)
    for n, c_in, h, w, f_out, patch in shapes:
        gh, gw = ops.patch_grid(h, w, patch)
        x = torch.randn(n, c_in, h, w, generator=gen).to(device)
        kernels = (0.3 * torch.randn(n, gh, gw, f_out, c_in, 3, 3, generator=gen)).to(device)
        bias = torch.randn(n, gh, gw, f_out, generator=gen).to(device)
        shape = f"[{n},{c_in},{h},{w}] F={f_out} P={patch}"
        flops = 2.0 * n * h * w * f_out * c_in * 9
        bytes_moved = 4.0 * (x.numel() + kernels.numel() + bias.numel() + n * f_out * h * w)
        with torch.no_grad():
            t = measure(lambda: ops.adaptive_conv_reference(x, kernels, bias, patch), repeats=repeats, sync=sync)
            rows.append(Row("adaptive_conv", "torch-eager (unfold+bmm)", str(device), "float32", shape, t,
                            bytes_moved, flops, extra={"peer": True}))
            if "compile" in peers:
                expected = ops.adaptive_conv_reference(x, kernels, bias, patch)
                fn = compiled_peer(ops.adaptive_conv_reference, "adaptive_conv",
                                   lambda got: torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4),
                                   x, kernels, bias, patch)
                if fn is not None:
                    t = measure(lambda: fn(x, kernels, bias, patch), repeats=repeats, sync=sync)
                    rows.append(Row("adaptive_conv", "torch.compile (unfold+bmm)", str(device), "float32", shape, t,
                                    bytes_moved, flops, extra={"peer": True}))
            for backend in ops.available_backends(device):
                if backend == "torch":
                    continue
                t = measure(lambda: ops.adaptive_conv(x, kernels, bias, patch, backend=backend), repeats=repeats,
                            sync=sync)
                rows.append(Row("adaptive_conv", f"edgert-{backend}", str(device), "float32", shape, t, bytes_moved,
                                flops, extra={"fps": n / t.median}))
    return rows
