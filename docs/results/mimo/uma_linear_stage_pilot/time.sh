#!/bin/bash
# time-chain pilot: drop 0 of the time set (2 user halves x 16 subcarriers = 32 chains x 50 time steps), QAM16
# channels: edgert mimo generate --drops 3 --users 32 --seed 20261202 --time-steps 50 --time-step-ms 1 --subcarrier-stride 16 --out uma_t50.npz, then drop 0 only (H[:1], same axes)
cd /work/wt/mimo
C=/tmp/mimo_v/uma_t50_d0.npz
common="--channels $C --nt 16 --modulation 16 --snr 20,22,24,26,28 --train-snr 16,34 --vectors 16 --order time --psi 200 --phi-time 6 --lr-time 3e-3 --no-plots --threads 1"
run() { name=$1; shift; PYTHONPATH=python nice .venv/bin/python -m edgert mimo sweep $common "$@" --out /tmp/mimo_v/runs/$name > /tmp/mimo_v/runs/$name.log 2>&1; echo "$name rc=$?"; }
run time_free --detectors mmnet,mmse,ep64 --warm-start channel
run time_cor --detectors mmnet --warm-start copy --linear-stage corrected
# added last: the scalars' step 4x smaller
run time_cor_lrs0.005 --detectors mmnet --warm-start copy --linear-stage corrected --lr-scalars 0.005
