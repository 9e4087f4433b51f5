"""Remote inference + optical-flow tracking: the ``remote-flow`` baseline of the AMS evaluation.

The device has no model of its own. It samples frames at a fixed rate (paper: 1 fps), uploads each one at
once as a one-frame H.264 SAMPLES upload (the AMS uplink, same encoder and bitrate per stream second), the
server labels it with the teacher and sends the label map back in a LABELS frame (``AMSFrame.LABELS``,
:mod:`edgert.ams.protocol`: seq u32, frame time f64, then the ``uint8 [H, W]`` map as a PNG -- deflate of
the filtered rows, lossless; label maps are piecewise constant, so this is a few hundred bytes to a few
KB) followed by the usual CONTROL answer. Between label arrivals the device carries the newest label map
forward to every frame with dense optical flow (OpenCV Farneback on grey frames, then ``cv2.remap`` with
nearest-neighbour sampling of the labels): when labels for a sampled frame arrive they are warped from
*that* frame to the current one, afterwards from the previous frame to the current one.

Round-trip delay is modelled like the other schemes' update lag (:class:`~edgert.ams.config.EdgeConfig`):
in lockstep the labels of the frame sampled at ``t`` are used from stream time ``t + apply_lag_s`` on (the
edge waits there for them if the shared CPU is slow); live, they are used when they arrive.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from edgert.ams.edge import AMSEdge, FrameCallback
from edgert.ams.protocol import AMSFrame, decode_labels, opencv
from edgert.transport import ProtocolError


@dataclass
class FlowConfig:
    """Farneback dense optical flow settings (OpenCV's commonly used values).

    Attributes:
        pyr_scale: image scale between pyramid levels (< 1).
        levels: pyramid levels.
        winsize: averaging window (pixels).
        iterations: iterations per pyramid level.
        poly_n: pixel neighbourhood of the polynomial expansion (5 or 7).
        poly_sigma: Gaussian sigma of the polynomial expansion (1.1 for poly_n 5, 1.5 for 7).
    """

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2

    def validate(self) -> None:
        if not 0 < self.pyr_scale < 1:
            raise ValueError(f"pyr_scale: expected in (0, 1), got {self.pyr_scale}")
        if self.levels < 1 or self.iterations < 1 or self.winsize < 3:
            raise ValueError(f"levels, iterations must be >= 1 and winsize >= 3, got {self.levels}, "
                             f"{self.iterations}, {self.winsize}")
        if self.poly_n not in (5, 7) or not self.poly_sigma > 0:
            raise ValueError(f"poly_n must be 5 or 7 and poly_sigma > 0, got {self.poly_n}, {self.poly_sigma}")


def grey(frame: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB -> ``uint8 [H, W]`` grey (what Farneback tracks)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    return opencv().cvtColor(np.ascontiguousarray(frame), opencv().COLOR_RGB2GRAY)


def backward_flow(src_grey: np.ndarray, dst_grey: np.ndarray, config: Optional[FlowConfig] = None) -> np.ndarray:
    """Dense flow ``float32 [H, W, 2]`` such that ``dst[y, x] ~ src[y + f[..., 1], x + f[..., 0]]``."""
    cfg = config or FlowConfig()
    if src_grey.shape != dst_grey.shape or src_grey.ndim != 2:
        raise ValueError(f"flow: expected two grey frames of one size, got {list(src_grey.shape)} and "
                         f"{list(dst_grey.shape)}")
    return opencv().calcOpticalFlowFarneback(dst_grey, src_grey, None, cfg.pyr_scale, cfg.levels, cfg.winsize,
                                           cfg.iterations, cfg.poly_n, cfg.poly_sigma, 0)


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Moves a label map of the source frame onto the destination frame (``flow`` from :func:`backward_flow`),
    nearest-neighbour so no label is invented; pixels whose source falls outside take the nearest edge label."""
    cv2 = opencv()
    h, w = labels.shape
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow: expected [{h}, {w}, 2] for labels {list(labels.shape)}, got {list(flow.shape)}")
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(np.ascontiguousarray(labels, dtype=np.uint8), xs + flow[..., 0], ys + flow[..., 1],
                     interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


class LabelTracker:
    """Carries the newest label map forward frame by frame (the device side of ``remote-flow``).

    :meth:`step` is called with every frame and returns its labels; :meth:`set_labels` installs a label
    map that belongs to an earlier frame (warped to the current frame at the next :meth:`step`). Before
    the first labels every pixel is class 0.
    """

    def __init__(self, config: Optional[FlowConfig] = None) -> None:
        self.config = config or FlowConfig()
        self.config.validate()
        self._prev: Optional[np.ndarray] = None  # grey of the previous frame
        self._labels: Optional[np.ndarray] = None  # labels of the previous frame
        self._fresh: Optional[tuple[np.ndarray, np.ndarray]] = None  # (labels, grey of their frame)

    def set_labels(self, labels: np.ndarray, frame_grey: np.ndarray) -> None:
        """Installs ``labels`` of the frame whose grey image is ``frame_grey``."""
        if labels.shape != frame_grey.shape:
            raise ValueError(f"labels {list(labels.shape)} do not match their frame {list(frame_grey.shape)}")
        self._fresh = (labels.astype(np.uint8), frame_grey)

    def step(self, frame_grey: np.ndarray) -> np.ndarray:
        """Labels ``uint8 [H, W]`` of this frame."""
        if self._fresh is not None:
            labels, src = self._fresh
            self._fresh = None
        elif self._labels is not None and self._prev is not None:
            labels, src = self._labels, self._prev
        else:
            labels, src = np.zeros(frame_grey.shape, np.uint8), None
        if src is not None and src is not frame_grey and not np.array_equal(src, frame_grey):
            labels = warp_labels(labels, backward_flow(src, frame_grey, self.config))
        self._prev, self._labels = frame_grey, labels
        return labels


class RemoteFlowLoop:
    """The ``remote-flow`` device loop: uploads each sampled frame, tracks the server's labels with optical flow.

    Plug it into :class:`~edgert.ams.edge.AMSEdge` (``loop=RemoteFlowLoop(flow)``); the edge's student is never
    run. ``latency_ms`` in the :class:`~edgert.ams.edge.EdgeReport` is the per-frame tracking step (flow +
    remap), ``versions`` the seq of the label map in use per frame (0: none yet) and ``labels_bytes`` the
    LABELS frames received.
    """

    def __init__(self, flow: Optional[FlowConfig] = None) -> None:
        self.flow_config = flow or FlowConfig()
        self.flow_config.validate()
        self._labels_lock = threading.Lock()
        self._received: dict[int, np.ndarray] = {}
        self._shape: Optional[tuple[int, int]] = None
        self._edge: Optional[AMSEdge] = None
        self.labels_seq = 0

    def attach(self, edge: AMSEdge) -> None:
        """Registers the LABELS frame with the edge's client."""
        self._edge = edge
        edge.client.register_frame(AMSFrame.LABELS, self._on_labels)

    def _on_labels(self, body: bytes) -> None:
        if self._shape is None or self._edge is None:
            raise ProtocolError("LABELS before the device uploaded a frame")
        seq, _, labels = decode_labels(body, self._shape)
        with self._labels_lock:
            self._received[seq] = labels
            self._edge.report.labels_bytes += len(body) + 6

    def run(self, edge: AMSEdge, t_first: float, first: np.ndarray,
            frames: Iterator[tuple[int, float, np.ndarray]], on_frame: Optional[FrameCallback]) -> None:
        """Runs until ``frames`` ends (see :class:`~edgert.ams.edge.EdgeLoop`)."""
        cfg = edge.config
        self._shape = first.shape[:2]
        tracker = LabelTracker(self.flow_config)
        sampled: dict[int, np.ndarray] = {}  # seq -> grey of the uploaded frame, until its labels are in
        pending: deque[tuple[int, float]] = deque()  # (seq, stream time its labels take effect)
        next_sample = t_first
        seq = 0
        for index, t, frame in frames:
            g = grey(frame)
            if cfg.lockstep:
                while pending and t >= pending[0][1]:
                    s, _ = pending.popleft()
                    if edge.client.connected.is_set() and edge.wait_control(s, cfg.lockstep_timeout_s) is None:
                        edge.report.lockstep_timeouts += 1
                    self._take_labels(tracker, sampled, up_to=s)
            else:
                self._take_labels(tracker, sampled, up_to=None)
            rate, _ = edge.settings()
            if t + 1e-9 >= next_sample:
                seq += 1
                sampled[seq] = g
                if edge.upload(seq, t, [t], [frame]):
                    pending.append((seq, t + cfg.apply_lag_s))
                else:
                    sampled.pop(seq)
                next_sample = max(next_sample + 1.0 / rate, t)
            edge.record_frame(index, t, lambda: tracker.step(g), self.labels_seq, on_frame)

    def _take_labels(self, tracker: LabelTracker, sampled: dict[int, np.ndarray], up_to: Optional[int]) -> None:
        """Installs the newest received label map with seq <= ``up_to`` (None: any); drops older frames."""
        with self._labels_lock:
            ready = {s: y for s, y in self._received.items() if up_to is None or s <= up_to}
            for s in ready:
                del self._received[s]
        for s in sorted(ready):
            src = sampled.pop(s, None)
            if src is not None and s > self.labels_seq:
                tracker.set_labels(ready[s], src)
                self.labels_seq = s
        for s in [s for s in sampled if s <= self.labels_seq]:
            del sampled[s]


__all__ = ["FlowConfig", "LabelTracker", "RemoteFlowLoop", "backward_flow", "grey", "warp_labels"]
