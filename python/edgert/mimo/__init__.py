"""Massive-MIMO uplink detection (MMNet, Khani et al.) with classical baselines and SER evaluation.

* :mod:`~edgert.mimo.channels`: i.i.d./file channel sets, imperfect CSI, symbol and noise sampling.
* :mod:`~edgert.mimo.detectors`: MF, ZF, MMSE, AMP, OAMP/OAMPNet, EP, V-BLAST, K-Best, ML, MMNet(-iid).
* :mod:`~edgert.mimo.online`: Algorithm 1 (online MMNet training with time/frequency warm starts).
* :mod:`~edgert.mimo.oampnet_online`: OAMPNet's per-layer scalars trained per channel.
* :mod:`~edgert.mimo.evaluate`: SER sweeps (optionally with channel-estimation error), SNR at SER 1e-3, gap
  to ML, plots, resumable run folders.
* :mod:`~edgert.mimo.complexity`: analytic multiplications per detected vector.
* :mod:`~edgert.mimo.generate`: 3GPP UMa channels via the optional ``sionna-no-rt``.

Conventions (y = Hx + n, unit column power, unit-energy QAM, sigma2 = Nt / 10^(SNR/10)) are in
:mod:`edgert.mimo.channels`.
"""
from __future__ import annotations

from edgert.mimo.analysis import AnalysisConfig, run_analysis
from edgert.mimo.channels import ChannelSet, iid_rayleigh, imperfect_csi, load_channels, sample_batch, save_channels
from edgert.mimo.complexity import multiplications
from edgert.mimo.detectors import DETECTORS, Detector, make_detector
from edgert.mimo.evaluate import SweepConfig, run_sweep, snr_at_ser
from edgert.mimo.oampnet_online import OAMPNetOnlineConfig, OAMPNetOnlineResult, train_oampnet_online
from edgert.mimo.online import OnlineConfig, OnlineResult, train_online
from edgert.mimo.training import OfflineConfig, train_offline

__all__ = [
    "DETECTORS",
    "AnalysisConfig",
    "ChannelSet",
    "Detector",
    "OAMPNetOnlineConfig",
    "OAMPNetOnlineResult",
    "OfflineConfig",
    "OnlineConfig",
    "OnlineResult",
    "SweepConfig",
    "iid_rayleigh",
    "imperfect_csi",
    "load_channels",
    "make_detector",
    "multiplications",
    "run_analysis",
    "run_sweep",
    "sample_batch",
    "save_channels",
    "snr_at_ser",
    "train_oampnet_online",
    "train_offline",
    "train_online",
]
