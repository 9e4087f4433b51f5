#!/bin/bash
# MMNet trained on H_hat (--csi-error 0.001) with the converged `restart` protocol of
# ../uma_64x16_qam16_restart/config.json (Psi = 300, Phi = 200: 206 it/ch), on the channels and data of
# ../uma_64x16_qam16_csi0.001/ (MMSE and EP float64 re-run here: identical to the error to that folder).
# uma_every16.npz = every 16th subcarrier of shared/data/mimo/uma_nlos_seq_64x32.npz:
#   np.savez_compressed("uma_every16.npz", H=H[:, ::16], axes=np.array(["drop", "subcarrier"]))
#   (edgert.mimo.channels.save_channels; 3 drops x 16 subcarriers x 2 user halves = 96 matrices 64x16)
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,mmnet \
  --channels /tmp/mimo/uma_every16.npz --nt 16 --modulation 16 --snr 16:34:2 --vectors 64 \
  --psi 300 --phi 200 --warm-start restart --csi-error 0.001 --threads 1 \
  --out docs/results/mimo/uma_64x16_qam16_csi0.001_mmnet
