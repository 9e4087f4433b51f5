"""Tuning grid for ep64_wide: EP float64 with the denoiser's cavity variance scaled linearly from a (layer 0) to b
(layer 9), SER per SNR on every 10th time step of the time set (480 matrices, its own noise draws).

    PYTHONPATH=python .venv/bin/python tune.py uma_t50.npz 18,20,21,22 64 1.25:1.25 1.5:1.5 1.75:1.75 2:1 1:2 \
        2:1.25 1.25:2 3:1 3:1.5   # -> tune.log
"""
import sys
import time

import torch

from edgert.mimo.channels import load_channels, split_users, sample_batch
from edgert.mimo.detectors.iterative import ep_forward, _ep_outputs
torch.set_num_threads(2)
cs = split_users(load_channels(sys.argv[1]), 16)
seq = cs.sequences()  # [S, K, F, Nr, Nt]
H = seq[:, ::10].reshape(-1, 64, 16)
print("H", H.shape, flush=True)
snrs = [float(s) for s in sys.argv[2].split(",")]
vectors = int(sys.argv[3]) if len(sys.argv) > 3 else 32
schedules = {"ep": None}
for spec in sys.argv[4:]:
    a, b = (float(v) for v in spec.split(":"))
    schedules[spec] = torch.linspace(a, b, 10)
for snr in snrs:
    gen = torch.Generator().manual_seed(int(snr * 100))
    b = sample_batch(H, snr, 16, vectors, gen)
    for name, sch in schedules.items():
        t0 = time.time()
        beta = torch.full((10, H.shape[0]), 0.9, dtype=torch.float64)
        scale = None if sch is None else sch[:, None, None].expand(10, H.shape[0], 16).double()
        means, cav, _ = ep_forward(H, b.y, b.sigma2, 16, beta, scale, float64=True)
        _, idx = _ep_outputs(means[-1], cav, 16)
        ser = (idx != b.indices).float().mean().item()
        print(f"snr {snr} {name:>10} ser {ser:.3e} ({time.time()-t0:.1f}s)", flush=True)
