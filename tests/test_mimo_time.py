"""Time sequences: generation (edgert.mimo.generate), the time-axis training order, per-time-step SER."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from edgert.cli import main
from edgert.mimo import channels as ch
from edgert.mimo.detectors import init_mmnet_params
from edgert.mimo.generate import UMaConfig, generate_uma, relative_change
from edgert.mimo.online import OnlineConfig, channel_transfer, train_online

# conftest.py is outside this suite's files; the marker follows its needs_* pattern
needs_sionna = pytest.mark.skipif(importlib.util.find_spec("sionna") is None,
                                  reason="sionna-no-rt not installed (extra [mimo])")


def _cfg(**kw) -> OnlineConfig:
    base = dict(modulation=4, snr_db=(8.0, 12.0), layers=3, psi=4, phi=2, batch=30, snr_groups=3, lr=1e-2,
                order="time", phi_time=1)
    base.update(kw)
    return OnlineConfig(**base)


def _seq(s: int = 2, k: int = 3, f: int = 2, nr: int = 16, nt: int = 4, seed: int = 1) -> torch.Tensor:
    return ch.iid_rayleigh(s * k * f, nr, nt, torch.Generator().manual_seed(seed)).reshape(s, k, f, nr, nt)


def test_time_order_iteration_accounting():
    res = train_online(_seq(k=4), _cfg(psi=5, phi_time=2, phi=7, psi_time=9))
    assert res.iterations.tolist() == [[5, 5], [2, 2], [2, 2], [2, 2]]  # phi and psi_time unused
    assert res.iterations_per_channel == pytest.approx((5 + 3 * 2) / 4)
    assert res.A.shape == (4, 2, 3, 2, 4, 16) and res.theta2.shape == (4, 2, 3, 2, 4)
    assert np.isfinite(res.final_loss).all() and res.config["order"] == "time"
    # the paper order on the same data spends psi on (0, 0) only
    paper = train_online(_seq(k=4), _cfg(order="paper", psi=5, phi=2, psi_time=3))
    assert paper.iterations.tolist() == [[5, 2], [3, 2], [3, 2], [3, 2]]


def test_time_order_starts_each_channel_from_the_same_subcarrier_one_step_earlier():
    H = _seq()
    # no training after k = 0: a copy start leaves (k, f) exactly at (0, f), and (0, f) are distinct models
    res = train_online(H, _cfg(phi_time=0))
    for k in (1, 2):
        torch.testing.assert_close(res.A[k], res.A[0], rtol=0, atol=0)
        torch.testing.assert_close(res.theta2[k], res.theta2[0], rtol=0, atol=0)
    assert not torch.allclose(res.A[0, 0], res.A[0, 1])
    assert np.isnan(res.final_loss[1:]).all()
    # the channel transfer moves (k-1, f)'s operator from H[:, k-1, f] to H[:, k, f], per subcarrier
    res = train_online(H, _cfg(phi_time=0, warm_start="channel"))
    for f in range(2):
        want = channel_transfer(res.A[0, f], H[:, 0, f], H[:, 1, f], 0.5)
        torch.testing.assert_close(res.A[1, f], want, rtol=0, atol=1e-5)
    # restart: A from the matched filter of the new channel, theta2 carried
    res = train_online(H, _cfg(phi_time=0, warm_start="restart"))
    torch.testing.assert_close(res.A[2, 1], init_mmnet_params(H[:, 2, 1].contiguous(), 3)[0])
    torch.testing.assert_close(res.theta2[2], res.theta2[0])


def test_time_order_trains_and_chunks_independently():
    H = _seq(s=1, k=3, f=3)
    res = train_online(H, _cfg(psi=30, phi_time=3))
    untrained = train_online(H, _cfg(psi=1, phi_time=0)).final_loss[0].mean()
    assert res.final_loss[0].mean() < 0.7 * untrained
    # parallel=2 trains chains {0, 1} and {2} in two graphs; same accounting and shapes, different noise draws
    part = train_online(H, _cfg(psi=30, phi_time=3, parallel=2))
    assert part.iterations.tolist() == res.iterations.tolist() and part.A.shape == res.A.shape
    assert part.final_loss[0].mean() < 0.7 * untrained and not torch.equal(part.A, res.A)
    # lr_time changes the later steps only
    fast = train_online(H, _cfg(psi=30, phi_time=3, lr_time=0.1))
    torch.testing.assert_close(fast.A[0], res.A[0], rtol=0, atol=0)
    assert not torch.allclose(fast.A[1], res.A[1])


@pytest.mark.parametrize("kw, message", [
    (dict(order="frequency"), "order"),
    (dict(phi_time=-1), "phi_time"),
    (dict(phi_time=2.5), "phi_time: expected an integer"),
    (dict(parallel=-2), "parallel"),
    (dict(lr_time=0.0), "lr_time"),
])
def test_time_order_config_rejected(kw, message):
    with pytest.raises(ValueError, match=message):
        train_online(_seq(), _cfg(**kw))


def test_relative_change_and_generator_config_validation():
    H = np.ones((1, 3, 2, 4, 2), np.complex64)
    H[:, 1] *= 1.1
    H[:, 2] *= 1.1 * 0.9
    r = relative_change(H)
    assert r.shape == (1, 2, 2)
    np.testing.assert_allclose(r[0, :, 0], [0.1, 0.1], rtol=1e-6)
    with pytest.raises(ValueError, match="K > lag"):
        relative_change(H, lag=3)
    for kw, message in [(dict(time_steps=0), "time_steps"), (dict(subcarrier_stride=257), "subcarrier_stride"),
                        (dict(time_step_s=0.0), "time_step_s"), (dict(keep_every=3), "divide")]:
        with pytest.raises(ValueError, match=message):
            UMaConfig(**kw).validate()
    assert UMaConfig(subcarrier_stride=16).subcarrier_indices().tolist() == list(range(0, 1024, 64))
    assert UMaConfig().max_doppler_hz() == pytest.approx(8.44, abs=0.01)


@needs_sionna
def test_generated_time_sequence_format_power_control_and_reproducibility(tmp_path):
    cfg = UMaConfig(drops=1, users=4, time_steps=3, time_step_s=1e-3, subcarrier_stride=64, seed=5)
    H = generate_uma(cfg, tmp_path / "t.npz")
    assert H.shape == (1, 3, 4, 64, 4) and H.dtype == np.complex64
    # perfect power control over the whole drop (time steps and saved subcarriers), not per time step
    np.testing.assert_allclose((np.abs(H) ** 2).mean(axis=(0, 1, 2, 3)), 1.0, rtol=1e-5)
    cs = ch.load_channels(tmp_path / "t.npz", nt=2)
    assert cs.axes == ("drop", "time", "subcarrier") and tuple(cs.sequences().shape) == (2, 3, 4, 64, 2)
    # same seed, same channels (sionna's own generators are seeded too); 1 ms at 1 m/s changes H by a few %
    np.testing.assert_array_equal(generate_uma(cfg, tmp_path / "u.npz"), H)
    assert 0.005 < relative_change(H).mean() < 0.1
    # one time step keeps the sample sets' format
    one = generate_uma(UMaConfig(drops=1, users=2, subcarrier_stride=64, seed=5), tmp_path / "one.npz")
    assert one.shape == (1, 4, 64, 2) and ch.load_channels(tmp_path / "one.npz").axes == ("drop", "subcarrier")


def test_sweep_reports_ser_per_time_step_with_the_time_order(tmp_path):
    H = _seq(s=1, k=3, f=2, nr=16, nt=4).numpy().astype(np.complex64)
    ch.save_channels(tmp_path / "seq.npz", H, ("drop", "time", "subcarrier"))
    out = tmp_path / "run"
    rc = main(["mimo", "sweep", "--detectors", "mmse,mmnet", "--channels", str(tmp_path / "seq.npz"), "--nr", "16",
               "--nt", "4", "--modulation", "4", "--snr", "6,10", "--vectors", "8", "--psi", "3", "--order", "time",
               "--phi-time", "1", "--lr-time", "3e-3", "--batch", "20", "--layers", "3", "--no-plots",
               "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["training"]["mmnet"]["iterations_per_channel"] == pytest.approx((3 + 1 + 1) / 3)
    assert res["training"]["mmnet"]["order"] == "time" and res["training"]["mmnet"]["time_steps"] == 3
    assert res["training"]["mmnet"]["lr_time"] == 3e-3
    for name in ("mmse", "mmnet"):
        pt = res["points"][name]["6"]
        assert len(pt["ser_per_time_step"]) == 3
        assert np.mean(pt["ser_per_time_step"]) == pytest.approx(pt["ser"])
    assert main(["mimo", "sweep", "--channels", str(tmp_path / "seq.npz"), "--nr", "16", "--nt", "4",
                 "--phi-time", "-1", "--out", str(tmp_path / "x")]) == 2
