#!/bin/bash
# The committed time-set MMNet (`free` linear stage, ../uma_time_64x16_qam16/config.json: psi = 200, 6 iterations
# at lr 3e-3 per later time step, `channel` transfer: 9.88 it/ch, training SNR 16-34 dB) re-run so that its
# per-matrix errors are kept (the committed run predates per_matrix.npz): evaluated at 18-32 dB only, for the
# SER per condition-number bin (../uma_time_condition_mmnet/bins.py). The data at each SNR is that of the
# committed run (it depends on the seed and SNR only; MMSE here equals the committed MMSE to the error).
# uma_t50.npz: edgert mimo generate --drops 3 --users 32 --seed 20261202 --time-steps 50 --time-step-ms 1
#   --subcarrier-stride 16 --out uma_t50.npz
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,mmnet --channels /tmp/mimo_t/uma_t50.npz \
  --nt 16 --modulation 16 --snr 18,20,24,28,32 --train-snr 16,34 --vectors 32 --psi 200 --order time \
  --phi-time 6 --lr-time 3e-3 --warm-start channel --threads 1 \
  --out docs/results/mimo/uma_time_64x16_qam16_free_rerun
