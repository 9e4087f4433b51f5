"""Issue 16 probes (output: probe_output.txt): an untrained regularised linear stage on the 32 pilot matrices.

``A_t = (H^H H + c_t sigma2 I)^-1 H^H`` with ``c_t`` geometric from 1 to C over the layers, MMNet's noise estimate
and denoiser; three probes: the lambda schedule with a constant theta2, theta2 per symbol from that row's share
of ``||A||_F^2`` / ``||I - A H||_F^2``, and damping ``x_{t+1} = beta eta(z_t) + (1 - beta) x_t``.
Pilot set: np.savez("uma_pilot_d0_every16.npz", H=H[:1, ::16], axes=np.array(["drop", "subcarrier"])) with H from
shared/data/mimo/uma_nlos_seq_64x32.npz. Run from the repository root with PYTHONPATH=python.
"""
import torch

from edgert.mimo import channels as ch
from edgert.mimo.detectors.mmnet import RegularisedBasis
from edgert.ops.mmnet import _posterior_axis, hard_decision, mmnet_detect, qam_levels

torch.set_num_threads(1)
cs = ch.load_channels("uma_pilot_d0_every16.npz", nt=16)
H = cs.sequences()[:, 0].reshape(-1, 64, 16).contiguous()
G = H.shape[0]
basis = RegularisedBasis.of(H)
levels = qam_levels(16)
hn = (H.abs() ** 2).sum((1, 2))


def operators(C: float, s2: float, T: int) -> torch.Tensor:
    c = torch.logspace(0, torch.log10(torch.tensor(C)), T)
    return basis.operators(torch.ones(T, G), (c * s2).log()[:, None].expand(T, G))


def damped(A, y, sigma2, beta, T):
    """MMNet's layers (noise estimate of the module docstring of edgert.ops.mmnet, theta2 = 1) with damping."""
    x = torch.zeros(y.shape[:-1] + (16,), dtype=H.dtype)
    for t in range(T):
        a = A[t]
        r = y - x @ H.transpose(-1, -2)
        z = x + r @ a.transpose(-1, -2)
        m = torch.eye(16) - a @ H
        rm = (m.abs() ** 2).sum((-2, -1)) / hn
        ra = (a.abs() ** 2).sum((-2, -1))
        exc = torch.relu((r.abs() ** 2).sum(-1) - 64 * sigma2[:, None])
        v = 1 / 16 * (rm[:, None, None] * exc[..., None] + (ra * sigma2)[:, None, None])
        mr, _ = _posterior_axis(z.real, v, levels)
        mi, _ = _posterior_axis(z.imag, v, levels)
        xn = torch.complex(mr, mi)
        x = xn if t == 0 else beta * xn + (1 - beta) * x
    return hard_decision(x, 16)


def ser(idx, b) -> float:
    return float((idx.long() != b.indices.long()).float().mean())


print("## probe_lambda_schedule (theta2 constant)")
for snr in (20.0, 24.0):
    b = ch.sample_batch(H, snr, 16, 64, torch.Generator().manual_seed(1))
    for C in (1.0, 10.0, 100.0, 1000.0, 1e4):
        A = operators(C, float(b.sigma2[0]), 10)
        for th in (1.0, 2.0):
            _, idx = mmnet_detect(H, b.y, b.sigma2, torch.full((10, G, 16), th), A=A, modulation=16)
            print(f"snr {snr} C {C:g} theta2 {th} SER {ser(idx, b):.2e}", flush=True)

print("## probe_theta2_rows")
for snr in (20.0, 24.0):
    b = ch.sample_batch(H, snr, 16, 64, torch.Generator().manual_seed(1))
    for C in (1.0, 10.0, 100.0):
        A = operators(C, float(b.sigma2[0]), 10)
        row_a = (A.abs() ** 2).sum(-1)
        row_m = ((torch.eye(16) - A @ H).abs() ** 2).sum(-1)
        share_a = 16 * row_a / row_a.sum(-1, keepdim=True)
        share_m = 16 * row_m / row_m.sum(-1, keepdim=True)
        for kind, th in (("A", share_a), ("M", share_m), ("mix", 0.5 * (share_a + share_m))):
            _, idx = mmnet_detect(H, b.y, b.sigma2, th.float().contiguous(), A=A, modulation=16)
            print(f"snr {snr} C {C:g} theta2 rows {kind} SER {ser(idx, b):.2e}", flush=True)

print("## probe_damping")
b = ch.sample_batch(H, 24.0, 16, 64, torch.Generator().manual_seed(1))
for C in (1.0, 10.0, 100.0):
    for T in (10, 30):
        A = operators(C, float(b.sigma2[0]), T)
        for beta in (1.0, 0.7, 0.4):
            print(f"snr 24.0 C {C:g} T {T} beta {beta} SER {ser(damped(A, b.y, b.sigma2, beta, T), b):.2e}", flush=True)
