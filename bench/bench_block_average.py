"""DNNGrad block averaging vs PyTorch eager abs().mean(1) + avg_pool2d."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.harness import Row, cuda_sync, measure
from edgert import ops


def run(device: torch.device, quick: bool) -> list[Row]:
    shapes = [(1, 3, 720, 1280)] if quick else [(1, 3, 720, 1280), (4, 3, 1080, 1920), (8, 64, 68, 120)]
    rows: list[Row] = []
    sync = cuda_sync(device)
    repeats = 10 if quick else 30
    for n, c, h, w in shapes:
        grad = torch.randn(n, c, h, w, device=device)
        shape = f"[{n},{c},{h},{w}] b=16"
        bytes_moved = grad.numel() * 4 + n * (-(-h // 16)) * (-(-w // 16)) * 4

        def peer() -> torch.Tensor:  # the natural eager formulation (exact for full blocks only)
            return F.avg_pool2d(grad.abs().mean(1, keepdim=True), 16, ceil_mode=True)

        rows.append(Row("block_average", "torch-eager", str(device), "float32", shape,
                        measure(peer, repeats=repeats, sync=sync), bytes_moved, extra={"peer": True}))
        for backend in ops.available_backends(device):
            if backend == "torch":
                continue
            t = measure(lambda: ops.block_average(grad, 16, backend=backend), repeats=repeats, sync=sync)
            rows.append(Row("block_average", f"edgert-{backend}", str(device), "float32", shape, t, bytes_moved))
    return rows
