"""Parity of the benchmarks' numba peers (bench/) with the ops' PyTorch references.

A peer that computes something else would make its benchmark row meaningless, so the
kernels are checked here on small, odd and empty shapes (the benchmarks check them again
on their own shapes before timing). Speed is never asserted.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_numba
from edgert import ops

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # bench/ is a top-level package of the checkout, not installed

from bench.bench_adaptive_conv import ATOL as ADAPTIVE_ATOL  # noqa: E402
from bench.bench_adaptive_conv import RTOL as ADAPTIVE_RTOL  # noqa: E402
from bench.bench_adaptive_conv import adaptive_conv_grouped, adaptive_conv_numba  # noqa: E402
from bench.bench_block_average import NUMBA_ATOL, NUMBA_RTOL, block_average_numba  # noqa: E402
from bench.bench_sparse import sparse_patch_numba  # noqa: E402

pytestmark = needs_numba


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    """Starting numba's OpenMP pool resets the process-wide OpenMP thread count (see bench.harness.start_numba)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# (N, C, H, W, b): batch 1, a single pixel, odd sizes with partial edge blocks, empty batch / channels /
# height, and one larger image.
@pytest.mark.parametrize("shape", [(1, 3, 16, 16, 16), (2, 3, 17, 33, 16), (1, 1, 1, 1, 16), (3, 5, 31, 47, 7),
                                   (1, 2, 5, 9, 1), (0, 3, 8, 8, 16), (1, 0, 8, 8, 4), (2, 3, 0, 5, 4),
                                   (2, 3, 270, 480, 16)], ids=str)
def test_block_average_numba_matches_reference(shape):
    n, c, h, w, b = shape
    grad = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(hash(shape) % (2**31)))
    got = torch.from_numpy(block_average_numba(grad.numpy(), b))
    torch.testing.assert_close(got, ops.block_average_reference(grad, b), rtol=NUMBA_RTOL, atol=NUMBA_ATOL)


_NP = {"i32": np.int32, "u32": np.uint32, "f32": np.float32, "f16": np.float16}


# (P, K): empty update, one index, odd sizes, dense 100 %.
@pytest.mark.parametrize("size,count", [(17, 0), (1, 1), (1001, 37), (333, 333), (100_003, 5_001)])
@pytest.mark.parametrize("idt", ["i32", "u32"])
@pytest.mark.parametrize("vdt", ["f32", "f16"])
def test_sparse_patch_numba_matches_reference(size, count, idt, vdt):
    gen = torch.Generator().manual_seed(size * 7 + count)
    picked = torch.arange(size) if count == size else torch.randperm(size, generator=gen)[:count].sort().values
    indices = picked.numpy().astype(_NP[idt])
    values = torch.randn(count, generator=gen).numpy().astype(_NP[vdt])
    weights = torch.randn(size, generator=gen)
    expected = weights.clone()
    ops.sparse_patch_reference(expected, torch.from_numpy(indices), torch.from_numpy(values), "add")
    sparse_patch_numba(weights.numpy(), indices, values)
    torch.testing.assert_close(weights, expected, rtol=0.0, atol=0.0)


def test_sparse_patch_numba_widens_every_fp16_exactly():
    """numba has no CPU float16: the peer widens the bits through a table (subnormals, infinities, NaN included)."""
    values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    indices = np.arange(values.shape[0], dtype=np.int32)
    weights = torch.full((values.shape[0],), 0.25)
    expected = weights.clone()
    ops.sparse_patch_reference(expected, torch.from_numpy(indices), torch.from_numpy(values), "add")
    sparse_patch_numba(weights.numpy(), indices, values)
    torch.testing.assert_close(weights, expected, rtol=0.0, atol=0.0, equal_nan=True)


# Bad tails, after no valid index or after 9000 of them (so that they land in the last thread's slice);
# "P" is the weights' size, small entries are shifted past the valid prefix.
_BAD_TAILS = {"unsorted": [3, 1], "duplicate": [1, 3, 3], "negative": [-1], "past-end": [2, "P"],
              "high-bit": [5, 2**31 + 3], "u32-max": [2**32 - 1]}


@pytest.mark.parametrize("idt,tail", [("i32", t) for t in ("unsorted", "duplicate", "negative", "past-end")]
                         + [("u32", t) for t in ("unsorted", "duplicate", "past-end", "high-bit", "u32-max")])
@pytest.mark.parametrize("late", [False, True], ids=["early", "late"])
def test_sparse_patch_numba_rejects_bad_indices_before_writing(idt, tail, late):
    size = 20_000
    prefix = list(range(0, 18_000, 2)) if late else []
    shift = 18_000 if late else 0
    indices = np.array(prefix + [size if i == "P" else i + shift if 0 <= i < 10 else i for i in _BAD_TAILS[tail]],
                       dtype=np.int64).astype(_NP[idt])
    values = np.ones(indices.shape[0], dtype=np.float32)
    weights = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    before = weights.copy()
    with pytest.raises(ValueError) as reference_error:
        ops.sparse_patch_reference(torch.from_numpy(weights.copy()), torch.from_numpy(indices),
                                   torch.from_numpy(values), "add")
    with pytest.raises(ValueError) as numba_error:
        sparse_patch_numba(weights, indices, values)
    assert str(numba_error.value) == str(reference_error.value)
    assert weights.tobytes() == before.tobytes()


# (N, Cin, H, W, F, P, activation): batch 1, partial edge patches, a frame smaller than a patch, odd F,
# an empty batch, and the benchmark's frame.
@pytest.mark.parametrize("shape", [(1, 3, 10, 10, 32, 5, "relu"), (2, 3, 7, 11, 8, 5, "none"),
                                   (1, 3, 4, 3, 5, 5, "relu"), (1, 1, 9, 4, 3, 3, "none"),
                                   (0, 3, 10, 10, 32, 5, "relu"), (1, 3, 270, 480, 32, 5, "relu")], ids=str)
@pytest.mark.parametrize("peer", ["numba", "grouped"])
def test_adaptive_conv_peers_match_reference(shape, peer):
    n, c_in, h, w, f_out, patch, activation = shape
    gen = torch.Generator().manual_seed(hash(shape) % (2**31))
    gh, gw = ops.patch_grid(h, w, patch)
    x = torch.randn(n, c_in, h, w, generator=gen)
    kernels = 0.3 * torch.randn(n, gh, gw, f_out, c_in, 3, 3, generator=gen)
    bias = torch.randn(n, gh, gw, f_out, generator=gen)
    if peer == "numba":
        got = torch.from_numpy(adaptive_conv_numba(x.numpy(), kernels.numpy(), bias.numpy(), patch, activation))
    else:
        got = adaptive_conv_grouped(x, kernels, bias, patch, activation)
    expected = ops.adaptive_conv_reference(x, kernels, bias, patch, activation)
    torch.testing.assert_close(got, expected, rtol=ADAPTIVE_RTOL, atol=ADAPTIVE_ATOL)
