#!/bin/bash
# Test-time widening of a trained MMNet's denoiser variance (theta2_t * s_t), the change that moved EP 1 dB
# (ep64_wide). MMNet `corrected` trained on the time-chain pilot (drop 0 of the time set: 32 chains x 50 steps of
# 1 ms, psi 200 then 6 iterations per step = 9.88 per channel), then detected with scaled theta2. ~8 min, 1 thread.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../../../.."
V=${V:-/tmp/mimo_v}
mkdir -p $V/runs
.venv/bin/edgert mimo generate --drops 3 --users 32 --seed 20261202 --time-steps 50 --time-step-ms 1 \
  --subcarrier-stride 16 --out $V/uma_t50.npz
.venv/bin/python -c "
import numpy as np; d = dict(np.load('$V/uma_t50.npz')); d['H'] = d['H'][:1]; np.savez('$V/uma_t50_d0.npz', **d)"
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --channels $V/uma_t50_d0.npz --nt 16 --modulation 16 \
  --snr 20,22,24,26 --train-snr 16,34 --vectors 16 --order time --psi 200 --phi-time 6 --lr-time 3e-3 --no-plots \
  --threads 1 --detectors mmnet,ep64 --warm-start copy --linear-stage corrected --out $V/runs/time_cor
cp $V/runs/time_cor/results.json "$HERE/sweep_results.json"
PYTHONPATH=python .venv/bin/python "$HERE/widen.py" $V/runs/time_cor $V/uma_t50_d0.npz 20,22,24,26 64 \
  0.5:0.5 0.7:0.7 1.25:1.25 1.5:1.5 2:2 2:1 3:1 1:2 0.5:1 | tee "$HERE/widen.log"
# training SNR ranges (the sweep above trains over 16-34 dB)
for r in 20,28 22,26 10,34 14,24; do
  PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --channels $V/uma_t50_d0.npz --nt 16 --modulation 16 \
    --snr 20,22,24,26 --train-snr $r --vectors 16 --order time --psi 200 --phi-time 6 --lr-time 3e-3 --no-plots \
    --threads 1 --detectors mmnet --warm-start copy --linear-stage corrected --out $V/runs/time_cor_train${r/,/-}
  cp $V/runs/time_cor_train${r/,/-}/results.json "$HERE/sweep_train${r/,/-}.json"
done
