"""edgert.mimo.online / training: loss goes down, warm starts need fewer iterations."""
from __future__ import annotations

import pytest
import torch

from edgert.mimo import channels as ch
from edgert.mimo.detectors import MMNetIID
from edgert.mimo.online import OnlineConfig, iterations_to_loss, train_online
from edgert.mimo.training import OfflineConfig, train_offline


def _cfg(**kw) -> OnlineConfig:
    base = dict(modulation=4, snr_db=(8.0, 12.0), layers=4, psi=40, psi_time=40, phi=3, batch=60, snr_groups=3, lr=1e-2)
    base.update(kw)
    return OnlineConfig(**base)


def test_online_training_reduces_loss_and_reports_iterations(data_dir):
    cs = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16)
    seq = cs.sequences()[:, :, :4]  # [2, 1, 4, 64, 16]
    cfg = _cfg()
    before = train_online(seq, _cfg(psi=1, phi=0)).final_loss[0, 0]
    res = train_online(seq, cfg)
    assert res.A.shape == (1, 4, 4, 2, 16, 64) and res.theta2.shape == (1, 4, 4, 2, 16)
    assert res.iterations.tolist() == [[40, 3, 3, 3]]
    assert res.iterations_per_channel == pytest.approx(49 / 4)
    assert res.final_loss[0, 0] < 0.7 * before
    det = res.detector()
    H = torch.stack([cs.H[s, f] for s in range(2) for f in range(4)])
    b = ch.sample_batch(H, 12.0, 4, 16, torch.Generator().manual_seed(0))
    _, idx = det(H, b.y, b.sigma2, 4)
    assert idx.shape == (8, 16, 16)


def test_time_axis_warm_start_uses_psi_time():
    H = ch.iid_rayleigh(4, 32, 4, torch.Generator().manual_seed(1)).reshape(1, 2, 2, 32, 4)
    res = train_online(H, _cfg(psi=5, psi_time=2, phi=1))
    assert res.iterations.tolist() == [[5, 1], [2, 1]]


def test_warm_start_needs_fewer_iterations(data_dir):
    cs = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16)
    seq = cs.sequences()
    cfg = _cfg(psi=60)
    first = train_online(seq[:, :, :1], cfg)
    target = float(first.final_loss[0, 0]) * 1.15
    warm = (first.A[0, 0], first.theta2[0, 0])
    h1 = seq[:, 0, 1].contiguous()
    n_warm = iterations_to_loss(h1, cfg, target, 60, start=warm)
    n_cold = iterations_to_loss(h1, cfg, target, 60)
    assert n_warm < n_cold


def test_offline_mmnet_iid_learns():
    model = MMNetIID(layers=4, nr=32)
    losses = train_offline(model, OfflineConfig(nr=32, nt=8, modulation=4, snr_db=(6.0, 10.0), iterations=40, batch=60,
                                                channels=3, lr=1e-2))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert not model.theta1.requires_grad


def test_online_config_rejects_bad_values():
    H = torch.ones(1, 1, 1, 8, 2, dtype=torch.complex64)
    with pytest.raises(ValueError, match="snr_db"):
        train_online(H, _cfg(snr_db=(10.0, 5.0)))
    with pytest.raises(ValueError, match="multiple of snr_groups"):
        train_online(H, _cfg(batch=61))
    with pytest.raises(ValueError, match="modulation"):
        train_online(H, _cfg(modulation=8))
