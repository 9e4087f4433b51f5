"""Issue 16 probe (output: probe_output.txt): an untrained regularised linear stage on the 32 pilot matrices.

Pilot set: np.savez("uma_pilot_d0_every16.npz", H=H[:1, ::16], axes=np.array(["drop", "subcarrier"])) with H from
shared/data/mimo/uma_nlos_seq_64x32.npz. Run from the repository root with PYTHONPATH=python.
"""
import torch, sys
from edgert.mimo import channels as ch
from edgert.mimo.detectors.mmnet import RegularisedBasis
from edgert.ops.mmnet import mmnet_detect
torch.set_num_threads(1)
cs = ch.load_channels('uma_pilot_d0_every16.npz', nt=16)
H = cs.sequences()[:, 0].reshape(-1, 64, 16).contiguous()
basis = RegularisedBasis.of(H)
T = 10
for snr in (20.0, 24.0):
    b = ch.sample_batch(H, snr, 16, 64, torch.Generator().manual_seed(1))
    s2 = float(b.sigma2[0])
    for C in (1.0, 10.0, 100.0, 1000.0, 1e4):
        for alpha in (1.0,):
            c = torch.logspace(0, torch.log10(torch.tensor(C)), T)
            log_lam = (c * s2).log()[:, None].expand(T, H.shape[0])
            A = basis.operators(torch.full((T, H.shape[0]), alpha), log_lam)
            for th in (1.0, 2.0):
                _, idx = mmnet_detect(H, b.y, b.sigma2, torch.full((T, H.shape[0], 16), th), A=A, modulation=16)
                ser = float((idx.long() != b.indices.long()).float().mean())
                print(f"snr {snr} C {C:g} theta2 {th} SER {ser:.2e}", flush=True)
