#!/bin/bash
# K-Best K = 128 (the ML proxy) per condition-number bin on the set and data of ../uma_time_condition/
# (MMSE and EP float64 re-run here: identical to the error to that folder, so same channels and data).
# uma_t50.npz: edgert mimo generate --drops 3 --users 32 --seed 20261202 --time-steps 50 --time-step-ms 1
#   --subcarrier-stride 16 --out uma_t50.npz
# uma_t50_every10.npz: save_channels("uma_t50_every10.npz", H[:, ::10], ("drop", "time", "subcarrier"))
#   with H from uma_t50.npz (edgert.mimo.channels.save_channels): 480 matrices 64x16
# (first run with --snr 20,24,28,32, then resumed in the same folder with 18 dB added)
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,kbest --kbest-k 128 \
  --channels /tmp/mimo_t/uma_t50_every10.npz --nt 16 --modulation 16 --snr 18,20,24,28,32 --vectors 32 \
  --threads 1 --out docs/results/mimo/uma_time_condition_kbest
