"""How many iterations should the generic SR model get? PSNR of bicubic and of generic models trained for N
iterations (GenericConfig, cached) on the same x265-coded LR frames of the 720p pan/zoom material: 8 chunks of 5
frames across its 4 shots.

    PYTHONPATH=python .venv/bin/python generic_probe.py SCALE CRF N,N,...   # from the repository root
"""
import sys
import time

import numpy as np
import torch

from edgert.srvc import material
from edgert.srvc.evaluate import upsample
from edgert.srvc.generic import GenericConfig, generic_model
from edgert.srvc.metrics import psnr
from edgert.srvc.model import Geometry, SRConfig
from edgert.vision import video

torch.set_num_threads(2)
scale, crf = int(sys.argv[1]), int(sys.argv[2])
iters = [int(v) for v in sys.argv[3].split(",")]
chunks = []
for start in (2, 9, 17, 24, 32, 39, 47, 54):
    chunks.append(material.render(material.PanZoom(seconds=0.2), float(start)))
geo = Geometry(1280, 720, scale)
hr = [geo.pad_hr(c) for c in chunks]
lr = []
for h in hr:
    small = video.resize(h, (geo.lr_width, geo.lr_height), "area")
    lr.append(video.decode(video.encode(small, 25.0, "libx265", crf=crf, preset="slow")))
ref = np.concatenate(chunks)
print("bicubic", round(psnr(ref, np.concatenate([upsample(None, x, geo) for x in lr])), 3), flush=True)
for n in iters:
    t0 = time.time()
    m = generic_model(SRConfig(scale=scale, residual=True), GenericConfig(iterations=n), log=lambda s: None)
    out = np.concatenate([upsample(m, x, geo) for x in lr])
    print(f"generic {n}", round(psnr(ref, out), 3), f"({time.time() - t0:.0f} s)", flush=True)
