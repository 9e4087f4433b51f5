"""MMNet detection, its online-training step and the Gaussian denoiser against their peers on the same threads.

Peers: PyTorch eager (the reference), ``torch.compile`` of the same PyTorch code (``--peers compile``) and,
on the CPU, numba kernels a user would write instead (``@njit(parallel=True)`` over vectors / elements, the
direct layer r = y - Hx, z = x + A r, the posterior mean by log-sum-exp), each checked against the
reference before it is timed.

FLOPs are counted for the direct layer (r = y - Hx and A r: 2 * Nr * Nt complex
multiply-adds = 16 Nr Nt real flops per vector and layer), the work a reader
would count; the C++ kernel does less (it hoists H^H H and I - A H per channel).
The training step counts 3x the forward (forward, and a backward of twice its work).

Denormals: at high SNR the denoiser's weights of far constellation points, their products and the
gradients through them fall below 2^-126, and Intel cores slow down on every such value (measured on a
Sapphire Rapids core: PyTorch's real-valued training step 4x, libedgert's kernels 3-7x before they
flushed). libedgert's MMNet kernels flush denormals on their own threads; the peers run with
``torch.set_flush_denormal(True)`` on the benchmark's thread, what a user would set, so that they are not
timed on a slow path edgert avoids. (PyTorch sets it on the calling thread only: with more threads its
worker threads, and numba's, keep the default.) Rows carry ``flush_denormal``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from bench.harness import Row, compiled_peer, cuda_sync, measure, start_numba
from edgert import ops

try:
    import numba
except ModuleNotFoundError:  # optional (extra [bench]): the numba peer rows are then skipped
    numba = None


def _njit(fn):
    """The numba peers' compile options; without numba the kernels stay plain Python and are never called."""
    return numba.njit(parallel=True, cache=False, fastmath=False)(fn) if numba is not None else fn


_prange = numba.prange if numba is not None else range


@(numba.njit(cache=False, fastmath=False) if numba is not None else (lambda fn: fn))
def _axis_mean_numba(u, v, levels):
    # Posterior mean of one real axis by log-sum-exp over the PAM levels (as the reference).
    top = -np.inf
    for i in range(levels.shape[0]):
        top = max(top, -(u - levels[i]) ** 2 / v)
    s = np.float32(0.0)
    m = np.float32(0.0)
    for i in range(levels.shape[0]):
        w = math.exp(-(u - levels[i]) ** 2 / v - top)
        s += w
        m += w * levels[i]
    return m / s


@_njit
def _denoise_numba(z, var, levels, mean):
    for e in _prange(z.shape[0]):
        v = max(var[e], np.float32(1e-9))
        mean[e] = complex(_axis_mean_numba(z[e].real, v, levels), _axis_mean_numba(z[e].imag, v, levels))


@_njit
def _mmnet_numba(H, y, sigma2, theta2, A, levels, x_out):
    # The direct layer per vector (prange over all G x B vectors): r = y - H x, z = x + A_t r,
    # v from ||r||^2 and the channel's Frobenius ratios, x = E[x | z, v].
    groups, n_rx, n_tx = H.shape
    batch = y.shape[1]
    layers = A.shape[0]
    ratio_m = np.zeros((layers, groups), dtype=np.float32)
    ratio_a = np.zeros((layers, groups), dtype=np.float32)
    for g in range(groups):
        h_norm = np.sum(np.abs(H[g]) ** 2)
        for t in range(layers):
            m = np.eye(n_tx, dtype=np.complex64) - A[t, g] @ H[g]
            ratio_m[t, g] = np.sum(np.abs(m) ** 2) / h_norm
            ratio_a[t, g] = np.sum(np.abs(A[t, g]) ** 2)
    for item in _prange(groups * batch):
        g, b = item // batch, item % batch
        x = np.zeros(n_tx, dtype=np.complex64)
        r = np.empty(n_rx, dtype=np.complex64)
        z = np.empty(n_tx, dtype=np.complex64)
        for t in range(layers):
            rr = np.float32(0.0)
            for j in range(n_rx):
                acc = y[g, b, j]
                for i in range(n_tx):
                    acc -= H[g, j, i] * x[i]
                r[j] = acc
                rr += acc.real * acc.real + acc.imag * acc.imag
            for i in range(n_tx):
                acc = x[i]
                for j in range(n_rx):
                    acc += A[t, g, i, j] * r[j]
                z[i] = acc
            excess = max(rr - n_rx * sigma2[g], np.float32(0.0))
            common = (ratio_m[t, g] * excess + ratio_a[t, g] * sigma2[g]) / n_tx
            for i in range(n_tx):
                v = max(theta2[t, g, i] * common, np.float32(1e-9))
                x[i] = complex(_axis_mean_numba(z[i].real, v, levels), _axis_mean_numba(z[i].imag, v, levels))
        for i in range(n_tx):
            x_out[g, b, i] = x[i]


def _problem(groups: int, batch: int, n_rx: int, n_tx: int, layers: int, modulation: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    H = torch.randn(groups, n_rx, n_tx, generator=gen, dtype=torch.complex64) / n_rx**0.5
    x = ops.indices_to_symbols(torch.randint(0, modulation, (groups, batch, n_tx), generator=gen), modulation)
    sigma2 = torch.full((groups,), n_tx / 10 ** (15 / 10) / n_rx)
    y = torch.einsum("grt,gbt->gbr", H, x) + torch.randn(groups, batch, n_rx, generator=gen,
                                                         dtype=torch.complex64) * sigma2.sqrt()[:, None, None]
    A = (torch.linalg.pinv(H)[None] * torch.linspace(0.7, 1.0, layers)[:, None, None, None]).to(torch.complex64)
    theta2 = torch.ones(layers, groups, n_tx)
    return {k: v.contiguous().to(device) for k, v in dict(H=H, y=y, sigma2=sigma2, theta2=theta2, A=A).items()}


def flops_per_vector(n_rx: int, n_tx: int, layers: int) -> float:
    """Real flops of the direct layer (see module docstring) per vector, all layers."""
    return 16.0 * n_rx * n_tx * layers


def _train_step_rows(device: torch.device, peers: frozenset[str], repeats: int, sync: Callable[[], None],
                     n_rx: int, n_tx: int, layers: int, modulation: int) -> list[Row]:
    """One online-training step (forward + backward over all layers, batch 500, one channel): the complex
    reference under autograd vs the real-valued training graph, eager, compiled and on libedgert's fused kernels.

    Measured first in :func:`run`: after the G = 64 detection rows (numba, compiled complex graphs, large
    allocations) the same process ran this step 1.4x (edgert) and 1.6x (torch.compile) slower than a fresh one,
    which flattered the ratio (1.85x instead of ~1.6x at one thread)."""
    from edgert.ops.mmnet import mmnet_train_loss

    rows: list[Row] = []
    p = _problem(1, 500, n_rx, n_tx, layers, modulation, device)
    x_ref = ops.indices_to_symbols(torch.randint(0, modulation, (1, 500, n_tx),
                                                 generator=torch.Generator().manual_seed(2)), modulation)
    shape = f"G=1 B=500 {n_rx}x{n_tx} T={layers} QAM{modulation} fwd+bwd"

    def ref_step() -> None:
        A = p["A"].clone().requires_grad_()
        th = p["theta2"].clone().requires_grad_()
        xs, _ = ops.mmnet_detect_reference(p["H"], p["y"], p["sigma2"], th, A=A, modulation=modulation,
                                           all_layers=True)
        ((xs - x_ref).abs() ** 2).sum(-1).mean().backward()

    target = torch.stack([x_ref.real, x_ref.imag], -2).contiguous()

    def real_loss(A_ri: torch.Tensor, th: torch.Tensor, backend: str) -> torch.Tensor:
        # backend "torch": mmnet_train_forward, then (xs - target).pow(2).sum((-2, -1)).mean((0, 2));
        # "cpu": the same loss fused into libedgert's forward and backward
        return mmnet_train_loss(p["H"], p["y"], p["sigma2"], A_ri, th, target, modulation, backend=backend).mean()

    def real_step(loss_fn, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        A_ri = torch.view_as_real(p["A"]).clone().requires_grad_()
        th = p["theta2"].clone().requires_grad_()
        loss_fn(A_ri, th, backend).backward()
        return A_ri.grad, th.grad

    train_flops = 3 * flops_per_vector(n_rx, n_tx, layers) * 500
    t = measure(ref_step, repeats=repeats, sync=sync)
    rows.append(Row("mmnet_train_step", "torch-eager-complex", str(device), "complex64", shape, t,
                    flops=train_flops, extra={"peer": True}))
    t = measure(lambda: real_step(real_loss, "torch"), repeats=repeats, sync=sync)
    rows.append(Row("mmnet_train_step", "torch-eager-real", str(device), "float32", shape, t,
                    flops=train_flops, extra={"peer": True}))
    want_grads = real_step(real_loss, "torch")
    if "compile" in peers:
        # torch.compile of the same real-valued graph (inside a compiled region mmnet_train_forward runs
        # its PyTorch graph); the backward is AOTAutograd's compiled backward.
        compiled = compiled_peer(real_loss, "mmnet_train_step",
                                 lambda _: None, torch.view_as_real(p["A"]).clone().requires_grad_(),
                                 p["theta2"].clone().requires_grad_(), "torch")
        if compiled is not None:
            got = real_step(compiled, "torch")
            for g_got, g_want in zip(got, want_grads):
                torch.testing.assert_close(g_got, g_want, rtol=1e-3, atol=1e-3 * g_want.abs().max().item())
            t = measure(lambda: real_step(compiled, "torch"), repeats=repeats, sync=sync)
            rows.append(Row("mmnet_train_step", "torch.compile-real", str(device), "float32", shape, t,
                            flops=train_flops, extra={"peer": True}))
    got = real_step(real_loss, "cpu")
    for g_got, g_want in zip(got, want_grads):
        torch.testing.assert_close(g_got, g_want, rtol=1e-3, atol=1e-3 * g_want.abs().max().item())
    t = measure(lambda: real_step(real_loss, "cpu"), repeats=repeats, sync=sync)
    rows.append(Row("mmnet_train_step", "edgert-cpu-fused", str(device), "float32", shape, t,
                    flops=train_flops))
    return rows


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    flushing = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        rows = _rows(device, quick, peers)
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    for row in rows:
        row.extra["flush_denormal"] = flushing
    return rows


def _rows(device: torch.device, quick: bool, peers: frozenset[str]) -> list[Row]:
    rows: list[Row] = []
    sync = cuda_sync(device)
    repeats = 10 if quick else 30
    configs = [(1, 100)] if quick else [(1, 100), (64, 100)]
    n_rx, n_tx, layers, modulation = 64, 16, 10, 16
    if device.type == "cpu":
        rows += _train_step_rows(device, peers, repeats, sync, n_rx, n_tx, layers, modulation)
    for groups, batch in configs:
        p = _problem(groups, batch, n_rx, n_tx, layers, modulation, device)
        shape = f"G={groups} B={batch} {n_rx}x{n_tx} T={layers} QAM{modulation}"
        vectors = groups * batch
        flops = 16.0 * n_rx * n_tx * layers * vectors
        with torch.no_grad():
            t = measure(lambda: ops.mmnet_detect_reference(p["H"], p["y"], p["sigma2"], p["theta2"], A=p["A"],
                                                           modulation=modulation), repeats=repeats, sync=sync)
        rows.append(Row("mmnet_detect", "torch-eager", str(device), "complex64", shape, t, flops=flops,
                        extra={"peer": True, "vectors_per_s": vectors / t.median}))
        if "compile" in peers:
            def detect(H, y, sigma2, theta2, A):
                return ops.mmnet_detect_reference(H, y, sigma2, theta2, A=A, modulation=modulation)

            args = (p["H"], p["y"], p["sigma2"], p["theta2"], p["A"])
            with torch.no_grad():
                want = detect(*args)[0]
                fn = compiled_peer(detect, "mmnet_detect",
                                   lambda got: torch.testing.assert_close(got[0], want, rtol=1e-3, atol=2e-4), *args)
                if fn is not None:
                    t = measure(lambda: fn(*args), repeats=repeats, sync=sync)
                    rows.append(Row("mmnet_detect", "torch.compile", str(device), "complex64", shape, t, flops=flops,
                                    extra={"peer": True, "vectors_per_s": vectors / t.median}))
        if numba is not None and device.type == "cpu":
            start_numba(numba)
            arrays = {k: v.numpy() for k, v in p.items()}
            levels = ops.qam_levels(modulation).numpy()
            x_numba = np.empty((groups, batch, n_tx), dtype=np.complex64)

            def detect_numba() -> None:
                _mmnet_numba(arrays["H"], arrays["y"], arrays["sigma2"], arrays["theta2"], arrays["A"], levels,
                             x_numba)

            detect_numba()
            with torch.no_grad():
                want = ops.mmnet_detect_reference(p["H"], p["y"], p["sigma2"], p["theta2"], A=p["A"],
                                                  modulation=modulation)[0]
            torch.testing.assert_close(torch.from_numpy(x_numba), want, rtol=1e-3, atol=2e-4)
            t = measure(detect_numba, repeats=repeats, sync=sync)
            rows.append(Row("mmnet_detect", "numba-prange", str(device), "complex64", shape, t, flops=flops,
                            extra={"peer": True, "vectors_per_s": vectors / t.median}))
        for backend in ops.available_backends(device):
            if backend == "torch":
                continue
            t = measure(lambda: ops.mmnet_detect(p["H"], p["y"], p["sigma2"], p["theta2"], A=p["A"],
                                                 modulation=modulation, backend=backend), repeats=repeats, sync=sync)
            rows.append(Row("mmnet_detect", f"edgert-{backend}", str(device), "complex64", shape, t, flops=flops,
                            extra={"vectors_per_s": vectors / t.median}))

    gen = torch.Generator().manual_seed(1)
    n = 16 * 100 * 64
    z = torch.randn(n, generator=gen, dtype=torch.complex64).to(device)
    var = (0.1 * torch.rand(n, generator=gen)).to(device)
    shape = f"N={n} QAM16"
    bytes_moved = n * (8 + 4 + 8 + 4)
    t = measure(lambda: ops.gaussian_denoise_reference(z, var, 16), repeats=repeats, sync=sync)
    rows.append(Row("gaussian_denoise", "torch-eager", str(device), "complex64", shape, t, bytes_moved,
                    extra={"peer": True}))
    if "compile" in peers:
        want_mean, want_var = ops.gaussian_denoise_reference(z, var, 16)

        def check(got: tuple[torch.Tensor, torch.Tensor]) -> None:
            torch.testing.assert_close(got[0], want_mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(got[1], want_var, rtol=1e-4, atol=1e-5)

        fn = compiled_peer(ops.gaussian_denoise_reference, "gaussian_denoise", check, z, var, 16)
        if fn is not None:
            rows.append(Row("gaussian_denoise", "torch.compile", str(device), "complex64", shape,
                            measure(lambda: fn(z, var, 16), repeats=repeats, sync=sync), bytes_moved,
                            extra={"peer": True}))
    if numba is not None and device.type == "cpu":
        start_numba(numba)
        z_np, var_np, levels16 = z.numpy(), var.numpy(), ops.qam_levels(16).numpy()
        mean_np = np.empty_like(z_np)
        _denoise_numba(z_np, var_np, levels16, mean_np)
        torch.testing.assert_close(torch.from_numpy(mean_np), ops.gaussian_denoise_reference(z, var, 16)[0],
                                   rtol=1e-4, atol=1e-5)
        rows.append(Row("gaussian_denoise", "numba-prange (mean only)", str(device), "complex64", shape,
                        measure(lambda: _denoise_numba(z_np, var_np, levels16, mean_np), repeats=repeats),
                        bytes_moved, extra={"peer": True}))
    for backend in ops.available_backends(device):
        if backend != "torch":
            t = measure(lambda: ops.gaussian_denoise(z, var, 16, backend=backend), repeats=repeats, sync=sync)
            rows.append(Row("gaussian_denoise", f"edgert-{backend}", str(device), "complex64", shape, t, bytes_moved))
    return rows
