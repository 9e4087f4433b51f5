"""edgert.mimo.channels: convention, loader validation, user split, sampling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgert.mimo import channels as ch


def test_iid_column_power_and_noise_variance():
    H = ch.iid_rayleigh(200, 64, 16, torch.Generator().manual_seed(1))
    assert H.dtype == torch.complex64 and H.shape == (200, 64, 16)
    assert torch.allclose(ch.column_power(H), torch.ones(16), atol=0.03)
    assert math.isclose(float(ch.noise_variance(10.0, 16)), 1.6, rel_tol=1e-6)
    assert torch.allclose(ch.noise_variance([0.0, 20.0], 32), torch.tensor([32.0, 0.32]))


def test_sample_batch_snr_matches_definition():
    gen = torch.Generator().manual_seed(2)
    H = ch.iid_rayleigh(64, 64, 16, gen)
    b = ch.sample_batch(H, 10.0, 16, 200, gen)
    assert b.indices.shape == (64, 200, 16) and b.y.shape == (64, 200, 64) and b.sigma2.shape == (64,)
    signal = (b.x @ H.transpose(1, 2)).abs().pow(2).mean()
    noise = (b.y - b.x @ H.transpose(1, 2)).abs().pow(2).mean()
    assert abs(10 * math.log10(float(signal / noise)) - 10.0) < 0.1
    assert abs(float(b.x.abs().pow(2).mean()) - 1.0) < 0.02


def test_sample_set_loads_and_splits(data_dir):
    cs = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz", nt=16)
    assert cs.axes == ("drop", "subcarrier") and cs.H.shape == (2, 8, 64, 16)
    assert cs.sequences().shape == (2, 1, 8, 64, 16)
    full = ch.load_channels(data_dir / "mimo" / "uma_nlos_seq_sample.npz")
    assert torch.equal(cs.H[1], full.H[0, :, :, 16:])
    # power control: unit mean column power (the slice holds 8 of the 256 subcarriers it was normalised over)
    # so only the average over users is close to 1
    assert abs(float(ch.column_power(full.H).mean()) - 1.0) < 0.3


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 64, 16), np.complex128), "expected dtype complex64"),
    (np.zeros((64,), np.complex64), "at least 2 axes"),
    (np.ones((4, 8, 16), np.complex64), "expected Nr >= Nt"),
    (np.full((2, 64, 16), np.nan, np.complex64), "NaN/inf"),
    (np.concatenate([np.ones((2, 64, 15), np.complex64), np.zeros((2, 64, 1), np.complex64)], -1),
     "all-zero user column"),
])
def test_loader_rejects_bad_files(tmp_path, array, message):
    path = tmp_path / "bad.npz"
    np.savez(path, H=array)
    with pytest.raises(ValueError, match=message):
        ch.load_channels(path)


def test_loader_rejects_missing_and_bad_axes(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ch.load_channels(tmp_path / "none.npz")
    np.savez(tmp_path / "noh.npz", G=np.ones((2, 2), np.complex64))
    with pytest.raises(ValueError, match="no array 'H'"):
        ch.load_channels(tmp_path / "noh.npz")
    np.savez(tmp_path / "axes.npz", H=np.ones((2, 64, 4), np.complex64), axes=np.array(["frame"]))
    with pytest.raises(ValueError, match="'axes' must name"):
        ch.load_channels(tmp_path / "axes.npz")
    np.savez(tmp_path / "split.npz", H=np.ones((2, 64, 12), np.complex64))
    with pytest.raises(ValueError, match="not a multiple of nt=8"):
        ch.load_channels(tmp_path / "split.npz", nt=8)


def test_imperfect_csi_error_variance():
    gen = torch.Generator().manual_seed(3)
    H = ch.iid_rayleigh(100, 64, 16, gen)
    Hh = ch.imperfect_csi(H, 0.1, gen)
    assert abs(float((Hh - H).abs().pow(2).mean()) - 0.1) < 0.005
    with pytest.raises(ValueError, match="sigma_c2"):
        ch.imperfect_csi(H, -1.0, gen)


def test_unknown_modulation_rejected():
    with pytest.raises(ValueError, match="modulation: expected one of"):
        ch.sample_batch(torch.ones(1, 4, 2, dtype=torch.complex64), 10.0, 8, 4, torch.Generator())


@pytest.mark.skipif(__import__("importlib").util.find_spec("sionna") is None, reason="sionna-no-rt not installed")
def test_uma_generation_follows_convention(tmp_path):
    from edgert.mimo.generate import UMaConfig, generate_uma

    H = generate_uma(UMaConfig(drops=1, users=4, seed=5), tmp_path / "uma.npz")
    assert H.shape == (1, 256, 64, 4) and H.dtype == np.complex64
    cs = ch.load_channels(tmp_path / "uma.npz")
    assert torch.allclose(ch.column_power(cs.H), torch.ones(4), atol=1e-3)
