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


# ---------------------------------------------------------------------------------------------
# OAMPNet trained online per channel
# ---------------------------------------------------------------------------------------------

def _oamp_cfg(**kw):
    from edgert.mimo.oampnet_online import OAMPNetOnlineConfig

    base = dict(modulation=4, snr_db=(6.0, 14.0), layers=5, iterations=40, batch=100, snr_groups=10, lr=1e-2)
    base.update(kw)
    return OAMPNetOnlineConfig(**base)


def test_oamp_eigenbasis_forward_is_oamp_in_values_and_gradients(data_dir):
    from edgert.mimo.detectors import OAMP, OAMPNetOnline, oamp_train_forward
    from edgert.mimo.training import layer_loss
    from edgert.ops.mmnet import real_to_complex

    H = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16).flat()
    gen = torch.Generator().manual_seed(3)
    ones = torch.ones(6, dtype=torch.float64)
    for snr in (6.0, 24.0):  # condition numbers 17-200: the eigenbasis residual must not lose precision
        b = ch.sample_batch(H, snr, 16, 32, gen)
        # OAMP in float64 as the reference (float32 OAMP itself is off by up to 8e-2 at 24 dB)
        x_ref, i_ref = OAMP(iterations=6, gamma=ones, theta=ones)(H.to(torch.complex128), b.y.to(torch.complex128),
                                                                  b.sigma2.double(), 16)
        x, i = OAMPNetOnline.initial(6, 16)(H, b.y, b.sigma2, 16)
        assert torch.equal(i, i_ref)
        torch.testing.assert_close(x, x_ref.to(torch.complex64), rtol=0, atol=2e-3)
    # per-channel parameters: gradients equal OAMP's differentiable graph (summed over the 2 channels)
    h, b = H[:2], ch.sample_batch(H[:2], 12.0, 16, 64, gen)
    gm, th = 0.8 + 0.4 * torch.rand(5, generator=gen), 0.8 + 0.4 * torch.rand(5, generator=gen)
    ref = OAMP(iterations=5, gamma=gm.clone().requires_grad_(True), theta=th.clone().requires_grad_(True))
    layer_loss(ref.forward(h, b.y, b.sigma2, 16, all_layers=True, differentiable=True)[0], b.x).backward()
    g2, t2 = gm[:, None].repeat(1, 2).requires_grad_(True), th[:, None].repeat(1, 2).requires_grad_(True)
    layer_loss(real_to_complex(oamp_train_forward(h, b.y, b.sigma2, g2, t2, 16)), b.x).backward()
    torch.testing.assert_close(g2.grad.sum(1), ref.gamma.grad, rtol=5e-3, atol=1e-4)
    torch.testing.assert_close(t2.grad.sum(1), ref.theta.grad, rtol=5e-3, atol=1e-4)


def test_oampnet_online_trains_per_channel_and_is_no_worse_than_oamp(data_dir, tmp_path):
    from edgert.mimo.detectors import OAMPNetOnline, make_detector, oamp_train_forward
    from edgert.mimo.oampnet_online import OAMPNetOnlineResult, train_oampnet_online
    from edgert.mimo.training import layer_loss
    from edgert.ops.mmnet import real_to_complex

    H = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16).flat()  # [16, 64, 16]
    cfg = _oamp_cfg()
    res = train_oampnet_online(H, cfg)
    assert res.gamma.shape == res.theta.shape == (5, 16) and res.loss.shape == (40, 16)
    assert res.iterations_per_channel == 40 and not res.gamma.requires_grad
    assert len({tuple(res.gamma[:, g].tolist()) for g in range(16)}) == 16  # one model per channel

    # the loss on held-out data goes down on every channel; SER at a moderate SNR no worse than OAMP's
    b = ch.sample_batch(H, 10.0, 4, 256, torch.Generator().manual_seed(11))

    def held_out(det: OAMPNetOnline) -> torch.Tensor:
        xs = real_to_complex(oamp_train_forward(H, b.y, b.sigma2, det.gamma, det.theta, 4))
        return layer_loss(xs, b.x, per_channel=True)

    det = res.detector()
    assert bool((held_out(det) < held_out(OAMPNetOnline.initial(5, 16))).all())
    err_oamp = int((make_detector("oamp", layers=5)(H, b.y, b.sigma2, 4)[1] != b.indices).sum())
    err_net = int((det(H, b.y, b.sigma2, 4)[1] != b.indices).sum())
    assert err_net <= err_oamp

    # chunks of the set: for_channels selects the trained parameters of channels [a, b)
    part = det.for_channels(4, 8)
    torch.testing.assert_close(part(H[4:8], b.y[4:8], b.sigma2[4:8], 4)[0], det(H, b.y, b.sigma2, 4)[0][4:8],
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="for_channels"):
        det(H[:4], b.y[:4], b.sigma2[:4], 4)

    res.save(tmp_path / "oampnet_online.pt")
    back = OAMPNetOnlineResult.load(tmp_path / "oampnet_online.pt")
    assert torch.equal(back.gamma, res.gamma) and torch.equal(back.theta, res.theta)
    assert (back.loss == res.loss).all() and back.config == res.config and back.seconds == res.seconds


def test_oampnet_online_chunks_and_zero_iterations():
    from edgert.mimo.oampnet_online import train_oampnet_online

    H = ch.iid_rayleigh(5, 8, 4, torch.Generator().manual_seed(6))
    res = train_oampnet_online(H, _oamp_cfg(snr_db=(0.0, 4.0), iterations=3, batch=20, parallel=2))  # 2 + 2 + 1
    assert res.gamma.shape == (5, 5) and res.loss.shape == (3, 5)
    assert bool((res.gamma != 1).any(0).all())  # every graph trained
    untrained = train_oampnet_online(H, _oamp_cfg(iterations=0))
    assert bool((untrained.gamma == 1).all() & (untrained.theta == 1).all()) and untrained.iterations_per_channel == 0


@pytest.mark.parametrize("kw, message", [
    (dict(snr_db=(10.0, 5.0)), "snr_db"),
    (dict(batch=61), "multiple of snr_groups"),
    (dict(modulation=8), "modulation"),
    (dict(iterations=-1), "iterations"),
    (dict(iterations=2.5), "iterations"),
    (dict(lr=0.0), "lr"),
])
def test_oampnet_online_config_rejects_bad_values(kw, message):
    from edgert.mimo.oampnet_online import train_oampnet_online

    with pytest.raises(ValueError, match=message):
        train_oampnet_online(torch.ones(1, 8, 2, dtype=torch.complex64), _oamp_cfg(**kw))
    with pytest.raises(ValueError, match="H: expected"):
        train_oampnet_online(torch.ones(8, 2, dtype=torch.complex64), _oamp_cfg())


# ---------------------------------------------------------------------------------------------
# MMNet with a regularised linear stage (OnlineConfig.linear_stage)
# ---------------------------------------------------------------------------------------------

def test_regularised_operators_gradient_matches_finite_differences():
    from edgert.mimo.detectors.mmnet import RegularisedBasis
    from edgert.ops.mmnet import mmnet_train_forward

    gen = torch.Generator().manual_seed(11)
    H = ch.iid_rayleigh(2, 8, 4, gen)
    b = ch.sample_batch(H, 10.0, 16, 5, gen)
    basis = RegularisedBasis.of(H)
    theta2 = torch.ones(3, 2, 4, dtype=torch.float64)

    def loss(alpha, log_lam):
        A_ri = torch.view_as_real(basis.operators(alpha, log_lam, dtype=torch.complex128))
        xs = mmnet_train_forward(H, b.y, b.sigma2, A_ri, theta2, 16, backend="torch")
        return xs.pow(2).sum()

    alpha = torch.tensor([[1.0, 0.8], [0.9, 1.1], [1.2, 0.7]], dtype=torch.float64, requires_grad=True)
    log_lam = torch.tensor([[-2.0, -1.0], [0.0, -3.0], [-1.5, -0.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (alpha, log_lam), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_regularised_operator_is_the_regularised_inverse_and_decodes_a_noiseless_channel():
    from edgert.mimo.detectors.mmnet import RegularisedBasis
    from edgert.ops.mmnet import mmnet_detect

    gen = torch.Generator().manual_seed(12)
    H = ch.iid_rayleigh(3, 16, 6, gen)
    lam = torch.tensor([0.3, 0.01, 2.0])
    A = RegularisedBasis.of(H).operators(torch.full((1, 3), 1.5), lam.log()[None])[0]
    gram = H.mH @ H + lam[:, None, None] * torch.eye(6)
    assert torch.allclose(A, 1.5 * torch.linalg.solve(gram, H.mH), atol=1e-5)
    # near zero-forcing on a noiseless channel: every symbol decided right
    A_zf = RegularisedBasis.of(H).operators(torch.ones(4, 3), torch.full((4, 3), -14.0))
    b = ch.sample_batch(H, 60.0, 16, 40, gen)
    y = b.x @ H.transpose(1, 2)  # noiseless
    _, idx = mmnet_detect(H, y, torch.full((3,), 1e-6), torch.ones(4, 3, 6), A=A_zf, modulation=16)
    assert torch.equal(idx.long(), b.indices.long())


def test_regularised_stages_beat_free_mmnet_and_mmse_at_ten_iterations(data_dir):
    from edgert.mimo.detectors import MMSE
    from edgert.mimo.evaluate import count_errors

    cs = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16)
    seq = cs.sequences()[:, :, :4]  # 2 sequences x 4 subcarriers of realistic UMa 64x16 channels
    cfg = dict(modulation=16, snr_db=(20.0, 30.0), layers=6, psi=10, phi=0, batch=100, snr_groups=5)
    H = seq[:, 0].reshape(-1, 64, 16)
    b = ch.sample_batch(H, 26.0, 16, 100, torch.Generator().manual_seed(3))
    errors = {}
    for stage in ("free", "regularised", "corrected"):
        res = train_online(seq, OnlineConfig(**cfg, linear_stage=stage))
        errors[stage] = int(count_errors(res.detector()(H, b.y, b.sigma2, 16)[1], b.indices, 16).sum())
    errors["mmse"] = int(count_errors(MMSE()(H, b.y, b.sigma2, 16)[1], b.indices, 16).sum())
    assert errors["corrected"] < 0.9 * errors["mmse"] and errors["mmse"] < 0.5 * errors["free"], errors
    assert errors["regularised"] < 0.5 * errors["free"], errors


def test_linear_stage_is_validated_and_trains_along_a_time_and_frequency_chain():
    with pytest.raises(ValueError, match="linear_stage"):
        _cfg(linear_stage="lmmse").validate()
    with pytest.raises(ValueError, match="warm_start 'copy'"):
        _cfg(linear_stage="regularised", warm_start="channel").validate()
    with pytest.raises(ValueError, match="lr_scalars"):
        _cfg(linear_stage="regularised", lr_scalars=0.0).validate()
    H = ch.iid_rayleigh(4, 32, 4, torch.Generator().manual_seed(1)).reshape(1, 2, 2, 32, 4)
    for stage in ("regularised", "corrected"):
        res = train_online(H, _cfg(psi=5, psi_time=2, phi=1, linear_stage=stage))
        assert res.iterations.tolist() == [[5, 1], [2, 1]]
        # with the scalars carried over, the stored A_t still inverts its own channel: A_t H ~ alpha_t I
        AH = res.A[1, 1, :, 0] @ H[0, 1, 1]
        assert torch.isfinite(torch.view_as_real(AH)).all()
        off = AH - torch.diag_embed(torch.diagonal(AH, dim1=-2, dim2=-1))
        assert float(off.abs().max()) < 0.35 * float(torch.diagonal(AH, dim1=-2, dim2=-1).abs().min())
