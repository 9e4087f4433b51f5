"""RECL against its baselines on the camera workload (:mod:`edgert.recl.workload`), every scheme on the same
windows and the same retraining budget.

**Schemes** (:data:`SCHEMES`, each a set of :class:`~edgert.recl.config.RECLConfig` settings over the shared
ones): ``recl`` (gating network, iterative scheduler, reuse of zoo experts); ``ams`` (no reuse: each camera
retrains its own lineage and is never sent another camera's expert, round-robin time-sharing); ``ekya`` (the same
with Ekya's thief scheduler); ``odin`` (ODIN
selects the zoo candidates); ``oracle`` (the safety checker tests every expert of the zoo); ``one_time`` (a camera
retrains in its first window only, later windows only select); ``recl_cut`` (RECL whose cameras also upload
the first ``cut_frames`` frames after a scene cut they detect, :class:`~edgert.recl.workload.SceneCutDetector`,
and get a selection for them at once; the window's upload follows as usual).

**Procedure.** The workload's windows are read once. Window ``k`` of every camera is one
:meth:`~edgert.recl.controller.RECLController.run_window` call (device ``cam<i>``), windows in time order. Each
scheme gets a fresh zoo in ``<out>/<scheme>/zoo`` and a fresh controller. The teacher labels every frame once,
before the schemes run (labels are cached by frame content), so no scheme pays for labelling and the cost shares
compare like with like.

**Measures** (per window and camera, from the :class:`~edgert.recl.controller.WindowReport`):

* accuracy: the decision's accuracy on that window's frames against the teacher (``chosen_accuracy``: top-1
  agreement for classification, per-frame IoU for segmentation), i.e. the model the camera runs in that window;
* after a switch: the window holds the first frames of a scene the camera did not play in the window before
  (window 0 is not a switch);
* zoo hit: the decision is a zoo expert trained on another camera's frames;
* retraining compute: the scheduler's charge (micro-windows x mu, nominal GPU seconds), summed over windows;
* selection share: (gating + safety-check seconds) / the controller's total seconds (its own measured costs plus
  the teacher's labelling of the window's frames, measured once before the schemes run), summed over windows
  (wall time on this machine);
* zoo size: active experts after the last window;
* per camera and window, what the responsiveness timeline needs (:func:`edgert.recl.study.window_timeline`):
  gating and safety-check seconds, the retraining job's held-out frames with the per-frame scores of the model
  before, the decision and the last retrained model, each micro-window's nominal end with its held-out scores
  and measured seconds, each frame's scene and time (``frame_times``, paper seconds from the window's start);
* scene-cut schemes also: the cuts the camera detected, each upload's frames, time, decision, measured seconds
  and held-out scores, and the held-out scores of the model the camera began the window with (``window_start``);
  the uploads' gating and safety seconds join the window's cost.

Results go to a :class:`~edgert.harness.RunFolder` (``config.json``, ``results.json`` saved after each scheme,
so an interrupted run resumes with the schemes left), ``table.md`` and ``accuracy.png``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from edgert.harness import RunFolder, progress, pyplot, save_figure
from edgert.recl.config import RECLConfig
from edgert.recl.controller import Decision, RECLController, WindowReport
from edgert.recl.detection import DetectionTask
from edgert.recl.tasks import ClassificationTask, SegmentationTask
from edgert.recl.workload import ClipLibrary, SceneCutDetector, WorkloadConfig, build_workload, iter_windows
from edgert.recl.zoo import ModelZoo

#: scheme name -> RECLConfig settings applied over the shared ones
SCHEMES: dict[str, dict[str, Any]] = {
    "recl": {},
    "ams": {"reuse": False, "selection": "none", "scheduler": "round_robin"},
    "ekya": {"reuse": False, "selection": "none", "scheduler": "ekya"},
    "odin": {"selection": "odin"},
    "oracle": {"selection": "oracle"},
    "one_time": {"retrain": False},
    "recl_cut": {},
}
#: schemes whose cameras upload ``cut_frames`` frames as soon as they detect a scene cut, and get a selection
#: (:meth:`~edgert.recl.controller.RECLController.reselect`) before their window's own upload
SCENE_CUT_SCHEMES = frozenset({"recl_cut"})
#: what an evaluation runs unless told otherwise: the paper's schemes (the scene-cut variant is asked for by name,
#: so that runs and studies made before it compare the same set)
DEFAULT_SCHEMES = tuple(s for s in SCHEMES if s not in SCENE_CUT_SCHEMES)
TASKS = ("classification", "segmentation", "detection")
#: config keys that may differ from a run already in the folder (which schemes run, not how)
FREE = ("schemes",)

#: the default workload: every camera plays ten scenes (never one twice, clips may recur), a 30-s window is
#: 1.5 s of video. With one scene per clip (``distinct_clips=True``) the four bundled clips make a timeline of
#: four to five windows per camera, too short for a zoo to pay off; ten scenes give 17 windows per camera.
STANDARD_WORKLOAD: dict[str, Any] = {"distinct_clips": False, "scenes_per_camera": 10, "time_scale": 0.05}

#: ``--quick``: three short clips, two cameras, three windows of 30 frames, small selectors, experts admitted one
#: at a time, 8 epochs per micro-window (under a minute for every scheme on two cores)
QUICK: dict[str, Any] = {
    "cameras": 2,
    "windows": 3,
    "workload": {"clips": ["carphone", "bikes", "bigbuckbunny"], "sample_fps": 1.0},
    "recl": {
        "zoo": {"gamma": 1},
        "retraining": {"micro_window_epochs": 8.0},
        "gating": {"hidden": 64, "train_steps": 60, "finetune_steps": 30, "history_samples": 16},
        "odin": {"input_size": [32, 32], "channels": [8, 16], "latent_dim": 8, "train_steps": 20},
        "history_per_window": 8,
    },
}


@dataclass
class EvalConfig:
    """One evaluation.

    Attributes:
        task: ``"classification"`` (ImageNet MobileNetV2 teacher) or ``"segmentation"`` (MediaPipe teacher).
        cameras: cameras of the workload.
        windows: at most this many model-update windows per camera (None: the whole timeline).
        workload: further :class:`~edgert.recl.workload.WorkloadConfig` settings (``window_s``, ``sample_fps``,
            ``clips``, ``size``, ...; ``cameras`` and ``seed`` come from here); default
            :data:`STANDARD_WORKLOAD`.
        schemes: names of :data:`SCHEMES`, run in this order (default :data:`DEFAULT_SCHEMES`).
        budget_s: retraining compute per window (GPU seconds, the same for every scheme:
            :attr:`~edgert.recl.scheduler.SchedulerConfig.budget_s`); None: the whole window.
        recl: shared :class:`~edgert.recl.config.RECLConfig` settings, as :meth:`RECLConfig.from_dict` reads them
            (parts as nested mappings); the retraining window is the workload's ``window_s``.
        seed: the workload's scenes, the generic expert and the retraining jobs.
        threads: torch threads.
        cut_frames: frames a camera of a scene-cut scheme (:data:`SCENE_CUT_SCHEMES`) samples after a cut
            before it uploads them (4: four seconds at the default rate of one frame per paper second).
    """

    task: str = "classification"
    cameras: int = 4
    windows: Optional[int] = None
    workload: dict[str, Any] = field(default_factory=lambda: dict(STANDARD_WORKLOAD))
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    budget_s: Optional[float] = None
    recl: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    threads: int = 1
    cut_frames: int = 4

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad setting (the workload and RECL settings included)."""
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.cameras < 1:
            raise ValueError(f"cameras: expected >= 1, got {self.cameras}")
        if self.windows is not None and self.windows < 1:
            raise ValueError(f"windows: expected >= 1 or None, got {self.windows}")
        if not self.schemes:
            raise ValueError("schemes: expected at least one")
        unknown = [s for s in self.schemes if s not in SCHEMES]
        if unknown:
            raise ValueError(f"schemes: unknown {unknown}, expected some of {list(SCHEMES)}")
        if len(set(self.schemes)) != len(self.schemes):
            raise ValueError(f"schemes: expected distinct names, got {list(self.schemes)}")
        if self.budget_s is not None and not self.budget_s >= 0:
            raise ValueError(f"budget_s: expected >= 0 or None, got {self.budget_s}")
        if self.threads < 1:
            raise ValueError(f"threads: expected >= 1, got {self.threads}")
        if isinstance(self.cut_frames, bool) or not isinstance(self.cut_frames, int) or self.cut_frames < 1:
            raise ValueError(f"cut_frames: expected an integer >= 1, got {self.cut_frames!r}")
        self.workload_config().validate()
        for s in self.schemes:
            self.recl_config(s)

    def workload_config(self) -> WorkloadConfig:
        """The workload (``workload`` settings, lists as tuples, with :attr:`cameras` and :attr:`seed`)."""
        names = {f.name for f in dataclasses.fields(WorkloadConfig)}
        unknown = sorted(set(self.workload) - names)
        if unknown:
            raise ValueError(f"workload: unknown settings {unknown}")
        settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.workload.items()}
        settings.update(cameras=self.cameras, seed=self.seed)
        return WorkloadConfig(**settings)

    def recl_config(self, scheme: str) -> RECLConfig:
        """The controller's config of ``scheme``: :attr:`recl`, the workload's window, :attr:`budget_s`,
        :attr:`seed`, then the scheme's own settings."""
        base = RECLConfig.from_dict({**self.recl, "seed": self.seed})
        return base.replace(window_s=self.workload_config().window_s, budget_s=self.budget_s, **SCHEMES[scheme])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------ tasks


def _frame_key(frame: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes() + str(frame.shape).encode(), digest_size=16).digest()


def _memo_label(memo: dict[bytes, np.ndarray], frames: np.ndarray,
                compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    keys = [_frame_key(f) for f in frames]
    missing = [i for i, k in enumerate(keys) if k not in memo]
    if missing:
        for i, y in zip(missing, np.asarray(compute(frames[missing]))):
            memo[keys[i]] = y
    return np.stack([memo[k] for k in keys]) if keys else np.asarray(compute(frames))


class _MemoClassification(ClassificationTask):
    """The classification task whose teacher sees each distinct frame once (every scheme sees the same frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.memo: dict[bytes, np.ndarray] = {}

    def label(self, frames: np.ndarray) -> np.ndarray:
        return _memo_label(self.memo, frames, super().label)


class _MemoSegmentation(SegmentationTask):
    """The segmentation task whose teacher sees each distinct frame once."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__(input_size)
        self.memo: dict[bytes, np.ndarray] = {}

    def label(self, frames: np.ndarray) -> np.ndarray:
        return _memo_label(self.memo, frames, super().label)


class _MemoDetection(DetectionTask):
    """The face-detection task whose teacher sees each distinct frame once."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__(input_size)
        self.memo: dict[bytes, np.ndarray] = {}

    def label(self, frames: np.ndarray) -> np.ndarray:
        return _memo_label(self.memo, frames, super().label)


def build_task(cfg: EvalConfig) -> _MemoClassification | _MemoSegmentation | _MemoDetection:
    """The task of ``cfg`` with memoised teacher labels (segmentation and detection experts run at the frame
    size, rounded down to multiples of 16)."""
    if cfg.task == "classification":
        return _MemoClassification()
    w, h = cfg.workload_config().size
    size = (max(16, w // 16 * 16), max(16, h // 16 * 16))
    return _MemoDetection(size) if cfg.task == "detection" else _MemoSegmentation(size)


# ---------------------------------------------------------------------------------------------------- windows


@dataclass
class WindowBatch:
    """Window ``index`` of every camera still playing: frames per device and, per device, whether the window
    follows a scene switch, which scenes it shows, each frame's scene (an index into ``scenes``) and each frame's
    time (paper seconds from the window's start)."""

    index: int
    frames: dict[str, np.ndarray]
    switch: dict[str, bool]
    scenes: dict[str, list[str]]
    frame_scenes: dict[str, list[int]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)


def device_id(camera: int) -> str:
    return f"cam{camera}"


def load_windows(cfg: EvalConfig) -> list[WindowBatch]:
    """The workload's windows, grouped by window index (at most ``cfg.windows``), with scene switches marked."""
    wl = cfg.workload_config()
    library = ClipLibrary(wl.size, wl.fps, wl.cache_mb)
    schedules = build_workload(wl, library)
    out: list[WindowBatch] = []
    last_scene: dict[int, str] = {}
    for win in iter_windows(wl, schedules, library):
        if cfg.windows is not None and win.window_index >= cfg.windows:
            break
        if not out or out[-1].index != win.window_index:
            out.append(WindowBatch(win.window_index, {}, {}, {}))
        keys = [s.key for s in schedules[win.camera_id].scenes_at(win.timestamps.tolist())]
        d = device_id(win.camera_id)
        prev = last_scene.get(win.camera_id)
        out[-1].frames[d] = win.frames
        out[-1].switch[d] = prev is not None and any(k != prev for k in keys)
        out[-1].scenes[d] = list(dict.fromkeys(keys))
        out[-1].frame_scenes[d] = [out[-1].scenes[d].index(k) for k in keys]
        start = win.window_index * wl.window_video_s
        out[-1].times[d] = [float((t - start) / wl.time_scale) for t in win.timestamps]
        last_scene[win.camera_id] = keys[-1]
    return out


# ----------------------------------------------------------------------------------------------------- schemes


def _window_record(rep: WindowReport, batch: WindowBatch, zoo: ModelZoo) -> dict[str, Any]:
    devices: dict[str, Any] = {}
    for d, r in rep.devices.items():
        origin = None
        if r.chosen_expert is not None:
            info = zoo.expert(r.chosen_expert)
            origin = f"{info.device}/{info.window}"
        devices[d] = {
            "accuracy": float(r.chosen_accuracy), "chosen": r.chosen, "chosen_expert": r.chosen_expert,
            "expert_origin": origin, "zoo_hit": origin is not None and not origin.startswith(f"{d}/"),
            "before": r.before, "before_accuracy": float(r.before_accuracy), "frames": r.frames,
            "candidates": list(r.candidates), "candidate_accuracy": dict(r.accuracy),
            "scene_switch": batch.switch[d], "scenes": batch.scenes[d],
            "retrain_start": r.retrain_start, "micro_windows": r.micro_windows, "promising": r.promising,
            "gating_s": r.gating_s, "safety_s": r.safety_s, "holdout_accuracy": dict(r.holdout_accuracy),
            "holdout_index": list(r.holdout_index), "holdout_frames": dict(r.holdout_frames),
            "retrain_trace": [dict(m) for m in r.retrain_trace], "frame_scenes": batch.frame_scenes[d],
            "frame_times": batch.times[d],
        }
    return {"window": batch.index, "devices": devices, "cost": dataclasses.asdict(rep.cost),
            "experts": rep.experts, "queued": rep.queued, "admitted": list(rep.admitted), "pruned": list(rep.pruned)}


def summarize(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A scheme's summary (see the module docstring for each measure)."""
    acc = [d["accuracy"] for w in windows for d in w["devices"].values()]
    switch = [d["accuracy"] for w in windows for d in w["devices"].values() if d["scene_switch"]]
    hits = [d["zoo_hit"] for w in windows for d in w["devices"].values()]
    total = sum(w["cost"]["total_s"] + w["cost"].get("teacher_s", 0.0) for w in windows)
    selection = sum(w["cost"]["gating_s"] + w["cost"]["safety_s"] for w in windows)
    return {
        "accuracy": float(np.mean(acc)) if acc else math.nan,
        "accuracy_after_switch": float(np.mean(switch)) if switch else None,
        "switch_windows": len(switch),
        "retrain_compute_s": float(sum(w["cost"]["retrain_compute_s"] for w in windows)),
        "selection_s": float(selection),
        "total_s": float(total),
        "selection_share": float(selection / total) if total > 0 else 0.0,
        "zoo_hit_rate": float(np.mean(hits)) if hits else 0.0,
        "zoo_size": int(windows[-1]["experts"]) if windows else 0,
        "accuracy_by_window": [float(np.mean([d["accuracy"] for d in w["devices"].values()])) for w in windows],
    }


def label_windows(task: Any, windows: Sequence[WindowBatch]) -> dict[tuple[int, str], float]:
    """Labels every window's frames with the (memoising) task's teacher once, before the schemes run; returns the
    teacher's measured seconds per ``(window, device)``: the labelling cost every scheme's controller would pay,
    charged to each scheme's breakdown by :func:`run_scheme`."""
    cost: dict[tuple[int, str], float] = {}
    with progress("teacher labels", len(windows), "window") as bar:
        for b in windows:
            for d, f in b.frames.items():
                t0 = time.perf_counter()
                task.label(f)
                cost[(b.index, d)] = time.perf_counter() - t0
            bar.advance()
    return cost


@dataclass
class _SceneCuts:
    """One camera's scene-cut uploads in one window: the cuts it detected (frame indices), the model it ran when
    the window began, and each upload's frames, decision and costs."""

    cuts: list[int]
    window_start: dict[str, np.ndarray]
    uploads: list[tuple[list[int], Decision]]


def _scene_cut_uploads(ctl: RECLController, batch: WindowBatch, detectors: dict[str, SceneCutDetector],
                       cut_frames: int, workload: WorkloadConfig) -> dict[str, _SceneCuts]:
    """Every camera's scene-cut uploads of ``batch`` (before its window's upload): each detected cut (at least
    ``cut_frames`` frames after the one before) whose next ``cut_frames`` frames (the cut's frame first) lie in
    the window is one :meth:`~RECLController.reselect` call; a cut too close to the window's end is left to the
    window's upload."""
    out: dict[str, _SceneCuts] = {}
    for d, frames in batch.frames.items():
        det = detectors.setdefault(d, SceneCutDetector(workload.cut_ratio, workload.cut_floor,
                                                       workload.cut_half_window, refractory=cut_frames))
        cuts = det.cuts(frames)
        state = ctl.devices.get(d)
        start = {k: v.copy() for k, v in (state.weights if state is not None else ctl.generic).items()}
        info = _SceneCuts(cuts, start, [])
        for j in cuts:
            end = j + cut_frames
            if end > len(frames):
                continue
            info.uploads.append((list(range(j, end)), ctl.reselect(d, frames[j:end], window=batch.index)))
        out[d] = info
    return out


def _scene_cut_record(record: dict[str, Any], ctl: RECLController, task: Any, batch: WindowBatch,
                      cuts: Mapping[str, _SceneCuts], teacher_s: Optional[Mapping[tuple[int, str], float]]) -> None:
    """Adds the scene-cut uploads to a window record: per device ``cuts`` and ``scene_cut_uploads`` (frames,
    upload time = the last frame's time, decision, its accuracy on the uploaded frames, measured label/gating/
    safety seconds, and its per-frame scores on the window's held-out frames) and the held-out scores of the
    model the device ran when the window began (``holdout_frames["window_start"]``); their seconds join the
    window's cost (teacher seconds pro rata of the frames)."""
    cost = record["cost"]
    for d, info in cuts.items():
        rec = record["devices"][d]
        rec["cuts"] = list(info.cuts)
        rec["scene_cut_uploads"] = []
        if not info.uploads:
            continue
        held = rec["holdout_index"]
        frames = batch.frames[d][held]
        labels = np.asarray(task.label(frames)) if held else np.zeros(0)

        def scores(weights: Mapping[str, np.ndarray]) -> list[float]:
            return [float(v) for v in ctl.safety.measure(dict(weights), frames, labels)] if held else []

        if held:
            rec["holdout_frames"]["window_start"] = start = scores(info.window_start)
            rec["holdout_accuracy"]["window_start"] = float(np.mean(start))
        for idx, dec in info.uploads:
            r = dec.report
            rec["scene_cut_uploads"].append({
                "frames": idx, "upload_s": batch.times[d][idx[-1]], "chosen": dec.key, "chosen_expert": dec.expert_id,
                "changed": dec.changed, "accuracy": float(dec.accuracy), "label_s": r.label_s,
                "gating_s": r.gating_s, "safety_s": r.safety_s, "holdout_frames": scores(dec.weights)})
            cost["gating_s"] += r.gating_s
            cost["safety_s"] += r.safety_s
            cost["total_s"] += r.label_s + r.gating_s + r.safety_s
            cost["teacher_s"] = cost.get("teacher_s", 0.0) + (teacher_s or {}).get((batch.index, d), 0.0) * len(
                idx) / len(batch.frames[d])


def run_scheme(scheme: str, cfg: EvalConfig, task: Any, windows: Sequence[WindowBatch], folder: Path,
               log: Callable[[str], None] = print,
               teacher_s: Optional[Mapping[tuple[int, str], float]] = None) -> dict[str, Any]:
    """Runs ``scheme`` over ``windows`` with a fresh zoo in ``folder / "zoo"`` (an earlier one is removed).

    ``teacher_s``: measured teacher seconds per ``(window, device)`` (:func:`label_windows`), added to each
    window's cost as ``teacher_s`` (the controller labels with a memoised teacher, so its own ``label_s`` is a
    lookup)."""
    rc = cfg.recl_config(scheme)
    zoo_dir = folder / "zoo"
    if zoo_dir.exists():
        shutil.rmtree(zoo_dir)  # an interrupted earlier attempt: the scheme starts from an empty zoo
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    zoo = ModelZoo(zoo_dir, rc.zoo)
    try:
        detectors: dict[str, SceneCutDetector] = {}
        workload = cfg.workload_config()
        with RECLController(task, zoo, rc) as ctl, progress(f"recl eval {scheme}", len(windows), "window") as bar:
            for batch in windows:
                cuts = (_scene_cut_uploads(ctl, batch, detectors, cfg.cut_frames, workload)
                        if scheme in SCENE_CUT_SCHEMES else {})
                rep = ctl.run_window(batch.frames, window=batch.index)
                record = _window_record(rep, batch, zoo)
                record["cost"]["teacher_s"] = sum((teacher_s or {}).get((batch.index, d), 0.0) for d in rep.devices)
                _scene_cut_record(record, ctl, task, batch, cuts, teacher_s)
                records.append(record)
                accs = " ".join(f"{d}={r.chosen_accuracy:.2f}({r.chosen})" for d, r in rep.devices.items())
                log(f"[{scheme}] window {batch.index}: {accs}; zoo {rep.experts}, admitted {rep.admitted}, "
                    f"{rep.cost.total_s:.1f} s")
                bar.advance(note=f"window {batch.index}")
    finally:
        zoo.close()
    return {"settings": SCHEMES[scheme], "windows": records, "summary": summarize(records),
            "wall_s": time.perf_counter() - t0}


def run_eval(cfg: EvalConfig, out: Path, plots: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs every scheme of ``cfg`` into the run folder ``out`` (skipping schemes an earlier run of the same
    config finished), writes ``results.json``, ``table.md`` and (``plots``) ``accuracy.png``; returns the results.

    Raises:
        ValueError: a bad config.
        RunFolderError: ``out`` holds a run with other settings (before anything runs).
    """
    import torch

    cfg.validate()
    out = Path(out)
    run = RunFolder(out, {"eval": cfg.to_dict()}, free=tuple(f"eval.{k}" for k in FREE),
                    defaults={"eval": EvalConfig().to_dict()})  # settings added since an older run
    previous = run.load_results()
    stored = run.stored_config().get("eval", {})
    schemes = list(dict.fromkeys([*stored.get("schemes", []), *cfg.schemes]))
    run.start({"eval": {**cfg.to_dict(), "schemes": schemes}})
    torch.set_num_threads(cfg.threads)
    results: dict[str, Any] = {**previous, "task": cfg.task, "schemes": dict(previous.get("schemes", {}))}
    todo = [s for s in cfg.schemes if s not in results["schemes"]]
    if todo:
        t0 = time.perf_counter()
        windows = load_windows(cfg)
        task = build_task(cfg)
        n = sum(len(b.frames) for b in windows)
        frames = sum(len(f) for b in windows for f in b.frames.values())
        log(f"{cfg.task}: {len(windows)} windows, {n} camera-windows, {frames} frames "
            f"({time.perf_counter() - t0:.1f} s to read)")
        teacher_s = label_windows(task, windows)
        if "teacher_s" in previous:  # schemes added to a run: charge the teacher as measured for the others
            teacher_s = {(int(k.split("/")[0]), k.split("/", 1)[1]): float(t) for k, t in previous["teacher_s"].items()}
        else:
            results.update(teacher_frames=len(task.memo), teacher_s={f"{w}/{d}": t for (w, d), t in teacher_s.items()})
        results.update(windows=len(windows), camera_windows=n, frames=frames)
        for scheme in todo:
            log(f"scheme {scheme}: {SCHEMES[scheme] or 'RECL'}")
            results["schemes"][scheme] = run_scheme(scheme, cfg, task, windows, out / scheme, log, teacher_s)
            run.save_results(results)
    else:
        log(f"{out}: every scheme already ran")
    run.save_results(results)
    (out / "table.md").write_text(format_table(results) + "\n")
    if plots:
        plot_accuracy(results, out / "accuracy.png")
    run.finish()
    return results


# ------------------------------------------------------------------------------------------------------ output


def format_table(results: Mapping[str, Any]) -> str:
    """The comparison table (markdown), one row per scheme."""
    lines = ["| scheme | accuracy | after switch | retrain compute (s) | selection share | zoo hits | zoo size |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in results["schemes"].items():
        s = e["summary"]
        switch = s["accuracy_after_switch"]
        lines.append(f"| {name} | {100 * s['accuracy']:.1f} | "
                     f"{'-' if switch is None else f'{100 * switch:.1f}'} | {s['retrain_compute_s']:.0f} | "
                     f"{100 * s['selection_share']:.1f} % | {100 * s['zoo_hit_rate']:.0f} % | {s['zoo_size']} |")
    lines.append("")
    lines.append(f"{results['task']}: accuracy (%) of the model each camera runs, against the teacher, mean over "
                 f"windows and cameras; after switch: windows holding a new scene's first frames; retrain compute: "
                 f"nominal GPU seconds charged by the scheduler; selection share: gating + safety-check time over "
                 f"the controller's total (teacher labelling included); zoo hits: decisions that are another "
                 f"camera's expert.")
    return "\n".join(lines)


def plot_accuracy(results: Mapping[str, Any], path: Path) -> Path:
    """Mean accuracy over cameras per window index, one line per scheme."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.xaxis.get_major_locator().set_params(integer=True)
    for name, e in results["schemes"].items():
        idx = [w["window"] for w in e["windows"]]
        ax.plot(idx, [100 * a for a in e["summary"]["accuracy_by_window"]], marker="o", ms=3, label=name)
    ax.set_xlabel("model-update window")
    ax.set_ylabel("accuracy vs teacher (%)")
    ax.set_title(f"RECL {results['task']}: accuracy per window (mean over cameras)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


__all__ = ["FREE", "QUICK", "SCHEMES", "TASKS", "EvalConfig", "WindowBatch", "build_task", "device_id",
           "format_table", "label_windows", "load_windows", "plot_accuracy", "run_eval", "run_scheme", "summarize"]
