"""||H(t + dt) - H(t)||_F / ||H(t)||_F vs dt on UMa NLOS 64x16 (edgert.mimo.generate), 1 thread.

One generation with 0.25 ms spacing over 50 ms (201 samples); lag L gives dt = L x 0.25 ms.
Usage: python measure.py OUT.json
"""
import json
import sys
import time

import numpy as np
import torch

from edgert.mimo.generate import UMaConfig, generate_uma, relative_change

torch.set_num_threads(1)
cfg = UMaConfig(drops=3, users=32, time_steps=201, time_step_s=0.25e-3, subcarrier_stride=16, seed=20261201)
t0 = time.perf_counter()
H = generate_uma(cfg, "/tmp/uma_time_change.npz")  # [3, 201, 16, 64, 32]
H = np.concatenate([H[..., :16], H[..., 16:]], axis=0)  # 64x16 instances: users 0-15 and 16-31
rows = []
for lag in (1, 2, 4, 8, 20, 40, 80, 120, 200):
    r = relative_change(H, lag)
    rows.append({"dt_ms": lag * 0.25, "mean": float(r.mean()), "p10": float(np.percentile(r, 10)),
                 "p50": float(np.percentile(r, 50)), "p90": float(np.percentile(r, 90))})
    print(rows[-1], flush=True)
out = {"config": {k: v for k, v in vars(cfg).items()}, "max_doppler_hz": cfg.max_doppler_hz(),
       "instances": int(H.shape[0]), "subcarriers": int(H.shape[2]), "seconds": time.perf_counter() - t0,
       "rows": rows}
json.dump(out, open(sys.argv[1], "w"), indent=2)
