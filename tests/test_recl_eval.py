"""``edgert recl eval`` end to end through the CLI on a tiny workload (real clips, the real ImageNet teacher):
run folder files, accuracies in range, scene switches and the refusal of a folder holding another run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_imagenet, needs_matplotlib
from edgert.cli import main
from edgert.recl.evaluate import DEFAULT_SCHEMES, SCENE_CUT_SCHEMES, SCHEMES, EvalConfig, format_table, summarize
from edgert.recl.workload import SceneCutDetector

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
    assert set(SCHEMES) == {"recl", "ams", "ekya", "odin", "oracle", "one_time", "recl_cut"}
    assert SCENE_CUT_SCHEMES == {"recl_cut"} and SCHEMES["recl_cut"] == SCHEMES["recl"]
    assert EvalConfig().schemes == DEFAULT_SCHEMES == ("recl", "ams", "ekya", "odin", "oracle", "one_time")
    cfg = EvalConfig(budget_s=20.0)
    cfg.validate()
    rc = {s: cfg.recl_config(s) for s in SCHEMES}
    assert all(c.retraining.budget_s == 20.0 and c.window_s == 30.0 for c in rc.values())  # the same budget
    assert rc["recl"].reuse and rc["recl"].selection == "gating" and rc["recl"].scheduler == "recl"
    assert not rc["ams"].reuse and rc["ams"].scheduler == "round_robin"
    assert rc["ekya"].scheduler == "ekya" and rc["odin"].selection == "odin"
    assert rc["oracle"].selection == "oracle" and not rc["one_time"].retrain
    for bad in ({"task": "tracking"}, {"schemes": ("recl", "nope")}, {"cameras": 0}, {"windows": 0},
                {"workload": {"no_such": 1}}, {"recl": {"selection": "nope"}}, {"budget_s": -1.0},
                {"cut_frames": 0}, {"cut_frames": 2.5}, {"cut_frames": True}):
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


def test_scene_cut_detector_is_causal_carries_its_state_and_holds_off_after_a_cut() -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8) for _ in range(2))
    jitter = rng.integers(-2, 3, (12, 8, 8, 3))
    scene_a = np.clip(a.astype(int) + jitter, 0, 255).astype(np.uint8)
    scene_b = np.clip(b.astype(int) + jitter, 0, 255).astype(np.uint8)
    det = SceneCutDetector()
    assert det.cuts(scene_a[:6]) == []  # the first frame of a stream is no cut
    assert det.cuts(np.concatenate([scene_a[6:], scene_b])) == [6]
    # a cut right between two uploads is found at the first frame of the later one
    det = SceneCutDetector()
    det.cuts(scene_a)
    assert det.cuts(scene_b) == [0]
    # back and forth: every change is a cut, unless it falls within the refractory frames of the one before
    flicker = np.concatenate([scene_a[:5], scene_b[:2], scene_a[5:10]])
    assert SceneCutDetector().cuts(flicker) == [5, 7]
    assert SceneCutDetector(refractory=4).cuts(flicker) == [5]
    for bad in ({"ratio": 0.0}, {"floor": 1.5}, {"half_window": 0}, {"refractory": -1}):
        with pytest.raises(ValueError, match="scene-cut detector"):
            SceneCutDetector(**bad)  # type: ignore[arg-type]


@needs_imagenet
@needs_matplotlib
def test_scene_cut_uploads_in_the_eval(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["recl", "eval", "--out", str(out), "--quick", "--schemes", "recl,recl_cut,ams"]) == 0
    results = json.loads((out / "results.json").read_text())
    uploads = 0
    for w in results["schemes"]["recl_cut"]["windows"]:
        cost = w["cost"]
        assert cost["total_s"] >= cost["gating_s"] + cost["safety_s"]
        for d in w["devices"].values():
            n = len(d["frame_scenes"])
            assert len(d["frame_times"]) == n and all(0 <= t < 30.0 for t in d["frame_times"])
            assert d["frame_times"] == sorted(d["frame_times"])
            for u in d["scene_cut_uploads"]:
                uploads += 1
                assert u["frames"][0] in d["cuts"] and len(u["frames"]) == 4 and u["frames"][-1] < n
                assert u["upload_s"] == d["frame_times"][u["frames"][-1]]
                assert len(u["holdout_frames"]) == len(d["holdout_index"])
                assert all(0.0 <= v <= 1.0 for v in u["holdout_frames"])
                assert "window_start" in d["holdout_frames"]
    assert uploads >= 1  # the quick workload's cameras switch clips mid-window
    assert all("scene_cut_uploads" not in d for w in results["schemes"]["recl"]["windows"]
               for d in w["devices"].values())
    resp = (out / "responsiveness.md").read_text()
    assert "From the switch itself" in resp and "| recl_cut |" in resp
