"""DNNGrad block averaging vs PyTorch eager abs().mean(1) + avg_pool2d and (on CPU) a numba kernel.

The numba peer is the kernel a user would write instead of calling edgert: prange over
(image, block row), a per-column accumulator of |grad| over the channels and the block's
rows, then one sum per block. It is checked against ``ops.block_average_reference`` before
it is timed, compiled (and its thread pool started) outside the timing, and skipped with a
message when numba (extra [bench]) is not installed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.harness import Row, compiled_peer, cuda_sync, cupy_module, measure, start_numba
from edgert import ops

try:
    import numba
except ModuleNotFoundError:  # optional (extra [bench]): the numba peer row is then skipped
    numba = None

# Parity of the numba peer against the reference, as for edgert's kernels in tests/test_ops_parity.py
# (both sum in float32, in different orders; measured: up to 1.1e-6 relative at the benchmark's shapes).
NUMBA_RTOL, NUMBA_ATOL = 1e-5, 1e-6


def _njit(fn):
    """The numba peer's compile options; without numba the kernel stays plain Python and is never called."""
    return numba.njit(parallel=True, cache=False, fastmath=False)(fn) if numba is not None else fn


_prange = numba.prange if numba is not None else range


@_njit
def _block_average_kernel(grad, block, out):
    n, c, h, w = grad.shape
    rows, cols = out.shape[1], out.shape[2]
    for item in _prange(n * rows):
        img, br = item // rows, item % rows
        h0 = br * block
        h1 = min(h, h0 + block)
        acc = np.zeros(w, dtype=np.float32)
        for ch in range(c):
            for y in range(h0, h1):
                row = grad[img, ch, y]
                for x in range(w):
                    acc[x] += abs(row[x])
        for bc in range(cols):
            w0 = bc * block
            w1 = min(w, w0 + block)
            s = np.float32(0.0)
            for x in range(w0, w1):
                s += acc[x]
            out[img, br, bc] = s / np.float32(c * (h1 - h0) * (w1 - w0))


def block_average_numba(grad: np.ndarray, block: int = 16) -> np.ndarray:
    """The numba peer: float32 [N, C, H, W] -> [N, ceil(H/b), ceil(W/b)], same definition as the op.

    Raises ModuleNotFoundError when numba is not installed.
    """
    if numba is None:
        raise ModuleNotFoundError("numba is not installed (extra [bench])")
    grad = np.ascontiguousarray(grad, dtype=np.float32)
    n, c, h, w = grad.shape
    out = np.zeros((n, -(-h // block), -(-w // block)), dtype=np.float32)
    if c > 0 and out.size:  # no channels: the mean over an empty set is defined as 0, like the op
        _block_average_kernel(grad, block, out)
    return out


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    shapes = [(1, 3, 720, 1280)] if quick else [(1, 3, 720, 1280), (4, 3, 1080, 1920), (8, 64, 68, 120)]
    rows: list[Row] = []
    sync = cuda_sync(device)
    repeats = 10 if quick else 30
    use_numba = device.type == "cpu" and numba is not None
    if device.type == "cpu" and numba is None:
        print("numba not installed: peer skipped")
    numba_threads = start_numba(numba) if use_numba else 0  # the same threads as torch and edgert
    cp = cupy_module(device) if "cupy" in peers else None
    for n, c, h, w in shapes:
        grad = torch.randn(n, c, h, w, device=device)
        shape = f"[{n},{c},{h},{w}] b=16"
        bytes_moved = grad.numel() * 4 + n * (-(-h // 16)) * (-(-w // 16)) * 4

        def peer() -> torch.Tensor:  # the natural eager formulation (exact for full blocks only)
            return F.avg_pool2d(grad.abs().mean(1, keepdim=True), 16, ceil_mode=True)

        rows.append(Row("block_average", "torch-eager", str(device), "float32", shape,
                        measure(peer, repeats=repeats, sync=sync), bytes_moved, extra={"peer": True}))
        expected = ops.block_average_reference(grad, 16) if peers else None
        if "compile" in peers:
            fn = compiled_peer(ops.block_average_reference, "block_average",
                               lambda got: torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6), grad, 16)
            if fn is not None:
                rows.append(Row("block_average", "torch.compile", str(device), "float32", shape,
                                measure(lambda: fn(grad, 16), repeats=repeats, sync=sync), bytes_moved,
                                extra={"peer": True}))
        if cp is not None and h % 16 == 0 and w % 16 == 0:
            g_cp = cp.from_dlpack(grad)

            def cupy_peer():  # the natural cupy formulation (full blocks only, as every shape here)
                return cp.abs(g_cp).mean(axis=1).reshape(n, h // 16, 16, w // 16, 16).mean(axis=(2, 4))

            torch.testing.assert_close(torch.from_dlpack(cupy_peer()), expected, rtol=1e-5, atol=1e-6)
            rows.append(Row("block_average", "cupy", str(device), "float32", shape,
                            measure(cupy_peer, repeats=repeats, sync=sync), bytes_moved, extra={"peer": True}))
        if use_numba:
            grad_np = grad.numpy()
            # Parity before timing; this first call also compiles the kernel and starts numba's threads.
            torch.testing.assert_close(torch.from_numpy(block_average_numba(grad_np, 16)),
                                       ops.block_average_reference(grad, 16), rtol=NUMBA_RTOL, atol=NUMBA_ATOL)
            t = measure(lambda: block_average_numba(grad_np, 16), repeats=repeats)
            rows.append(Row("block_average", "numba-prange", str(device), "float32", shape, t, bytes_moved,
                            extra={"peer": True, "threads": numba_threads}))
        for backend in ops.available_backends(device):
            if backend == "torch":
                continue
            t = measure(lambda: ops.block_average(grad, 16, backend=backend), repeats=repeats, sync=sync)
            rows.append(Row("block_average", f"edgert-{backend}", str(device), "float32", shape, t, bytes_moved))
    return rows
