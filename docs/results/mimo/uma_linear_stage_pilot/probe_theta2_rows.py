"""Issue 16 probe (output: probe_output.txt): an untrained regularised linear stage on the 32 pilot matrices.

Pilot set: np.savez("uma_pilot_d0_every16.npz", H=H[:1, ::16], axes=np.array(["drop", "subcarrier"])) with H from
shared/data/mimo/uma_nlos_seq_64x32.npz. Run from the repository root with PYTHONPATH=python.
"""
import torch
from edgert.mimo import channels as ch
from edgert.mimo.detectors.mmnet import RegularisedBasis
from edgert.ops.mmnet import mmnet_detect
torch.set_num_threads(1)
cs = ch.load_channels('uma_pilot_d0_every16.npz', nt=16)
H = cs.sequences()[:, 0].reshape(-1, 64, 16).contiguous()
G = H.shape[0]
basis = RegularisedBasis.of(H)
T = 10
for snr in (20.0, 24.0):
    b = ch.sample_batch(H, snr, 16, 64, torch.Generator().manual_seed(1))
    s2 = float(b.sigma2[0])
    for C in (1.0, 10.0, 100.0):
        c = torch.logspace(0, torch.log10(torch.tensor(C)), T)
        log_lam = (c * s2).log()[:, None].expand(T, G)
        A = basis.operators(torch.ones(T, G), log_lam)
        rowA = (A.abs()**2).sum(-1)  # [T,G,Nt]
        M = torch.eye(16) - A @ H
        rowM = (M.abs()**2).sum(-1)
        for kind in ("A", "M", "mix"):
            if kind == "A": th = 16 * rowA / rowA.sum(-1, keepdim=True)
            elif kind == "M": th = 16 * rowM / rowM.sum(-1, keepdim=True)
            else: th = 0.5 * (16 * rowA / rowA.sum(-1, keepdim=True) + 16 * rowM / rowM.sum(-1, keepdim=True))
            _, idx = mmnet_detect(H, b.y, b.sigma2, th.float().contiguous(), A=A, modulation=16)
            ser = float((idx.long() != b.indices.long()).float().mean())
            print(f"snr {snr} C {C:g} theta2 rows {kind} SER {ser:.2e}", flush=True)
