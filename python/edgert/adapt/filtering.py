"""Reducto-style frame filtering (Li et al., SIGCOMM 2020) as a OneAdapt pipeline, and Reducto's own controller.

A camera-side filter compares each frame with the last frame it *sent* to the DNN, on two cheap low-level
features, and sends the frame only when the change is large enough; a frame it does not send reuses the DNN
result of the last sent frame. The knobs are the two feature thresholds; the resource is GPU compute.

Definitions (all on the frame converted to grayscale with OpenCV's BT.601 weights and area-downscaled so that its
longer side is at most ``feature_side`` = 160 px; ``T`` = ``intensity`` = 21 of 255, Reducto's value):

* **pixel feature** ``p(i, r)``: the fraction of pixels whose absolute grayscale difference between frame ``i``
  and reference frame ``r`` exceeds ``T`` (Reducto's ``PixelDiff``).
* **area feature** ``a(i, r)``: both frames blurred with a 5x5 Gaussian, the absolute difference thresholded at
  ``T``, the mask dilated once with a 3x3 square, and the area of its largest 8-connected component as a fraction
  of the frame (Reducto's ``AreaDiff``: the largest changed blob).
* **knobs** ``pixel`` and ``area``, normalised sensitivities ``k`` in ``[0, 1]`` (larger ``k`` = lower threshold
  = more frames sent, as OneAdapt's knobs are oriented): threshold
  ``t(k) = max_threshold * (exp(curve * (1 - k)) - 1) / (exp(curve) - 1)`` (``max_threshold`` 0.5, ``curve`` 5
  by default: the features are heavy-tailed, so the map is close to logarithmic -- 0.002 at ``k = 0.9``, 0.022
  at 0.6, 0.18 at 0.2 -- yet its slope stays non-zero at ``k = 1``, where OneAdapt starts and probes).
  ``k = 1`` is threshold 0.
* **send rule**: the first frame of every interval is always sent; a later frame ``i`` is sent when
  ``p(i, r) >= t_pixel`` **and** ``a(i, r) >= t_area``, ``r`` the last frame sent before it: enough pixels
  changed, and enough of the change is one coherent blob. A knob at 1 (threshold 0) therefore switches its
  feature off, so ``k = (1, 1)`` sends every frame and ``(1, k)`` / ``(k, 1)`` are Reducto's single-feature
  filters. (With **or**, either knob at 1 would send every frame whatever the other, and OneAdapt, which starts
  at ``(1, 1)`` and probes one knob at a time, would see no gradient at all.) The filter starts afresh at each
  interval (Reducto filters each segment independently, its first frame sent), which makes
  :meth:`FilteringPipeline.render` a pure function of ``(interval, k)`` and costs at most one frame per interval
  over a filter state carried across intervals.
* **resource**: GPU compute = frames sent x per-frame cost. The cost is 1 by default, so the resource is counted
  in DNN frames (the primary unit); ``frame_cost="gflops"`` charges the DNN's FLOPs per frame instead (measured
  once with :class:`torch.utils.flop_counter.FlopCounterMode` at the clip's size).

The DNN is :class:`edgert.adapt.segmentation.SegmentationDNN`; the ground truth is the DNN on every frame, and a
skipped frame's output is exactly the output of the frame it reuses, so the DNN's output of every original frame
is computed at most once per pipeline and cached (``outputs`` and ``truth`` only look frames up).

OneAdapt's InputGrad for a threshold knob is ``(inputs(k + dk) - inputs(k)) / dk``: the frames that become sent
at ``k + dk`` swap their stale input (the last sent frame) for their own, every other frame is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from edgert.adapt.ascent import AdaptError, IntervalRecord, Rendered, SchemeResult, summarise
from edgert.adapt.knobs import Knob, KnobSpace, KnobVector

#: knob order of :class:`FilteringPipeline`
FEATURES = ("pixel", "area")

@dataclass(frozen=True)
class FilterParams:
    """The filter's fixed settings (see the module docstring for what each one means).

    Attributes:
        intensity: grayscale difference (of 255) above which a pixel counts as changed.
        feature_side: longer side, in pixels, of the downscaled grayscale frames the features use.
        blur: side of the Gaussian kernel of the area feature (odd).
        max_threshold: the threshold at ``k = 0`` (both features are fractions of the frame, in ``[0, 1]``).
        curve: bend of the knob-to-threshold map ``t = max_threshold (e^(curve (1 - k)) - 1) / (e^curve - 1)``
            (towards 0: linear; larger: closer to logarithmic).
    """

    intensity: int = 21
    feature_side: int = 160
    blur: int = 5
    max_threshold: float = 0.5
    curve: float = 5.0

    def validate(self) -> None:
        if not 0 <= self.intensity < 255:
            raise ValueError(f"intensity: expected in [0, 255), got {self.intensity}")
        if self.feature_side < 8:
            raise ValueError(f"feature_side: expected >= 8, got {self.feature_side}")
        if self.blur < 1 or self.blur % 2 == 0:
            raise ValueError(f"blur: expected an odd size >= 1, got {self.blur}")
        if not 0.0 < self.max_threshold <= 1.0:
            raise ValueError(f"max_threshold: expected in (0, 1], got {self.max_threshold}")
        if not 0.0 < self.curve <= 50.0:
            raise ValueError(f"curve: expected in (0, 50], got {self.curve}")

    def threshold(self, k: float) -> float:
        """The feature threshold at normalised knob ``k`` in ``[0, 1]`` (``max_threshold`` at 0, 0 at 1)."""
        return self.max_threshold * math.expm1(self.curve * (1.0 - k)) / math.expm1(self.curve)


def _cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415 - optional extra, imported on first use
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("edgert.adapt.filtering needs OpenCV: pip install 'edgert[video]'") from exc
    return cv2


def feature_frames(frames: np.ndarray, params: FilterParams = FilterParams()) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``uint8 [N, H, W, 3]`` -> the downscaled grayscale frames of the pixel and area features.

    Returns ``(gray, blurred)``, both ``uint8 [N, h, w]`` with ``max(h, w) <= params.feature_side``.
    """
    cv2 = _cv2()
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [N, H, W, 3], got {arr.dtype} {list(arr.shape)}")
    n, h, w, _ = arr.shape
    scale = min(1.0, params.feature_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = np.empty((n, size[1], size[0]), np.uint8)
    blurred = np.empty_like(gray)
    for i in range(n):
        g = cv2.cvtColor(arr[i], cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        gray[i] = g
        blurred[i] = cv2.GaussianBlur(g, (params.blur, params.blur), 0)
    return gray, blurred


def pixel_feature(gray: np.ndarray, ref: np.ndarray, intensity: int = FilterParams.intensity) -> float:
    """Fraction of pixels whose grayscale difference exceeds ``intensity`` (``uint8 [h, w]`` frames)."""
    diff = _cv2().absdiff(gray, ref)
    return float(np.count_nonzero(diff > intensity)) / diff.size


def area_feature(blurred: np.ndarray, ref: np.ndarray, intensity: int = FilterParams.intensity) -> float:
    """Area fraction of the largest changed blob: difference of blurred frames > ``intensity``, 3x3 dilation,
    largest 8-connected component."""
    cv2 = _cv2()
    mask = (cv2.absdiff(blurred, ref) > intensity).astype(np.uint8)
    if not mask.any():
        return 0.0
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return float(stats[1:count, cv2.CC_STAT_AREA].max()) / mask.size


def dnn_gflops_per_frame(dnn: Any, height: int, width: int) -> float:
    """GFLOPs of one forward of ``dnn`` on one ``[1, 3, height, width]`` frame (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        dnn(torch.zeros(1, 3, height, width))
    return float(counter.get_total_flops()) / 1e9


class FilteringPipeline:
    """Frame filtering with the pixel and area thresholds as knobs (see the module docstring).

    Args:
        source: a clip name of :func:`edgert.data.clip_path` (``carphone``, ``bikes``, ``iscc-demo``) or a path.
        dnn: the segmentation model (default: a new :class:`~edgert.adapt.segmentation.SegmentationDNN`).
        interval_s: adaptation interval in seconds of video.
        start_s, duration_s: the part of the clip used (None: to its end).
        size: ``(width, height)`` to decode at, or None for the clip's own size (rounded to even, as
            :func:`edgert.adapt.codec.load_video` decodes every video pipeline's clips).
        params: the filter's fixed settings.
        frame_cost: ``"frames"`` (resource = frames sent) or ``"gflops"`` (frames sent x the DNN's GFLOPs per
            frame).

    The decoded clip is held in memory (``uint8``), and the DNN's output of every frame it has run on is cached
    (``float32 [H, W]``, 0.7 MB per 640x272 frame). An interval is ``round(interval_s * fps)`` frames.

    Raises:
        edgert.vision.video.VideoError: the clip cannot be opened or decoded (raised here, before anything runs).
        ValueError: bad settings.
    """

    name = "filtering"

    def __init__(self, source: Union[str, Any], dnn: Optional[Any] = None, *, interval_s: float = 1.0,
                 start_s: float = 0.0, duration_s: Optional[float] = None, size: Optional[tuple[int, int]] = None,
                 params: FilterParams = FilterParams(), frame_cost: str = "frames") -> None:
        from edgert.adapt.codec import load_video  # noqa: PLC0415

        if not interval_s > 0.0:
            raise ValueError(f"interval_s: expected > 0, got {interval_s}")
        if frame_cost not in ("frames", "gflops"):
            raise ValueError(f"frame_cost: expected 'frames' or 'gflops', got {frame_cost!r}")
        params.validate()
        self.params = params
        self.source = str(source)
        self.frames, self.fps = load_video(source, size=size, start_s=start_s, duration_s=duration_s)
        self.interval_frames = max(1, round(interval_s * self.fps))
        self.interval_s = float(interval_s)
        self._gray, self._blurred = feature_frames(self.frames, params)
        if dnn is None:
            from edgert.adapt.segmentation import SegmentationDNN  # noqa: PLC0415

            dnn = SegmentationDNN()
        self.dnn = dnn
        height, width = self.frames.shape[1:3]
        if frame_cost == "gflops":
            self.frame_cost = dnn_gflops_per_frame(dnn, height, width)
            self.resource_unit = "GFLOP"
        else:
            self.frame_cost = 1.0
            self.resource_unit = "DNN frames"
        self.knobs = KnobSpace([Knob(name, 0.0, 1.0) for name in FEATURES])
        self._features: dict[tuple[int, int], tuple[float, float]] = {}
        self._outputs: dict[int, torch.Tensor] = {}
        self.dnn_calls = 0  # frames the DNN has actually run on (cache misses)

    # -- the clip -------------------------------------------------------------------------------------------------

    def num_intervals(self) -> int:
        """Intervals of ``interval_s`` in the clip (the last one may be shorter)."""
        return math.ceil(len(self.frames) / self.interval_frames)

    def interval_range(self, interval: int) -> range:
        """Absolute frame indices of an interval."""
        if not 0 <= interval < self.num_intervals():
            raise AdaptError(f"{self.name}: interval {interval} out of range [0, {self.num_intervals()})")
        start = interval * self.interval_frames
        return range(start, min(len(self.frames), start + self.interval_frames))

    # -- the filter -----------------------------------------------------------------------------------------------

    def thresholds(self, k: KnobVector) -> tuple[float, float]:
        """``(t_pixel, t_area)`` at knob vector ``k`` (:meth:`FilterParams.threshold`)."""
        arr = self.knobs.check(list(map(float, k)))
        return self.params.threshold(float(arr[0])), self.params.threshold(float(arr[1]))

    def features(self, frame: int, ref: int) -> tuple[float, float]:
        """``(pixel, area)`` features of absolute frame ``frame`` against reference frame ``ref`` (cached)."""
        key = (frame, ref)
        hit = self._features.get(key)
        if hit is None:
            p = self.params
            hit = (pixel_feature(self._gray[frame], self._gray[ref], p.intensity),
                   area_feature(self._blurred[frame], self._blurred[ref], p.intensity))
            self._features[key] = hit
        return hit

    def filter(self, interval: int, k: KnobVector) -> tuple[list[int], list[int]]:
        """The filter's decisions: ``(sent, source)``, absolute frame indices; ``source[j]`` is the frame whose
        DNN result the interval's ``j``-th frame uses (itself when sent)."""
        frames = self.interval_range(interval)
        t_pixel, t_area = self.thresholds(k)
        ref = frames.start
        sent, source = [ref], [ref]
        for i in frames[1:]:
            pixel, area = self.features(i, ref)
            if pixel >= t_pixel and area >= t_area:
                ref = i
                sent.append(i)
            source.append(ref)
        return sent, source

    # -- the Pipeline protocol ------------------------------------------------------------------------------------

    def render(self, interval: int, k: np.ndarray) -> Rendered:
        """Filter the interval: ``inputs`` ``[N, 3, H, W]`` in ``[0, 1]`` hold, for every frame, the frame whose
        result it uses; ``dnn_frames`` = frames sent; ``info``: ``sent``, ``source``, ``thresholds``."""
        from edgert.vision.video import frames_to_tensor  # noqa: PLC0415

        try:
            sent, source = self.filter(interval, k)
        except (ValueError, IndexError) as exc:  # a bad knob vector
            raise AdaptError(f"{self.name}: interval {interval}: {exc}") from exc
        inputs = frames_to_tensor(self.frames[source])
        return Rendered(inputs, len(sent) * self.frame_cost, len(sent),
                        {"sent": sent, "source": source, "thresholds": self.thresholds(k)})

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The segmentation DNN: person probability ``[N, H, W]`` (differentiable in ``inputs``)."""
        return self.dnn(inputs)

    def utility(self, output: torch.Tensor) -> torch.Tensor:
        """The DNN's mask-confidence utility."""
        return self.dnn.utility(output)

    def frame_outputs(self, indices: Sequence[int]) -> torch.Tensor:
        """The DNN's outputs ``[len(indices), H, W]`` on original frames, each frame run at most once."""
        from edgert.vision.video import frames_to_tensor  # noqa: PLC0415

        missing = sorted({int(i) for i in indices} - self._outputs.keys())
        if missing:
            predicted = self.dnn.predict(frames_to_tensor(self.frames[missing]))
            self.dnn_calls += len(missing)
            for i, out in zip(missing, predicted):
                self._outputs[i] = out
        if not indices:
            return torch.zeros((0, *self.frames.shape[1:3]))
        return torch.stack([self._outputs[int(i)] for i in indices])

    def outputs(self, rendered: Rendered) -> torch.Tensor:
        """Every frame's output: the DNN on the distinct sent frames, reused by the frames that skipped."""
        source = rendered.info.get("source")
        if source is None:
            raise AdaptError(f"{self.name}: outputs() needs a Rendered made by this pipeline (info['source'])")
        return self.frame_outputs(source)

    def truth(self, interval: int) -> torch.Tensor:
        """The DNN on every original frame of the interval."""
        return self.frame_outputs(list(self.interval_range(interval)))

    def score(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        """Mean per-frame two-class mIoU."""
        return float(self.dnn.score(output, reference))

    def region_masks(self, height: int, width: int) -> Optional[torch.Tensor]:
        """None: the pipeline has no region knobs."""
        return None

    def grid(self, points: int = 6) -> list[np.ndarray]:
        """Knob vectors of a uniform ``points x points`` sweep of ``[0, 1]^2`` (``pixel`` varies fastest)."""
        if points < 2:
            raise ValueError(f"points: expected >= 2, got {points}")
        axis = np.linspace(0.0, 1.0, points)
        return [np.array([p, a]) for a in axis for p in axis]


# -- baselines ------------------------------------------------------------------------------------------------------


@dataclass
class ReductoProfile:
    """What Reducto's offline profiling learned (reusable across accuracy targets).

    Attributes:
        intervals: the profiled intervals.
        levels: the knob levels tried (normalised sensitivity of the chosen feature).
        feature: the knob index Reducto filters on (the other stays at 1, i.e. switched off).
        accuracy: ``[len(intervals), len(levels)]`` accuracy of every level on every profiled interval, for the
            chosen feature.
        frames: ``[len(intervals), len(levels)]`` frames sent.
        descriptors: ``[len(intervals), bins]`` each interval's feature histogram.
        edges: histogram bin edges of the descriptors.
        extra_dnn_frames: frames the DNN ran on only to profile (every frame of the profiled intervals).
        all_accuracy, all_frames: the same tables for every feature, ``[features, intervals, levels]``.
    """

    intervals: list[int]
    levels: np.ndarray
    feature: int
    accuracy: np.ndarray
    frames: np.ndarray
    descriptors: np.ndarray
    edges: np.ndarray
    extra_dnn_frames: int
    all_accuracy: np.ndarray
    all_frames: np.ndarray


def _descriptor(pipeline: FilteringPipeline, interval: int, feature: int, edges: np.ndarray) -> np.ndarray:
    """Normalised histogram of an interval's consecutive-frame feature values (Reducto's segment descriptor)."""
    frames = pipeline.interval_range(interval)
    values = [pipeline.features(i, i - 1)[feature] for i in frames[1:]]
    if not values:
        return np.zeros(len(edges) - 1)
    hist, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return hist / max(1, len(values))


def reducto_profile(pipeline: FilteringPipeline, profile_intervals: Optional[Sequence[int]] = None,
                    levels: int = 11, bins: int = 8) -> ReductoProfile:
    """Reducto's profiling: every level of each feature's threshold on the profiled intervals (default: the first
    30% of the clip, at least one interval), then the feature that needs the fewest frames at high accuracy.

    Profiling needs the DNN on every frame of the profiled intervals (its ground truth); the levels' accuracies
    are then read from those outputs without further DNN work.
    """
    n = pipeline.num_intervals()
    todo = (list(range(max(1, round(0.3 * n)))) if profile_intervals is None else sorted(set(profile_intervals)))
    if not todo or not all(0 <= t < n for t in todo):
        raise ValueError(f"profile_intervals: expected a non-empty subset of [0, {n}), got {profile_intervals}")
    if levels < 2 or bins < 1:
        raise ValueError(f"levels, bins: expected >= 2 and >= 1, got {levels}, {bins}")
    grid = np.linspace(0.0, 1.0, levels)
    acc = np.zeros((len(FEATURES), len(todo), levels))
    frames = np.zeros_like(acc)
    extra = 0
    for j, t in enumerate(todo):
        truth = pipeline.truth(t)
        extra += truth.shape[0]
        for f in range(len(FEATURES)):
            for m, level in enumerate(grid):
                k = np.ones(len(FEATURES))
                k[f] = level
                rendered = pipeline.render(t, k)
                acc[f, j, m] = pipeline.score(pipeline.outputs(rendered), truth)
                frames[f, j, m] = rendered.dnn_frames
    # the feature that keeps >= 90% of the way from the fewest-frames level's accuracy to 1 with fewest frames
    # (Reducto picks one feature per video by how well it filters at the accuracy it must keep)
    cost = []
    for f in range(len(FEATURES)):
        mean_acc, mean_frames = acc[f].mean(axis=0), frames[f].mean(axis=0)
        goal = mean_acc[0] + 0.9 * (1.0 - mean_acc[0])
        ok = np.nonzero(mean_acc >= goal - 1e-12)[0]
        cost.append(float(mean_frames[ok[0]]) if ok.size else float(mean_frames[-1]))
    feature = int(np.argmin(cost))
    edges = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, bins)])
    descriptors = np.stack([_descriptor(pipeline, t, feature, edges) for t in todo])
    return ReductoProfile(todo, grid, feature, acc[feature], frames[feature], descriptors, edges, extra, acc,
                          frames)


def _kmeans(points: np.ndarray, clusters: int, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (farthest-point initialisation): ``(centroids [c, d], labels [n])``."""
    clusters = max(1, min(clusters, len(points)))
    centroids = [points[0]]
    for _ in range(1, clusters):
        dist = np.min([np.sum((points - c) ** 2, axis=1) for c in centroids], axis=0)
        centroids.append(points[int(np.argmax(dist))])
    cent = np.stack(centroids)
    labels = np.zeros(len(points), dtype=int)
    for _ in range(iterations):
        labels = np.argmin(((points[:, None, :] - cent[None]) ** 2).sum(-1), axis=1)
        new = np.stack([points[labels == c].mean(axis=0) if np.any(labels == c) else cent[c]
                        for c in range(len(cent))])
        if np.allclose(new, cent):
            break
        cent = new
    return cent, labels


def reducto(pipeline: FilteringPipeline, target_accuracy: float, *, profile: Optional[ReductoProfile] = None,
            profile_intervals: Optional[Sequence[int]] = None, clusters: int = 3,
            intervals: Optional[Sequence[int]] = None) -> SchemeResult:
    """Reducto: per interval, the threshold its feature-distribution cluster needs to meet ``target_accuracy``.

    Profiling (:func:`reducto_profile`, or ``profile`` to reuse one across targets) gives every profiled interval's
    accuracy at every threshold level; the intervals are clustered (k-means) by their histograms of
    consecutive-frame feature values, and each cluster gets the lowest sensitivity whose mean accuracy over its
    intervals meets the target (the highest if none does). Online, each interval's histogram (computed by the
    camera from its own frames, no DNN) picks the nearest cluster and its threshold; the other feature's knob stays
    at 1 (off). Every interval is run, the profiled ones included (profiling stands for a training clip); the DNN
    frames profiling needed are counted in ``extra_dnn_frames``.
    """
    if not 0.0 <= target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy: expected in [0, 1], got {target_accuracy}")
    prof = profile if profile is not None else reducto_profile(pipeline, profile_intervals)
    centroids, labels = _kmeans(prof.descriptors, clusters)
    table = np.ones(len(centroids))
    for c in range(len(centroids)):
        mean_acc = prof.accuracy[labels == c].mean(axis=0)
        ok = np.nonzero(mean_acc >= target_accuracy - 1e-12)[0]
        table[c] = prof.levels[ok[0]] if ok.size else prof.levels[-1]
    todo = list(range(pipeline.num_intervals())) if intervals is None else list(intervals)
    trace = []
    for t in todo:
        d = _descriptor(pipeline, t, prof.feature, prof.edges)
        cluster = int(np.argmin(((centroids - d) ** 2).sum(axis=1)))
        k = np.ones(len(FEATURES))
        k[prof.feature] = table[cluster]
        rendered = pipeline.render(t, k)
        accuracy = pipeline.score(pipeline.outputs(rendered), pipeline.truth(t))
        trace.append(IntervalRecord(t, pipeline.knobs.values(k.tolist()), accuracy, float(rendered.resource),
                                    rendered.dnn_frames, note=f"cluster {cluster}"))
    return summarise("reducto", trace,
                     {"target_accuracy": target_accuracy, "feature": FEATURES[prof.feature],
                      "clusters": len(centroids), "table": table.tolist(),
                      "profile_intervals": prof.intervals}, extra_dnn_frames=prof.extra_dnn_frames)
