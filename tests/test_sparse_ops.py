"""Sparse patch/gather: rejection leaves weights byte-identical, exact fp16 rounding, input checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import GPU
from edgert import _edgert, ops

# The CUDA rows are always collected (marked gpu) and skipped with the reason where they cannot run.
BACKENDS = [pytest.param("cpu", torch.device("cpu"), id="cpu"), pytest.param("torch", torch.device("cpu"), id="torch"),
            pytest.param("cuda", torch.device("cuda"), id="cuda", marks=GPU)]

# (indices, dtype, expected message) for weights of size 8.
BAD_INDICES = [
    ([1, 3, 9, 5], torch.int32, r"^sparse_patch: index 9 at position 2 is out of range \[0, 8\)$"),
    ([1, 3, 8], torch.uint32, r"^sparse_patch: index 8 at position 2 is out of range \[0, 8\)$"),
    ([1, 5, 4, 7], torch.int32, r"^sparse_patch: indices must be strictly increasing: position 2 holds 4 after 5$"),
    ([0, 2, 2, 6], torch.uint32, r"^sparse_patch: indices must be strictly increasing: position 2 holds 2 after 2$"),
    ([-1, 2, 3], torch.int32, r"^sparse_patch: index -1 at position 0 is out of range \[0, 8\)$"),
    ([0, 2, 3, -4], torch.int32, r"^sparse_patch: index -4 at position 3 is out of range \[0, 8\)$"),
]


def _bytes(t: torch.Tensor) -> bytes:
    return t.cpu().view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", ["add", "set"])
@pytest.mark.parametrize("wdtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("bad,idtype,message", BAD_INDICES)
def test_rejected_patch_leaves_weights_identical(backend, device, mode, wdtype, bad, idtype, message):
    weights = torch.randn(8, generator=torch.Generator().manual_seed(1)).to(wdtype).to(device)
    before = _bytes(weights)
    indices = torch.tensor(bad, dtype=torch.int64).to(idtype).to(device)
    values = torch.full((len(bad),), 3.0, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match=message):
        ops.sparse_patch(weights, indices, values, mode, backend=backend)
    assert _bytes(weights) == before


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bad,idtype,message", BAD_INDICES)
def test_rejected_gather_names_the_position(backend, device, bad, idtype, message):
    weights = torch.arange(8, dtype=torch.float32, device=device)
    indices = torch.tensor(bad, dtype=torch.int64).to(idtype).to(device)
    with pytest.raises(ValueError, match=message.replace("sparse_patch", "sparse_gather")):
        ops.sparse_gather(weights, indices, backend=backend)


def test_native_rejection_on_a_large_buffer_writes_nothing():
    # The bad index sits at the very end, after ~1e5 valid ones in parallel chunks.
    weights = torch.randn(2_000_000)
    before = _bytes(weights)
    indices = torch.arange(0, 2_000_000, 16, dtype=torch.int32)
    indices[-1] = 2_000_000
    with pytest.raises(ValueError, match=r"index 2000000 at position 124999 is out of range \[0, 2000000\)"):
        _edgert.sparse_patch(weights, indices, torch.ones(indices.shape[0]), "set")
    assert _bytes(weights) == before


def _special_values() -> torch.Tensor:
    """fp32 values exercising fp16 rounding: ties, subnormals, overflow to inf, signed zeros."""
    tiny = 2.0**-24
    base = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65519.0, 65520.0, -65520.0, 1e6, tiny / 2, tiny * 0.75,
                         tiny * 1.5, 2**-14 - 2**-25, 0.0, -0.0, 3.14159265, -2.5e-6, 1e-8], dtype=torch.float32)
    noise = torch.randn(4096, generator=torch.Generator().manual_seed(7)) * torch.logspace(-9, 5, 4096)
    return torch.cat([base, noise])


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fp16_rounding_matches_torch_conversion(backend, device):
    values = _special_values()
    size = values.shape[0]
    indices = torch.arange(size, dtype=torch.int32)
    start = torch.randn(size, generator=torch.Generator().manual_seed(3)).half()

    # set: fp32 values rounded into fp16 weights exactly as Tensor.half() does.
    weights = torch.zeros(size, dtype=torch.float16).to(device)
    ops.sparse_patch(weights, indices.to(device), values.to(device), "set", backend=backend)
    assert torch.equal(weights.cpu().view(torch.int16), values.half().view(torch.int16))

    # add: fp16 weights + fp32 values, summed in fp32 and rounded once.
    weights = start.clone().to(device)
    ops.sparse_patch(weights, indices.to(device), values.to(device), "add", backend=backend)
    assert torch.equal(weights.cpu().view(torch.int16), (start.float() + values).half().view(torch.int16))

    # fp16 values widen exactly into fp32 weights; gather to fp16 rounds like .half().
    weights = torch.zeros(size, dtype=torch.float32).to(device)
    ops.sparse_patch(weights, indices.to(device), values.half().to(device), "add", backend=backend)
    assert torch.equal(weights.cpu(), values.half().float())
    dense = values.to(device)
    got = ops.sparse_gather(dense, indices.to(device), out_dtype=torch.float16, backend=backend)
    assert torch.equal(got.cpu().view(torch.int16), values.half().view(torch.int16))


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_numpy_inputs_are_patched_in_place(backend):
    weights = np.arange(10, dtype=np.float32)
    ops.sparse_patch(weights, np.array([0, 4, 9], dtype=np.uint32), np.array([1, 2, 3], dtype=np.float16), "add",
                     backend=backend)
    np.testing.assert_array_equal(weights, [1, 1, 2, 3, 6, 5, 6, 7, 8, 12])
    got = ops.sparse_gather(weights, np.array([4, 9], dtype=np.int32), backend=backend)
    assert got.dtype == torch.float32 and got.tolist() == [6.0, 12.0]


def test_mode_accepts_integers():
    weights = torch.zeros(4)
    ops.sparse_patch(weights, torch.tensor([1], dtype=torch.int32), torch.tensor([2.0]), 1)
    ops.sparse_patch(weights, torch.tensor([1], dtype=torch.int32), torch.tensor([2.0]), 0)
    assert weights.tolist() == [0.0, 4.0, 0.0, 0.0]
    _edgert.sparse_patch(weights, torch.tensor([2], dtype=torch.int32), torch.tensor([5.0]), 1)
    assert weights.tolist() == [0.0, 4.0, 5.0, 0.0]


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_op_rejects_bad_arguments_naming_expectations(backend):
    w, i, v = torch.zeros(8), torch.tensor([1, 2, 3], dtype=torch.int32), torch.ones(3)
    with pytest.raises(TypeError,
                       match=r"^weights: expected contiguous float32\|float16 \[P\], got float64 \[8\] on cpu$"):
        ops.sparse_patch(w.double(), i, v, backend=backend)
    with pytest.raises(TypeError, match=r"^indices: expected contiguous int32\|uint32 \[K\], got int64 \[3\] on cpu$"):
        ops.sparse_patch(w, i.long(), v, backend=backend)
    with pytest.raises(ValueError,
                       match=r"^values: expected contiguous float32\|float16 \[K\] = \[3\], got float32 \[2\]"):
        ops.sparse_patch(w, i, v[:2], backend=backend)
    with pytest.raises(ValueError, match=r"^weights: expected contiguous .*\[P\], got float32 \[2, 4\] on cpu$"):
        ops.sparse_patch(w.view(2, 4), i, v, backend=backend)
    with pytest.raises(ValueError, match=r"non-contiguous"):
        ops.sparse_patch(torch.zeros(16)[::2], i, v, backend=backend)
    with pytest.raises(ValueError, match=r"^mode: expected 'add' or 'set' \(or 0 / 1\), got 'mul'$"):
        ops.sparse_patch(w, i, v, "mul", backend=backend)
    with pytest.raises(TypeError, match=r"^out_dtype: expected torch.float32 or torch.float16, got torch.float64$"):
        ops.sparse_gather(w, i, out_dtype=torch.float64, backend=backend)
    with pytest.raises(TypeError, match=r"^weights: expected a torch.Tensor or numpy.ndarray, got list$"):
        ops.sparse_patch([0.0] * 8, i, v, backend=backend)
    assert torch.count_nonzero(w) == 0


def test_raw_binding_checks_independently():
    w, i, v = torch.zeros(8), torch.tensor([1, 2, 3], dtype=torch.int32), torch.ones(3)
    with pytest.raises(TypeError, match=r"^weights: expected float32\|float16 \[P\] on cpu, got float64 \[8\] on cpu$"):
        _edgert.sparse_patch(w.double(), i, v, "add")
    with pytest.raises(TypeError, match=r"^indices: expected int32\|uint32 \[K\] on cpu, got int64 \[3\] on cpu$"):
        _edgert.sparse_patch(w, i.long(), v, "add")
    with pytest.raises(ValueError, match=r"^values: expected float32\|float16 \[K\] = \[3\] on cpu, got float32 \[4\]"):
        _edgert.sparse_patch(w, i, torch.ones(4), "add")
    with pytest.raises(ValueError, match=r"^mode: expected 'add' or 'set' \(or 0 / 1\), got 2$"):
        _edgert.sparse_patch(w, i, v, 2)
    with pytest.raises(TypeError, match=r"^mode: expected 'add' or 'set' \(or 0 / 1\), got float$"):
        _edgert.sparse_patch(w, i, v, 1.0)
    with pytest.raises(ValueError, match=r"^out: expected float32\|float16 \[K\] = \[3\] on cpu, got float16 \[2\]"):
        _edgert.sparse_gather(w, i, torch.empty(2, dtype=torch.float16))
    with pytest.raises(TypeError,
                       match=r"^out: expected float32\|float16 \[K\] = \[3\] on cpu, got int32 \[3\] on cpu$"):
        _edgert.sparse_gather(w, i, torch.empty(3, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"^values: expected an array"):
        _edgert.sparse_patch(w, i, [1.0, 2.0, 3.0], "add")
    assert torch.count_nonzero(w) == 0
