"""``edgert recl study``: the points it runs, the measures it derives (responsiveness after recurring scenes,
compute to match, selection cost with a large zoo), and one tiny study end to end through the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import needs_imagenet, needs_matplotlib
from edgert.cli import main
from edgert.recl.evaluate import DEFAULT_SCHEMES, summarize
from edgert.recl.study import (
    BUDGET_SCHEMES,
    PaperClock,
    StudyConfig,
    analyse,
    compute_to_match,
    format_report,
    format_responsiveness,
    has_timeline,
    over_time,
    point_name,
    point_responsiveness,
    responsiveness,
    selection_share_large_zoo,
    stay_timeline,
    switch_responsiveness,
    teacher_seconds_per_frame,
    timeline_responsiveness,
    training_clock_factor,
    window_timeline,
)


def _window(k: int, devices: dict[str, tuple[float, list[str], bool]], experts: int = 0,
            cost: dict[str, float] | None = None) -> dict[str, Any]:
    c = {"total_s": 1.0, "gating_s": 0.1, "safety_s": 0.1, "retrain_s": 0.5, "gating_update_s": 0.2,
         "admission_s": 0.0, "prune_s": 0.0, "label_s": 0.0, "teacher_s": 1.0, "retrain_compute_s": 30.0}
    c.update(cost or {})
    return {"window": k, "experts": experts, "cost": c,
            "devices": {d: {"accuracy": a, "scenes": sc, "scene_switch": sw, "zoo_hit": False}
                        for d, (a, sc, sw) in devices.items()}}


def _results(per_scheme: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"task": "classification",
            "schemes": {s: {"windows": w, "summary": summarize(w)} for s, w in per_scheme.items()}}


def test_responsiveness_counts_only_switches_to_scenes_seen_before() -> None:
    # cam0 plays A then B; cam1 plays B (seen by cam0 in window 1) from window 2 on: one recurring switch
    def timeline(b_accs: list[float]) -> list[dict[str, Any]]:
        return [
            _window(0, {"cam0": (0.5, ["A"], False), "cam1": (0.1, ["C"], False)}),
            _window(1, {"cam0": (0.2, ["A", "B"], True), "cam1": (0.1, ["C"], False)}),
            _window(2, {"cam0": (0.6, ["B"], False), "cam1": (b_accs[0], ["C", "B"], True)}),
            _window(3, {"cam0": (0.6, ["B"], False), "cam1": (b_accs[1], ["B"], False)}),
            _window(4, {"cam0": (0.6, ["B"], False), "cam1": (b_accs[2], ["B"], False)}),
        ]

    res = _results({"recl": timeline([0.9, 0.9, 0.9]), "ams": timeline([0.1, 0.5, 0.8]),
                    "ekya": timeline([0.0, 0.0, 0.1])})
    r = responsiveness(res, 30.0, ("recl", "ams", "ekya"))
    assert r["events"] == 1 and r["skipped"] == 0  # cam0's switch to B was to a new scene
    s = r["schemes"]
    # target 0.8 * 0.9 = 0.72: recl at once (1 window), ams in its third window, ekya never (stay 3 + 1)
    assert s["recl"]["mean_s"] == 30.0 and s["ams"]["mean_s"] == 90.0 and s["ekya"]["mean_s"] == 120.0
    assert s["ekya"]["censored"] == 1 and s["recl"]["censored"] == 0
    # nobody above zero: the event is skipped, not counted as a tie
    zero = _results({"recl": timeline([0.0, 0.0, 0.0]), "ams": timeline([0.0, 0.0, 0.0])})
    z = responsiveness(zero, 30.0, ("recl", "ams"))
    assert z["events"] == 0 and z["skipped"] == 1 and z["schemes"]["recl"]["mean_s"] is None
    assert responsiveness(res, 30.0, ("nope",)) == {"events": 0, "skipped": 0, "schemes": {}}


def _dev(scenes: list[str], switch: bool, hold: dict[str, float], trace: list[tuple[float, float | None]],
         gating: float = 0.0, safety: float = 0.0, frames: int = 10) -> dict[str, Any]:
    """A device record with the timeline fields: ``trace`` as (nominal end, held-out accuracy) per micro-window
    (10 s each); frames 0 and 1 held out, every frame of the last scene, per-frame scores equal to the means."""
    return {"accuracy": hold.get("chosen", 0.0), "scenes": scenes, "scene_switch": switch, "zoo_hit": False,
            "frames": frames, "gating_s": gating, "safety_s": safety, "holdout_accuracy": hold,
            "holdout_index": [0, 1], "holdout_frames": {k: [v, v] for k, v in hold.items()},
            "frame_scenes": [len(scenes) - 1] * frames,
            "retrain_trace": [{"start_s": e - 10.0, "end_s": e, "accuracy": a, "wall_s": 0.5,
                               "frame_scores": None if a is None else [a, a]} for e, a in trace]}


def _tw(k: int, devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"window": k, "experts": 0, "devices": devices,
            "cost": {"total_s": 1.0, "gating_s": 0.0, "safety_s": 0.0, "retrain_compute_s": 30.0}}


def test_window_timeline_places_decision_and_micro_windows_on_the_paper_clock() -> None:
    # two devices, 10 frames each; teacher 0.1 s/frame, factor 2: labels 2 s -> 4 paper s; gating 1 + 2 s (all
    # devices) -> 6; cam0's safety 0.5 -> decision at 2 * (2 + 3 + 0.5) = 11; trainer after both checks (1.5 s)
    w = _tw(0, {"cam0": _dev(["A"], False, {"before": 0.1, "chosen": 0.5}, [(10.0, 0.6), (20.0, 0.7)], 1.0, 0.5),
                "cam1": _dev(["B"], False, {"before": 0.2, "chosen": 0.3}, [(30.0, 0.9)], 2.0, 1.0)})
    clock = PaperClock("t", 2.0, 0.1)
    t0 = window_timeline(w, "cam0", 0.1, clock, 40.0)
    assert t0.decision_s == pytest.approx(11.0) and t0.train_start_s == pytest.approx(13.0)
    assert t0.steps == [(0.0, 0.1), (pytest.approx(11.0), 0.5), (pytest.approx(23.0), 0.6),
                        (pytest.approx(33.0), 0.7)]
    assert t0.final_delivered and not t0.late
    t1 = window_timeline(w, "cam1", 0.2, clock, 40.0)
    assert t1.decision_s == pytest.approx(13.0)
    assert len(t1.steps) == 2 and not t1.final_delivered  # 13 + 30 = 43 is past the 40-s window
    # a decision later than the window: nothing is delivered in it
    late = window_timeline(w, "cam0", 0.1, PaperClock("slow", 10.0, 0.1), 40.0)
    assert late.late and late.steps == [(0.0, 0.1)] and not late.final_delivered
    # a failed micro-window delivers nothing; the last good one is the job's model
    wf = _tw(0, {"c": _dev(["A"], False, {"before": 0.0, "chosen": 0.2}, [(10.0, 0.4), (20.0, None)])})
    tf = window_timeline(wf, "c", 0.0, PaperClock("x0", 0.0), 30.0)
    assert tf.steps == [(0.0, 0.0), (0.0, 0.2), (10.0, 0.4)] and tf.final_delivered


def test_stay_timeline_begins_a_window_with_the_job_model_delivered_before() -> None:
    clock = PaperClock("x0", 0.0)
    ws = [_tw(0, {"c": _dev(["A"], True, {"before": 0.0, "chosen": 0.2}, [(10.0, 0.5)])}),
          _tw(1, {"c": _dev(["A"], False, {"before": 0.2, "chosen": 0.6, "last_retrained": 0.6}, [])})]
    steps, parts = stay_timeline(ws, "c", [0, 1], clock, 30.0)
    assert steps == [(0.0, 0.0), (0.0, 0.2), (10.0, 0.5), (30.0, 0.6), (30.0, 0.6)]
    # the job's model came too late (40 > 30): the next window begins with the decision before it
    ws[0]["devices"]["c"]["retrain_trace"][0]["end_s"] = 40.0
    steps, _ = stay_timeline(ws, "c", [0, 1], clock, 30.0)
    assert steps == [(0.0, 0.0), (0.0, 0.2), (30.0, 0.2), (30.0, 0.6)]


def test_timeline_responsiveness_known_answer_censoring_and_a_scheme_that_never_delivers() -> None:
    # cam0 plays A then B; cam1 comes to B (seen) in window 2 and stays two windows
    def scheme(b: tuple[dict[str, float], list[tuple[float, float | None]], dict[str, float]],
               safety: float = 0.0) -> list[dict[str, Any]]:
        hold0, trace0, hold1 = b
        return [
            _tw(0, {"cam0": _dev(["A"], False, {"before": 0.5, "chosen": 0.5}, []),
                    "cam1": _dev(["C"], False, {"before": 0.1, "chosen": 0.1}, [])}),
            _tw(1, {"cam0": _dev(["A", "B"], True, {"before": 0.5, "chosen": 0.5}, []),
                    "cam1": _dev(["C"], False, {"before": 0.1, "chosen": 0.1}, [])}),
            _tw(2, {"cam0": _dev(["B"], False, {"before": 0.6, "chosen": 0.6}, []),
                    "cam1": _dev(["C", "B"], True, hold0, trace0, safety=safety)}),
            _tw(3, {"cam0": _dev(["B"], False, {"before": 0.6, "chosen": 0.6}, []),
                    "cam1": _dev(["B"], False, hold1, [], safety=safety)}),
        ]

    res = _results({
        # RECL: its decision (0.9) lands when selection ends: 4 s of safety at factor 1
        "recl": scheme(({"before": 0.0, "chosen": 0.9}, [(10.0, 0.9)], {"before": 0.9, "chosen": 0.9,
                                                                       "last_retrained": 0.9}), safety=4.0),
        # retraining: 0.8 after the second micro-window (20 s)
        "ams": scheme(({"before": 0.0, "chosen": 0.0}, [(10.0, 0.5), (20.0, 0.8)],
                       {"before": 0.0, "chosen": 0.8, "last_retrained": 0.8})),
        # never delivers anything: its camera keeps the model it had (censored: stay 2 + 1 windows)
        "ekya": scheme(({"before": 0.0, "chosen": 0.0}, [], {"before": 0.0, "chosen": 0.0})),
    })
    assert has_timeline(res, ("recl", "ams", "ekya"))
    r = timeline_responsiveness(res, 30.0, ("recl", "ams", "ekya"), PaperClock("x1", 1.0))
    assert r["events"] == 1 and r["skipped"] == 0
    s = r["schemes"]
    # target 0.8 * 0.9 = 0.72
    assert s["recl"]["mean_s"] == pytest.approx(4.0) and s["recl"]["censored"] == 0
    assert s["ams"]["mean_s"] == pytest.approx(20.0) and s["ams"]["mean_ratio"] == pytest.approx(5.0)
    assert s["ekya"]["mean_s"] == pytest.approx(90.0) and s["ekya"]["censored"] == 1
    assert s["ekya"]["reached"] == [False] and s["ekya"]["deliveries"] == 2  # its (useless) decisions
    assert s["recl"]["decision_s"] == pytest.approx(4.0)
    # instant selection: RECL at 0, so every other scheme is infinitely slower
    r0 = timeline_responsiveness(res, 30.0, ("recl", "ams"), PaperClock("x0", 0.0))
    assert r0["schemes"]["recl"]["mean_s"] == 0.0 and r0["schemes"]["ams"]["mean_ratio"] == math.inf
    # selection slower than the window: RECL's decision is late, its job model too; the next window's start
    # (the decision, in place by then) reaches the target at 30 s
    slow = timeline_responsiveness(res, 30.0, ("recl",), PaperClock("x10", 10.0))
    assert slow["schemes"]["recl"]["mean_s"] == pytest.approx(30.0)
    assert slow["schemes"]["recl"]["late_decisions"] == 2
    # no scheme above zero: skipped
    flat = _results({"recl": scheme(({"before": 0.0, "chosen": 0.0}, [], {"before": 0.0, "chosen": 0.0}))})
    assert timeline_responsiveness(flat, 30.0, ("recl",), PaperClock("x1", 1.0))["skipped"] == 1


def test_accuracy_on_the_frames_of_the_scene_switched_to() -> None:
    # the switch window's held-out frames 0 (old scene A) and 1 (new scene B): the decision scores 1 on A and 0.5
    # on B, the job's model 0 on A and 1 on B; on B's frames only, retraining wins, on both it looks like a tie
    sw = _dev(["A", "B"], True, {"before": 0.5, "chosen": 0.75}, [(10.0, 0.5)])
    sw["frame_scenes"] = [0, 1] + [1] * 8
    sw["holdout_frames"] = {"before": [1.0, 0.0], "chosen": [1.0, 0.5]}
    sw["retrain_trace"][0]["frame_scores"] = [0.0, 1.0]
    ws = [_tw(0, {"c": _dev(["B"], False, {"before": 0.0, "chosen": 0.0}, [])}), _tw(1, {"c": sw})]
    clock = PaperClock("x0", 0.0)
    steps, _ = stay_timeline(ws, "c", [1], clock, 30.0, scene="B")
    assert steps == [(0.0, 0.0), (0.0, 0.5), (10.0, 1.0)]
    steps, _ = stay_timeline(ws, "c", [1], clock, 30.0)
    assert steps == [(0.0, 0.5), (0.0, 0.75), (10.0, 0.5)]
    # no held-out frame of B in the switch window: nothing measured there
    sw["frame_scenes"] = [0, 0] + [1] * 8
    steps, _ = stay_timeline(ws, "c", [1], clock, 30.0, scene="B")
    assert [a for _, a in steps] == [None, None, None]
    res = _results({"recl": [_tw(0, {"c": _dev(["B"], False, {"before": 0.0, "chosen": 0.3}, []),
                                     "d": _dev(["X"], False, {"before": 0.0, "chosen": 0.0}, [])}),
                             _tw(1, {"c": _dev(["B"], False, {"before": 0.3, "chosen": 0.3}, []), "d": sw})]})
    r = timeline_responsiveness(res, 30.0, ("recl",), clock)
    assert r["switch_unmeasured"] == 1 and r["skipped"] == 1 and r["events"] == 0


def test_clock_inputs_and_results_without_the_timeline() -> None:
    res = _results({"recl": [_tw(0, {"c": _dev(["A"], False, {"before": 0.0, "chosen": 0.1},
                                                [(10.0, 0.2), (20.0, 0.3), (30.0, None)])})]})
    res["schemes"]["recl"]["windows"][0]["devices"]["c"]["retrain_trace"][1]["wall_s"] = 1.5
    # median of the two trained micro-windows' seconds (0.5, 1.5) is 1.0: 10 paper s per measured s
    assert training_clock_factor(res, ("recl",), 10.0) == pytest.approx(10.0)
    assert teacher_seconds_per_frame({"teacher_frames": 4, "teacher_s": {"0/c": 1.0, "1/c": 1.0}}) == 0.5
    assert teacher_seconds_per_frame({}) == 0.0
    old = _results({"recl": [_window(0, {"c": (0.5, ["A"], False)})]})
    assert not has_timeline(old, ("recl", "ams"))
    a = point_responsiveness(old, 30.0, 10.0)
    assert a["responsiveness_clock"] is None
    text = "\n".join(format_responsiveness(a))
    assert "counts one window" in text and "paper clock" not in text


def test_compute_to_match_interpolates_in_log_compute() -> None:
    curve = {15.0: 0.2, 30.0: 0.3, 60.0: 0.5, 120.0: 0.6}
    b, ok = compute_to_match(curve, 0.4)
    assert ok and b == pytest.approx(math.sqrt(30.0 * 60.0))
    assert compute_to_match(curve, 0.1) == (15.0, True)
    assert compute_to_match(curve, 0.7) == (120.0, False)  # a lower bound
    assert compute_to_match({}, 0.5) == (None, False)


def test_selection_share_counts_windows_that_began_with_a_large_zoo() -> None:
    windows = [_window(0, {"c": (0.5, ["A"], False)}, experts=19, cost={"gating_s": 5.0}),
               _window(1, {"c": (0.5, ["A"], False)}, experts=20, cost={"gating_s": 0.3}),
               _window(2, {"c": (0.5, ["A"], False)}, experts=21, cost={"gating_s": 0.1})]
    share = selection_share_large_zoo({"windows": windows}, 20)
    assert share == pytest.approx((0.1 + 0.1) / (1.0 + 1.0))  # only window 2 began with 20 experts
    assert selection_share_large_zoo({"windows": windows[:2]}, 20) is None
    t = over_time({"windows": windows})
    assert t["zoo_size"] == [19.0, 20.0, 21.0] and t["labelling"] == [1.0, 1.0, 1.0]
    assert t["selection"] == pytest.approx([5.1, 0.4, 0.2])


def test_points_and_compute_axis() -> None:
    cfg = StudyConfig(cameras=(2, 4), budgets=(15.0, 30.0, 60.0), ablations={"K": [("K=1", {"gating": {"top_k": 1}})]})
    cfg.validate()
    points = dict(cfg.points())
    assert list(points)[0] == point_name(4, 30.0)  # the base point first
    assert set(points) == {"cameras4-budget30", "cameras2-budget30", "cameras4-budget15", "cameras4-budget60",
                           "ablation-K-K_1"}
    assert points["cameras4-budget30"].schemes == DEFAULT_SCHEMES
    assert points["cameras4-budget60"].schemes == BUDGET_SCHEMES
    # compute is the trainer's speed: twice the compute halves mu, the budget is the whole window
    mus = {n: points[n].recl_config("recl").mu for n in ("cameras4-budget15", "cameras4-budget30",
                                                         "cameras4-budget60")}
    assert mus == {"cameras4-budget15": 20.0, "cameras4-budget30": 10.0, "cameras4-budget60": 5.0}
    assert all(p.budget_s is None for p in points.values())
    abl = points["ablation-K-K_1"].recl_config("recl")
    assert abl.K == 1 and abl.mu == 10.0
    for bad in ({"base_cameras": 3}, {"base_budget": 45.0}, {"cameras": ()}, {"budgets": (0.0, 30.0)},
                {"task": "tracking"}):
        with pytest.raises(ValueError):
            StudyConfig(**bad).validate()  # type: ignore[arg-type]


def test_analyse_and_report_on_synthetic_points() -> None:
    cfg = StudyConfig(cameras=(4,), budgets=(30.0, 60.0), ablations={})

    def point(recl: float, ams: float, schemes: tuple[str, ...]) -> dict[str, Any]:
        acc = {"recl": recl, "ams": ams}
        return _results({s: [_window(0, {"cam0": (acc.get(s, 0.3), ["A"], False)})] for s in schemes})

    points = {"cameras4-budget30": point(0.6, 0.3, DEFAULT_SCHEMES),
              "cameras4-budget60": point(0.7, 0.5, BUDGET_SCHEMES)}
    a = analyse(cfg, points)
    assert a["accuracy_by_cameras"][4]["recl"] == pytest.approx(0.6)
    assert a["compute_to_match"]["ams"] == {"budget_s": 60.0, "ratio": 2.0, "reached": False}
    report = format_report(cfg, a)
    assert "> 2x" in report and "| 4 | 60.0 | 30.0 |" in report


@needs_imagenet
@needs_matplotlib
def test_study_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = ["recl", "study", "--quick", "--budgets", "30", "--no-ablations", "--out", str(out)]
    assert main(args) == 0
    for name in ("study.json", "report.md", "cameras.png", "compute.png", "over_time.png", "study-config.json"):
        assert (out / name).is_file(), name
    study = json.loads((out / "study.json").read_text())["analysis"]
    assert set(study["accuracy_by_cameras"]["2"]) == set(DEFAULT_SCHEMES)  # the base point runs every scheme
    results = json.loads((out / "points" / "cameras2-budget30" / "results.json").read_text())
    for entry in results["schemes"].values():
        assert all(w["cost"]["teacher_s"] > 0 for w in entry["windows"])  # labelling is charged
    assert main(args) == 0  # resumes: every point already ran


def test_switch_responsiveness_counts_from_the_switch_and_credits_scene_cut_uploads() -> None:
    # cam c shows B in window 0; cam d switches from X to B at frame 4 of window 1 (frame i at i + 0.5 s)
    def dev(scenes: list[str], switch: bool, hold: dict[str, list[float]], trace: list[tuple[float, float]],
            first_new: int = 0) -> dict[str, Any]:
        rec = _dev(scenes, switch, {k: float(np.mean(v)) for k, v in hold.items()}, [])
        rec.update(holdout_index=[2, 6, 8], holdout_frames=hold, frame_times=[i + 0.5 for i in range(10)],
                   frame_scenes=[0] * first_new + [len(scenes) - 1] * (10 - first_new),
                   retrain_trace=[{"start_s": e - 10.0, "end_s": e, "accuracy": a, "wall_s": 0.5,
                                   "frame_scores": [a] * 3} for e, a in trace])
        return rec

    zero = [0.0] * 3
    upload = {"frames": [4, 5], "upload_s": 5.5, "gating_s": 0.5, "safety_s": 0.5, "label_s": 0.1,
              "holdout_frames": [0.0, 0.9, 0.9]}
    cut_switch = dev(["X", "B"], True, {"window_start": zero, "before": [0.0, 0.9, 0.9], "chosen": [0.0, 0.9, 0.9]},
                     [], first_new=4)
    cut_switch["scene_cut_uploads"] = [upload]
    res = _results({
        "recl_cut": [_tw(0, {"c": dev(["B"], False, {"before": zero, "chosen": zero}, []),
                             "d": dev(["X"], False, {"before": zero, "chosen": zero}, [])}),
                     _tw(1, {"c": dev(["B"], False, {"before": zero, "chosen": zero}, []), "d": cut_switch})],
        "ams": [_tw(0, {"c": dev(["B"], False, {"before": zero, "chosen": zero}, []),
                        "d": dev(["X"], False, {"before": zero, "chosen": zero}, [])}),
                _tw(1, {"c": dev(["B"], False, {"before": zero, "chosen": zero}, []),
                        "d": dev(["X", "B"], True, {"before": zero, "chosen": zero}, [(10.0, 0.8)], first_new=4)})],
    })
    # teacher 0.25 s/frame at factor 1: the upload's decision at 5.5 + 0.5 + 0.5 + 0.5 = 7.0, the switch at 4.5;
    # AMS: labels of both windows' 20 frames (5 s), then its first micro-window ends 10 s later, from the upload
    r = switch_responsiveness(res, 30.0, ("recl_cut", "ams"), PaperClock("x1", 1.0, 0.25))
    assert r is not None and r["events"] == 1 and r["cuts_detected"] == 1 and r["reference"] == "recl_cut"
    s = r["schemes"]
    assert s["recl_cut"]["mean_s"] == pytest.approx(2.5)
    assert s["ams"]["mean_s"] == pytest.approx(30.0 + 15.0 - 4.5) and s["ams"]["mean_ratio"] == pytest.approx(16.2)
    assert r["detail"][0]["t_switch"] == pytest.approx(4.5) and r["detail"][0]["target"] == pytest.approx(0.72)
    # the uploaded frames are measured by nobody: with frame 6 among them, only frame 8 is left
    upload["frames"] = [4, 5, 6]
    assert switch_responsiveness(res, 30.0, ("recl_cut", "ams"), PaperClock("x1", 1.0, 0.25))["events"] == 1
    # a decision too weak for the target leaves the scheme to the window's upload; never: stay + 2 windows
    upload["holdout_frames"] = [0.0, 0.5, 0.5]
    cut_switch["holdout_frames"].update(before=[0.0, 0.5, 0.5], chosen=[0.0, 0.5, 0.5])
    r = switch_responsiveness(res, 30.0, ("recl_cut", "ams"), PaperClock("x0", 0.0))
    assert r["schemes"]["recl_cut"]["censored"] == 1 and r["schemes"]["recl_cut"]["mean_s"] == pytest.approx(85.5)
    assert r["schemes"]["ams"]["mean_s"] == pytest.approx(30.0 + 10.0 - 4.5)
    # results without the frames' times (an older version): nothing to report
    for sch in res["schemes"].values():
        for w in sch["windows"]:
            for rec in w["devices"].values():
                rec.pop("frame_times")
    assert switch_responsiveness(res, 30.0, ("recl_cut", "ams"), PaperClock("x1", 1.0)) is None
