"""Sparse delta patching (5% / 1% / dense update of a 2.2M-parameter fp32 model, fp16 values)
vs torch index_add_ (peer), (on CPU) a numba prange kernel (peer) and NumPy fancy indexing.

bytes_moved counts what one patch touches per element: index 4 B + value 2 B +
weight read 4 B + weight write 4 B.

The numba peer is what a user would write instead of calling edgert, with the op's
contract: every index is checked (strictly increasing, so only the first and last need a
range check) in one parallel pass before anything is written, then a prange loop adds the
values in float32. numba has no CPU float16, so fp16 values are passed as their bits and
widened exactly through a 65536-entry table. The peer is checked bit for bit against
``ops.sparse_patch_reference`` before it is timed, compiled (and its thread pool started)
outside the timing, and skipped with a message when numba (extra [bench]) is not installed.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.harness import Row, compiled_peer, cuda_sync, cupy_module, measure, start_numba
from edgert import ops

try:
    import numba
except ModuleNotFoundError:  # optional (extra [bench]): the numba peer row is then skipped
    numba = None

PARAMS = 2_200_000


def _njit(fn):
    """The numba peer's compile options; without numba the kernel stays plain Python and is never called."""
    return numba.njit(parallel=True, cache=False, fastmath=False)(fn) if numba is not None else fn


_prange = numba.prange if numba is not None else range

# Every float16 as float32, by bit pattern (exact: NumPy's conversion): numba has no CPU float16,
# so fp16 values are passed as their bits and widened through this 256 KB table (it stays in L2).
_F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@_njit
def _count_bad_indices(idx, size):
    """0 iff the indices are strictly increasing (in their own type's order), the first >= 0, the last < size."""
    k = idx.shape[0]
    if k == 0:
        return 0
    bad = 0
    for i in _prange(1, k):
        bad += 1 if idx[i] <= idx[i - 1] else 0
    if np.int64(idx[0]) < 0 or np.int64(idx[k - 1]) >= size:
        bad += 1
    return bad


@_njit
def _add_f32(weights, idx, values):
    for i in _prange(idx.shape[0]):
        j = idx[i]
        weights[j] = weights[j] + values[i]


@_njit
def _add_f16_bits(weights, idx, bits, table):
    for i in _prange(idx.shape[0]):
        j = idx[i]
        weights[j] = weights[j] + table[bits[i]]


def _raise_first_bad(indices: np.ndarray, size: int) -> None:
    """The op's ValueError for the lowest offending position (the slow path after validation failed)."""
    idx = indices.astype(np.int64)
    out_of_range = (idx < 0) | (idx >= size)
    unsorted = np.zeros_like(out_of_range)
    unsorted[1:] = idx[1:] <= idx[:-1]
    pos = int(np.flatnonzero(out_of_range | unsorted)[0])
    if out_of_range[pos]:
        raise ValueError(f"sparse_patch: index {idx[pos]} at position {pos} is out of range [0, {size})")
    raise ValueError(f"sparse_patch: indices must be strictly increasing: position {pos} holds {idx[pos]} "
                     f"after {idx[pos - 1]}")


def sparse_patch_numba(weights: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """The numba peer: ``weights[indices] += values`` in place (the op's mode "add").

    weights: float32 [P]; indices: int32|uint32 [K], strictly increasing, each < P; values:
    float32|float16 [K], all contiguous. The sum is taken in float32 and rounded once. Every
    index is checked before anything is written: on ValueError (same message as the op) the
    weights are unchanged. Raises ModuleNotFoundError when numba is not installed.
    """
    if numba is None:
        raise ModuleNotFoundError("numba is not installed (extra [bench])")
    if weights.dtype != np.float32 or indices.dtype not in (np.int32, np.uint32) \
            or values.dtype not in (np.float32, np.float16):
        raise TypeError(f"expected float32 weights, int32|uint32 indices and float32|float16 values, got "
                        f"{weights.dtype}, {indices.dtype}, {values.dtype}")
    if weights.ndim != 1 or indices.ndim != 1 or values.shape != indices.shape:
        raise ValueError(f"expected weights [P], indices [K], values [K], got {weights.shape}, {indices.shape}, "
                         f"{values.shape}")
    if not (weights.flags.c_contiguous and indices.flags.c_contiguous and values.flags.c_contiguous):
        raise ValueError("expected contiguous arrays")
    if indices.shape[0] == 0:
        return
    if _count_bad_indices(indices, weights.shape[0]):
        _raise_first_bad(indices, weights.shape[0])
    if values.dtype == np.float16:
        _add_f16_bits(weights, indices, values.view(np.uint16), _F16_TO_F32)
    else:
        _add_f32(weights, indices, values)


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    fractions = [0.05] if quick else [0.05, 0.01, 1.0]
    repeats = 10 if quick else 100
    warmup = 3 if quick else 30  # the first calls on a fresh 8.8 MB buffer are slower for every impl
    sync = cuda_sync(device)
    gen = torch.Generator().manual_seed(0)
    rows: list[Row] = []
    use_numba = device.type == "cpu" and numba is not None
    if device.type == "cpu" and numba is None:
        print("numba not installed: peer skipped")
    numba_threads = start_numba(numba) if use_numba else 0  # the same threads as torch and edgert
    cp = cupy_module(device) if "cupy" in peers else None
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
        if peers:
            # Parity of the extra peers on a copy of the weights (exact, like the op's backends) before timing.
            w0 = w.clone()
            expected = w0.clone()
            ops.sparse_patch_reference(expected, idx, val, "add")
        if "compile" in peers:
            def index_add(target: torch.Tensor) -> torch.Tensor:
                return target.index_add_(0, idx, val.float())

            fn = compiled_peer(index_add, "sparse_patch",
                               lambda got: torch.testing.assert_close(got, expected, rtol=0.0, atol=0.0), w0.clone())
            if fn is not None:
                rows.append(Row("sparse_patch", "torch.compile index_add_", str(device), "f32 w / f16 v", shape,
                                measure(lambda: fn(w), repeats=repeats, warmup=warmup, sync=sync), bytes_moved,
                                extra={"peer": True}))
        if cp is not None:
            idx_cp, val_cp = cp.from_dlpack(idx), cp.from_dlpack(val)

            def cupy_fancy(target) -> None:
                target[idx_cp] += val_cp.astype(cp.float32)

            check = w0.clone()
            cupy_fancy(cp.from_dlpack(check))
            torch.testing.assert_close(check, expected, rtol=0.0, atol=0.0)
            w_cp = cp.from_dlpack(w)
            rows.append(Row("sparse_patch", "cupy-fancy", str(device), "f32 w / f16 v", shape,
                            measure(lambda: cupy_fancy(w_cp), repeats=repeats, warmup=warmup, sync=sync),
                            bytes_moved, extra={"peer": True}))
        if device.type == "cpu":
            w_np, idx_np, val_np = w.numpy(), idx.numpy(), val.numpy()

            def numpy_fancy() -> None:
                w_np[idx_np] += val_np.astype(np.float32)

            rows.append(Row("sparse_patch", "numpy-fancy", str(device), "f32 w / f16 v", shape,
                            measure(numpy_fancy, repeats=repeats, warmup=warmup), bytes_moved))
            if use_numba:
                # Parity (exact, like the op's backends) for the fp16 values and fp32 ones on copies of the
                # weights, before timing; the first calls also compile the kernels and start numba's threads.
                val32 = torch.randn(count, generator=torch.Generator().manual_seed(1)) * 1e-3
                for v in (val, val32):
                    expected, got = w.clone(), w.clone()
                    ops.sparse_patch_reference(expected, idx, v, "add")
                    sparse_patch_numba(got.numpy(), idx_np, v.numpy())
                    torch.testing.assert_close(got, expected, rtol=0.0, atol=0.0)
                t = measure(lambda: sparse_patch_numba(w_np, idx_np, val_np), repeats=repeats, warmup=warmup)
                rows.append(Row("sparse_patch", "numba-prange", str(device), "f32 w / f16 v", shape, t, bytes_moved,
                                extra={"peer": True, "threads": numba_threads}))
        for backend in ops.available_backends(device):
            if backend == "torch":
                continue
            t = measure(lambda: ops.sparse_patch(w, idx, val, "add", backend=backend),
                        repeats=repeats, warmup=warmup, sync=sync)
            rows.append(Row("sparse_patch", f"edgert-{backend}", str(device), "f32 w / f16 v", shape, t, bytes_moved))
    return rows
