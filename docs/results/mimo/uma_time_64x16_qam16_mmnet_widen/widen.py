"""Test-time widening of a trained MMNet's denoiser variance: theta2_t * s_t with s_t linear from a to b over
the layers (the schedule that gave EP 1 dB). SER per SNR on the sweep's own channels, fresh noise per SNR.

    PYTHONPATH=python python widen.py RUN_DIR CHANNELS SNRS VECTORS a:b ...   # THREADS=n: torch threads
"""
import os
import sys
import time

import torch

from edgert.mimo.channels import load_channels, sample_batch
from edgert.mimo.detectors.mmnet import MMNet
from edgert.mimo.online import OnlineResult

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
run, chans, snrs, vectors = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(",")], int(sys.argv[4])
det = OnlineResult.load(f"{run}/models/mmnet_online.pt").detector()
H = load_channels(chans, nt=16).flat()
T = det.theta2.shape[0]
schedules = {"1:1": None}
for spec in sys.argv[5:]:
    a, b = (float(v) for v in spec.split(":"))
    schedules[spec] = torch.linspace(a, b, T)
print("H", tuple(H.shape), "layers", T, flush=True)
for snr in snrs:
    gen = torch.Generator().manual_seed(int(snr * 100) + 7)
    batch = sample_batch(H, snr, 16, vectors, gen)
    for name, s in schedules.items():
        t0 = time.time()
        th = det.theta2 if s is None else det.theta2 * s[:, None, None]
        _, idx = MMNet(det.A, th.contiguous())(H, batch.y, batch.sigma2, 16)
        ser = (idx != batch.indices).float().mean().item()
        print(f"snr {snr} {name:>10} ser {ser:.3e} ({time.time() - t0:.1f}s)", flush=True)
