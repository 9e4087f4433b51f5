#!/bin/bash
# MMNet (online, Algorithm 1 order) at Nt = 32 with the converged `restart` protocol of
# ../uma_64x16_qam64_restart/config.json (Psi = 300, Phi = 200: 206.25 it/ch), on the channels, SNRs and data of
# ../uma_64x32_qam16_baselines/ (MMSE and EP float64 re-run here: errors identical to that folder at every SNR,
# condition numbers in per_matrix.npz identical too). models/ (the trained weights) was not kept (size).
# uma_every16.npz = every 16th subcarrier of shared/data/mimo/uma_nlos_seq_64x32.npz:
#   np.savez_compressed("uma_every16.npz", H=H[:, ::16], axes=np.array(["drop", "subcarrier"]))
#   (edgert.mimo.channels.save_channels). With --nt 32 the file is read as it is: the full 32-user drops,
#   3 drops x 16 subcarriers = 48 matrices 64x32 (with --nt 16 the users are split into 2 halves: 96 matrices).
cd "$(dirname "$0")/../../../.."  # the repository root
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,mmnet \
  --channels /tmp/mimo/uma_every16.npz --nt 32 --modulation 16 --snr 20:40:4 --vectors 64 \
  --psi 300 --phi 200 --warm-start restart --threads 1 \
  --out docs/results/mimo/uma_64x32_qam16_restart_mmnet
# psi1000_phi1000/: the same with a larger budget (1000 it/ch), to see whether 206 it/ch is converged at Nt = 32
PYTHONPATH=python .venv/bin/python -m edgert mimo sweep --detectors mmse,ep64,mmnet \
  --channels /tmp/mimo/uma_every16.npz --nt 32 --modulation 16 --snr 20:40:4 --vectors 64 \
  --psi 1000 --phi 1000 --warm-start restart --threads 1 --no-plots \
  --out docs/results/mimo/uma_64x32_qam16_restart_mmnet/psi1000_phi1000
