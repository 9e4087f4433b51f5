"""One table-driven parity harness for the hot-path ops.

Each case: an op name, a function that builds inputs for a shape on a device,
a function running the op on a backend, the shapes (batch 1, odd sizes, empty,
large) and tolerances. Every available backend is checked against the
PyTorch reference. The CUDA rows (marked gpu) are always collected and run where
edgert's CUDA kernels and torch's CUDA are usable (.ci/gpu), skipped with the reason elsewhere.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from conftest import GPU
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


def _adaptive_conv_inputs(shape, device, gen):
    n, c_in, h, w, f_out, patch, activation = shape
    gh, gw = ops.patch_grid(h, w, patch)
    return {
        "x": torch.randn(n, c_in, h, w, generator=gen).to(device),
        "kernels": (0.3 * torch.randn(n, gh, gw, f_out, c_in, 3, 3, generator=gen)).to(device),
        "bias": (0.1 * torch.randn(n, gh, gw, f_out, generator=gen)).to(device),
        "patch": patch,
        "activation": activation,
    }


def _mmnet_inputs(shape, device, gen):
    """A noisy MIMO batch with a random (not trained) detector: exercises every term of the layer."""
    groups, batch, n_rx, n_tx, layers, modulation, form, all_layers = shape
    H = (torch.randn(groups, n_rx, n_tx, generator=gen, dtype=torch.complex64) / n_rx**0.5)
    symbols = ops.indices_to_symbols(torch.randint(0, modulation, (groups, batch, n_tx), generator=gen), modulation)
    sigma2 = 0.01 + 0.2 * torch.rand(groups, generator=gen)
    noise = torch.randn(groups, batch, n_rx, generator=gen, dtype=torch.complex64) * sigma2.sqrt()[:, None, None]
    y = torch.einsum("grt,gbt->gbr", H, symbols) + noise
    theta2 = 0.5 + torch.rand(layers, groups, n_tx, generator=gen)
    inputs = {"H": H, "y": y, "sigma2": sigma2, "theta2": theta2, "modulation": modulation, "all_layers": all_layers}
    if form == "full":
        pinv = torch.linalg.pinv(H) if groups else H.transpose(-1, -2)
        jitter = 0.05 * torch.randn(layers, groups, n_tx, n_rx, generator=gen, dtype=torch.complex64)
        inputs["A"] = (pinv[None] * (0.6 + 0.4 * torch.rand(layers, groups, 1, 1, generator=gen)) + jitter).contiguous()
    else:
        inputs["theta1"] = 0.5 + torch.rand(layers, groups, generator=gen)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _denoise_inputs(shape, device, gen):
    n, modulation, scale = shape
    z = 1.5 * torch.randn(n, generator=gen, dtype=torch.complex64)
    var = scale * torch.rand(n, generator=gen)
    return {"z": z.to(device), "var": var.to(device), "modulation": modulation}


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
        op="mmnet_detect",
        make_inputs=_mmnet_inputs,
        run=lambda backend, H, y, sigma2, theta2, **kw: ops.mmnet_detect(H, y, sigma2, theta2, backend=backend, **kw),
        # (G, B, Nr, Nt, T, M, form, all_layers)
        shapes=((1, 1, 8, 4, 1, 4, "full", False), (2, 5, 7, 3, 3, 16, "full", True),
                (3, 4, 16, 8, 4, 64, "iid", False), (1, 0, 8, 4, 2, 16, "full", False),
                (0, 3, 8, 4, 2, 16, "iid", False), (4, 100, 64, 16, 10, 16, "full", False),
                (2, 32, 64, 16, 10, 4, "iid", True)),
        rtol=1e-3,
        atol=2e-4,
    ),
    Case(
        op="gaussian_denoise",
        make_inputs=_denoise_inputs,
        run=lambda backend, **kw: ops.gaussian_denoise(**kw, backend=backend),
        # (N, M, variance scale): mid, high (tiny variance) and low SNR
        shapes=((1, 4, 0.5), (0, 16, 0.5), (1001, 16, 0.5), (777, 64, 1e-6), (513, 4, 10.0), (4096, 64, 0.05)),
        rtol=1e-4,
        atol=1e-5,
    ),
    Case(
        op="adaptive_conv",
        make_inputs=_adaptive_conv_inputs,
        run=lambda backend, **kw: ops.adaptive_conv(**kw, backend=backend),
        # (N, Cin, H, W, F, P, activation)
        shapes=((1, 3, 1, 1, 32, 5, "relu"), (2, 3, 7, 11, 8, 5, "relu"), (1, 3, 10, 10, 32, 5, "none"),
                (1, 1, 9, 4, 16, 3, "relu"), (3, 3, 6, 6, 5, 1, "none"), (0, 3, 10, 10, 32, 5, "relu"),
                (1, 3, 13, 17, 64, 5, "relu"), (1, 2, 8, 8, 1, 4, "none"), (1, 3, 270, 480, 32, 5, "relu"),
                # patches of more than 32 pixels (several pixel blocks, runs longer than a vector), odd F
                # (the 3-feature micro-kernel's remainders), frames narrower than a patch
                (2, 3, 11, 6, 2, 6, "relu"), (1, 3, 23, 37, 7, 9, "relu"), (1, 2, 20, 33, 3, 16, "none"),
                (1, 3, 4, 3, 31, 5, "none")),
        rtol=1e-4,
        atol=1e-4,
    ),
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


def _params():
    # The CPU kernels where this install has them; the CUDA rows always (skipped where they cannot run).
    native = [(torch.device("cpu"), b, ()) for b in ops.available_backends("cpu") if b != "torch"]
    for case in CASES:
        for device, backend, marks in native + [(torch.device("cuda"), "cuda", GPU)]:
            for shape in case.shapes:
                yield pytest.param(case, device, backend, shape, id=f"{case.op}-{backend}-{shape}", marks=marks)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("case,device,backend,shape", list(_params()))
def test_backend_matches_reference(case: Case, device, backend, shape):
    # crc32, not hash(): string hashes change per process, the inputs must not.
    gen = torch.Generator().manual_seed(zlib.crc32(repr((case.op, shape)).encode()))
    inputs = case.make_inputs(shape, device, gen)
    # The reference runs on the same inputs (cloned: some ops write in place).
    ref_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    expected = _as_tuple(case.run("torch", **ref_inputs))
    got = _as_tuple(case.run(backend, **inputs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype and g.device == e.device
        torch.testing.assert_close(g, e, rtol=case.rtol, atol=case.atol)
