"""edgert.mimo.detectors: exactness in the noise-free case, ML vs brute force, SER at high SNR."""
from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from edgert.mimo import channels as ch
from edgert.mimo.detectors import DETECTORS, KBest, SphereDecoder, make_detector
from edgert.ops.mmnet import qam_constellation


def _batch(g, nr, nt, snr, mod, b, seed):
    gen = torch.Generator().manual_seed(seed)
    H = ch.iid_rayleigh(g, nr, nt, gen)
    return H, ch.sample_batch(H, snr, mod, b, gen)


def _brute_force_ml(H, y, mod):
    nt = H.shape[-1]
    cand = torch.tensor(list(itertools.product(range(mod), repeat=nt)))
    X = qam_constellation(mod)[cand].to(H.dtype)  # [C, Nt]
    d = (y[:, :, None, :] - (X @ H.transpose(1, 2))[:, None]).abs().pow(2).sum(-1)
    return cand[d.argmin(-1)]


@pytest.mark.parametrize("name", ["zf", "mmse"])
def test_linear_noise_free_exact(name):
    H, b = _batch(4, 16, 8, 200.0, 64, 10, 0)
    x, idx = make_detector(name)(H, b.x @ H.transpose(1, 2), torch.full((4,), 1e-12), 64)
    assert torch.equal(idx, b.indices)
    assert torch.allclose(x, b.x, atol=1e-4)


@pytest.mark.parametrize("mod", [4, 16])
def test_sphere_decoder_is_ml_and_kbest_large_k_too(mod):
    H, b = _batch(6, 4, 2, 4.0, mod, 30, 1)
    ml = _brute_force_ml(H, b.y, mod)
    sd = SphereDecoder()
    _, idx = sd(H, b.y, b.sigma2, mod)
    assert torch.equal(idx, ml) and sd.stats.fallbacks == 0 and sd.stats.vectors == 180
    _, idx_k = KBest(k=mod)(H, b.y, b.sigma2, mod)
    assert torch.equal(idx_k, ml)
    assert (ml != b.indices).any()  # low SNR: the test is not trivially noise-free


def test_sphere_decoder_budget_falls_back_and_reports():
    H, b = _batch(2, 4, 2, 0.0, 16, 5, 2)
    sd = SphereDecoder(node_budget=3, fallback_k=256)
    _, idx = sd(H, b.y, b.sigma2, 16)
    assert sd.stats.fallbacks == 10
    assert torch.equal(idx, _brute_force_ml(H, b.y, 16))  # K=256 covers all 16^2 paths


@pytest.mark.parametrize("name", ["ep", "ep64", "amp", "oamp", "vblast", "kbest", "mmse"])
def test_high_snr_iid_64x16_low_ser(name):
    H, b = _batch(4, 64, 16, 16.0, 16, 32, 3)
    x, idx = make_detector(name)(H, b.y, b.sigma2, 16)
    assert x.shape == (4, 32, 16) and idx.shape == (4, 32, 16)
    assert float((idx != b.indices).double().mean()) < 2e-3


def test_mmse_ser_decreases_with_snr_and_beats_mf():
    sers = []
    for snr in (4.0, 8.0, 12.0):
        H, b = _batch(16, 64, 16, snr, 16, 16, 4)
        _, idx = make_detector("mmse")(H, b.y, b.sigma2, 16)
        sers.append(float((idx != b.indices).double().mean()))
        if snr == 12.0:
            _, idx_mf = make_detector("mf")(H, b.y, b.sigma2, 16)
            assert float((idx_mf != b.indices).double().mean()) > 5 * sers[-1]
    assert sers[0] > sers[1] > sers[2] > 0


def test_ep_and_kbest_beat_mmse_at_moderate_snr():
    H, b = _batch(16, 64, 16, 11.0, 16, 32, 5)
    err = {n: int((make_detector(n)(H, b.y, b.sigma2, 16)[1] != b.indices).sum()) for n in ("mmse", "ep", "kbest")}
    assert err["ep"] < err["mmse"] and err["kbest"] < err["mmse"]


def test_bad_inputs_rejected():
    H, b = _batch(2, 8, 4, 10.0, 4, 3, 6)
    det = make_detector("mmse")
    with pytest.raises(ValueError, match="modulation"):
        det(H, b.y, b.sigma2, 32)
    with pytest.raises(ValueError, match="y: expected"):
        det(H, b.y[:, :, :5], b.sigma2, 4)
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("dnn")
    assert "mmnet" in DETECTORS


@pytest.mark.skipif(importlib.util.find_spec("sionna") is None, reason="sionna-no-rt not installed (extra [mimo])")
def test_ep_and_kbest_match_sionna():
    from sionna.phy.mapping import Constellation
    from sionna.phy.mimo import EPDetector, KBestDetector

    H, b = _batch(8, 16, 4, 8.0, 16, 64, 7)
    s = (b.sigma2[:, None, None, None] * torch.eye(16)).to(torch.complex64).expand(8, 64, 16, 16)
    Hb = H[:, None].expand(8, 64, 16, 4)
    points = Constellation("qam", 4).points.to(torch.complex64)
    for ours, theirs in ((make_detector("ep"), EPDetector("symbol", 4, hard_out=True, l=10, beta=0.9)),
                         (KBest(k=16), KBestDetector("symbol", 4, 16, "qam", 4, hard_out=True))):
        _, idx = ours(H, b.y, b.sigma2, 16)
        ref = theirs(b.y, Hb, s)
        ours_x = qam_constellation(16)[idx]
        theirs_x = points[ref.long()]
        agree = float((ours_x - theirs_x).abs().lt(1e-4).double().mean())
        assert agree > 0.97, (ours.name, agree)
