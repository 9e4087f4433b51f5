#!/bin/bash
# the QAM4 time-set protocol (docs/results/mimo/uma_time_64x16_qam4/config.json) with the corrected linear stage
# uma_t50.npz: see ../uma_time_64x16_qam16_corrected/run.sh (MMSE here equals the committed QAM4 run to the error)
cd /work/wt/mimo
PYTHONPATH=python nice .venv/bin/python -m edgert mimo sweep --detectors mmse,mmnet --channels uma_t50.npz \
  --nt 16 --modulation 4 --snr 4:22:2 --vectors 32 --psi 200 --order time --phi-time 6 --lr-time 3e-3 \
  --warm-start copy --linear-stage corrected --threads 1 --out /tmp/mimo_v/runs/uma_time_64x16_qam4_corrected
