"""PSNR/SSIM against scikit-image and analytic cases; Bjontegaard metrics on curves with known answers;
segment timing and the gradient-guided coordinate selection."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgert.srvc import metrics
from edgert.srvc.encoder import segment_starts, select_coordinates
from edgert.srvc.model import SRConfig, SRVCModel
from edgert.srvc.training import train


def _noisy(seed: int = 0, shape=(3, 40, 50, 3), amp: int = 20):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-amp, amp + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_analytic_and_pooled_over_frames() -> None:
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0] += 10  # frame 0: MSE 100; frame 1: exact
    assert metrics.psnr(a[:1], b[:1]) == pytest.approx(20 * math.log10(255 / 10))
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 50))  # pooled MSE, not mean of PSNRs
    assert metrics.psnr_per_frame(a, b)[1] == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(a, b[:, :4])


def test_psnr_and_ssim_match_skimage() -> None:
    skm = pytest.importorskip("skimage.metrics")
    a, b = _noisy()
    for i in range(a.shape[0]):
        assert metrics.psnr(a[i], b[i]) == pytest.approx(skm.peak_signal_noise_ratio(a[i], b[i], data_range=255))
        ref = skm.structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=255, channel_axis=-1)
        assert metrics.ssim_per_frame(a[i], b[i])[0] == pytest.approx(ref, abs=1e-9)
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def test_bd_rate_known_answers() -> None:
    rate = np.array([100.0, 200.0, 400.0, 800.0])
    psnr = np.array([30.0, 33.0, 35.5, 37.0])
    assert metrics.bd_rate(rate, psnr, 0.5 * rate, psnr) == pytest.approx(-50.0)  # same quality at half the bits
    assert metrics.bd_rate(rate, psnr, 1.25 * rate, psnr) == pytest.approx(25.0)
    assert metrics.bd_psnr(rate, psnr, rate, psnr + 1.0) == pytest.approx(1.0)
    assert metrics.bd_psnr(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-12)
    # Exact for a curve PSNR = 10 log10(R) shifted by 3 dB: halving... R' = R / 10^(0.3) at equal quality.
    r = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    assert metrics.bd_rate(r, 10 * np.log10(r), r, 10 * np.log10(r) + 3.0) == pytest.approx(100 * (10 ** -0.3 - 1))
    assert metrics.bd_rate(rate, psnr, rate, psnr + 20) is None  # no PSNR overlap
    assert metrics.bd_psnr(rate, psnr, rate * 100, psnr) is None  # no rate overlap
    with pytest.raises(ValueError, match="positive"):
        metrics.bd_rate(rate, psnr, -rate, psnr)


def test_segment_starts() -> None:
    assert segment_starts(132, 25.0, 5.0) == [0, 125]
    assert segment_starts(132, 25.0, 2.0) == [0, 50, 100]
    assert segment_starts(10, 25.0, math.inf) == [0]
    assert segment_starts(30, 29.97, 0.5) == [0, 15]


def test_gradient_guided_selection_and_masked_training() -> None:
    before = {"a": torch.zeros(4), "b": torch.zeros(2, 3)}
    after = {"a": torch.tensor([0.1, -5.0, 0.0, 0.2]), "b": torch.tensor([[0.0, 3.0, 0.0], [-0.3, 0.0, 0.0]])}
    masks = select_coordinates(before, after, 0.3)  # 3 of 10 coordinates
    assert masks["a"].tolist() == [False, True, False, False]
    assert masks["b"].tolist() == [[False, True, False], [True, False, False]]
    torch.manual_seed(0)
    model = SRVCModel(SRConfig(scale=2, features=4, predictor_channels=8, body_channels=(8,), body_kernels=(3,)))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(p.shape, generator=rng) < 0.05 for n, p in model.named_parameters()}
    lr, hr = torch.rand(3, 3, 12, 12, generator=rng), torch.rand(3, 3, 24, 24, generator=rng)
    stats = train(model, lr, hr, iterations=3, batch=2, crop=0.5, learning_rate=1e-2, gen=gen, masks=masks)
    assert stats.iterations == 3 and math.isfinite(stats.last_loss)
    moved = 0
    for n, p in model.named_parameters():
        changed = p.detach() != start[n]
        assert not torch.any(changed & ~masks[n]), n  # nothing outside the mask moves, bit for bit
        moved += int(changed.sum())
    assert moved > 0
