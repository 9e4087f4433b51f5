"""Video codec knobs for bandwidth: resolution, CRF and per-region quality through libx264 (OneAdapt pipeline 1).

A camera uploads each 1-s interval as its own H.264 segment (an IDR frame first, so a configuration can change at
every interval, as AWStream's and Chameleon's segments do). The knobs:

* ``resolution``: the encoded picture's scale of the source, one of :data:`SCALES` (even sizes);
* ``crf``: libx264's constant-rate factor from 45 (k = 0) to 18 (k = 1) -- the quantiser knob; CRF rather than
  a constant QP because libx264 honours region offsets only with adaptive quantisation, which constant-QP mode
  turns off;
* ``region_<i>`` (``rows x cols`` of them, 4 / 16 / 64): a quality offset of one rectangle of the picture from
  +``region_range`` (k = 0, coarser) to -``region_range`` (k = 1, finer), sent to libx264 as region-of-interest
  side data by FFmpeg's ``addroi`` filter (:class:`edgert.vision.video.QualityRegion`).

The resource is the bytes of the encoded packets. The DNN (person segmentation, :mod:`edgert.adapt.segmentation`,
by default; MTCNN faces, :mod:`edgert.adapt.detection`; any :class:`VisionDNN`) runs on the decoded pictures scaled
back to the source size; the ground truth is the DNN on the original frames.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Protocol, Union

import numpy as np
import torch
import torch.nn.functional as F

from edgert.adapt.ascent import AdaptError, IntervalRecord, Rendered, SchemeResult, summarise
from edgert.adapt.knobs import Knob, KnobSpace
from edgert.adapt.segmentation import SegmentationDNN

SCALES = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
CRF_COARSE, CRF_FINE = 45, 18
MACROBLOCK = 16


class VisionDNN(Protocol):
    """What :class:`CodecPipeline` needs of its DNN (:class:`~edgert.adapt.segmentation.SegmentationDNN`,
    :class:`~edgert.adapt.detection.FaceDNN`); ``output`` is what :meth:`predict` gives."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Output of frames ``[N, 3, H, W]`` in ``[0, 1]``, differentiable with respect to ``x``."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Output of frames ``[N, 3, H, W]`` without gradient, per frame (``[N, ...]``)."""

    def utility(self, output: torch.Tensor) -> torch.Tensor:
        """Output utility of :meth:`__call__`'s output: a scalar summed over frames."""

    def score(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        """Accuracy in ``[0, 1]`` (mean over frames) of :meth:`predict` outputs against reference outputs."""

    def interest(self, output: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Bool ``[N, height, width]``: pixels where :meth:`predict` output found the target (regions of
        interest, :func:`region_heuristic`)."""


def _even(v: float) -> int:
    return max(2, int(round(v / 2)) * 2)


def _splits(total: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` near-equal spans of ``total`` pixels, on macroblock edges where they fit."""
    cuts = [0]
    for i in range(1, parts):
        edge = total * i / parts
        aligned = int(round(edge / MACROBLOCK)) * MACROBLOCK
        cuts.append(aligned if cuts[-1] < aligned < total else int(round(edge)))
    cuts.append(total)
    return cuts


def load_video(source: Union[str, Path], *, size: Optional[tuple[int, int]] = None, max_width: Optional[int] = None,
               duration_s: Optional[float] = None, start_s: float = 0.0,
               fps: Optional[float] = None) -> tuple[np.ndarray, float]:
    """A clip's frames ``uint8 [N, H, W, 3]`` and their frame rate: the one loader of the video pipelines.

    ``source`` is a bundled clip name (:func:`edgert.data.clip_path`) or a file. The frames are decoded at ``size``
    ``(width, height)``, or at the clip's size scaled to at most ``max_width`` wide, rounded to even (H.264 in
    yuv420p needs it). ``fps`` keeps at most that many frames per second (analytics pipelines commonly run at 5-10
    fps); the rate returned is the one the frames have.

    Raises:
        edgert.vision.video.VideoError: (a ``ValueError``) naming the clip, when it is unknown, missing, does not
            decode or has no frame rate -- before anything else runs.
    """
    from edgert.data import clip_path  # noqa: PLC0415
    from edgert.vision.video import VideoError, probe, read_clip  # noqa: PLC0415

    try:
        path = clip_path(source) if isinstance(source, str) else Path(source)
    except FileNotFoundError as exc:
        raise VideoError(str(exc)) from exc
    info = probe(path)
    if not info.fps or info.fps <= 0:
        raise VideoError(f"video {str(path)!r}: no frame rate in the stream")
    if size is None:
        w, h = float(info.width), float(info.height)
        if max_width is not None and w > max_width:
            w, h = float(max_width), h * max_width / w
        size = (_even(w), _even(h))
    try:
        frames, times = read_clip(path, size, start_s=start_s, duration_s=duration_s, fps=fps)
    except OSError as exc:
        raise VideoError(f"video {str(path)!r} cannot be read: {exc}") from exc
    if fps is None or fps >= info.fps or len(times) < 2:
        return frames, float(info.fps)
    return frames, float((len(times) - 1) / (times[-1] - times[0]))


class CodecPipeline:
    """Resolution, CRF and ``rows x cols`` region-quality knobs on an H.264 uplink (see the module docstring).

    Args:
        frames: the source clip ``uint8 [N, H, W, 3]`` (H, W even).
        fps: its frame rate; an interval is ``round(interval_s * fps)`` frames.
        dnn: the DNN (default: MediaPipe selfie person segmentation, auto variant; any :class:`VisionDNN`).
        regions: ``(rows, cols)`` of region knobs, or None for none.
        region_range: the largest quality offset of a region (``addroi`` units, at most 1).
        preset: libx264 preset of every encode.
        name: the clip's name in results.
        truth_cache: a dict shared by pipelines over the same frames and DNN, so the ground truth runs once.
    """

    resource_unit = "bytes"

    def __init__(self, frames: np.ndarray, fps: float, *, dnn: Optional[VisionDNN] = None,
                 regions: Optional[tuple[int, int]] = (4, 4), region_range: float = 0.1, interval_s: float = 1.0,
                 preset: str = "veryfast", name: str = "clip",
                 truth_cache: Optional[dict[int, torch.Tensor]] = None) -> None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames: expected uint8 [N, H, W, 3] with N > 0, got {frames.dtype} "
                             f"{list(frames.shape)}")
        if frames.shape[1] % 2 or frames.shape[2] % 2:
            raise ValueError(f"frames: H.264 in yuv420p needs an even size, got {frames.shape[2]}x{frames.shape[1]}")
        if fps <= 0 or interval_s <= 0:
            raise ValueError(f"fps and interval_s must be > 0, got {fps} and {interval_s}")
        if not 0.0 < region_range <= 1.0:
            raise ValueError(f"region_range: expected in (0, 1], got {region_range}")
        self.frames, self.fps, self.preset, self.name = frames, float(fps), preset, name
        self.per_interval = max(1, int(round(interval_s * fps)))
        self.dnn: VisionDNN = dnn if dnn is not None else SegmentationDNN()
        knobs = [Knob("resolution", SCALES[0], SCALES[-1], allowed=SCALES), Knob("crf", CRF_COARSE, CRF_FINE,
                                                                                  integer=True)]
        self.grid_shape = regions
        if regions is not None:
            rows, cols = regions
            if rows < 1 or cols < 1:
                raise ValueError(f"regions: expected positive (rows, cols), got {regions}")
            knobs += [Knob(f"region_{i}", region_range, -region_range, region=i) for i in range(rows * cols)]
        self.knobs = KnobSpace(knobs)
        self._truth: dict[int, torch.Tensor] = {} if truth_cache is None else truth_cache
        self.encodes = 0

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def num_intervals(self) -> int:
        return -(-self.frames.shape[0] // self.per_interval)

    def interval_frames(self, interval: int) -> np.ndarray:
        if not 0 <= interval < self.num_intervals():
            raise IndexError(f"interval {interval} out of range [0, {self.num_intervals()})")
        return self.frames[interval * self.per_interval:(interval + 1) * self.per_interval]

    def neutral(self) -> np.ndarray:
        """Full resolution, mid CRF, every region at offset 0: where adaptation starts by default."""
        k = np.full(len(self.knobs), 0.5)
        k[self.knobs.index("resolution")] = 1.0
        return k

    def _regions(self, width: int, height: int, offsets: list[float]) -> list:
        from edgert.vision.video import QualityRegion  # noqa: PLC0415

        if self.grid_shape is None:
            return []
        rows, cols = self.grid_shape
        ys, xs = _splits(height, rows), _splits(width, cols)
        out = []
        for i, q in enumerate(offsets):
            r, c = divmod(i, cols)
            if ys[r + 1] > ys[r] and xs[c + 1] > xs[c] and q != 0.0:
                out.append(QualityRegion(xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r], float(q)))
        return out

    def render(self, interval: int, k: np.ndarray) -> Rendered:
        from edgert.vision.video import VideoError, decode, encode, frames_to_tensor, resize  # noqa: PLC0415

        values = self.knobs.values(k)
        src = self.interval_frames(interval)
        w, h = _even(self.width * values["resolution"]), _even(self.height * values["resolution"])
        small = src if (w, h) == (self.width, self.height) else resize(src, (w, h), mode="area")
        offsets = [values[f"region_{i}"] for i in range(len(self.knobs.regions()))]
        try:
            video = encode(small, self.fps, "libx264", crf=values["crf"], preset=self.preset, gop=len(src),
                           regions=self._regions(w, h, offsets))
            decoded = decode(video)
        except (VideoError, ValueError, RuntimeError) as exc:
            raise AdaptError(f"encoding {self.name} interval {interval} at {values} failed: {exc}") from exc
        self.encodes += 1
        x = frames_to_tensor(decoded)
        if (w, h) != (self.width, self.height):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", align_corners=False).clamp(0, 1)
        return Rendered(x, float(video.payload_bytes), int(x.shape[0]), {"size": (w, h)})

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.dnn(inputs)

    def utility(self, output: torch.Tensor) -> torch.Tensor:
        return self.dnn.utility(output)

    def outputs(self, rendered: Rendered) -> torch.Tensor:
        return self.dnn.predict(rendered.inputs)

    def truth(self, interval: int) -> torch.Tensor:
        from edgert.vision.video import frames_to_tensor  # noqa: PLC0415

        if interval not in self._truth:
            self._truth[interval] = self.dnn.predict(frames_to_tensor(self.interval_frames(interval)))
        return self._truth[interval]

    def score(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        return self.dnn.score(output, reference)

    def region_masks(self, height: int, width: int) -> Optional[torch.Tensor]:
        """Macroblocks (of the source-size DNN input) whose centre lies in each region, in region-knob order."""
        if self.grid_shape is None:
            return None
        rows, cols = self.grid_shape
        mb_rows, mb_cols = -(-height // MACROBLOCK), -(-width // MACROBLOCK)
        cy = (torch.arange(mb_rows) * MACROBLOCK + MACROBLOCK / 2).clamp(max=height - 0.5) / height
        cx = (torch.arange(mb_cols) * MACROBLOCK + MACROBLOCK / 2).clamp(max=width - 0.5) / width
        ry, rx = (cy * rows).long().clamp(max=rows - 1), (cx * cols).long().clamp(max=cols - 1)
        region_of = ry[:, None] * cols + rx[None, :]
        return torch.stack([region_of == i for i in range(rows * cols)])

    def grid(self) -> list[np.ndarray]:
        """The uniform sweep: every resolution x 7 CRF values, regions neutral (offset 0)."""
        out = []
        for scale in SCALES:
            for crf in (18, 23, 27, 31, 35, 40, 45):
                k = np.full(len(self.knobs), 0.5)
                k[self.knobs.index("resolution")] = self.knobs.knobs[0].normalise(scale)
                k[self.knobs.index("crf")] = self.knobs.knobs[1].normalise(crf)
                out.append(k)
        return out


def region_heuristic(pipeline: CodecPipeline, crf: int, *, min_fraction: float = 0.01,
                     resolution: float = 1.0) -> SchemeResult:
    """DDS/AccMPEG-style region quality: the regions where the last interval's inference (on the video the server
    received) found the class get the finest offset, the others the coarsest; resolution and CRF fixed.

    The first interval, with no inference yet, codes every region at offset 0. ``min_fraction`` is the share of a
    region's pixels of interest (the DNN's :meth:`VisionDNN.interest`: ``person`` pixels, pixels in face boxes)
    that makes it a region of interest.
    """
    if pipeline.grid_shape is None:
        raise ValueError("region_heuristic needs a pipeline with region knobs")
    space = pipeline.knobs
    k = pipeline.neutral()
    k[space.index("crf")] = space.knobs[space.index("crf")].normalise(crf)
    k[space.index("resolution")] = space.knobs[space.index("resolution")].normalise(resolution)
    regions = space.regions()
    masks = pipeline.region_masks(pipeline.height, pipeline.width)
    assert masks is not None
    trace = []
    for t in range(pipeline.num_intervals()):
        t0 = time.perf_counter()
        rendered = pipeline.render(t, k)
        out = pipeline.outputs(rendered)
        trace.append(IntervalRecord(t, space.values(k), pipeline.score(out, pipeline.truth(t)),
                                    rendered.resource, rendered.dnn_frames, seconds=time.perf_counter() - t0))
        person = pipeline.dnn.interest(out, pipeline.height, pipeline.width).float().mean(0)
        blocks = block_means(person, MACROBLOCK)
        for j, i in enumerate(regions):
            share = float(blocks[masks[j]].mean()) if bool(masks[j].any()) else 0.0
            k[i] = 1.0 if share >= min_fraction else 0.0
    return summarise("region-heuristic", trace, {"crf": crf, "min_fraction": min_fraction,
                                                 "resolution": resolution})


def block_means(plane: torch.Tensor, block: int) -> torch.Tensor:
    """Mean of a ``[H, W]`` plane over each ``block x block`` macroblock (edge blocks over their valid pixels)."""
    from edgert.ops import block_average  # noqa: PLC0415

    return block_average(plane[None, None].float().contiguous(), block)[0]
