#!/bin/bash
# the time set's protocol (docs/results/mimo/uma_time_64x16_qam16/config.json) with the corrected linear stage
# uma_t50.npz: edgert mimo generate --drops 3 --users 32 --seed 20261202 --time-steps 50 --time-step-ms 1 --subcarrier-stride 16 --out uma_t50.npz (MMSE here equals the committed run to the error: same channels and data)
cd /work/wt/mimo
PYTHONPATH=python nice .venv/bin/python -m edgert mimo sweep --detectors mmse,mmnet --channels uma_t50.npz \
  --nt 16 --modulation 16 --snr 16:34:2 --vectors 32 --psi 200 --order time --phi-time 6 --lr-time 3e-3 \
  --warm-start copy --linear-stage corrected --threads 1 --out /tmp/mimo_v/runs/uma_time_64x16_qam16_corrected
