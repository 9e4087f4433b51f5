"""SER vs condition number (per-matrix sweep data, resume) and the Gaussianity of MMNet's denoiser input noise."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import needs_matplotlib
from edgert.cli import main
from edgert.mimo import channels as ch
from edgert.mimo.analysis import (
    AnalysisConfig,
    _mmnet_layers,
    layer_gaussianity,
    layer_noise,
    mmnet_denoiser_inputs,
    mmnet_iid_operators,
    noise_stats,
    run_analysis,
)
from edgert.mimo.evaluate import (
    CONDITION_BINS,
    PER_MATRIX_FILE,
    SweepConfig,
    condition_bins,
    condition_numbers,
    load_per_matrix,
    run_sweep,
    ser_by_condition,
)
from edgert.ops.mmnet import mmnet_detect_reference, qam_levels


def _quiet(_: str) -> None:
    pass


# --- Gaussianity statistics -----------------------------------------------------------------

def test_noise_stats_gaussian_vs_discrete():
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    gauss = torch.complex(torch.randn(n, generator=gen), torch.randn(n, generator=gen)) * 0.3 + 0.1
    s = noise_stats(gauss)
    assert s["variance"] == pytest.approx(2 * 0.09, rel=0.03)
    for part in ("re", "im"):
        assert abs(s[f"kurtosis_{part}"]) < 0.1
        assert s[f"ks_{part}"] < 0.015  # the 1% critical value at n = 40k is ~0.008
    # QAM16-like noise: uniform 4-PAM per axis has excess kurtosis -1.36, a staircase CDF
    levels = qam_levels(16, torch.float64)
    pam = levels[torch.randint(0, 4, (2, n), generator=gen)]
    q = noise_stats(torch.complex(pam[0], pam[1]))
    for part in ("re", "im"):
        assert q[f"kurtosis_{part}"] == pytest.approx(-1.36, abs=0.03)
        assert q[f"ks_{part}"] > 0.1
    with pytest.raises(ValueError, match="complex"):
        noise_stats(torch.randn(10))
    with pytest.raises(ValueError, match="at least 2"):
        noise_stats(torch.zeros(1, dtype=torch.complex64))


def test_noise_stats_scaled_by_the_assumed_variance():
    gen = torch.Generator().manual_seed(6)
    n = 40_000
    var = 10 ** (3 * torch.rand(n, generator=gen, dtype=torch.float64) - 2)  # 1e-2 .. 10: a mixture of scales
    e = torch.complex(torch.randn(n, generator=gen), torch.randn(n, generator=gen)) * torch.sqrt(var / 2)
    s = noise_stats(e, var)
    assert s["kurtosis_re"] > 2 and s["ks_re"] > 0.05  # pooled: not Gaussian
    assert abs(s["kurtosis_re_scaled"]) < 0.1 and s["ks_re_scaled"] < 0.015
    assert s["scaled_power_re"] == pytest.approx(1, rel=0.03)
    assert noise_stats(e, var / 4)["scaled_power_re"] == pytest.approx(4, rel=0.03)  # over-confident variance
    with pytest.raises(ValueError, match="var: expected positive"):
        noise_stats(e, -var)


def test_ks_matches_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    from edgert.mimo.analysis import ks_normal

    x = torch.randn(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.1
    assert ks_normal(x) == pytest.approx(stats.kstest(x.numpy(), "norm").statistic, abs=1e-12)


def test_anderson_darling_matches_scipy_and_flags_tails():
    stats = pytest.importorskip("scipy.stats")
    from edgert.mimo.analysis import ad_normal

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2000, generator=gen, dtype=torch.float64) * 1.3 + 0.2
    z = (x - x.mean()) / x.std()  # scipy standardizes with the sample mean and std (ddof=1)
    assert ad_normal(z) == pytest.approx(stats.anderson(x.numpy(), "norm").statistic, rel=1e-9)
    assert ad_normal(torch.randn(5000, generator=gen, dtype=torch.float64)) < 2.49  # 5 % critical value, N(0,1)
    # Student-t with 4 degrees of freedom scaled to unit variance: heavy tails the AD statistic sees
    t4 = torch.distributions.StudentT(4.0).sample((5000,)).to(torch.float64) / 2 ** 0.5
    assert ad_normal(t4) > 10
    with pytest.raises(ValueError, match="no samples"):
        ad_normal(torch.empty(0))


def test_denoiser_inputs_match_the_reference_forward_and_layer_noise():
    gen = torch.Generator().manual_seed(1)
    H = ch.iid_rayleigh(3, 16, 4, gen)
    b = ch.sample_batch(H, 8.0, 16, 50, gen)
    theta1, theta2 = torch.full((4,), 1 / 16.0), torch.tensor([1.0, 0.8, 0.9, 1.1])
    A, t2 = mmnet_iid_operators(theta1, theta2, H)
    assert A.shape == (4, 3, 4, 16) and t2.shape == (4, 3, 4)
    z = mmnet_denoiser_inputs(H, b.y, b.sigma2, A, t2, 16)
    xs, _ = mmnet_detect_reference(H, b.y, b.sigma2, t2, theta1=theta1[:, None].expand(4, 3).contiguous(),
                                   modulation=16, all_layers=True)
    # z_t = x_t + A_t (y - H x_t) with x_t the reference's previous-layer output
    prev = torch.cat([torch.zeros_like(xs[:1]), xs[:-1]])
    want = prev + (b.y - prev @ H.transpose(-1, -2)) @ A.transpose(-1, -2)
    torch.testing.assert_close(z, want, rtol=1e-5, atol=1e-5)
    v = torch.stack([v for _, v, _ in _mmnet_layers(H, b.y, b.sigma2, A, t2, 16)])
    g = layer_gaussianity(z, b.x, v)
    assert len(g["ks_re_scaled"]) == 4
    noise = layer_noise(H, b.y, b.x, b.sigma2, A, t2, 16)
    assert len(g["kurtosis_re"]) == 4
    # the variance about the mean equals E|z - x|^2 up to the (small) mean
    np.testing.assert_allclose(g["variance"], noise["linear_mse"], rtol=0.05)
    with pytest.raises(ValueError, match="theta2: expected"):
        mmnet_denoiser_inputs(H, b.y, b.sigma2, A, t2[:, :2], 16)
    with pytest.raises(ValueError, match="shape of x"):
        layer_gaussianity(z, b.x[:2])


# --- condition numbers ----------------------------------------------------------------------

def test_condition_binning_matches_numpy():
    H = ch.iid_rayleigh(200, 8, 4, torch.Generator().manual_seed(4))
    c = condition_numbers(H)
    s = np.linalg.svd(H.numpy().astype(np.complex128), compute_uv=False)
    np.testing.assert_allclose(c, s[:, 0] / s[:, -1], rtol=1e-10)
    bins = condition_bins(c)
    assert [b["name"] for b in bins] == [name for name, _, _ in CONDITION_BINS]
    quartiles = np.quantile(c, [0, 0.25, 0.5, 0.75, 1])
    which = np.clip(np.searchsorted(quartiles, c, side="left") - 1, 0, 3)  # (q_k, q_k+1], min into bin 0
    for k in range(4):
        np.testing.assert_array_equal(bins[k]["mask"], which == k)
    assert sum(int(b["mask"].sum()) for b in bins[:4]) == 200
    np.testing.assert_array_equal(bins[4]["mask"], c > np.quantile(c, 0.9))
    assert int(bins[4]["mask"].sum()) == 20 and int(bins[5]["mask"].sum()) == 2
    errors = np.arange(200) % 3
    out = ser_by_condition({"d": {"5": errors}}, c, 10)
    for k, b in enumerate(bins):
        assert out["ser"]["d"]["5"][k] == pytest.approx(errors[b["mask"]].sum() / (10 * b["mask"].sum()))
    assert sum(out["error_share"]["d"]["5"][:4]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected \\[200\\] matrices"):
        ser_by_condition({"d": {"5": errors[:5]}}, c, 10)
    # three matrices: a quartile bin is empty; its SER is None, not a 0/0 warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = ser_by_condition({"d": {"5": np.array([1, 0, 2])}}, np.array([3.0, 5.0, 9.0]), 10)
    counts = [b["matrices"] for b in small["bins"]]
    assert 0 in counts
    assert [v is None for v in small["ser"]["d"]["5"]] == [n == 0 for n in counts]
    with pytest.raises(ValueError, match="non-empty"):
        condition_bins(np.array([]))
    with pytest.raises(ValueError, match="non-empty"):
        condition_numbers(H[0])


def _cfg(**kw) -> SweepConfig:
    base = dict(detectors=["mmse", "zf"], nr=8, nt=4, modulation=4, snr_db=[4.0, 8.0], matrices=40,
                vectors_per_matrix=8, chunk_matrices=16)
    base.update(kw)
    return SweepConfig(**base)


def _check_per_matrix(out, results):
    errors, condition, spm = load_per_matrix(out / PER_MATRIX_FILE)
    assert spm == 8 * 4 and condition.shape == (40,)
    assert {n: set(p) for n, p in errors.items()} == {n: set(p) for n, p in results["points"].items()}
    for n, pts in results["points"].items():
        for k, p in pts.items():
            assert int(errors[n][k].sum()) == p["errors"]
            assert int((errors[n][k] > 0).sum()) == p["matrices_with_errors"]
    return errors


def test_sweep_writes_per_matrix_errors_and_resume_keeps_them(tmp_path):
    out = tmp_path / "run"
    first = run_sweep(_cfg(), out, log=_quiet, plots=False)
    errors = _check_per_matrix(out, first)
    sbc = first["ser_by_condition"]
    assert [b["name"] for b in sbc["bins"]] == [name for name, _, _ in CONDITION_BINS]
    quartiles = sum(b["matrices"] * v for b, v in zip(sbc["bins"][:4], sbc["ser"]["mmse"]["4"])) / 40
    assert quartiles == pytest.approx(first["points"]["mmse"]["4"]["ser"])
    # resume with one more SNR and one more detector: old points are not recomputed but keep their data
    second = run_sweep(_cfg(snr_db=[4.0, 8.0, 0.0], detectors=["mmse", "zf", "mf"]), out, log=_quiet, plots=False)
    assert second["points"]["mmse"]["4"] == first["points"]["mmse"]["4"]
    again = _check_per_matrix(out, second)
    np.testing.assert_array_equal(again["zf"]["8"], errors["zf"]["8"])
    assert set(second["ser_by_condition"]["ser"]["mf"]) == {"0", "4", "8"}
    # a run interrupted after the npz but before results.json recomputes the point with the same data
    data = json.loads((out / "results.json").read_text())
    del data["points"]["zf"]["0"]
    (out / "results.json").write_text(json.dumps(data))
    third = run_sweep(_cfg(snr_db=[4.0, 8.0, 0.0], detectors=["mmse", "zf", "mf"]), out, log=_quiet, plots=False)
    assert third["points"]["zf"]["0"]["errors"] == second["points"]["zf"]["0"]["errors"]
    _check_per_matrix(out, third)
    # a folder from before per-matrix errors were kept: its points stay, listed as without them
    (out / PER_MATRIX_FILE).unlink()
    fourth = run_sweep(_cfg(snr_db=[4.0, 8.0, 0.0, 12.0], detectors=["mmse"]), out, log=_quiet, plots=False)
    assert "mmse@4" in fourth["ser_by_condition"]["points_without_per_matrix_errors"]
    assert set(load_per_matrix(out / PER_MATRIX_FILE)[0]["mmse"]) == {"12"}


@needs_matplotlib
def test_condition_plot_and_file_channels(tmp_path):
    H = ch.iid_rayleigh(40, 8, 4, torch.Generator().manual_seed(5)).numpy()
    path = tmp_path / "set.npz"
    ch.save_channels(path, H.reshape(5, 8, 8, 4), ("drop", "subcarrier"))
    out = tmp_path / "run"
    res = run_sweep(_cfg(channels=str(path), snr_db=[2.0, 6.0, 10.0]), out, log=_quiet)
    assert (out / "ser_vs_condition.png").is_file()
    _check_per_matrix(out, res)


# --- edgert mimo analyze ----------------------------------------------------------------------

def test_analyze_cli_runs_and_agrees_with_the_sweep(tmp_path, capsys):
    args = ["--nr", "8", "--nt", "4", "--modulation", "4", "--snr", "4,8", "--matrices", "12", "--vectors", "16",
            "--layers", "3", "--offline-iterations", "10"]
    out = tmp_path / "an"
    assert main(["mimo", "analyze", *args, "--no-plots", "--out", str(out)]) == 0
    assert "kurt Re" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert (out / "config.json").is_file() and (out / "models" / "mmnet_iid.pt").is_file()
    layers = res["snr"]["8"]["layers"]
    for key in ("linear_mse", "estimated_var", "denoiser_mse", "variance", "kurtosis_re", "kurtosis_im", "ks_re",
                "ks_im", "ad_re", "ad_im", "ad_re_scaled", "estimate_over_measured"):
        assert len(layers[key]) == 3
    # same seed, SNR, training and chunking as a sweep: the same transmitted data and (almost) the same SER
    sweep = run_sweep(SweepConfig(detectors=["mmnet_iid"], nr=8, nt=4, modulation=4, snr_db=[4.0, 8.0],
                                  matrices=12, vectors_per_matrix=16, layers=3, offline_iterations=10),
                      tmp_path / "sw", log=_quiet, plots=False)
    assert abs(sweep["points"]["mmnet_iid"]["4"]["errors"] - res["snr"]["4"]["errors"]) <= 2
    assert main(["mimo", "analyze", "--snr", "", "--out", str(tmp_path / "x")]) == 2
    assert "empty SNR list" in capsys.readouterr().err
    with pytest.raises(ValueError, match="different config"):
        run_analysis(AnalysisConfig(nr=8, nt=4, modulation=16, snr_db=[4.0], matrices=12), out, log=_quiet)
    with pytest.raises(ValueError, match="channel file"):
        AnalysisConfig(model=str(out / "results.json")).validate()


@needs_matplotlib
def test_analyze_plot(tmp_path):
    cfg = AnalysisConfig(nr=8, nt=4, modulation=4, snr_db=[6.0], matrices=4, vectors_per_matrix=8, layers=2,
                         offline_iterations=5)
    run_analysis(cfg, tmp_path / "an", log=_quiet)
    assert (tmp_path / "an" / "noise.png").is_file()
