"""RECL's evaluation workload: N cameras, each replaying a sequence of scenes cut from the bundled real clips.

**Clips and geometry.** Every clip of :data:`edgert.data.CLIPS` by default (bikes: street with cyclists, 10 s;
carphone: in-car call, 4 s; bigbuckbunny: CG animation, 5.3 s; iscc-demo: band performance, 60 s), decoded
with :func:`edgert.vision.video.iter_frames` at their own frame rate (or ``fps``), scaled by FFmpeg's area
filter to *cover* ``size`` and centre-cropped to it (no stretching; bikes' 2.35:1 loses its sides). Decoded
clips are cached in memory per clip, least recently used first out beyond ``cache_mb`` (all four clips at
128x96 take 72 MB).

**Scenes.** A clip is cut where the mean absolute difference of consecutive frames (RGB, in [0, 1]) is at least
``cut_floor`` and at least ``cut_ratio`` times the median difference of the ``cut_half_window`` frames on each
side (a spike, not a pan); a scene shorter than ``min_scene_s`` is merged into the one before it (into the next
for the first). A clip with no cut is split into ``segment_s``-long segments instead (the last one, if shorter
than ``min_scene_s``, joins the previous). At 128x96 and the defaults this gives bikes 5 scenes (cuts at frames
30, 76, 137, 187), carphone 2 segments, bigbuckbunny 2 segments and iscc-demo 18 shots: 27 scenes.

**Cameras.** Each camera plays ``scenes_per_camera`` scenes back to back (default: one per clip) and never the
same clip twice (``distinct_clips``; with ``distinct_clips=False`` it never plays the same *scene* twice but may
return to a clip). Scene popularity is shared: the scenes of each clip are ranked once by a seeded shuffle and a
camera picks the scene of rank ``k`` with probability proportional to ``1 / (k + 1) ** zipf``, so popular
scenes recur across cameras (what makes a shared zoo useful) while each camera sees scene switches. Clip order
is a seeded permutation per camera. Everything is a pure function of the config: the same seed gives the
same schedules and the same windows.

**Time.** A frame's timestamp is seconds of the video clock on its camera's timeline (scenes concatenated, each
lasting its own frames). As in the AMS evaluation (:mod:`edgert.ams.evaluate`), the paper-clock constants
(``window_s``, ``sample_fps``) are compressed by ``time_scale``: a model-update window covers
``window_s * time_scale`` seconds of video (30 s * 0.1 = 3 s), and a camera uploads ``sample_fps / time_scale``
frames per second of video (``sample_fps`` frames per paper second). Windows tile each camera's timeline from 0;
the last is partial.

**Sampling.** Within a window the uploaded frames are spread evenly in time (nearest frame to each of ``n``
equally spaced instants, no frame twice). ``n = round(rate * window_s * covered)`` with ``covered`` the
fraction of the window the timeline fills, at least 1. With ``adaptive=True`` the rate follows a label-free
stand-in for AMS's scene-change rule (AMS uses the teacher labels' phi-score): ``rate = sample_fps * d /
diff_target``, ``d`` the mean absolute difference of consecutive frames in the window, clipped to
``sample_fps * adaptive_range``; a fast-changing window (motion, a scene switch) uploads more frames.
``sample_fps=None`` uploads every frame.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

from edgert.data import CLIPS, clip_path
from edgert.vision.video import iter_frames, probe

DEFAULT_CLIPS: tuple[str, ...] = tuple(CLIPS)
_EPS = 1e-6


@dataclass
class WorkloadConfig:
    """The evaluation workload (see the module docstring for every rule).

    Attributes:
        cameras: number of cameras.
        window_s: model-update window, paper clock (s).
        time_scale: video seconds per paper second (0.1: a 30-s window is 3 s of video).
        sample_fps: frames each camera uploads per paper second (1.0); None: every frame.
        adaptive: scale the rate by the window's frame difference (AMS-style), within ``adaptive_range``.
        adaptive_range: (low, high) factors on ``sample_fps`` the adaptive rate is clipped to.
        diff_target: the frame difference (mean absolute, in [0, 1]) at which the adaptive rate is ``sample_fps``.
        fps: decode every clip at this rate (frames dropped, never duplicated); None: each clip's own.
        size: (width, height) of the frames.
        seed: scene popularity, clip orders, scene choices.
        clips: bundled clip names (``edgert.data.CLIPS``) or video files.
        scenes_per_camera: scenes per camera (None: one per clip).
        distinct_clips: never the same clip twice on a camera (else: never the same scene twice).
        zipf: exponent of scene popularity (0: uniform).
        cut_ratio, cut_floor, cut_half_window: the shot-change detector.
        min_scene_s: shorter scenes are merged into a neighbour (video seconds).
        segment_s: segment length for clips without a cut (video seconds).
        cache_mb: memory for decoded clips.
    """

    cameras: int = 4
    window_s: float = 30.0
    time_scale: float = 0.1
    sample_fps: Optional[float] = 1.0
    adaptive: bool = False
    adaptive_range: tuple[float, float] = (0.25, 2.0)
    diff_target: float = 0.015
    fps: Optional[float] = None
    size: tuple[int, int] = (128, 96)
    seed: int = 0
    clips: tuple[str, ...] = DEFAULT_CLIPS
    scenes_per_camera: Optional[int] = None
    distinct_clips: bool = True
    zipf: float = 1.0
    cut_ratio: float = 3.0
    cut_floor: float = 0.05
    cut_half_window: int = 12
    min_scene_s: float = 1.0
    segment_s: float = 2.0
    cache_mb: float = 256.0

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first setting out of range."""
        if self.cameras < 1:
            raise ValueError(f"cameras: expected >= 1, got {self.cameras}")
        if not self.window_s > 0:
            raise ValueError(f"window_s: expected > 0, got {self.window_s}")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale: expected > 0, got {self.time_scale}")
        if self.sample_fps is not None and not self.sample_fps > 0:
            raise ValueError(f"sample_fps: expected > 0 or None, got {self.sample_fps}")
        lo, hi = self.adaptive_range
        if not 0 < lo <= hi:
            raise ValueError(f"adaptive_range: expected 0 < low <= high, got {self.adaptive_range}")
        if not self.diff_target > 0:
            raise ValueError(f"diff_target: expected > 0, got {self.diff_target}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps: expected > 0 or None, got {self.fps}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size: expected (width, height) > 0, got {self.size}")
        if not self.clips:
            raise ValueError("clips: expected at least one clip")
        if len(set(self.clips)) != len(self.clips):
            raise ValueError(f"clips: expected distinct clips, got {list(self.clips)}")
        if self.scenes_per_camera is not None and self.scenes_per_camera < 1:
            raise ValueError(f"scenes_per_camera: expected >= 1, got {self.scenes_per_camera}")
        if self.distinct_clips and self.scenes_per_camera is not None and self.scenes_per_camera > len(self.clips):
            raise ValueError(f"scenes_per_camera: {self.scenes_per_camera} scenes from distinct clips need at least "
                             f"as many clips, got {len(self.clips)} (or set distinct_clips=False)")
        if self.zipf < 0:
            raise ValueError(f"zipf: expected >= 0, got {self.zipf}")
        if not self.cut_ratio > 1:
            raise ValueError(f"cut_ratio: expected > 1, got {self.cut_ratio}")
        if not 0 < self.cut_floor < 1:
            raise ValueError(f"cut_floor: expected in (0, 1), got {self.cut_floor}")
        if self.cut_half_window < 1:
            raise ValueError(f"cut_half_window: expected >= 1, got {self.cut_half_window}")
        if self.min_scene_s < 0:
            raise ValueError(f"min_scene_s: expected >= 0, got {self.min_scene_s}")
        if not self.segment_s > 0:
            raise ValueError(f"segment_s: expected > 0, got {self.segment_s}")
        if not self.cache_mb > 0:
            raise ValueError(f"cache_mb: expected > 0, got {self.cache_mb}")

    @property
    def window_video_s(self) -> float:
        """A window's length in video seconds: ``window_s * time_scale``."""
        return self.window_s * self.time_scale


@dataclass(frozen=True)
class Scene:
    """A scene: the frames of ``clip`` with ``start <= t < end`` (clip seconds)."""

    clip: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def key(self) -> str:
        """A stable name, e.g. ``bikes@1.20-3.04``."""
        return f"{self.clip}@{self.start:.2f}-{self.end:.2f}"


@dataclass(frozen=True)
class CameraSchedule:
    """What one camera plays: ``scenes`` back to back, scene ``k`` starting at ``offsets[k]`` on the camera's
    timeline (video seconds)."""

    camera_id: int
    scenes: tuple[Scene, ...]
    offsets: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        """Length of the timeline (video seconds)."""
        return self.offsets[-1] + self.scenes[-1].duration if self.scenes else 0.0

    def scene_at(self, t: float) -> Scene:
        """The scene playing at timeline time ``t``."""
        if not 0 <= t < self.duration_s + _EPS:
            raise ValueError(f"t: expected in [0, {self.duration_s:.3f}), got {t}")
        k = int(np.searchsorted(np.asarray(self.offsets), t + _EPS, side="right")) - 1
        return self.scenes[max(0, k)]

    def scenes_at(self, timestamps: Sequence[float]) -> list[Scene]:
        """:meth:`scene_at` of each timestamp."""
        return [self.scene_at(float(t)) for t in timestamps]


class Window(NamedTuple):
    """One camera's uploads of one model-update window: frames ``uint8 [n, H, W, 3]`` and their timeline
    timestamps ``float64 [n]`` (video seconds, increasing)."""

    camera_id: int
    window_index: int
    frames: np.ndarray
    timestamps: np.ndarray


# ------------------------------------------------------------------------------------------------ clips


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of consecutive frames, in [0, 1]: float64 ``[N - 1]`` for ``uint8 [N, H, W, 3]``."""
    if len(frames) < 2:
        return np.zeros(0)
    out = np.empty(len(frames) - 1)
    for i in range(len(frames) - 1):  # frame by frame: no [N, H, W, 3] int16 temporary
        out[i] = np.abs(frames[i + 1].astype(np.int16) - frames[i]).mean() / 255.0
    return out


def is_cut(difference: float, neighbours: np.ndarray, ratio: float, floor: float) -> bool:
    """The shot-change rule: a frame difference at least ``floor`` and ``ratio`` times the median of its
    neighbours' (any difference at least ``floor`` when it has none)."""
    return difference >= floor and (neighbours.size == 0 or difference >= ratio * float(np.median(neighbours)))


class SceneCutDetector:
    """A camera's shot-change detector over the frames it samples, as a device runs it: the rule of
    :func:`detect_scenes` (:func:`is_cut`), causal (the neighbours of a difference are the ``half_window``
    differences before it). It carries its state across calls, so a cut between two windows' uploads is found
    at the first frame of the later one.

    Args:
        ratio, floor, half_window: the rule's parameters (:class:`WorkloadConfig`'s ``cut_ratio``,
            ``cut_floor``, ``cut_half_window``).
        refractory: frames after a cut in which no other cut is reported (fast motion right after a cut
            otherwise reads as a run of cuts).
    """

    def __init__(self, ratio: float = 3.0, floor: float = 0.05, half_window: int = 12, refractory: int = 0) -> None:
        if not ratio > 0 or not 0 <= floor <= 1 or half_window < 1 or refractory < 0:
            raise ValueError(f"scene-cut detector: expected ratio > 0, floor in [0, 1], half_window >= 1 and "
                             f"refractory >= 0, got {ratio}, {floor}, {half_window}, {refractory}")
        self.ratio, self.floor, self.half_window = float(ratio), float(floor), int(half_window)
        self.refractory = int(refractory)
        self._last: Optional[np.ndarray] = None
        self._diffs: list[float] = []
        self._since_cut = self.refractory  # frames since the last cut reported

    def cuts(self, frames: np.ndarray) -> list[int]:
        """Indices of the frames of ``frames`` (``uint8 [N, H, W, 3]``, the next ones the camera sampled) that
        begin a new shot."""
        out = []
        for i, frame in enumerate(frames):
            self._since_cut += 1
            if self._last is not None:
                d = float(frame_differences(np.stack([self._last, frame]))[0])
                if self._since_cut > self.refractory and is_cut(d, np.asarray(self._diffs), self.ratio, self.floor):
                    out.append(i)
                    self._since_cut = 0
                self._diffs = (self._diffs + [d])[-self.half_window:]
            self._last = frame
        return out


def detect_scenes(clip: str, frames: np.ndarray, times: np.ndarray, *, cut_ratio: float = 3.0,
                  cut_floor: float = 0.05, cut_half_window: int = 12, min_scene_s: float = 1.0,
                  segment_s: float = 2.0) -> list[Scene]:
    """Cut a decoded clip into scenes (see the module docstring for the rule); ``times`` are the frames' clip
    seconds. Returns scenes that tile ``[times[0], end)``, ``end`` one frame period after the last frame."""
    n = len(frames)
    if n == 0 or len(times) != n:
        raise ValueError(f"{clip}: expected as many times as frames (>= 1), got {len(times)} and {n}")
    period = float(np.median(np.diff(times))) if n > 1 else 1.0 / 25
    end = float(times[-1]) + period
    d = frame_differences(frames)
    cuts = []
    for t in range(len(d)):
        nb = np.concatenate([d[max(0, t - cut_half_window):t], d[t + 1:t + 1 + cut_half_window]])
        if is_cut(float(d[t]), nb, cut_ratio, cut_floor):
            cuts.append(float(times[t + 1]))
    if cuts:
        bounds = [float(times[0]), *cuts, end]
    else:
        k = max(1, int(math.floor((end - times[0]) / segment_s + _EPS)))
        bounds = [float(times[0]) + i * segment_s for i in range(k)] + [end]
        bounds = [_snap(b, times, end) for b in bounds]
    # merge scenes shorter than min_scene_s into the previous one (the first into the next)
    merged = [bounds[0]]
    for b in bounds[1:-1]:
        if b - merged[-1] >= min_scene_s - _EPS:
            merged.append(b)
    if len(merged) > 1 and end - merged[-1] < min_scene_s - _EPS:
        merged.pop()
    merged.append(end)
    return [Scene(clip, a, b) for a, b in zip(merged[:-1], merged[1:]) if b > a]


def _snap(t: float, times: np.ndarray, end: float) -> float:
    """The first frame time at or after ``t`` (``end`` if none)."""
    i = int(np.searchsorted(times, t - _EPS))
    return float(times[i]) if i < len(times) else end


class ClipLibrary:
    """Decoded clips at one geometry, cached in memory (LRU, ``cache_mb``), and their scenes.

    ``frames(clip)`` returns ``(uint8 [N, H, W, 3], float64 clip seconds [N])``; the arrays are the cache's own,
    read-only (copy before handing them to ``torch.from_numpy``). :func:`iter_windows` yields fresh arrays.
    """

    def __init__(self, size: tuple[int, int] = (128, 96), fps: Optional[float] = None, cache_mb: float = 256.0) -> None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size: expected (width, height) > 0, got {size}")
        self.size = (int(size[0]), int(size[1]))
        self.fps = fps
        self.max_bytes = int(cache_mb * 2**20)
        self._frames: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._scenes: dict[tuple[str, tuple[float, ...]], list[Scene]] = {}
        self.decoded = 0  # clips decoded so far (cache misses)

    @property
    def cached_bytes(self) -> int:
        return sum(f.nbytes for f, _ in self._frames.values())

    def frames(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        if clip in self._frames:
            self._frames.move_to_end(clip)
            return self._frames[clip]
        frames, times = self._decode(clip)
        self.decoded += 1
        while self._frames and self.cached_bytes + frames.nbytes > self.max_bytes:
            self._frames.popitem(last=False)
        self._frames[clip] = (frames, times)
        return frames, times

    def _decode(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        path = clip_path(clip)
        info = probe(path)
        w, h = self.size
        scale = max(w / info.width, h / info.height)
        sw, sh = max(w, round(info.width * scale)), max(h, round(info.height * scale))
        top, left = (sh - h) // 2, (sw - w) // 2
        n = info.frames or int(math.ceil(info.duration_s * (self.fps or info.fps or 30))) + 1
        out = np.empty((max(1, n), h, w, 3), np.uint8)
        times: list[float] = []
        for f in iter_frames(path, (sw, sh), fps=self.fps):
            if len(times) == len(out):
                out = np.concatenate([out, np.empty_like(out)])
            out[len(times)] = f.rgb[top:top + h, left:left + w]
            times.append(f.time_s)
        if not times:
            raise ValueError(f"clip {clip!r}: no frames decoded")
        frames = out[:len(times)].copy()
        frames.setflags(write=False)
        t = np.asarray(times, np.float64)
        t.setflags(write=False)
        return frames, t

    def scenes(self, clip: str, cfg: WorkloadConfig) -> list[Scene]:
        """The scenes of ``clip`` under ``cfg``'s detector settings (cached)."""
        key = (clip, (cfg.cut_ratio, cfg.cut_floor, float(cfg.cut_half_window), cfg.min_scene_s, cfg.segment_s))
        if key not in self._scenes:
            frames, times = self.frames(clip)
            self._scenes[key] = detect_scenes(clip, frames, times, cut_ratio=cfg.cut_ratio, cut_floor=cfg.cut_floor,
                                              cut_half_window=cfg.cut_half_window, min_scene_s=cfg.min_scene_s,
                                              segment_s=cfg.segment_s)
        return self._scenes[key]

    def scene_frames(self, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        """The frames of ``scene`` and their clip seconds (views into the cache: read-only)."""
        frames, times = self.frames(scene.clip)
        i0 = int(np.searchsorted(times, scene.start - _EPS))
        i1 = int(np.searchsorted(times, scene.end - _EPS))
        return frames[i0:i1], times[i0:i1]


def _library(cfg: WorkloadConfig, library: Optional[ClipLibrary]) -> ClipLibrary:
    if library is None:
        return ClipLibrary(cfg.size, cfg.fps, cfg.cache_mb)
    if library.size != tuple(cfg.size) or library.fps != cfg.fps:
        raise ValueError(f"library: decodes {library.size} at fps {library.fps}, the config wants {tuple(cfg.size)} "
                         f"at fps {cfg.fps}")
    return library


# --------------------------------------------------------------------------------------------- schedules


def build_workload(cfg: WorkloadConfig, library: Optional[ClipLibrary] = None) -> list[CameraSchedule]:
    """Every camera's schedule (see the module docstring). Deterministic for ``cfg``.

    Raises:
        ValueError: a setting out of range, or too few scenes for ``scenes_per_camera`` distinct ones.
        FileNotFoundError: a clip's package is not installed (the message says which).
    """
    cfg.validate()
    lib = _library(cfg, library)
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed) & 0xFFFFFFFF, 0x5EC1]))
    by_clip = {c: lib.scenes(c, cfg) for c in cfg.clips}
    # one popularity order per clip, shared by every camera (so popular scenes recur across cameras)
    ranked = {c: [s[i] for i in rng.permutation(len(s))] for c, s in by_clip.items()}
    per_camera = cfg.scenes_per_camera if cfg.scenes_per_camera is not None else len(cfg.clips)
    total = sum(len(s) for s in by_clip.values())
    if not cfg.distinct_clips and per_camera > total:
        raise ValueError(f"scenes_per_camera: {per_camera} distinct scenes per camera, but the clips have {total}")

    def pick(pool: list[Scene]) -> Scene:
        w = 1.0 / np.arange(1, len(pool) + 1) ** cfg.zipf
        return pool[int(rng.choice(len(pool), p=w / w.sum()))]

    out = []
    for cam in range(cfg.cameras):
        scenes: list[Scene] = []
        if cfg.distinct_clips:
            for c in [cfg.clips[i] for i in rng.permutation(len(cfg.clips))[:per_camera]]:
                scenes.append(pick(ranked[c]))
        else:
            # every scene, most popular first, clips interleaved at equal rank
            pool = sorted((s for c in cfg.clips for s in ranked[c]),
                          key=lambda s: (ranked[s.clip].index(s), cfg.clips.index(s.clip)))
            for _ in range(per_camera):
                left = [s for s in pool if s not in scenes]
                scenes.append(pick(left))
        offsets = np.concatenate([[0.0], np.cumsum([s.duration for s in scenes])[:-1]])
        out.append(CameraSchedule(cam, tuple(scenes), tuple(float(o) for o in offsets)))
    return out


def camera_timeline(schedule: CameraSchedule, library: ClipLibrary) -> tuple[np.ndarray, np.ndarray]:
    """Everything the camera plays: ``(frames uint8 [N, H, W, 3], timeline timestamps float64 [N])`` (a new
    array; :func:`iter_windows` reads one window at a time instead)."""
    fr, ts = [], []
    for scene, off in zip(schedule.scenes, schedule.offsets):
        f, t = library.scene_frames(scene)
        fr.append(f)
        ts.append(off + (t - scene.start))
    return np.concatenate(fr), np.concatenate(ts)


def _sample(times: np.ndarray, n: int, t0: float, t1: float) -> np.ndarray:
    """Indices of the frames nearest to ``n`` instants spread evenly over ``[t0, t1)`` (no frame twice)."""
    if n >= len(times):
        return np.arange(len(times))
    targets = t0 + (np.arange(n) + 0.5) * (t1 - t0) / n
    idx = np.clip(np.searchsorted(times, targets), 1, len(times) - 1)
    idx = np.where(np.abs(times[idx - 1] - targets) <= np.abs(times[idx] - targets), idx - 1, idx)
    return np.unique(idx)


def sampling_rate(cfg: WorkloadConfig, frames: np.ndarray) -> Optional[float]:
    """The upload rate (frames per paper second) for a window of ``frames``: ``sample_fps``, or with
    ``adaptive`` the rule of the module docstring; None when every frame is uploaded."""
    if cfg.sample_fps is None:
        return None
    if not cfg.adaptive:
        return cfg.sample_fps
    d = frame_differences(frames)
    level = float(d.mean()) if d.size else cfg.diff_target
    lo, hi = cfg.adaptive_range
    return float(np.clip(cfg.sample_fps * level / cfg.diff_target, cfg.sample_fps * lo, cfg.sample_fps * hi))


def num_windows(cfg: WorkloadConfig, schedules: Sequence[CameraSchedule]) -> int:
    """Windows of the longest camera timeline."""
    w = cfg.window_video_s
    return max((int(math.ceil(s.duration_s / w - _EPS)) for s in schedules), default=0)


def iter_windows(cfg: WorkloadConfig, schedules: Optional[Sequence[CameraSchedule]] = None,
                 library: Optional[ClipLibrary] = None) -> Iterator[Window]:
    """Every camera's uploads, window by window (window 0 of every camera, then window 1, ...); a camera whose
    timeline has ended yields nothing more. ``schedules`` default to :func:`build_workload` of ``cfg``."""
    cfg.validate()
    lib = _library(cfg, library)
    scheds = list(schedules) if schedules is not None else build_workload(cfg, lib)
    w = cfg.window_video_s
    for k in range(num_windows(cfg, scheds)):
        t0, t1 = k * w, (k + 1) * w
        for s in scheds:
            if t0 >= s.duration_s - _EPS:
                continue
            fr, ts = [], []
            for scene, off in zip(s.scenes, s.offsets):
                if off >= t1 - _EPS or off + scene.duration <= t0 + _EPS:
                    continue
                f, t = lib.scene_frames(scene)
                tl = off + (t - scene.start)
                keep = (tl >= t0 - _EPS) & (tl < t1 - _EPS)
                fr.append(f[keep])
                ts.append(tl[keep])
            frames, times = np.concatenate(fr), np.concatenate(ts)
            if len(times) == 0:
                continue
            rate = sampling_rate(cfg, frames)
            if rate is not None:
                covered = (min(t1, s.duration_s) - t0) / w
                n = max(1, int(round(rate * cfg.window_s * covered)))
                idx = _sample(times, n, t0, min(t1, s.duration_s))
                frames, times = frames[idx], times[idx]
            yield Window(s.camera_id, k, np.ascontiguousarray(frames), times)
