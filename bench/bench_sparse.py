"""Sparse delta patching (5% / 1% / dense update of a 2.2M-parameter fp32 model, fp16 values)
vs torch index_add_ (peer) and NumPy fancy indexing.

bytes_moved counts what one patch touches per element: index 4 B + value 2 B +
weight read 4 B + weight write 4 B.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.harness import Row, cuda_sync, measure
from edgert import ops

PARAMS = 2_200_000


def run(device: torch.device, quick: bool) -> list[Row]:
    fractions = [0.05] if quick else [0.05, 0.01, 1.0]
    repeats = 10 if quick else 100
    warmup = 3 if quick else 30  # the first calls on a fresh 8.8 MB buffer are slower for every impl
    sync = cuda_sync(device)
    gen = torch.Generator().manual_seed(0)
    rows: list[Row] = []
    for fraction in fractions:
        count = int(PARAMS * fraction)
        if count == PARAMS:
            indices = torch.arange(PARAMS, dtype=torch.int32)
        else:
            indices = torch.randperm(PARAMS, generator=gen)[:count].sort().values.to(torch.int32)
        values = (torch.randn(count, generator=gen) * 1e-3).half()
        weights = torch.randn(PARAMS, generator=gen)
        shape = f"P={PARAMS} K={count} ({fraction:.0%})"
        bytes_moved = count * (4 + 2 + 4 + 4)
        w, idx, val = weights.to(device), indices.to(device), values.to(device)

        def peer() -> None:  # torch's fused scatter-add; values must match the weights' dtype
            w.index_add_(0, idx, val.float())

        rows.append(Row("sparse_patch", "torch-index_add_", str(device), "f32 w / f16 v", shape,
                        measure(peer, repeats=repeats, warmup=warmup, sync=sync), bytes_moved, extra={"peer": True}))
        if device.type == "cpu":
            w_np, idx_np, val_np = w.numpy(), idx.numpy(), val.numpy()

            def numpy_fancy() -> None:
                w_np[idx_np] += val_np.astype(np.float32)

            rows.append(Row("sparse_patch", "numpy-fancy", str(device), "f32 w / f16 v", shape,
                            measure(numpy_fancy, repeats=repeats, warmup=warmup), bytes_moved))
        for backend in ops.available_backends(device):
            if backend == "torch":
                continue
            t = measure(lambda: ops.sparse_patch(w, idx, val, "add", backend=backend), repeats=repeats, warmup=warmup, sync=sync)
            rows.append(Row("sparse_patch", f"edgert-{backend}", str(device), "f32 w / f16 v", shape, t, bytes_moved))
    return rows
