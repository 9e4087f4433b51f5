"""AMS evaluation plumbing: scheme parsing and scaling, mIoU series, table, CLI registration."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_av
from edgert.ams.evaluate import EvalConfig, _miou_series, format_table, scheme_settings
from edgert.cli import build_parser


def test_schemes_map_to_server_and_edge_settings():
    cfg = EvalConfig()
    assert scheme_settings("no-custom", cfg) is None and scheme_settings("one-time", cfg) is None
    ams, edge = scheme_settings("ams", cfg, 0.1)
    assert ams.selection.strategy == "gradient" and ams.selection.fraction == 0.05
    assert ams.atr.t_update_s == pytest.approx(1.0) and ams.t_horizon_s == pytest.approx(24.0)
    assert ams.asr.r_min == pytest.approx(1.0) and ams.asr.r_max == pytest.approx(10.0)
    assert edge.uplink_kbps == pytest.approx(2000.0) and edge.apply_lag_s == pytest.approx(0.2)
    assert ams.iterations == 20 and ams.batch_size == 8  # not scaled
    rnd, _ = scheme_settings("ams:random@0.2", cfg)
    assert (rnd.selection.strategy, rnd.selection.fraction) == ("random", 0.2)
    full, _ = scheme_settings("full", cfg)
    assert full.selection.strategy == "full"
    jit, _ = scheme_settings("jit", cfg, 0.1)
    assert jit.trainer == "jit" and not jit.asr.enabled and jit.asr.r_init == pytest.approx(10.0)
    assert jit.atr.t_update_s == pytest.approx(0.5) and not jit.atr.enabled
    rf, rf_edge = scheme_settings("remote-flow", cfg, 0.1)
    assert rf.trainer == "remote" and not rf.asr.enabled and not rf.atr.enabled
    assert rf.asr.r_init == pytest.approx(10.0) and rf_edge.apply_lag_s == pytest.approx(0.2)
    rf2, _ = scheme_settings("remote-flow", EvalConfig(remote_rate_fps=2.0))
    assert rf2.asr.r_init == 2.0 and rf2.asr.r_max == 2.0  # a fixed rate outside [r_min, r_max] widens it
    with pytest.raises(ValueError, match="remote_rate_fps"):
        EvalConfig(remote_rate_fps=0).validate()
    for bad, msg in (("amsx", "expected ams"), ("ams:best", "strategy"), ("ams@x", "not a number"),
                     ("cloud", "unknown scheme")):
        with pytest.raises(ValueError, match=msg):
            scheme_settings(bad, cfg)
    with pytest.raises(ValueError, match="multiples of 16"):
        EvalConfig(width=100).validate()


def test_miou_series_sums_confusion_per_window():
    labels = np.zeros((6, 2, 2), np.uint8)
    labels[:, 0, 0] = 1
    preds = labels.copy()
    preds[3:] = 0  # second half misses class 1
    times = np.arange(6) * 0.5
    overall, series = _miou_series(labels, preds, times, 2, 1.5)
    assert [p["t_s"] for p in series] == [0.0, 1.5]
    assert series[0]["miou"] == pytest.approx(1.0)
    assert series[1]["miou"] == pytest.approx((0.75 + 0.0) / 2)
    assert overall == pytest.approx((18 / 21 + 3 / 6) / 2)


def test_table_and_cli_registration():
    base = {"miou": 0.48, "uplink_kbps_paper_time": 0.0, "downlink_kbps_paper_time": 0.0, "updates": 0,
            "latency_ms_median": 8.0}
    entry = {"miou": 0.5, "uplink_kbps_paper_time": 50.0, "downlink_kbps_paper_time": 40.0, "updates": 3,
             "latency_ms_median": 9.0}
    table = format_table({"time_scale": 0.1, "constant_class0_miou": 0.47,
                          "schemes": {"no-custom": base, "ams": entry}})
    rows = table.splitlines()
    assert rows[2] == "| constant (all background) | 47.0 | +0.0 | -1.0 | 0.0 | 0.0 | 0 | - |"  # first row
    assert "| ams | 50.0 | +3.0 | +2.0 | 50.0 | 40.0 | 3 | 9.0 |" in rows
    parser = build_parser()
    args = parser.parse_args(["demo", "--schemes", "ams", "--no-plots"])
    assert args.schemes == "ams" and callable(args.func)
    args = parser.parse_args(["ams", "serve", "--spec", "x.json"])
    assert args.spec == "x.json"


def test_live_source_options_from_the_cli():
    from edgert.ams.cli import _eval_config

    parser = build_parser()
    args = parser.parse_args(["ams", "eval", "--clip", "rtsp://127.0.0.1:8554/cam", "--max-seconds", "30",
                              "--source-option", "rtsp_flags=listen", "--source-option", "listen_timeout=20"])
    cfg = _eval_config(args)
    assert cfg.source_options == {"rtsp_flags": "listen", "listen_timeout": "20"}
    cfg.validate()
    with pytest.raises(ValueError, match="live source: give max_seconds"):
        _eval_config(parser.parse_args(["ams", "eval", "--clip", "udp://127.0.0.1:5000"])).validate()
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _eval_config(parser.parse_args(["ams", "eval", "--source-option", "listen"]))



@needs_av
def test_cli_refuses_a_folder_of_another_experiment_with_a_message(tmp_path, capsys):
    """A run folder holding other settings is refused before any labelling, with a message and exit code 2."""
    import torch

    from edgert.harness import write_json
    from edgert.vision.video import encode

    class Threshold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([-x[:, 0], x[:, 0]], 1)

    clip = tmp_path / "clip.mkv"
    clip.write_bytes(encode(np.zeros((5, 48, 64, 3), np.uint8), fps=25.0, crf=30, preset="ultrafast").data)
    teacher = tmp_path / "teacher.pt"
    torch.jit.script(Threshold()).save(str(teacher))
    run = tmp_path / "run"
    write_json(run / "config.json", {"eval": {"clip": "somewhere-else.mp4"}, "time_scale": 0.5})
    write_json(run / "results.json", {"schemes": {}})
    args = build_parser().parse_args(["ams", "eval", "--clip", str(clip), "--width", "64", "--height", "48",
                                      "--schemes", "no-custom", "--teacher", str(teacher),
                                      "--pretrain-iterations", "0", "--out", str(run)])
    assert args.func(args) == 2
    assert "holds a run with a different config (eval.clip" in capsys.readouterr().err
    assert not (run / "teacher_labels.npz").exists()
