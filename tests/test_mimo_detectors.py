"""edgert.mimo.detectors: exactness in the noise-free case, ML vs brute force, SER at high SNR."""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from edgert.mimo import channels as ch
from edgert.mimo.detectors import DETECTORS, EP, KBest, SphereDecoder, make_detector
from edgert.mimo.detectors.iterative import ep_forward
from edgert.ops.mmnet import hard_decision, qam_constellation


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


@pytest.mark.parametrize("name", ["ep", "ep64", "ep64_wide", "amp", "oamp", "vblast", "kbest", "mmse"])
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


UMA_SAMPLE = Path(__file__).parent / "data" / "mimo" / "uma_nlos_seq_sample.npz"


def _uma_batch(snr: float, vectors: int = 128):
    """16 realistic 64x16 channels (3GPP UMa NLOS, condition numbers 17-200) and one QAM16 batch over them."""
    H = ch.load_channels(UMA_SAMPLE, nt=16).H.reshape(-1, 64, 16)
    return H, ch.sample_batch(H, snr, 16, vectors, torch.Generator().manual_seed(1))


def test_ep_on_realistic_channels_is_far_better_than_mmse():
    # SER ~1e-3 territory; the earlier complex, lightly damped EP made ~20x more errors on such channels
    H, b = _uma_batch(22.0)
    ser = {n: float((make_detector(n)(H, b.y, b.sigma2, 16)[1] != b.indices).double().mean())
           for n in ("ep", "ep64", "mmse")}
    assert ser["mmse"] > 0.1
    assert 0 < ser["ep"] < 2e-3 and 0 < ser["ep64"] < 2e-3, ser


def test_ep_with_a_widened_denoiser_makes_fewer_errors_on_realistic_channels():
    # measured on these 16 matrices at 22 dB, 512 vectors: ep64 89 errors, ep64_wide 13 (docs/results/mimo.md)
    H, b = _uma_batch(22.0, vectors=256)
    errors = {n: int((make_detector(n)(H, b.y, b.sigma2, 16)[1] != b.indices).sum()) for n in ("ep64", "ep64_wide")}
    assert errors["ep64"] > 20 and 3 * errors["ep64_wide"] < errors["ep64"], errors


def test_ep_cavity_scale_one_is_ep_and_scale_enters_only_the_denoiser():
    H, b = _uma_batch(22.0, vectors=8)
    beta = torch.full((10, H.shape[0]), 0.9, dtype=torch.float64)
    ones = torch.ones(10, H.shape[0], 16, dtype=torch.float64)
    plain = ep_forward(H, b.y, b.sigma2, 16, beta, float64=True)
    unit = ep_forward(H, b.y, b.sigma2, 16, beta, ones, float64=True)
    assert all(torch.equal(p, u) for p, u in zip(plain, unit))
    wide = EP(float64=True, cavity_scale=(2.0, 1.0))
    reference = ep_forward(H, b.y, b.sigma2, 16, beta, torch.linspace(2, 1, 10, dtype=torch.float64)[:, None, None]
                           .expand(10, H.shape[0], 16), float64=True)
    assert torch.equal(wide(H, b.y, b.sigma2, 16)[1], _decisions(reference[1]))
    # the first layer's denoiser saw twice the cavity variance; the scale is per user (both axes of user 0)
    first = ones.clone()
    first[0, :, 0] = 2.0
    _, _, seen = ep_forward(H, b.y, b.sigma2, 16, beta[:1], first[:1], float64=True)
    _, _, own = ep_forward(H, b.y, b.sigma2, 16, beta[:1], float64=True)
    assert torch.allclose(seen[..., [0, 16]], 2 * own[..., [0, 16]]) and torch.equal(seen[..., 1:16], own[..., 1:16])
    # shapes that do not fit are refused before any iteration
    for bad_beta, bad_scale, what in ((beta[:0], None, "beta"), (beta[:, :1], None, "beta"), (beta[0], None, "beta"),
                                      (beta, ones[:, :, :8], "scale"), (beta, ones[:9], "scale")):
        with pytest.raises(ValueError, match=what):
            ep_forward(H, b.y, b.sigma2, 16, bad_beta, bad_scale, float64=True)


def _decisions(cavity: torch.Tensor) -> torch.Tensor:
    return hard_decision(torch.complex(cavity[..., :16], cavity[..., 16:]).to(torch.complex64), 16)


def _sionna_indices(out: torch.Tensor) -> torch.Tensor:
    """Sionna's QAM16 symbol indices -> edgert's (through the points, so labelling conventions cannot matter)."""
    from sionna.phy.mapping import Constellation

    points = Constellation("qam", 4).points.to(torch.complex64)[out.long()]
    return (points[..., None] - qam_constellation(16)).abs().argmin(-1)


def _sionna_inputs(H, b, dtype):
    g, nv = b.y.shape[:2]
    s = (b.sigma2[:, None, None, None] * torch.eye(H.shape[1])).to(dtype).expand(g, nv, H.shape[1], H.shape[1])
    return b.y.to(dtype), H[:, None].expand(g, nv, *H.shape[1:]).to(dtype), s


@pytest.mark.skipif(importlib.util.find_spec("sionna") is None, reason="sionna-no-rt not installed (extra [mimo])")
@pytest.mark.parametrize("float64", [False, True])
def test_ep_matches_sionna_on_realistic_channels(float64):
    from sionna.phy.mimo import EPDetector

    H, b = _uma_batch(22.0)
    dtype = torch.complex128 if float64 else torch.complex64
    ref = _sionna_indices(EPDetector("symbol", 4, hard_out=True, l=10, beta=0.9,
                                     precision="double" if float64 else "single")(*_sionna_inputs(H, b, dtype)))
    _, ours = make_detector("ep64" if float64 else "ep")(H, b.y, b.sigma2, 16)
    ser_ref = float((ref != b.indices).double().mean())
    assert 2e-4 < ser_ref < 3e-3  # the regime of the claims, not the noise-free or hopeless one
    assert float((ours == ref).double().mean()) >= 0.999  # issue: >= 99 %; measured: 99.98-100 %
    assert abs(int((ours != b.indices).sum()) - int((ref != b.indices).sum())) <= 3


@pytest.mark.skipif(importlib.util.find_spec("sionna") is None, reason="sionna-no-rt not installed (extra [mimo])")
def test_lmmse_and_kbest_match_sionna_on_realistic_channels():
    from sionna.phy.mimo import KBestDetector, LinearDetector

    H, b = _uma_batch(22.0, vectors=64)
    y, Hb, s = _sionna_inputs(H, b, torch.complex64)
    flat = (y.reshape(-1, 64), Hb.reshape(-1, 64, 16), s.reshape(-1, 64, 64))
    lmmse = _sionna_indices(LinearDetector("lmmse", "symbol", "app", "qam", 4, hard_out=True)(y, Hb, s))
    _, ours = make_detector("mmse")(H, b.y, b.sigma2, 16)
    assert float((ours == lmmse).double().mean()) >= 0.999

    kbest = _sionna_indices(KBestDetector("symbol", 16, 32, "qam", 4, hard_out=True)(*flat).reshape(b.indices.shape))
    _, same_order = KBest(k=32, order="weakest_first")(H, b.y, b.sigma2, 16)
    assert float((same_order == kbest).double().mean()) >= 0.999
    # edgert's default order (strongest user at the root) is the stronger detector on these channels
    _, ours = KBest(k=32)(H, b.y, b.sigma2, 16)
    assert 3 * int((ours != b.indices).sum()) < int((kbest != b.indices).sum())


def test_ep_and_kbest_options_are_checked():
    with pytest.raises(ValueError, match="beta"):
        EP(beta=1.0)
    with pytest.raises(ValueError, match="init_precision"):
        EP(init_precision=0.0)
    for bad in ((0.0, 1.0), (2.0,), (1.0, float("nan")), (float("inf"), 1.0)):
        with pytest.raises(ValueError, match="cavity_scale"):
            EP(cavity_scale=bad)
    with pytest.raises(ValueError, match="order"):
        KBest(order="random")
