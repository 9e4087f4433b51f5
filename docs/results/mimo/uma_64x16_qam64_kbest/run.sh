#!/bin/bash
# K-Best (K = 128) at QAM64 on the channels, SNRs and data of ../uma_64x16_qam64_restart/ (same seed 0,
# 64 vectors per matrix); MMSE and EP float64 re-run here (errors identical to that folder at every SNR).
# uma_every16.npz = every 16th subcarrier of shared/data/mimo/uma_nlos_seq_64x32.npz:
#   np.savez_compressed("uma_every16.npz", H=H[:, ::16], axes=np.array(["drop", "subcarrier"]))
#   (edgert.mimo.channels.save_channels; 3 drops x 16 subcarriers x 2 user halves = 96 matrices 64x16)
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,kbest --kbest-k 128 \
  --channels /tmp/mimo/uma_every16.npz --nt 16 --modulation 64 --snr 22:40:3 --vectors 64 --threads 1 \
  --out docs/results/mimo/uma_64x16_qam64_kbest
# snr28-31/: 1 dB steps around K-Best's crossing (the data depends on the seed and SNR only, so 28 and 31 dB
# repeat the main sweep's errors exactly); gives K-Best's SNR at 1e-3 (28.14 dB)
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,kbest --kbest-k 128 \
  --channels /tmp/mimo/uma_every16.npz --nt 16 --modulation 64 --snr 28:31:1 --vectors 64 --threads 1 --no-plots \
  --out docs/results/mimo/uma_64x16_qam64_kbest/snr28-31
