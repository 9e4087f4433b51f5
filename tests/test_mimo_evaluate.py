"""edgert.mimo.evaluate and ``edgert mimo``: statistics, resumable sweeps, CLI, input rejection."""
from __future__ import annotations

import json

import pytest
import torch

from edgert.cli import main
from edgert.mimo.evaluate import SweepConfig, run_sweep, snr_at_ser, wilson_interval


def test_wilson_and_interpolation():
    lo, hi = wilson_interval(10, 10_000)
    assert lo < 1e-3 < hi and hi - lo < 1.5e-3
    assert wilson_interval(0, 100)[0] == 0.0
    assert snr_at_ser([0, 10], [1e-2, 1e-4]) == pytest.approx(5.0)
    assert snr_at_ser([0, 10], [1e-2, 2e-3]) is None
    assert snr_at_ser([0, 10], [1e-2, 0.0]) is None


def _cfg(**kw) -> SweepConfig:
    base = dict(detectors=["mmse", "zf"], nr=16, nt=4, modulation=4, snr_db=[0.0, 6.0], matrices=4,
                vectors_per_matrix=8)
    base.update(kw)
    return SweepConfig(**base)


def test_sweep_resumes_without_recomputing(tmp_path):
    out = tmp_path / "run"
    first = run_sweep(_cfg(), out, log=lambda s: None, plots=False)
    assert set(first["points"]) == {"mmse", "zf"} and (out / "config.json").is_file()
    # mark a finished point; a resumed sweep with one more SNR must keep it and add only the new one
    data = json.loads((out / "results.json").read_text())
    data["points"]["mmse"]["0"]["errors"] = -1
    (out / "results.json").write_text(json.dumps(data))
    logged: list[str] = []
    second = run_sweep(_cfg(snr_db=[0.0, 6.0, 12.0]), out, log=logged.append, plots=False)
    assert second["points"]["mmse"]["0"]["errors"] == -1
    assert set(second["points"]["mmse"]) == {"0", "6", "12"}
    assert sum("SNR" in line for line in logged) == 2
    with pytest.raises(ValueError, match="different config"):
        run_sweep(_cfg(modulation=16), out, log=lambda s: None)


def test_redo_measures_only_the_named_detectors_again_on_the_same_data(tmp_path):
    out = tmp_path / "run"
    run_sweep(_cfg(), out, log=lambda s: None, plots=False)
    data = json.loads((out / "results.json").read_text())
    truth = {n: {k: p["errors"] for k, p in pts.items()} for n, pts in data["points"].items()}
    for pts in data["points"].values():
        for p in pts.values():
            p["errors"] = -1
    (out / "results.json").write_text(json.dumps(data))
    again = run_sweep(_cfg(), out, log=lambda s: None, plots=False, redo=["zf"])
    assert {k: p["errors"] for k, p in again["points"]["zf"].items()} == truth["zf"]  # same data, same errors
    assert all(p["errors"] == -1 for p in again["points"]["mmse"].values())  # not re-measured
    with pytest.raises(ValueError, match="not detectors of this sweep"):
        run_sweep(_cfg(), out, log=lambda s: None, redo=["ep"])


def test_errors_per_real_component(tmp_path):
    from edgert.mimo.evaluate import count_errors

    sent = torch.tensor([[[0, 5, 15]]])  # QAM16 index = re_level * 4 + im_level
    detected = torch.tensor([[[1, 10, 15]]])  # one axis wrong, both axes wrong, right
    assert count_errors(detected, sent, 16).tolist() == [2]
    assert count_errors(detected, sent, 16, "real").tolist() == [3]
    sym = run_sweep(_cfg(), tmp_path / "s", log=lambda s: None, plots=False)
    real = run_sweep(_cfg(count="real"), tmp_path / "r", log=lambda s: None, plots=False)
    for n in sym["points"]:
        for k, p in sym["points"][n].items():
            q = real["points"][n][k]
            assert q["symbols"] == 2 * p["symbols"] and p["errors"] <= q["errors"] <= 2 * p["errors"]
    with pytest.raises(ValueError, match="count"):
        _cfg(count="bits").validate()


def test_csi_error_sends_the_same_data_and_only_the_detectors_see_the_estimate(tmp_path, monkeypatch):
    from edgert.mimo import evaluate
    from edgert.mimo.channels import sample_batch
    from edgert.mimo.detectors import make_detector

    sent: dict[float, list[torch.Tensor]] = {}
    seen: dict[float, list[torch.Tensor]] = {}
    csi = 0.0

    def recording_batch(H, *args):
        b = sample_batch(H, *args)
        sent.setdefault(csi, []).append(b.x)
        return b

    class Recording:
        name = "mmse"

        def __call__(self, H, y, sigma2, modulation):
            seen.setdefault(csi, []).append(H)
            return make_detector("mmse")(H, y, sigma2, modulation)

    monkeypatch.setattr(evaluate, "sample_batch", recording_batch)
    real_prepare = evaluate.prepare_detector
    monkeypatch.setattr(evaluate, "prepare_detector",
                        lambda name, *a: Recording() if name == "mmse" else real_prepare(name, *a))
    kw = dict(detectors=["mmse", "zf"], snr_db=[6.0, 12.0], matrices=8, vectors_per_matrix=64, chunk_matrices=4)
    errors = {}
    for csi in (0.0, 0.1):
        res = run_sweep(_cfg(**kw, csi_error=csi), tmp_path / f"csi{csi}", log=lambda s: None, plots=False)
        errors[csi] = {n: sum(p["errors"] for p in pts.values()) for n, pts in res["points"].items()}
    assert all(torch.equal(a, b) for a, b in zip(sent[0.0], sent[0.1], strict=True))  # the same data
    H = evaluate.load_set(_cfg(**kw)).flat()
    assert all(torch.equal(h, H[4 * (i % 2):4 * (i % 2) + 4]) for i, h in enumerate(seen[0.0]))  # perfect CSI
    H_hat = evaluate.estimated_set(evaluate.load_set(_cfg(**kw)), 0.1, 0).flat()
    assert all(torch.equal(h, H_hat[4 * (i % 2):4 * (i % 2) + 4]) for i, h in enumerate(seen[0.1]))  # fixed draw
    err = (H_hat - H).abs().pow(2).mean()
    assert 0.08 < float(err) < 0.12
    assert errors[0.1]["mmse"] > 1.5 * errors[0.0]["mmse"] and errors[0.1]["zf"] > errors[0.0]["zf"]


def test_csi_error_zero_gives_the_perfect_csi_results():
    """csi_error=0 is the sweep as before: errors equal a by-hand run of the data recipe on the true channels."""
    from edgert.mimo import evaluate
    from edgert.mimo.channels import sample_batch
    from edgert.mimo.detectors import make_detector

    cfg = _cfg(snr_db=[6.0], matrices=6, vectors_per_matrix=32, chunk_matrices=4)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        res = run_sweep(cfg, d, log=lambda s: None, plots=False)
    H = evaluate.load_set(cfg).flat()
    gen = evaluate.snr_generator(cfg.seed, 6.0)
    want = {"mmse": 0, "zf": 0}
    for a in (0, 4):
        b = sample_batch(H[a:a + 4], 6.0, 4, 32, gen)
        for n in want:
            want[n] += int((make_detector(n)(H[a:a + 4], b.y, b.sigma2, 4)[1] != b.indices).sum())
    assert {n: pts["6"]["errors"] for n, pts in res["points"].items()} == want


def test_sweep_with_oampnet_online_trains_on_the_estimated_channels_and_resumes(tmp_path, data_dir, monkeypatch):
    from edgert.mimo import evaluate

    trained_on: dict[str, torch.Tensor] = {}
    real_oamp, real_mmnet = evaluate.train_oampnet_online, evaluate.train_online

    def oamp_spy(H, ocfg):
        trained_on["oampnet_online"] = H
        return real_oamp(H, ocfg)

    def mmnet_spy(H, ocfg):
        trained_on["mmnet"] = H
        return real_mmnet(H, ocfg)

    monkeypatch.setattr(evaluate, "train_oampnet_online", oamp_spy)
    monkeypatch.setattr(evaluate, "train_online", mmnet_spy)
    kw = dict(detectors=["oamp", "oampnet_online", "mmnet"],
              channels=str(data_dir / "mimo" / "uma_nlos_seq_sample.npz"), nr=64, nt=16, modulation=4,
              snr_db=[10.0], vectors_per_matrix=8, layers=4, online_batch=20,
              online_psi=2, online_phi=1, oampnet_online_iterations=3, chunk_matrices=8, csi_error=0.01)
    out = tmp_path / "run"
    logged: list[str] = []
    first = run_sweep(_cfg(**kw), out, log=logged.append, plots=False)
    cs = evaluate.load_set(_cfg(**kw))
    H_hat = evaluate.estimated_set(cs, 0.01, 0)
    assert torch.equal(trained_on["oampnet_online"], H_hat.flat())  # as a receiver: on its estimates
    assert torch.equal(trained_on["mmnet"], H_hat.sequences())
    assert not torch.equal(H_hat.flat(), cs.flat())
    tr = first["training"]["oampnet_online"]
    assert tr["iterations_per_channel"] == 3 and tr["channels"] == 16 and tr["channels_per_graph"] == 8
    assert (out / "models" / "oampnet_online.pt").is_file()
    assert first["points"]["oampnet_online"]["10"]["symbols"] == 16 * 8 * 16
    assert first["summary"]["oampnet_online"]["complexity"]["per_channel"] > 0
    # resumed with one more SNR: the trained parameters are loaded, the finished point is kept
    trained_on.clear()
    data = json.loads((out / "results.json").read_text())
    data["points"]["oampnet_online"]["10"]["errors"] = -1
    (out / "results.json").write_text(json.dumps(data))
    second = run_sweep(_cfg(**{**kw, "snr_db": [10.0, 14.0]}), out, log=logged.append, plots=False)
    assert not trained_on and second["points"]["oampnet_online"]["10"]["errors"] == -1
    assert set(second["points"]["oampnet_online"]) == {"10", "14"}
    assert sum("trained oampnet online" in line for line in logged) == 1


@pytest.mark.parametrize("kw, message", [
    (dict(csi_error=-0.1), "csi_error"),
    (dict(csi_error=float("nan")), "csi_error"),
    (dict(csi_error=float("inf")), "csi_error"),
    (dict(csi_error="0.1"), "csi_error"),
    (dict(oampnet_online_iterations=-1), "oampnet_online_iterations"),
    (dict(online_linear_stage="lmmse"), "online_linear_stage"),
    (dict(detectors=["mmnet"], online_linear_stage="corrected", online_warm_start="channel"), "warm_start 'copy'"),
    (dict(detectors=["mmnet"], online_linear_stage="corrected", online_lr_scalars=-1.0), "lr_scalars"),
    (dict(snr_db=[]), "empty SNR list"),
    (dict(snr_db=[10.0, 500.0]), "within \\[-20, 60\\]"),
    (dict(snr_db=[float("nan")]), "finite"),
    (dict(detectors=["mmse", "dnn"]), "unknown detector"),
    (dict(modulation=32), "modulation"),
    (dict(channels="/nonexistent.npz"), "existing .npz"),
])
def test_bad_sweeps_rejected_before_work(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        run_sweep(_cfg(**kw), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_cli_smoke(tmp_path, capsys, data_dir):
    out = tmp_path / "cli"
    rc = main(["mimo", "sweep", "--detectors", "mmse,ep,mmnet", "--channels",
               str(data_dir / "mimo" / "uma_nlos_seq_sample.npz"), "--nt", "16", "--modulation", "4",
               "--snr", "10:14:4", "--vectors", "4", "--psi", "2", "--phi", "1", "--batch", "20", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["training"]["mmnet"]["iterations_per_channel"] == pytest.approx((2 + 7) / 8)
    assert res["points"]["ep"]["10"]["symbols"] == 16 * 4 * 16
    assert (out / "ser.png").is_file()
    assert main(["mimo", "complexity", "--nt", "16", "--json"]) == 0
    assert '"mmnet"' in capsys.readouterr().out
    assert main(["mimo", "sweep", "--detectors", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown detector" in capsys.readouterr().err


def test_cli_csi_error_and_oampnet_online(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["mimo", "sweep", "--detectors", "mmse,oampnet_online", "--nr", "8", "--nt", "2", "--modulation", "4",
               "--matrices", "8", "--snr", "6", "--vectors", "4", "--layers", "3", "--batch", "20",
               "--oampnet-iterations", "2", "--csi-error", "0.05", "--no-plots", "--out", str(out)])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["csi_error"] == 0.05 and cfg["oampnet_online_iterations"] == 2
    assert main(["mimo", "sweep", "--csi-error", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "csi_error" in capsys.readouterr().err
    assert main(["mimo", "complexity", "--detectors", "oamp,oampnet_online", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows["oampnet_online"]["per_vector"] < rows["oamp"]["per_vector"]  # eigenbasis form, no inverses
    assert rows["oampnet_online"]["per_channel"] > rows["oamp"]["per_channel"]  # its training
