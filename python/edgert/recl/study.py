"""RECL's full evaluation: many :func:`~edgert.recl.evaluate.run_eval` points and what the paper reads from them.

A study (:class:`StudyConfig`, ``edgert recl study``) runs, on one task and the standard workload
(:data:`~edgert.recl.evaluate.STANDARD_WORKLOAD`), each point in its own run folder under ``<out>/points``:

* **cameras**: the schemes at the base budget for each camera count (accuracy versus cameras at fixed compute;
  every scheme at the base point, all but ODIN at the others: :data:`CAMERA_SCHEMES`);
* **compute**: RECL and the retraining baselines (AMS-style, Ekya-style) at the base camera count for each
  compute (accuracy versus compute at a fixed number of cameras); the point at the base compute is the cameras
  point. Compute is the trainer's speed: ``c`` times the base GPU trains an epoch in ``mu / c`` seconds, so a
  30-s window holds ``3 c`` micro-windows (the scheduler's window clock caps a job at one micro-window at a time,
  so a larger *budget* on the same GPU would buy nothing). It is reported as base-GPU seconds per window,
  ``c x window``;
* **ablations**: RECL alone at the base point with one setting changed (K; alpha and gamma; eta).

From the points it derives (:func:`analyse`), writes ``report.md`` (tables) and plots:

* **compute to match**: for each baseline, the compute at which its accuracy reaches RECL's at the base compute,
  interpolated linearly in log-compute between measured points, as a multiple of the base compute (a lower bound
  ``> max`` when no measured compute reaches it);
* **responsiveness**: at every switch of a camera to a scene that some camera played in an earlier window (a
  recurring scene), the time until the camera runs a model at a target accuracy: 80 % of the best accuracy any
  compared scheme's camera ran during its stay in the scene, so every scheme chases the same bar; an event where
  no scheme gets above 0 is skipped, and a scheme that never reaches the bar is charged the stay plus one window
  (counted as censored). Two resolutions:

  - *on the paper clock* (:func:`timeline_responsiveness`, the measure the paper's claim is about): each
    window is a timeline from the camera's upload (:func:`window_timeline`): the model the camera had, then the
    safety-checked decision once the controller has labelled every camera's frames, shortlisted for every camera
    and safety-checked the cameras up to this one (the order ``run_window`` runs them in), then the retraining
    job's model after each micro-window it gets, at the trainer's start (after every safety check) plus the
    micro-window's end on the scheduler's nominal clock. Every scheme follows this one delivery rule; the scheme
    decides only which model is the decision and which job gets the trainer. The controller hands its decision
    out before retraining (``on_decision``), as the network server ships it; the server does not yet ship a
    job's model mid-window (it becomes a candidate of the next window's safety check), so crediting every scheme
    with each micro-window's model at once is generous to retraining, i.e. conservative for RECL's claim.
    Deliveries past the window's end fall outside it; a window begins with the job's last model if it was
    delivered in the window before, else with the decision of the window before. Accuracies are on the
    retraining job's held-out frames (no model of that window trained on them) that show the scene switched to.
    The controller's measured seconds (teacher, gating, safety checks) become paper seconds by a clock factor
    (:class:`PaperClock`): the *training clock* ``mu`` / median measured seconds of one training micro-window
    (:func:`training_clock_factor`), i.e. the factor that turns this machine's training seconds into the nominal
    ``mu``; also factor 1 (measured seconds as they are), 0 (instant selection) and a sweep
    (:data:`CLOCK_SWEEP`), since the training clock depends on how cheap an epoch of the expert is here;
  - *from the switch itself* (:func:`switch_responsiveness`, when the results hold the frames' times): the same
    timelines counted from the new scene's first frame, with the decisions of scene-cut uploads
    (``recl_cut``) at their upload time plus their selection seconds;
  - *in whole windows* (:func:`responsiveness`, kept for continuity): the decision of the window that holds the
    switch counts one window, the next two, ..., evaluated on all of each window's frames;
* **over time** (RECL at the base point): zoo size, zoo hit ratio and the controller's cost per window split into
  labelling (the teacher), selection (gating, safety check), retraining and gating updates (measured seconds on
  this machine; retraining also in the scheduler's nominal GPU seconds).

Points resume like single evaluations: a finished point is read back, an interrupted one continues with the
schemes it lacks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from edgert.harness import pyplot, save_figure, write_json
from edgert.recl.evaluate import DEFAULT_SCHEMES, STANDARD_WORKLOAD, TASKS, EvalConfig, run_eval

#: schemes of the compute sweep: RECL and the retraining baselines it must beat at equal compute
BUDGET_SCHEMES = ("recl", "ams", "ekya")
#: schemes at the other camera counts: all but ODIN, whose autoencoder refits cost more than every other scheme
#: together on this CPU (the base point runs every scheme)
CAMERA_SCHEMES = ("recl", "ams", "ekya", "oracle", "one_time")
#: baselines whose compute-to-match and responsiveness are reported
RETRAINING_BASELINES = ("ams", "ekya")
#: responsiveness target: this fraction of the best accuracy any scheme reached during the stay in the scene
TARGET_FRACTION = 0.8
#: the scheme whose cameras upload at a detected scene cut (times from the switch are reported over its own)
CUT_SCHEME = "recl_cut"

#: ablation name -> list of (label, RECL settings as :meth:`RECLConfig.from_dict` reads them)
DEFAULT_ABLATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "K": [(f"K={k}", {"gating": {"top_k": k}}) for k in (1, 3)],
    "alpha_gamma": [(f"alpha={a:g},gamma={g}", {"zoo": {"alpha": a, "gamma": g}})
                    for a, g in ((0.0, 1), (0.2, 4), (0.05, 8))],
    "eta": [(f"eta={e}", {"zoo": {"eta": e, "q": 40}}) for e in (1, 10)],
}


@dataclass
class StudyConfig:
    """One study (see the module docstring).

    Attributes:
        task: ``"classification"`` or ``"segmentation"``.
        cameras: camera counts of the cameras sweep.
        budgets: retraining compute per window of the compute sweep, in base-GPU seconds (``c x window_s``: a
            trainer ``c`` times as fast; see the module docstring).
        base_cameras, base_budget: the point the compute sweep, the ablations and the over-time plots use
            (``base_budget``: the window on one base GPU, 30 s, the evaluation's default).
        ablations: name -> ``[(label, RECL settings)]`` (default :data:`DEFAULT_ABLATIONS`); empty: none.
        workload: workload settings of every point (default :data:`STANDARD_WORKLOAD`).
        recl: RECL settings shared by every point (under each ablation's own).
        windows: at most this many windows per camera (None: the whole timeline).
        seed, threads: as :class:`~edgert.recl.evaluate.EvalConfig`.
    """

    task: str = "classification"
    cameras: tuple[int, ...] = (2, 4, 8)
    budgets: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0)
    base_cameras: int = 4
    base_budget: float = 30.0
    ablations: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: dict(DEFAULT_ABLATIONS))
    workload: dict[str, Any] = field(default_factory=lambda: dict(STANDARD_WORKLOAD))
    recl: dict[str, Any] = field(default_factory=dict)
    windows: Optional[int] = None
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad setting (every point's config included)."""
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if not self.cameras or min(self.cameras) < 1:
            raise ValueError(f"cameras: expected camera counts >= 1, got {list(self.cameras)}")
        if not self.budgets or not min(self.budgets) > 0:
            raise ValueError(f"budgets: expected budgets > 0, got {list(self.budgets)}")
        if self.base_cameras not in self.cameras:
            raise ValueError(f"base_cameras: {self.base_cameras} is not one of cameras {list(self.cameras)}")
        if self.base_budget not in self.budgets:
            raise ValueError(f"base_budget: {self.base_budget} is not one of budgets {list(self.budgets)}")
        for _, cfg in self.points():
            cfg.validate()

    def _point(self, cameras: int, budget: float, schemes: Sequence[str],
               recl: Optional[Mapping[str, Any]] = None) -> EvalConfig:
        base = EvalConfig(workload=dict(self.workload), recl=dict(self.recl))
        window_s = base.workload_config().window_s
        mu = base.recl_config("recl").mu
        speed = {"retraining": {"micro_window_s": mu * window_s / float(budget)}}
        return EvalConfig(task=self.task, cameras=cameras, windows=self.windows, workload=dict(self.workload),
                          schemes=tuple(schemes), budget_s=None, recl=_merge(_merge(self.recl, speed), recl or {}),
                          seed=self.seed, threads=self.threads)

    def points(self) -> list[tuple[str, EvalConfig]]:
        """``(folder name, config)`` of every point, in run order (base point first)."""
        out: list[tuple[str, EvalConfig]] = []
        cams = [self.base_cameras, *[c for c in self.cameras if c != self.base_cameras]]
        for c in cams:
            schemes = DEFAULT_SCHEMES if c == self.base_cameras else CAMERA_SCHEMES
            out.append((point_name(c, self.base_budget), self._point(c, self.base_budget, schemes)))
        for b in self.budgets:
            if b != self.base_budget:
                out.append((point_name(self.base_cameras, b), self._point(self.base_cameras, b, BUDGET_SCHEMES)))
        for name, variants in self.ablations.items():
            for label, settings in variants:
                out.append((f"ablation-{name}-{_slug(label)}",
                            self._point(self.base_cameras, self.base_budget, ("recl",), settings)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def point_name(cameras: int, budget: float) -> str:
    """Folder name of the point with ``cameras`` cameras and ``budget`` GPU seconds per window."""
    return f"cameras{cameras}-budget{budget:g}"


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


# --------------------------------------------------------------------------------------------------- measures


def recurring_events(windows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, str, list[int]]]:
    """Switches of a camera to a scene that some camera played in an earlier window: ``(device, window position,
    scene, positions of the stay)`` in time order (a scene counts as seen from the window after the one that
    showed it)."""
    seen: set[str] = set()
    events: list[tuple[str, int, str, list[int]]] = []
    for pos, w in enumerate(windows):
        new_seen: set[str] = set()
        for d, rec in w["devices"].items():
            scene = rec["scenes"][-1] if rec["scenes"] else None
            if rec["scene_switch"] and scene is not None and scene in seen:
                events.append((d, pos, scene, _stay(windows, d, pos, scene)))
            new_seen.update(rec["scenes"])
        seen |= new_seen
    return events


def _summarise_times(times: Mapping[str, list[float]], censored: Mapping[str, int], reference: str = "recl"
                     ) -> dict[str, dict[str, Any]]:
    """Mean, median and censored count per scheme, and each scheme's mean and median over the ``reference``
    scheme's (RECL's by default; ``inf`` when the reference's is 0 and the scheme's is not)."""
    out: dict[str, dict[str, Any]] = {
        s: {"mean_s": float(np.mean(t)) if t else None, "median_s": float(np.median(t)) if t else None,
            "censored": censored[s]} for s, t in times.items()}
    ref = out.get(reference)
    if ref is None:
        return out
    for s, d in out.items():
        if s == reference:
            continue
        for k in ("mean", "median"):
            a, b = d[f"{k}_s"], ref[f"{k}_s"]
            d[f"{k}_ratio"] = None if a is None or b is None else (a / b if b > 0 else (1.0 if a == 0 else math.inf))
    return out


def responsiveness(results: Mapping[str, Any], window_s: float, schemes: Sequence[str],
                   target_fraction: float = TARGET_FRACTION) -> dict[str, Any]:
    """Time to accuracy after switches to recurring scenes at the resolution of whole windows (see the module
    docstring), from one point's results.

    Returns ``{"events": n, "skipped": m, "schemes": {name: {"mean_s", "median_s", "censored"}}}`` (other
    schemes also ``mean_ratio``/``median_ratio`` over RECL's when RECL is compared); schemes missing from
    ``results`` are left out.
    """
    present = [s for s in schemes if s in results["schemes"]]
    if not present:
        return {"events": 0, "skipped": 0, "schemes": {}}
    events = recurring_events(results["schemes"][present[0]]["windows"])
    times: dict[str, list[float]] = {s: [] for s in present}
    censored = {s: 0 for s in present}
    skipped = 0
    for d, _, _, stay in events:
        accs = {s: [results["schemes"][s]["windows"][p]["devices"][d]["accuracy"] for p in stay] for s in present}
        best = max(max(a) for a in accs.values())
        target = target_fraction * best
        if not best > 0:
            skipped += 1
            continue
        for s in present:
            k = next((i for i, a in enumerate(accs[s]) if a >= target), None)
            if k is None:
                censored[s] += 1
                k = len(stay)
            times[s].append((k + 1) * window_s)
    return {"events": len(events) - skipped, "skipped": skipped, "schemes": _summarise_times(times, censored)}


# ---- the paper-clock timeline


@dataclass(frozen=True)
class PaperClock:
    """How the controller's measured seconds (labelling, gating, safety checks on this CPU) become paper seconds.

    Attributes:
        name: the clock's label in the report.
        factor: paper seconds per measured second (:func:`training_clock_factor`: the factor that turns a
            training micro-window's measured seconds into its nominal ``mu``; 1: measured seconds as they are; 0:
            selection takes no time).
        label_s_per_frame: measured teacher seconds per frame (:func:`teacher_seconds_per_frame`); the controller
            labels every device's frames before anything else.
    """

    name: str
    factor: float
    label_s_per_frame: float = 0.0


def training_clock_factor(results: Mapping[str, Any], schemes: Sequence[str], micro_window_s: float
                          ) -> Optional[float]:
    """``micro_window_s`` over the median measured seconds of one training micro-window (every trace entry of
    ``schemes`` that trained): the paper seconds one second of this machine's compute stands for on the
    trainer's clock. None when the results hold no trace."""
    walls = [float(m["wall_s"]) for s in schemes if s in results["schemes"]
             for w in results["schemes"][s]["windows"] for d in w["devices"].values()
             for m in d.get("retrain_trace", []) if m.get("accuracy") is not None and m.get("wall_s", 0) > 0]
    return float(micro_window_s / np.median(walls)) if walls else None


def teacher_seconds_per_frame(results: Mapping[str, Any]) -> float:
    """The teacher's measured seconds over the distinct frames it labelled (``teacher_frames``; the labels are
    memoised, so per-window seconds undercount recurring frames); 0 when the results do not say."""
    frames = int(results.get("teacher_frames") or 0)
    return float(sum(results.get("teacher_s", {}).values()) / frames) if frames else 0.0


@dataclass
class WindowTimeline:
    """The models one device runs during one window, on the paper clock from the window's upload.

    Attributes:
        steps: ``(t, accuracy)`` sorted by ``t``: from ``t`` on the device runs a model of that accuracy on the
            measured frames (the first step at 0: the model it ran when the window began); None where the window
            holds no measured frame (no held-out frame of the scene).
        decision_s: when the safety-checked decision is delivered.
        train_start_s: when the trainer starts this window's micro-windows.
        late: the decision is not delivered within the window.
        final_delivered: the job's last trained model reached the device within the window (the next window
            then begins with it).
    """

    steps: list[tuple[float, Optional[float]]]
    decision_s: float
    train_start_s: float
    late: bool
    final_delivered: bool


def _held_out(mean: Optional[float], per_frame: Optional[Sequence[float]], pick: Optional[Sequence[int]]
              ) -> Optional[float]:
    """A model's accuracy on the held-out frames ``pick`` (positions in the held-out set; None: all of them,
    ``mean``); None when ``pick`` is empty or the per-frame scores are missing."""
    if pick is None:
        return mean
    if not pick or per_frame is None:
        return None
    return float(np.mean([per_frame[i] for i in pick]))


def window_timeline(window: Mapping[str, Any], device: str, start_accuracy: Optional[float], clock: PaperClock,
                    window_s: float, pick: Optional[Sequence[int]] = None) -> WindowTimeline:
    """The timeline of ``device`` in one window record (see the module docstring): ``start_accuracy`` at 0, the
    decision when the controller has labelled every device's frames, shortlisted for every device and
    safety-checked the devices up to this one (the order :meth:`RECLController.run_window` runs them in), then
    the job's model after each micro-window at the trainer's start (after every safety check) plus the
    micro-window's nominal end. Deliveries at or after ``window_s`` fall outside the window. Accuracies are on
    the held-out frames at positions ``pick`` (None: all of them).

    Raises:
        KeyError: the record lacks the timeline fields (results of an older version).
    """
    devs = window["devices"]
    label = clock.label_s_per_frame * sum(int(d["frames"]) for d in devs.values())
    gating = sum(float(d["gating_s"]) for d in devs.values())
    safety = 0.0
    for name, d in devs.items():
        safety += float(d["safety_s"])
        if name == device:
            break
    decision_s = clock.factor * (label + gating + safety)
    train_s = clock.factor * (label + gating + sum(float(d["safety_s"]) for d in devs.values()))
    rec = devs[device]
    steps: list[tuple[float, Optional[float]]] = [(0.0, start_accuracy)]
    late = decision_s >= window_s
    if not late and "chosen" in rec["holdout_accuracy"]:
        steps.append((decision_s, _held_out(rec["holdout_accuracy"]["chosen"],
                                            rec.get("holdout_frames", {}).get("chosen"), pick)))
    trained = [m for m in rec["retrain_trace"] if m["accuracy"] is not None]
    for m in trained:
        t = train_s + float(m["end_s"])
        if t < window_s:
            steps.append((t, _held_out(float(m["accuracy"]), m.get("frame_scores"), pick)))
    final = bool(trained) and train_s + float(trained[-1]["end_s"]) < window_s
    return WindowTimeline(steps, decision_s, train_s, late, final)


def scene_frames(record: Mapping[str, Any], scene: str, exclude: Sequence[int] = ()) -> list[int]:
    """Positions in a device record's held-out set of the frames that show ``scene`` (frames whose index in the
    window is in ``exclude`` left out)."""
    if scene not in record["scenes"]:
        return []
    k = record["scenes"].index(scene)
    skip = set(exclude)
    return [i for i, f in enumerate(record["holdout_index"]) if record["frame_scenes"][f] == k and f not in skip]


def _start_key(windows: Sequence[Mapping[str, Any]], device: str, p: int, clock: PaperClock, window_s: float
               ) -> str:
    """Which measured model window ``p`` begins with: ``"last_retrained"`` when the window before delivered its
    job's last model within it (and this window's safety check measured it), else ``"before"``."""
    hold = windows[p]["devices"][device]["holdout_accuracy"]
    prev = windows[p - 1]["devices"].get(device) if p > 0 else None
    if prev is not None and "last_retrained" in hold and prev["retrain_trace"]:
        if window_timeline(windows[p - 1], device, None, clock, window_s).final_delivered:
            return "last_retrained"
    return "before"


def stay_timeline(windows: Sequence[Mapping[str, Any]], device: str, stay: Sequence[int], clock: PaperClock,
                  window_s: float, scene: Optional[str] = None, exclude_first: Sequence[int] = ()
                  ) -> tuple[list[tuple[float, Optional[float]]], list[WindowTimeline]]:
    """The device's timeline over the windows ``stay`` (consecutive positions), window ``stay[i]`` starting at
    ``i * window_s``. Each window begins with the job's last model of the window before if it was delivered
    there (its accuracy on this window's held-out frames, as the safety check measured it), else with the model
    the device ran before this window's decision (``before``). ``scene``: accuracies on the held-out frames
    that show it (:func:`scene_frames`; in the first window without the frames ``exclude_first``); None: on
    every held-out frame."""
    steps: list[tuple[float, Optional[float]]] = []
    parts: list[WindowTimeline] = []
    for i, p in enumerate(stay):
        rec = windows[p]["devices"][device]
        pick = None if scene is None else scene_frames(rec, scene, exclude_first if i == 0 else ())
        hold, frames = rec["holdout_accuracy"], rec.get("holdout_frames", {})
        key = _start_key(windows, device, p, clock, window_s)
        part = window_timeline(windows[p], device, _held_out(hold[key], frames.get(key), pick), clock, window_s,
                               pick)
        parts.append(part)
        steps += [(i * window_s + t, a) for t, a in part.steps]
    return steps, parts


def has_timeline(results: Mapping[str, Any], schemes: Sequence[str]) -> bool:
    """Whether every window record of ``schemes`` (those present) holds the timeline fields."""
    return all("holdout_frames" in d and "frame_scenes" in d and "retrain_trace" in d and "gating_s" in d
               for s in schemes if s in results["schemes"] for w in results["schemes"][s]["windows"]
               for d in w["devices"].values())


def timeline_responsiveness(results: Mapping[str, Any], window_s: float, schemes: Sequence[str], clock: PaperClock,
                            target_fraction: float = TARGET_FRACTION, on_scene: bool = True) -> dict[str, Any]:
    """Time to accuracy after switches to recurring scenes on the paper clock (see the module docstring).

    Accuracies are on the held-out frames that show the scene switched to (``on_scene``; the switch window also
    holds the scene before it) or on all held-out frames. The target of an event is ``target_fraction`` of the
    best accuracy any compared scheme's device ran during the stay; a scheme's time is the first moment its
    device runs a model at or above it (0 if the model it ran when the stay began already is), counted from the
    upload of the window that holds the switch; a scheme that never reaches it is charged the stay plus one
    window (censored); events where every scheme stays at 0 (or unmeasured) are skipped.

    Returns ``{"events", "skipped", "on_scene", "switch_unmeasured" (events whose switch window holds no
    held-out frame of the scene), "clock": {name, factor, label_s_per_frame}, "schemes": {name: {"mean_s",
    "median_s", "censored", "mean_ratio", "median_ratio", "decision_s", "train_start_s", "late_decisions",
    "windows", "deliveries", "times_s", "reached"}}}`` (``decision_s``, ``train_start_s``: medians over the
    events' ``windows``; ``deliveries``: models delivered within those windows,
    decisions included; ``times_s``, ``reached``: per event, its time and whether it reached the target).
    """
    present = [s for s in schemes if s in results["schemes"]]
    info = {"name": clock.name, "factor": clock.factor, "label_s_per_frame": clock.label_s_per_frame}
    if not present:
        return {"events": 0, "skipped": 0, "on_scene": on_scene, "clock": info, "schemes": {}}
    events = recurring_events(results["schemes"][present[0]]["windows"])
    times: dict[str, list[float]] = {s: [] for s in present}
    censored = {s: 0 for s in present}
    timing: dict[str, dict[str, list[float]]] = {s: {"decision": [], "train": [], "late": [], "deliveries": []}
                                                 for s in present}
    reached: dict[str, list[bool]] = {s: [] for s in present}
    skipped = unmeasured = 0
    ref = results["schemes"][present[0]]["windows"]
    for d, pos, scene, stay in events:
        if on_scene and not scene_frames(ref[pos]["devices"][d], scene):
            unmeasured += 1
        lines = {s: stay_timeline(results["schemes"][s]["windows"], d, stay, clock, window_s,
                                  scene if on_scene else None) for s in present}
        best = max((a for steps, _ in lines.values() for _, a in steps if a is not None), default=0.0)
        if not best > 0:
            skipped += 1
            continue
        target = target_fraction * best
        for s, (steps, parts) in lines.items():
            t = next((t for t, a in steps if a is not None and a >= target), None)
            reached[s].append(t is not None)
            if t is None:
                censored[s] += 1
                t = (len(stay) + 1) * window_s
            times[s].append(t)
            for part in parts:
                timing[s]["decision"].append(part.decision_s)
                timing[s]["train"].append(part.train_start_s)
                timing[s]["late"].append(float(part.late))
                timing[s]["deliveries"].append(float(len(part.steps) - 1))
    out = _summarise_times(times, censored)
    for s, tm in timing.items():
        out[s].update(decision_s=float(np.median(tm["decision"])) if tm["decision"] else None,
                      train_start_s=float(np.median(tm["train"])) if tm["train"] else None,
                      late_decisions=int(sum(tm["late"])), windows=len(tm["late"]),
                      deliveries=int(sum(tm["deliveries"])),
                      times_s=list(times[s]), reached=list(reached[s]))
    return {"events": len(events) - skipped, "skipped": skipped, "on_scene": on_scene,
            "switch_unmeasured": unmeasured, "clock": info, "schemes": out}


def has_frame_times(results: Mapping[str, Any], scheme: str) -> bool:
    """Whether every window record of ``scheme`` holds its frames' times (results of this version)."""
    return scheme in results["schemes"] and all(
        "frame_times" in d for w in results["schemes"][scheme]["windows"] for d in w["devices"].values())


def switch_responsiveness(results: Mapping[str, Any], window_s: float, schemes: Sequence[str], clock: PaperClock,
                          target_fraction: float = TARGET_FRACTION, cut_scheme: str = CUT_SCHEME
                          ) -> Optional[dict[str, Any]]:
    """Time to accuracy after switches to recurring scenes, counted from the switch itself (the time of the
    scene's first frame), not from the upload of the window that holds it: the measure for cameras that upload
    when they detect a scene cut (``cut_scheme``, :data:`~edgert.recl.evaluate.SCENE_CUT_SCHEMES`).

    Each scheme's timeline, from the start of the window that holds the switch: the model the camera began that
    window with (as :func:`stay_timeline` starts it; for ``cut_scheme`` the model it ran before its scene-cut
    uploads, ``window_start``), then each scene-cut upload's decision at the upload (its last frame's time)
    plus the clock's labelling, gating and safety-check seconds for its frames, then from the window's upload on
    (``window_s``) :func:`stay_timeline`. A scheme's time is 0 if the model it runs when the scene begins
    already reaches the target, else the first moment after it that it runs one that does; never: the stay plus
    two windows from the start of the switch window, minus the switch's time. Accuracies are on the held-out
    frames of the switch window that show the scene and were not in ``cut_scheme``'s uploads (the decision saw
    those), the same frames for every scheme, then on each later window's held-out frames of the scene. The
    target and the skipping of events follow :func:`timeline_responsiveness`.

    Returns None when no scheme's records hold the frames' times; else ``{"events", "skipped",
    "switch_unmeasured", "cuts_detected" (events whose switch started a scene-cut upload of ``cut_scheme``),
    "clock", "reference", "detail" (per event: device, window position, scene, ``t_switch``, target and each
    scheme's time), "schemes": {name: {"mean_s", "median_s", "censored", "mean_ratio", "median_ratio",
    "times_s", "reached"}}}``, ratios over ``cut_scheme``'s times when it ran, else over RECL's.
    """
    present = [s for s in schemes if s in results["schemes"]]
    timed = [s for s in present if has_frame_times(results, s)]
    if not timed:
        return None
    ref = results["schemes"][cut_scheme if cut_scheme in timed else timed[0]]["windows"]
    cut = results["schemes"][cut_scheme]["windows"] if cut_scheme in timed else None
    times: dict[str, list[float]] = {s: [] for s in present}
    censored = {s: 0 for s in present}
    reached: dict[str, list[bool]] = {s: [] for s in present}
    events = recurring_events(ref)
    skipped = unmeasured = detected = 0
    detail: list[dict[str, Any]] = []
    for d, pos, scene, stay in events:
        rec = ref[pos]["devices"][d]
        first = rec["frame_scenes"].index(rec["scenes"].index(scene))
        t_switch = float(rec["frame_times"][first])
        uploads = cut[pos]["devices"][d].get("scene_cut_uploads", []) if cut is not None else []
        seen = sorted({f for u in uploads for f in u["frames"]})
        pick = scene_frames(rec, scene, seen)
        unmeasured += not pick
        detected += any(first <= u["frames"][0] < first + len(u["frames"]) for u in uploads)
        lines: dict[str, list[tuple[float, Optional[float]]]] = {}
        for s in present:
            wins = results["schemes"][s]["windows"]
            later, _ = stay_timeline(wins, d, stay, clock, window_s, scene, exclude_first=seen)
            r = wins[pos]["devices"][d]
            hold, frames = r["holdout_accuracy"], r.get("holdout_frames", {})
            key = _start_key(wins, d, pos, clock, window_s)
            own = r.get("scene_cut_uploads", [])
            if own and (key == "before" or key not in hold) and "window_start" in hold:
                key = "window_start"
            steps = [(0.0, _held_out(hold.get(key), frames.get(key), pick))]
            for u in own:
                cost = clock.label_s_per_frame * len(u["frames"]) + u["gating_s"] + u["safety_s"]
                steps.append((float(u["upload_s"]) + clock.factor * cost, _held_out(None, u["holdout_frames"], pick)))
            steps += [(window_s + t, a) for t, a in later]
            lines[s] = sorted(steps, key=lambda st: st[0])
        best = max((a for steps in lines.values() for _, a in steps if a is not None), default=0.0)
        if not best > 0:
            skipped += 1
            continue
        target = target_fraction * best
        detail.append({"device": d, "window": pos, "scene": scene, "t_switch": t_switch, "target": target,
                       "times_s": {}})
        for s, steps in lines.items():
            active = [a for t, a in steps if t <= t_switch]
            since: Optional[float] = 0.0
            if not (active and active[-1] is not None and active[-1] >= target):
                since = next((t - t_switch for t, a in steps if t > t_switch and a is not None and a >= target), None)
            reached[s].append(since is not None)
            if since is None:
                censored[s] += 1
                since = (len(stay) + 2) * window_s - t_switch
            times[s].append(since)
            detail[-1]["times_s"][s] = since
    reference = cut_scheme if cut is not None and cut_scheme in present else "recl"
    out = _summarise_times(times, censored, reference)
    for s in present:
        out[s].update(times_s=list(times[s]), reached=list(reached[s]))
    return {"events": len(events) - skipped, "skipped": skipped, "switch_unmeasured": unmeasured,
            "cuts_detected": detected, "reference": reference, "detail": detail,
            "clock": {"name": clock.name, "factor": clock.factor, "label_s_per_frame": clock.label_s_per_frame},
            "schemes": out}


def _stay(windows: Sequence[Mapping[str, Any]], device: str, pos: int, scene: str) -> list[int]:
    """Window positions from ``pos`` on while ``device`` still shows ``scene``."""
    stay = []
    for p in range(pos, len(windows)):
        rec = windows[p]["devices"].get(device)
        if rec is None or scene not in rec["scenes"]:
            break
        stay.append(p)
    return stay


def compute_to_match(accuracy_by_budget: Mapping[float, float], target: float) -> tuple[Optional[float], bool]:
    """The budget at which a scheme's accuracy first reaches ``target``: linear in log-budget between measured
    budgets. Returns ``(budget, reached)``; not reached: ``(largest budget, False)`` (a lower bound)."""
    pts = sorted((float(b), float(a)) for b, a in accuracy_by_budget.items())
    if not pts:
        return None, False
    if pts[0][1] >= target:
        return pts[0][0], True
    for (b0, a0), (b1, a1) in zip(pts, pts[1:]):
        if a1 >= target:
            f = (target - a0) / (a1 - a0) if a1 != a0 else 1.0
            return float(math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))), True
    return pts[-1][0], False


COST_PARTS = {"labelling": ("teacher_s", "label_s"), "selection": ("gating_s", "safety_s"),
              "retraining": ("retrain_s",), "gating update": ("gating_update_s",),
              "admission and pruning": ("admission_s", "prune_s")}


def over_time(scheme: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per window of one scheme: zoo size, zoo hit ratio, the cost parts (:data:`COST_PARTS`, seconds) and the
    retraining charge (nominal GPU seconds)."""
    windows = scheme["windows"]
    out: dict[str, list[float]] = {
        "window": [float(w["window"]) for w in windows],
        "zoo_size": [float(w["experts"]) for w in windows],
        "zoo_hit_ratio": [float(np.mean([d["zoo_hit"] for d in w["devices"].values()])) for w in windows],
        "retrain_compute_s": [float(w["cost"]["retrain_compute_s"]) for w in windows],
    }
    for part, keys in COST_PARTS.items():
        out[part] = [float(sum(w["cost"].get(k, 0.0) for k in keys)) for w in windows]
    return out


def selection_share_large_zoo(scheme: Mapping[str, Any], min_experts: int = 20) -> Optional[float]:
    """Selection seconds over the controller's total in the windows whose zoo held ``min_experts`` or more experts
    when the window began (None: no such window)."""
    sel = tot = 0.0
    before = 0
    for w in scheme["windows"]:
        if before >= min_experts:
            sel += w["cost"]["gating_s"] + w["cost"]["safety_s"]
            tot += w["cost"]["total_s"] + w["cost"].get("teacher_s", 0.0)
        before = int(w["experts"])
    return sel / tot if tot > 0 else None


#: clock factors of the sensitivity sweep (paper seconds per measured second), besides the training clock's
CLOCK_SWEEP = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def paper_clock_analysis(results: Mapping[str, Any], window_s: float, schemes: Sequence[str],
                         micro_window_s: float) -> dict[str, Any]:
    """Responsiveness on the paper clock (:func:`timeline_responsiveness`, on the scene's frames) at the training
    clock, at measured seconds (factor 1) and with instant selection (factor 0), and the ratios over RECL's
    mean time for each factor of :data:`CLOCK_SWEEP`; ``all_frames``: at measured seconds on all held-out
    frames; with the clock's inputs (``mu``, the factor, the teacher's seconds per frame, the measured
    selection seconds per window)."""
    factor = training_clock_factor(results, schemes, micro_window_s)
    per_frame = teacher_seconds_per_frame(results)
    clocks = ([PaperClock("training clock", factor, per_frame)] if factor is not None else []) + [
        PaperClock("measured seconds", 1.0, per_frame), PaperClock("instant selection", 0.0, per_frame)]
    sweep = []
    for f in sorted({*CLOCK_SWEEP, *([factor] if factor is not None else [])}):
        r = timeline_responsiveness(results, window_s, schemes, PaperClock(f"x{f:g}", f, per_frame))
        sweep.append({"factor": f, **{s: {k: d.get(k) for k in ("mean_s", "median_s", "mean_ratio", "median_ratio",
                                                                  "censored")} for s, d in r["schemes"].items()}})
    walls = {s: [float(w["cost"]["gating_s"] + w["cost"]["safety_s"]) for w in results["schemes"][s]["windows"]]
             for s in schemes if s in results["schemes"]}
    return {"micro_window_s": micro_window_s, "training_factor": factor, "label_s_per_frame": per_frame,
            "selection_s_per_window": {s: float(np.median(v)) for s, v in walls.items() if v},
            "clocks": [timeline_responsiveness(results, window_s, schemes, c) for c in clocks], "sweep": sweep,
            "from_switch": [r for r in (switch_responsiveness(results, window_s, schemes, c) for c in clocks) if r],
            "all_frames": timeline_responsiveness(results, window_s, schemes, clocks[-2], on_scene=False)}


def point_responsiveness(results: Mapping[str, Any], window_s: float, micro_window_s: float,
                         schemes: Sequence[str] = ("recl", CUT_SCHEME, *RETRAINING_BASELINES)) -> dict[str, Any]:
    """Responsiveness of one point's ``schemes``: ``{"window_s", "responsiveness"}`` (whole windows,
    :func:`responsiveness`) and ``"responsiveness_clock"`` (:func:`paper_clock_analysis`; None when the results
    lack the timeline records of this version), as :func:`format_responsiveness` reads them."""
    clock = paper_clock_analysis(results, window_s, schemes, micro_window_s) if has_timeline(results, schemes) \
        else None
    return {"window_s": window_s, "responsiveness": responsiveness(results, window_s, schemes),
            "responsiveness_clock": clock}


# ----------------------------------------------------------------------------------------------------- study


def run_study(cfg: StudyConfig, out: Path, plots: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) every point of ``cfg`` under ``out/points``, then writes ``study.json`` (config and
    analysis), ``report.md`` and the plots; returns the analysis."""
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study-config.json", cfg.to_dict())
    points: dict[str, dict[str, Any]] = {}
    for i, (name, point) in enumerate(cfg.points()):
        log(f"== point {i + 1}/{len(cfg.points())}: {name}")
        points[name] = run_eval(point, out / "points" / name, plots=plots, log=log)
    analysis = analyse(cfg, points)
    write_json(out / "study.json", {"config": cfg.to_dict(), "analysis": analysis})
    (out / "report.md").write_text(format_report(cfg, analysis) + "\n")
    if plots:
        plot_study(cfg, analysis, out)
    return analysis


def analyse(cfg: StudyConfig, points: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Everything the report shows, from the points' results (see the module docstring)."""
    window_s = EvalConfig(workload=dict(cfg.workload)).workload_config().window_s
    base = points[point_name(cfg.base_cameras, cfg.base_budget)]

    def acc(res: Mapping[str, Any], s: str) -> Optional[float]:
        e = res["schemes"].get(s)
        return float(e["summary"]["accuracy"]) if e else None

    by_cameras = {c: {s: acc(points[point_name(c, cfg.base_budget)], s) for s in DEFAULT_SCHEMES} for c in cfg.cameras}
    by_budget = {b: {s: acc(points[point_name(cfg.base_cameras, b)], s) for s in BUDGET_SCHEMES}
                 for b in cfg.budgets}
    recl_base = acc(base, "recl")
    match: dict[str, Any] = {}
    for s in RETRAINING_BASELINES:
        curve = {b: v for b, a in by_budget.items() if (v := a.get(s)) is not None}
        budget, reached = compute_to_match(curve, recl_base if recl_base is not None else math.inf)
        match[s] = {"budget_s": budget, "reached": reached,
                    "ratio": None if budget is None else budget / cfg.base_budget}
    mu = dict(cfg.points())[point_name(cfg.base_cameras, cfg.base_budget)].recl_config("recl").mu
    resp = point_responsiveness(base, window_s, mu)
    ablations = {name: [{"label": label, "accuracy": acc(points[f"ablation-{name}-{_slug(label)}"], "recl"),
                         "zoo_size": points[f"ablation-{name}-{_slug(label)}"]["schemes"]["recl"]["summary"][
                             "zoo_size"]} for label, _ in variants] for name, variants in cfg.ablations.items()}
    summaries = {s: e["summary"] for s, e in base["schemes"].items()}
    large_zoo = {name: selection_share_large_zoo(res["schemes"]["recl"]) for name, res in points.items()
                 if "recl" in res["schemes"]}
    return {"window_s": window_s, "base": {"cameras": cfg.base_cameras, "budget_s": cfg.base_budget},
            "summaries": {s: {k: v for k, v in d.items() if k != "accuracy_by_window"} for s, d in summaries.items()},
            "accuracy_by_cameras": by_cameras, "accuracy_by_budget": by_budget, "compute_to_match": match,
            "responsiveness": resp["responsiveness"], "responsiveness_clock": resp["responsiveness_clock"],
            "ablations": ablations, "selection_share_zoo20": large_zoo,
            "over_time": {s: over_time(base["schemes"][s]) for s in ("recl", "ams") if s in base["schemes"]}}


# ------------------------------------------------------------------------------------------------------ output


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_report(cfg: StudyConfig, a: Mapping[str, Any]) -> str:
    """The study's tables (markdown)."""
    lines = [f"# RECL study: {cfg.task}", "",
             f"Base point: {cfg.base_cameras} cameras, {cfg.base_budget:g} GPU-s of retraining per "
             f"{a['window_s']:g}-s window. Accuracy: % agreement with the teacher (classification) or per-frame IoU "
             f"(segmentation) of the model each camera runs, mean over windows and cameras.", "",
             "## Schemes at the base point", "",
             "| scheme | accuracy | after switch | zoo hits | zoo size | selection share | retrain compute (GPU-s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s, d in a["summaries"].items():
        lines.append(f"| {s} | {_pct(d['accuracy'])} | {_pct(d['accuracy_after_switch'])} | "
                     f"{100 * d['zoo_hit_rate']:.0f} % | {d['zoo_size']} | {100 * d['selection_share']:.1f} % | "
                     f"{d['retrain_compute_s']:.0f} |")
    lines += ["", f"## Accuracy versus cameras ({cfg.base_budget:g} GPU-s per window)", "",
              "| cameras | " + " | ".join(DEFAULT_SCHEMES) + " | RECL - best of ams/ekya |",
              "|---:|" + "---:|" * (len(DEFAULT_SCHEMES) + 1)]
    for c, accs in a["accuracy_by_cameras"].items():
        best = max((v for k, v in accs.items() if k in RETRAINING_BASELINES and v is not None), default=None)
        gain = None if best is None or accs.get("recl") is None else accs["recl"] - best
        lines.append(f"| {c} | " + " | ".join(_pct(accs.get(s)) for s in DEFAULT_SCHEMES) +
                     f" | {'-' if gain is None else f'{100 * gain:+.1f}'} |")
    lines += ["", f"## Accuracy versus compute ({cfg.base_cameras} cameras)", "",
              "| GPU-s per window | " + " | ".join(BUDGET_SCHEMES) + " |", "|---:|" + "---:|" * len(BUDGET_SCHEMES)]
    for b, accs in a["accuracy_by_budget"].items():
        lines.append(f"| {b:g} | " + " | ".join(_pct(accs.get(s)) for s in BUDGET_SCHEMES) + " |")
    lines += ["", "Compute each baseline needs to match RECL at the base budget:", ""]
    for s, m in a["compute_to_match"].items():
        if m["budget_s"] is None:
            lines.append(f"- {s}: not measured")
        elif m["reached"]:
            lines.append(f"- {s}: {m['budget_s']:.0f} GPU-s per window = **{m['ratio']:.1f}x** RECL's")
        else:
            lines.append(f"- {s}: not reached at {m['budget_s']:.0f} GPU-s = **> {m['ratio']:.0f}x** RECL's")
    lines += format_responsiveness(a)
    lines += ["", "## Selection cost once the zoo holds >= 20 experts", "",
              "Gating + safety-check seconds over the controller's (teacher labelling included), in the windows that "
              "began with >= 20 experts in RECL's zoo:", ""]
    shares = a["selection_share_zoo20"]
    for name, v in shares.items():
        if v is not None:
            lines.append(f"- {name}: {100 * v:.1f} %")
    never = [name for name, v in shares.items() if v is None]
    if never:
        lines.append(f"- the zoo never held 20 experts at: {', '.join(never)}")
    if a["ablations"]:
        lines += ["", f"## Ablations (RECL, {cfg.base_cameras} cameras, {cfg.base_budget:g} GPU-s)", "",
                  "| ablation | setting | accuracy | zoo size |", "|---|---|---:|---:|"]
        lines.append(f"| (base) | paper defaults | {_pct(a['summaries']['recl']['accuracy'])} | "
                     f"{a['summaries']['recl']['zoo_size']} |")
        for name, rows in a["ablations"].items():
            for row in rows:
                lines.append(f"| {name} | {row['label']} | {_pct(row['accuracy'])} | {row['zoo_size']} |")
    return "\n".join(lines)


def _ratio(v: Optional[float]) -> str:
    return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.1f}x")


def _clock_table(clk: Mapping[str, Any]) -> list[str]:
    info = clk["clock"]
    frames = "the scene's held-out frames" if clk["on_scene"] else "all held-out frames"
    lines = [f"**{info['name']}** (factor {info['factor']:.2f}; {frames}): {clk['events']} events.", "",
             "| scheme | mean (s) | median (s) | never reached | mean / RECL's | median / RECL's | "
             "decision at (s, median) | trainer starts (s, median) | late decisions | deliveries |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, d in clk["schemes"].items():
        lines.append(f"| {s} | {_f1(d['mean_s'])} | {_f1(d['median_s'])} | {d['censored']} | "
                     f"{_ratio(d.get('mean_ratio'))} | {_ratio(d.get('median_ratio'))} | "
                     f"{_f1(d['decision_s'])} | {_f1(d['train_start_s'])} | {d['late_decisions']} | "
                     f"{d['deliveries']} |")
    late = [(s, d["late_decisions"], d["windows"]) for s, d in clk["schemes"].items() if d["late_decisions"]]
    if late:
        lines += ["", "At this clock labelling and selection outlast the window (" + ", ".join(
            f"{s}: {n} of {w} windows" for s, n, w in late) + "): there the controller cannot answer within the "
            "window, and the times rest on the assumption that a late decision is in place by the next window."]
    return lines + [""]


def format_responsiveness(a: Mapping[str, Any]) -> list[str]:
    """The report's responsiveness section: on the paper clock (when the results hold the timeline) and at the
    resolution of whole windows (markdown lines)."""
    r = a["responsiveness"]
    pct = f"{100 * TARGET_FRACTION:.0f} %"
    lines = ["", "## Responsiveness after a switch to a recurring scene", "",
             f"{r['events']} events (switches of a camera to a scene some camera played before; {r['skipped']} "
             f"skipped where no scheme reached any accuracy). Target: {pct} of the best accuracy any compared "
             f"scheme's camera ran during its stay in the scene; a scheme that never reaches it is charged the stay "
             f"plus one window (counted under *never reached*)."]
    c = a.get("responsiveness_clock")
    if c:
        w = a["window_s"]
        first = c["clocks"][0]
        lines += ["", "### On the paper clock", "",
                  "Each window's timeline, from the camera's upload: the camera runs the model it had when the "
                  "window began, then the safety-checked decision from the moment the controller has labelled every "
                  "camera's frames, shortlisted for every camera and safety-checked the cameras up to this one, then "
                  "the retraining job's model after each micro-window it gets (trainer start: after every safety "
                  "check; end: the scheduler's nominal clock, mu per micro-window). The same delivery rule for "
                  "every scheme; the network server today ships only the decision mid-window (a job's model is a "
                  "candidate of the next safety check), so shipping every micro-window's model at once is generous "
                  "to retraining. Deliveries past the window's end fall outside it; a window begins with the last "
                  "job model delivered in the window before, if any, else with the decision of the window before "
                  "(a late decision is taken to be in place by then, as at the resolution of whole windows: "
                  "optimistic when selection takes longer than a window, which the *late decisions* column "
                  "counts).", "",
                  "Accuracy: on the retraining job's held-out frames of each window (no model of that window "
                  "trained on them) that show the scene switched to: the window holding the switch also holds the "
                  f"scene before it ({first.get('switch_unmeasured', 0)} of {first['events'] + first['skipped']} "
                  "switch windows have no held-out frame of the new scene; nothing is measured there). Controller "
                  "seconds measured on this CPU become paper seconds by a clock factor:", "",
                  f"- mu = {c['micro_window_s']:g} paper s per micro-window (one epoch, base trainer); window "
                  f"{w:g} s;",
                  "- training clock: mu over the median measured seconds of one training micro-window = "
                  + (f"**{c['training_factor']:.1f} paper s per measured s**;" if c["training_factor"] else "-;"),
                  f"- teacher: {c['label_s_per_frame']:.3f} measured s per frame (every camera's frames are "
                  f"labelled before selection and training);",
                  "- selection (gating + safety checks, all cameras), median measured s per window: "
                  + ", ".join(f"{s} {v:.2f}" for s, v in c["selection_s_per_window"].items()) + ".", ""]
        for clk in c["clocks"]:
            lines += _clock_table(clk)
        base = [s for s in c["sweep"][0] if s not in ("factor", "recl")] if c["sweep"] else []
        lines += ["Sensitivity to the clock factor (the scene's frames; mean time over RECL's):", "",
                  "| factor | RECL mean (s) | " + " | ".join(f"{s} / RECL" for s in base) + " |",
                  "|---:|---:|" + "---:|" * len(base)]
        for row in c["sweep"]:
            lines.append(f"| {row['factor']:.2f} | {_f1(row['recl']['mean_s'])} | "
                         + " | ".join(_ratio(row[s]['mean_ratio']) for s in base) + " |")
        lines += ["", "For comparison, on all held-out frames of each window (both scenes in the switch window):", ""]
        lines += _clock_table(c["all_frames"])
        lines += _switch_tables(c.get("from_switch") or [])
        lines += ["### At the resolution of whole windows (as before)", ""]
    lines += ["Each window's decision is evaluated on all of that window's frames; the decision of the window that "
              "holds the switch counts one window:", "",
              "| scheme | mean (s) | median (s) | never reached | mean / RECL's |", "|---|---:|---:|---:|---:|"]
    for s, d in r["schemes"].items():
        lines.append(f"| {s} | {_f(d['mean_s'])} | {_f(d['median_s'])} | {d['censored']} | "
                     f"{_ratio(d.get('mean_ratio'))} |")
    return lines


def _switch_tables(clocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's tables of :func:`switch_responsiveness` (times from the switch itself), one per clock."""
    if not clocks:
        return []
    first = clocks[0]
    lines = ["### From the switch itself (scene-cut uploads)", "",
             f"Times counted from the scene's first frame instead of from the upload of the window holding it; "
             f"`{CUT_SCHEME}` cameras upload the first frames after a scene cut they detect and get a "
             f"selection for them before the window's upload. Its cameras detected the switch in "
             f"{first['cuts_detected']} of {first['events'] + first['skipped']} events; the frames they uploaded are "
             f"left out of every scheme's measurement in the switch window ({first['switch_unmeasured']} switch "
             f"windows keep no held-out frame of the scene). Ratios over `{first['reference']}`.", ""]
    for clk in clocks:
        info = clk["clock"]
        lines += [f"**{info['name']}** (factor {info['factor']:.2f}): {clk['events']} events.", "",
                  f"| scheme | mean (s) | median (s) | never reached | mean / {clk['reference']} | "
                  f"median / {clk['reference']} |", "|---|---:|---:|---:|---:|---:|"]
        for s, d in clk["schemes"].items():
            lines.append(f"| {s} | {_f1(d['mean_s'])} | {_f1(d['median_s'])} | {d['censored']} | "
                         f"{_ratio(d.get('mean_ratio'))} | {_ratio(d.get('median_ratio'))} |")
        lines.append("")
    return lines


def _f1(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.0f}"


def plot_study(cfg: StudyConfig, a: Mapping[str, Any], out: Path) -> list[Path]:
    """``cameras.png``, ``compute.png`` and ``over_time.png`` in ``out``."""
    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    cams = list(a["accuracy_by_cameras"])
    for s in DEFAULT_SCHEMES:
        ys = [a["accuracy_by_cameras"][c].get(s) for c in cams]
        if any(y is not None for y in ys):
            ax.plot(cams, [100 * y if y is not None else np.nan for y in ys], marker="o", label=s)
    ax.set_xlabel("cameras")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"RECL {cfg.task}: accuracy vs cameras ({cfg.base_budget:g} GPU-s/window)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "cameras.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    budgets = list(a["accuracy_by_budget"])
    for s in BUDGET_SCHEMES:
        ax.plot(budgets, [100 * (a["accuracy_by_budget"][b].get(s) or np.nan) for b in budgets], marker="o", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("retraining GPU-s per window")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"RECL {cfg.task}: accuracy vs compute ({cfg.base_cameras} cameras)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "compute.png"))

    t = a["over_time"].get("recl")
    if t:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        parts = list(COST_PARTS)
        ax1.stackplot(t["window"], *[t[p] for p in parts], labels=parts)
        ax1.set_ylabel("controller seconds (this CPU)")
        ax1.legend(fontsize=7, loc="upper left")
        ax1.set_title(f"RECL {cfg.task}: cost, zoo and hits per window ({cfg.base_cameras} cameras)")
        ax2.plot(t["window"], t["zoo_size"], marker="o", ms=3, label="zoo size")
        ax2.set_ylabel("experts")
        ax3 = ax2.twinx()
        ax3.plot(t["window"], [100 * h for h in t["zoo_hit_ratio"]], color="tab:red", marker="s", ms=3,
                 label="zoo hits")
        ax3.set_ylabel("zoo hits (%)")
        ax2.set_xlabel("model-update window")
        ax2.grid(alpha=0.3)
        paths.append(save_figure(fig, out / "over_time.png"))
    if a.get("responsiveness_clock"):
        paths.append(plot_responsiveness(a, out / "responsiveness.png", cfg.task))
    return paths


def plot_responsiveness(a: Mapping[str, Any], path: Path, task: str) -> Path:
    """Share of events whose target is reached by each time, per scheme, one panel per clock of
    ``a["responsiveness_clock"]`` (censored events never reach it)."""
    plt = pyplot()
    clocks = a["responsiveness_clock"]["clocks"]
    fig, axes = plt.subplots(1, len(clocks), figsize=(4 * len(clocks), 3.6), sharey=True, squeeze=False)
    for ax, clk in zip(axes[0], clocks):
        for s, d in clk["schemes"].items():
            n = len(d["times_s"])
            reached = sorted(t for t, ok in zip(d["times_s"], d["reached"]) if ok)
            if n:
                xs = [0.0, *reached]
                ax.step(xs, [100 * i / n for i in range(len(xs))], where="post", label=s)
        ax.set_title(f"{clk['clock']['name']} (x{clk['clock']['factor']:.3g})", fontsize=9)
        ax.set_xlabel("paper seconds after the switch window's upload")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("events at target (%)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(f"RECL {task}: time to {100 * TARGET_FRACTION:.0f} % of the stay's best after a recurring scene",
                 fontsize=10)
    return save_figure(fig, path)


__all__ = ["BUDGET_SCHEMES", "CAMERA_SCHEMES", "CLOCK_SWEEP", "COST_PARTS", "CUT_SCHEME", "DEFAULT_ABLATIONS",
           "RETRAINING_BASELINES", "TARGET_FRACTION", "PaperClock", "StudyConfig", "WindowTimeline", "analyse",
           "compute_to_match", "format_report", "format_responsiveness", "has_frame_times", "has_timeline",
           "over_time", "paper_clock_analysis", "plot_responsiveness", "plot_study", "point_name",
           "point_responsiveness", "recurring_events", "responsiveness", "run_study", "selection_share_large_zoo",
           "stay_timeline", "switch_responsiveness", "teacher_seconds_per_frame", "timeline_responsiveness",
           "training_clock_factor", "window_timeline"]
