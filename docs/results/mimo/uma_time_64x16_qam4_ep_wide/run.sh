#!/bin/bash
# QAM4 (schedule tuned on QAM16, not here): EP float64 with the widened denoiser (ep64_wide, cavity scale 2 -> 1 over the 10 layers) against ep64 on the time
# set's protocol (docs/results/mimo/uma_time_64x16_qam16/config.json; no training involved)
# uma_t50.npz: edgert mimo generate --drops 3 --users 32 --seed 20261202 --time-steps 50 --time-step-ms 1 --subcarrier-stride 16 --out uma_t50.npz
# (ep64 here equals the committed ep64 row to the error: same channels and data)
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,ep64_wide --channels uma_t50.npz \
  --nt 16 --modulation 4 --snr 4:22:2 --vectors 32 --threads 1 --out uma_time_64x16_qam4_ep_wide
