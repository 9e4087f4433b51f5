#!/bin/bash
# SER per real component (--count real, the MMNet authors' counting) for the converged `restart` protocol of
# ../uma_64x16_qam16_restart/ (Psi = 300, Phi = 200: 206 it/ch; same channels, data and seed; K-Best and EP
# float32 left out). Its MMNet is today's trainer: bit-identical A_t / theta2 to ../uma_64x16_qam16_restart_rerun/
# (whose symbol SER is the one to compare with); MMSE and EP float64 are the committed run's detectors on the
# same data. The trained model (models/mmnet_online.pt, 7.9 MB) was moved out of the folder.
# uma_every16.npz: see ../uma_64x16_qam16_csi0.001_mmnet/run.sh (every 16th subcarrier of
#   shared/data/mimo/uma_nlos_seq_64x32.npz, 96 matrices 64x16). 1 min 43 s at 1 thread (MMNet training 79 s).
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,mmnet \
  --channels /tmp/mimo/uma_every16.npz --nt 16 --modulation 16 --snr 16:34:2 --vectors 64 \
  --psi 300 --phi 200 --warm-start restart --count real --threads 1 \
  --out docs/results/mimo/uma_64x16_qam16_restart_per_real
