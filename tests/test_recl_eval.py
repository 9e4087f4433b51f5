"""``edgert recl eval`` end to end through the CLI on a tiny workload (real clips, the real ImageNet teacher):
run folder files, accuracies in range, scene switches and the refusal of a folder holding another run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_imagenet, needs_matplotlib
from edgert.cli import main
from edgert.recl.evaluate import SCHEMES, EvalConfig, format_table, summarize

TINY = ["--quick", "--cameras", "2", "--windows", "2", "--schemes", "recl,ams"]


@needs_imagenet
@needs_matplotlib
def test_eval_end_to_end_and_refuses_another_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["recl", "eval", "--out", str(out), *TINY]) == 0
    for name in ("config.json", "results.json", "run.json", "table.md", "accuracy.png"):
        assert (out / name).is_file(), name
    assert (out / "recl" / "zoo").is_dir() and (out / "ams" / "zoo").is_dir()
    config = json.loads((out / "config.json").read_text())["eval"]
    assert config["cameras"] == 2 and config["windows"] == 2 and config["schemes"] == ["recl", "ams"]
    results = json.loads((out / "results.json").read_text())
    assert list(results["schemes"]) == ["recl", "ams"]
    for scheme, entry in results["schemes"].items():
        windows = entry["windows"]
        assert [w["window"] for w in windows] == [0, 1]
        assert set(windows[0]["devices"]) == {"cam0", "cam1"}
        for w in windows:
            for dev in w["devices"].values():
                assert 0.0 <= dev["accuracy"] <= 1.0
                assert dev["accuracy"] == pytest.approx(dev["candidate_accuracy"][dev["chosen"]])
                assert dev["frames"] >= 2
        assert not any(d["scene_switch"] for d in windows[0]["devices"].values())  # window 0 follows nothing
        s = entry["summary"]
        assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["selection_share"] <= 1.0
        assert s["retrain_compute_s"] > 0 and s["zoo_size"] == windows[-1]["experts"]
        if scheme == "ams":  # no reuse: never another camera's expert
            assert s["zoo_hit_rate"] == 0.0
            assert all(not d["candidates"] for w in windows for d in w["devices"].values())
    table = (out / "table.md").read_text()
    assert "| recl |" in table and "| ams |" in table
    # RECL and a retraining baseline ran: the responsiveness page, with the paper-clock tables
    resp = (out / "responsiveness.md").read_text()
    assert "On the paper clock" in resp and "training clock" in resp and "whole windows" in resp
    assert "| recl |" in capsys.readouterr().out
    # resuming the same run runs nothing again; another config in the same folder is refused before any work
    before = (out / "results.json").read_text()
    assert main(["recl", "eval", "--out", str(out), *TINY]) == 0
    assert (out / "results.json").read_text() == before
    capsys.readouterr()
    assert main(["recl", "eval", "--out", str(out), *TINY, "--seed", "1"]) == 2
    assert "different config" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before


def test_config_validation_and_schemes() -> None:
    assert set(SCHEMES) == {"recl", "ams", "ekya", "odin", "oracle", "one_time"}
    cfg = EvalConfig(budget_s=20.0)
    cfg.validate()
    rc = {s: cfg.recl_config(s) for s in SCHEMES}
    assert all(c.retraining.budget_s == 20.0 and c.window_s == 30.0 for c in rc.values())  # the same budget
    assert rc["recl"].reuse and rc["recl"].selection == "gating" and rc["recl"].scheduler == "recl"
    assert not rc["ams"].reuse and rc["ams"].scheduler == "round_robin"
    assert rc["ekya"].scheduler == "ekya" and rc["odin"].selection == "odin"
    assert rc["oracle"].selection == "oracle" and not rc["one_time"].retrain
    for bad in ({"task": "tracking"}, {"schemes": ("recl", "nope")}, {"cameras": 0}, {"windows": 0},
                {"workload": {"no_such": 1}}, {"recl": {"selection": "nope"}}, {"budget_s": -1.0}):
        with pytest.raises(ValueError):
            EvalConfig(**bad).validate()  # type: ignore[arg-type]
    assert main(["recl", "eval", "--out", "unused", "--schemes", "recl,bogus"]) == 2


def test_summary_counts_switch_windows_only() -> None:
    def window(k: int, acc: float, switch: bool) -> dict:
        cost = {"total_s": 2.0, "gating_s": 0.5, "safety_s": 0.5, "retrain_compute_s": 10.0}
        dev = {"accuracy": acc, "scene_switch": switch, "zoo_hit": switch}
        return {"window": k, "devices": {"cam0": dev}, "cost": cost, "experts": k + 1}

    s = summarize([window(0, 0.2, False), window(1, 0.6, True), window(2, 1.0, False)])
    assert s["accuracy"] == pytest.approx(0.6) and s["accuracy_after_switch"] == pytest.approx(0.6)
    assert s["switch_windows"] == 1 and s["zoo_hit_rate"] == pytest.approx(1 / 3) and s["zoo_size"] == 3
    assert s["selection_share"] == pytest.approx(0.5) and s["retrain_compute_s"] == pytest.approx(30.0)
    s = summarize([window(0, 0.5, False)])
    assert s["accuracy_after_switch"] is None
    assert "| x | 50.0 | - |" in format_table({"task": "classification", "schemes": {"x": {"summary": s}}})
