"""One table-driven parity harness for the hot-path ops.

Each case: an op name, a function that builds inputs for a shape on a device,
a function running the op on a backend, the shapes (batch 1, odd sizes, empty,
large) and tolerances. Every available backend is checked against the
PyTorch reference; CUDA rows run only when edgert.cuda_available().
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

import edgert
from edgert import ops


@dataclass(frozen=True)
class Case:
    op: str
    make_inputs: Callable[[tuple, torch.device, torch.Generator], dict[str, Any]]
    run: Callable[..., Any]  # run(backend, **inputs) -> tensor or tuple of tensors
    shapes: tuple
    rtol: float
    atol: float


def _block_average_inputs(shape, device, gen):
    n, c, h, w, b = shape
    return {"grad": torch.randn(n, c, h, w, generator=gen).to(device), "block": b}


_DTYPES = {"f32": torch.float32, "f16": torch.float16, "i32": torch.int32, "u32": torch.uint32}


def _sorted_indices(size, count, gen):
    """``count`` distinct indices of [0, size), increasing (all of them when count == size)."""
    if count == size:
        return torch.arange(size)
    return torch.randperm(size, generator=gen)[:count].sort().values


def _sparse_patch_inputs(shape, device, gen):
    size, count, wdt, vdt, idt, mode = shape
    return {
        "weights": torch.randn(size, generator=gen).to(_DTYPES[wdt]).to(device),
        "indices": _sorted_indices(size, count, gen).to(_DTYPES[idt]).to(device),
        "values": torch.randn(count, generator=gen).to(_DTYPES[vdt]).to(device),
        "mode": mode,
    }


def _run_sparse_patch(backend, weights, indices, values, mode):
    ops.sparse_patch(weights, indices, values, mode, backend=backend)  # in place: the harness passes clones
    return weights


def _sparse_gather_inputs(shape, device, gen):
    size, count, wdt, odt, idt = shape
    return {
        "weights": torch.randn(size, generator=gen).to(_DTYPES[wdt]).to(device),
        "indices": _sorted_indices(size, count, gen).to(_DTYPES[idt]).to(device),
        "out_dtype": _DTYPES[odt],
    }


# Sizes (P, K): empty update, one index, odd sizes, dense 100%, 5% of a 2.2M-parameter model.
_SPARSE_SIZES = ((17, 0), (1, 1), (1001, 37), (333, 333), (2_200_000, 110_000))
_SPARSE_PATCH_SHAPES = tuple(
    (p, k, wdt, vdt, idt, mode)
    for p, k in _SPARSE_SIZES
    for wdt in ("f32", "f16")
    for vdt in ("f32", "f16")
    for idt in ("i32", "u32")
    for mode in ("add", "set")
    # The large size once per weight/value dtype pair and mode is enough.
    if p < 1_000_000 or idt == "i32"
)
_SPARSE_GATHER_SHAPES = tuple(
    (p, k, wdt, odt, idt)
    for p, k in _SPARSE_SIZES
    for wdt in ("f32", "f16")
    for odt in ("f32", "f16")
    for idt in ("i32", "u32")
    if p < 1_000_000 or idt == "u32"
)

CASES: list[Case] = [
    Case(
        op="block_average",
        make_inputs=_block_average_inputs,
        run=lambda backend, grad, block: ops.block_average(grad, block, backend=backend),
        shapes=((1, 3, 16, 16, 16), (2, 3, 17, 33, 16), (0, 3, 8, 8, 16), (1, 1, 1, 1, 16), (3, 5, 31, 47, 7),
                (1, 0, 8, 8, 4), (2, 3, 270, 480, 16)),
        rtol=1e-5,
        atol=1e-6,
    ),
    # Exact: every backend adds in float32 and rounds once to the weights' dtype.
    Case(
        op="sparse_patch",
        make_inputs=_sparse_patch_inputs,
        run=_run_sparse_patch,
        shapes=_SPARSE_PATCH_SHAPES,
        rtol=0.0,
        atol=0.0,
    ),
    Case(
        op="sparse_gather",
        make_inputs=_sparse_gather_inputs,
        run=lambda backend, weights, indices, out_dtype: ops.sparse_gather(weights, indices, out_dtype=out_dtype,
                                                                          backend=backend),
        shapes=_SPARSE_GATHER_SHAPES,
        rtol=0.0,
        atol=0.0,
    ),
]


def _devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if edgert.cuda_available():
        devices.append(torch.device("cuda"))
    return devices


def _params():
    for case in CASES:
        for device in _devices():
            for backend in ops.available_backends(device):
                if backend == "torch":
                    continue
                for shape in case.shapes:
                    marks = [pytest.mark.gpu] if device.type == "cuda" else []
                    yield pytest.param(case, device, backend, shape, id=f"{case.op}-{backend}-{shape}", marks=marks)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("case,device,backend,shape", list(_params()))
def test_backend_matches_reference(case: Case, device, backend, shape):
    gen = torch.Generator().manual_seed(hash((case.op, shape)) % (2**31))
    inputs = case.make_inputs(shape, device, gen)
    # The reference runs on the same inputs (cloned: some ops write in place).
    ref_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    expected = _as_tuple(case.run("torch", **ref_inputs))
    got = _as_tuple(case.run(backend, **inputs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype and g.device == e.device
        torch.testing.assert_close(g, e, rtol=case.rtol, atol=case.atol)
