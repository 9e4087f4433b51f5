#!/bin/bash
# pilot: 32 UMa matrices (drop 0, every 16th subcarrier, 2 user halves), QAM16
# channels: np.savez(C, H=H[:1, ::16], axes=np.array(["drop", "subcarrier"])), H of shared/data/mimo/uma_nlos_seq_64x32.npz
cd /work/wt/mimo
C=/tmp/mimo_v/uma_pilot_d0_every16.npz
common="--channels $C --nt 16 --modulation 16 --snr 18,20,22,24,26 --train-snr 16,34 --vectors 64 --order time --warm-start copy --no-plots --threads 1"
run() { name=$1; shift; PYTHONPATH=python nice .venv/bin/python -m edgert mimo sweep $common "$@" --out /tmp/mimo_v/runs/$name > /tmp/mimo_v/runs/$name.log 2>&1; echo "$name rc=$?"; }
run free_psi10 --detectors mmnet,mmse,ep64,kbest --kbest-k 128 --psi 10
run reg_psi10 --detectors mmnet --psi 10 --linear-stage regularised
run cor_psi10 --detectors mmnet --psi 10 --linear-stage corrected
run reg_psi0 --detectors mmnet --psi 0 --linear-stage regularised
run reg_psi200 --detectors mmnet --psi 200 --linear-stage regularised
run cor_psi200 --detectors mmnet --psi 200 --linear-stage corrected
run free_psi200 --detectors mmnet --psi 200
# added after the first seven (after the time-chain pilot, time.sh)
run cor_psi500 --detectors mmnet --psi 500 --linear-stage corrected
run free_psi500 --detectors mmnet --psi 500
