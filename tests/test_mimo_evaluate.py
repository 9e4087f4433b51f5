"""edgert.mimo.evaluate and ``edgert mimo``: statistics, resumable sweeps, CLI, input rejection."""
from __future__ import annotations

import json

import pytest

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


@pytest.mark.parametrize("kw, message", [
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
