#!/bin/bash
# Anderson-Darling (next to kurtosis and KS) of MMNet's denoiser input noise on the UMa time set, the analysis
# of ../uma_time_64x16_qam16_noise/ re-run with today's `edgert mimo analyze`. The committed model of that
# folder (/tmp/mimo_t/runs/q16/models/mmnet_online.pt, from the older trainer of ../uma_time_64x16_qam16/) was
# not kept, so the time-set protocol was trained again (9.88 it/ch, 239 s). The result is bit-identical to
# ../uma_time_64x16_qam16_free_rerun/: the same SER to the error, 10042 and 1150 errors at 24 and 28 dB
# (train.log). The committed model's errors were 9527 and 1038.
# Inputs (in /tmp, not in the repo): the time set (12 s) and the model (7.9 MB), made by the first two steps.
# Wall times at 1 thread on the shared 2-core box: generate 12 s, training 4 min 5 s, analysis 65 s.
cd "$(dirname "$0")/../../../.."  # the repository root
mkdir -p /tmp/mimo_t/runs
[ -f /tmp/mimo_t/uma_t50.npz ] || PYTHONPATH=python .venv/bin/python -m edgert mimo generate --drops 3 --users 32 \
  --seed 20261202 --time-steps 50 --time-step-ms 1 --subcarrier-stride 16 --out /tmp/mimo_t/uma_t50.npz
[ -f /tmp/mimo_t/runs/q16_rerun/models/mmnet_online.pt ] || PYTHONPATH=python .venv/bin/python -m edgert mimo sweep \
  --detectors mmnet --channels /tmp/mimo_t/uma_t50.npz --nt 16 --modulation 16 --snr 24,28 --train-snr 16,34 \
  --vectors 32 --psi 200 --order time --phi-time 6 --lr-time 3e-3 --warm-start channel --threads 1 --no-plots \
  --out /tmp/mimo_t/runs/q16_rerun
PYTHONPATH=python .venv/bin/python -m edgert mimo analyze --channels /tmp/mimo_t/uma_t50.npz --nt 16 --modulation 16 \
  --snr 24,28 --vectors 32 --model /tmp/mimo_t/runs/q16_rerun/models/mmnet_online.pt --threads 1 \
  --out docs/results/mimo/uma_time_64x16_qam16_noise_ad
