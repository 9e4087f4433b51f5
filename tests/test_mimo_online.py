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


def test_channel_transfer_is_identity_on_the_same_channel_and_keeps_A_H():
    from edgert.mimo.online import channel_transfer

    gen = torch.Generator().manual_seed(4)
    H_old = ch.iid_rayleigh(2, 32, 4, gen)
    H_new = H_old + 0.3 * ch.iid_rayleigh(2, 32, 4, gen)
    C = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.complex64)
    A = C @ torch.linalg.pinv(H_old).unsqueeze(0)  # in the row space of H_old^H
    torch.testing.assert_close(channel_transfer(A, H_old, H_old, 0.5), A, rtol=0, atol=1e-5)
    A_new = channel_transfer(A, H_old, H_new, 1e-9)
    torch.testing.assert_close(A_new @ H_new.unsqueeze(0), A @ H_old.unsqueeze(0), rtol=0, atol=1e-4)


def test_channel_warm_start_starts_closer_than_copying(data_dir):
    from edgert.mimo.online import _Trainer, channel_transfer

    cs = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16)
    seq = cs.sequences()[:, 0]  # [2, 8, 64, 16]
    cfg = _cfg(modulation=16, snr_db=(20.0, 26.0), layers=4, batch=120, snr_groups=4)
    res = train_online(seq[:, None, :1], _cfg(**{**cfg.__dict__, "psi": 30}))
    A, th = res.A[0, 0], res.theta2[0, 0]
    far = 4  # four kept subcarriers (312 kHz) away
    h_old, h_new = seq[:, 0].contiguous(), seq[:, far].contiguous()

    def loss(A_start: torch.Tensor) -> float:
        trainer = _Trainer(A_start, th, cfg, torch.Generator().manual_seed(7))
        trainer.opt.param_groups[0]["lr"] = 0.0  # evaluate the start, do not move it
        return sum(trainer.step(h_new) for _ in range(4)) / 4

    assert loss(channel_transfer(A, h_old, h_new, cfg.transfer_delta)) < loss(A)


def test_warm_start_mode_is_validated_and_recorded():
    H = ch.iid_rayleigh(4, 32, 4, torch.Generator().manual_seed(1)).reshape(1, 1, 4, 32, 4)
    for mode in ("channel", "restart"):
        res = train_online(H, _cfg(psi=3, phi=2, warm_start=mode))
        assert res.iterations.tolist() == [[3, 2, 2, 2]] and res.config["warm_start"] == mode
    # restart: subcarrier 1 starts again from the matched filter, so 0 iterations there leave exactly that
    from edgert.mimo.detectors import init_mmnet_params

    res = train_online(H, _cfg(psi=3, phi=0, warm_start="restart"))
    torch.testing.assert_close(res.A[0, 1], init_mmnet_params(H[:, 0, 1].contiguous(), 4)[0])
    with pytest.raises(ValueError, match="warm_start"):
        train_online(H, _cfg(warm_start="nearest"))
    with pytest.raises(ValueError, match="transfer_delta"):
        train_online(H, _cfg(transfer_delta=0.0))


def test_layer_noise_estimate_tracks_the_measured_noise_of_a_pinv_operator():
    from edgert.mimo.analysis import layer_noise

    gen = torch.Generator().manual_seed(2)
    H = ch.iid_rayleigh(4, 64, 8, gen)
    b = ch.sample_batch(H, 10.0, 4, 200, gen)
    A = torch.linalg.pinv(H).unsqueeze(0).repeat(3, 1, 1, 1).contiguous()
    out = layer_noise(H, b.y, b.x, b.sigma2, A, torch.ones(3, 4, 8), 4)
    # with A = H^+ the linear stage leaves only A n: E|z - x|^2 = ||A||_F^2 sigma2 / Nt, which v estimates
    want = float(((A[0].abs() ** 2).sum((-2, -1)) * b.sigma2).mean() / 8)
    for t in range(3):
        assert out["linear_mse"][t] == pytest.approx(want, rel=0.15)
        assert out["estimated_var"][t] == pytest.approx(want, rel=0.15)
        assert out["denoiser_mse"][t] < out["linear_mse"][t]
    with pytest.raises(ValueError, match="A: expected"):
        layer_noise(H, b.y, b.x, b.sigma2, A[:, :2], torch.ones(3, 2, 8), 4)


def test_noise_scales_stay_positive_under_a_large_learning_rate():
    from edgert.mimo.online import THETA2_FLOOR

    H = ch.iid_rayleigh(2, 32, 4, torch.Generator().manual_seed(5)).reshape(2, 1, 1, 32, 4)
    res = train_online(H, _cfg(psi=30, lr=0.5))
    assert float(res.theta2.min()) >= THETA2_FLOOR
