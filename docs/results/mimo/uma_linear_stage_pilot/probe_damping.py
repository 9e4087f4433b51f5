"""Issue 16 probe (output: probe_output.txt): an untrained regularised linear stage on the 32 pilot matrices.

Pilot set: np.savez("uma_pilot_d0_every16.npz", H=H[:1, ::16], axes=np.array(["drop", "subcarrier"])) with H from
shared/data/mimo/uma_nlos_seq_64x32.npz. Run from the repository root with PYTHONPATH=python.
"""
import torch
from edgert.mimo import channels as ch
from edgert.mimo.detectors.mmnet import RegularisedBasis
from edgert.ops.mmnet import _posterior_axis, qam_levels, hard_decision
torch.set_num_threads(1)
cs = ch.load_channels('uma_pilot_d0_every16.npz', nt=16)
H = cs.sequences()[:, 0].reshape(-1, 64, 16).contiguous()
G = H.shape[0]
basis = RegularisedBasis.of(H)
levels = qam_levels(16)
hn = (H.abs()**2).sum((1, 2))
def run(A, y, sigma2, beta, T):
    x = torch.zeros(y.shape[:-1] + (16,), dtype=H.dtype)
    for t in range(T):
        a = A[min(t, A.shape[0]-1)]
        r = y - x @ H.transpose(-1, -2)
        z = x + r @ a.transpose(-1, -2)
        m = torch.eye(16) - a @ H
        rm = (m.abs()**2).sum((-2, -1)) / hn
        ra = (a.abs()**2).sum((-2, -1))
        exc = torch.relu((r.abs()**2).sum(-1) - 64 * sigma2[:, None])
        v = 1 / 16 * (rm[:, None, None] * exc[..., None] + (ra * sigma2)[:, None, None])
        mr, _ = _posterior_axis(z.real, v, levels); mi, _ = _posterior_axis(z.imag, v, levels)
        xn = torch.complex(mr, mi)
        x = xn if t == 0 else beta * xn + (1 - beta) * x
    return hard_decision(x, 16)
for snr in (24.0,):
    b = ch.sample_batch(H, snr, 16, 64, torch.Generator().manual_seed(1))
    s2 = float(b.sigma2[0])
    for C in (1.0, 10.0, 100.0):
        for T in (10, 30):
            c = torch.logspace(0, torch.log10(torch.tensor(C)), T)
            A = basis.operators(torch.ones(T, G), (c * s2).log()[:, None].expand(T, G))
            for beta in (1.0, 0.7, 0.4):
                idx = run(A, b.y, b.sigma2, beta, T)
                print(f"snr {snr} C {C:g} T {T} beta {beta} SER {float((idx.long() != b.indices.long()).float().mean()):.2e}", flush=True)
