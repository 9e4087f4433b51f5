"""MMNet detection and the Gaussian denoiser vs PyTorch eager (the reference) on the same threads.

FLOPs are counted for the direct layer (r = y - Hx and A r: 2 * Nr * Nt complex
multiply-adds = 16 Nr Nt real flops per vector and layer), the work a reader
would count; the C++ kernel does less (it hoists H^H H and I - A H per channel).
"""
from __future__ import annotations

import torch

from bench.harness import Row, compiled_peer, cuda_sync, measure
from edgert import ops


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


def run(device: torch.device, quick: bool, peers: frozenset[str] = frozenset()) -> list[Row]:
    rows: list[Row] = []
    sync = cuda_sync(device)
    repeats = 10 if quick else 30
    configs = [(1, 100)] if quick else [(1, 100), (64, 100)]
    n_rx, n_tx, layers, modulation = 64, 16, 10, 16
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
        for backend in ops.available_backends(device):
            if backend == "torch":
                continue
            t = measure(lambda: ops.mmnet_detect(p["H"], p["y"], p["sigma2"], p["theta2"], A=p["A"],
                                                 modulation=modulation, backend=backend), repeats=repeats, sync=sync)
            rows.append(Row("mmnet_detect", f"edgert-{backend}", str(device), "complex64", shape, t, flops=flops,
                            extra={"vectors_per_s": vectors / t.median}))

    # One online-training step (forward + backward over all layers, batch 500, one channel): the
    # complex reference under autograd vs the real-valued training graph with the fused denoiser backward.
    if device.type == "cpu":
        from edgert.ops.mmnet import mmnet_train_forward

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

        target = torch.stack([x_ref.real, x_ref.imag], -2)

        def fast_step() -> None:
            A_ri = torch.view_as_real(p["A"]).clone().requires_grad_()
            th = p["theta2"].clone().requires_grad_()
            xs = mmnet_train_forward(p["H"], p["y"], p["sigma2"], A_ri, th, modulation)
            (xs - target).pow(2).sum((-2, -1)).mean().backward()

        t = measure(ref_step, repeats=repeats, sync=sync)
        rows.append(Row("mmnet_train_step", "torch-eager-complex", str(device), "complex64", shape, t,
                        flops=3 * flops_per_vector(n_rx, n_tx, layers) * 500, extra={"peer": True}))
        t = measure(fast_step, repeats=repeats, sync=sync)
        rows.append(Row("mmnet_train_step", "edgert-real-fused", str(device), "float32", shape, t,
                        flops=3 * flops_per_vector(n_rx, n_tx, layers) * 500))

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
    for backend in ops.available_backends(device):
        if backend != "torch":
            t = measure(lambda: ops.gaussian_denoise(z, var, 16, backend=backend), repeats=repeats, sync=sync)
            rows.append(Row("gaussian_denoise", f"edgert-{backend}", str(device), "complex64", shape, t, bytes_moved))
    return rows
