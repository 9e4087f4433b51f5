#!/bin/bash
# Control for ../uma_64x16_qam16_csi0.001_mmnet/ and ../uma_64x16_qam16_csi0.01_mmnet/: the same command
# without channel-estimation error, i.e. the converged `restart` protocol of ../uma_64x16_qam16_restart/
# re-run with today's trainer (MMSE equals the committed run to the error: same channels and data).
# uma_every16.npz: see ../uma_64x16_qam16_csi0.001_mmnet/run.sh
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,mmnet \
  --channels /tmp/mimo/uma_every16.npz --nt 16 --modulation 16 --snr 16:34:2 --vectors 64 \
  --psi 300 --phi 200 --warm-start restart --threads 1 \
  --out docs/results/mimo/uma_64x16_qam16_restart_rerun
