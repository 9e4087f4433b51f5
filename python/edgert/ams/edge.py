"""The AMS device (:class:`AMSEdge`).

Runs the student on every frame, samples frames at the server's rate, buffers one ``T_update`` of them,
encodes them with libx264 at the uplink bitrate and uploads; update packets are verified and applied by the
C++ slot (:class:`edgert._edgert.Slot`, through :class:`edgert.transport.EdgeClient`), loaded into a shadow
copy of the model on the network thread and swapped in between two frames, so inference never waits for an
update. When the server is down or sends a bad packet the edge keeps its last good model and reconnects with
backoff.

What the device does per frame is its *loop* (:class:`EdgeLoop`): :class:`ModelStreamingLoop` is AMS's (and
every model-streaming baseline's); the remote-inference baseline plugs in
:class:`edgert.ams.flow.RemoteFlowLoop` instead.
"""
from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Union

import numpy as np
import torch
from torch import nn

from edgert.ams.config import EdgeConfig
from edgert.ams.protocol import AMSFrame, Control, Join, SampleUpload, UploadStatus
from edgert.transport import ConnectionClosed, EdgeClient, TLSConfig
from edgert.updates import Manifest, buffer_tensors, load_weights
from edgert.updates.signing import Trust

Log = Callable[[str], None]
FrameCallback = Callable[[int, float, np.ndarray], None]


@dataclass
class EdgeReport:
    """What an edge run measured (JSON-ready)."""

    frames: int = 0
    uploads: int = 0
    uploads_failed: int = 0
    samples_uploaded: int = 0
    upload_bytes: int = 0  # SAMPLES frames (header + body) written to the socket
    video_payload_bytes: int = 0  # H.264 packets inside them
    wire_bytes_sent: int = 0  # every frame the client wrote
    wire_bytes_received: int = 0  # every frame the client read (packets, CONTROL, ...)
    initial_bytes_received: int = 0  # ... up to and including the first model (manifest + snapshot)
    labels_bytes: int = 0  # LABELS frames received (remote inference)
    model_swaps: int = 0
    versions: list[int] = field(default_factory=list)  # active version per frame
    latency_ms: list[float] = field(default_factory=list)  # student inference per frame
    controls: list[dict[str, Any]] = field(default_factory=list)  # each with received_s (time.monotonic())
    upload_log: list[dict[str, Any]] = field(default_factory=list)  # seq, t_end, samples, bytes, sent_s (monotonic)
    reconnects: int = 0
    lockstep_timeouts: int = 0


class AMSEdge:
    """The device: runs the student on every frame and streams samples up and model updates down.

    Args:
        address: the AMS server.
        device_id, key: this device's identity and key.
        student: the student architecture with the weights the device ships with (used until the
            server's first model arrives); it is copied, never modified.
        config: :class:`EdgeConfig`.
        log: optional line logger.
        loop: what the device does per frame (default :class:`ModelStreamingLoop`: run the streamed student).
        tls: TLS 1.3 with this device's certificate (:class:`~edgert.transport.TLSConfig`).
        trust: pinned release-signature root (:class:`~edgert.updates.signing.Trust`): unsigned or badly
            signed packets are refused.
        trust_dir: keep the trust reached in ``trust_dir/trust.bin`` and resume it (``EdgeClient(state_dir=)``).
    """

    def __init__(self, address: tuple[str, int], device_id: str, key: bytes, student: nn.Module,
                 config: Optional[EdgeConfig] = None, *, log: Optional[Log] = None,
                 loop: Optional["EdgeLoop"] = None, tls: Optional[TLSConfig] = None,
                 trust: Optional[Trust] = None, trust_dir: Optional[Union[str, Path]] = None) -> None:
        self.config = config or EdgeConfig()
        self.config.validate()
        self._log = log or (lambda line: None)
        self._models = (copy.deepcopy(student).eval(), copy.deepcopy(student).eval())
        self._active = self._models[0]
        self.active_version = 0
        self._in_use: Optional[nn.Module] = None
        self._swap = threading.Condition()
        self._manifest: Optional[Manifest] = None
        self._controls: dict[int, Control] = {}
        self._control_cond = threading.Condition()
        self.rate = 1.0
        self.t_update = 10.0
        self._join: Optional[Join] = None
        self.report = EdgeReport()
        self.client = EdgeClient(address, device_id, key, on_version=self._on_version, log=self._log,
                                 on_connect=self._on_connect, handlers={AMSFrame.CONTROL: self._on_control}, tls=tls,
                                 trust=trust, state_dir=trust_dir)
        self.loop = loop or ModelStreamingLoop()
        self.loop.attach(self)

    # ---- network thread ---------------------------------------------------------------------------------
    def _on_connect(self) -> None:
        if self._join is not None:
            self.client.send(AMSFrame.JOIN, self._join.encode())

    def _on_control(self, body: bytes) -> None:
        control = Control.decode(body)
        received = time.monotonic()  # packets precede their CONTROL on the stream: the update is applied by now
        with self._control_cond:
            self.rate, self.t_update = control.sample_rate, control.t_update
            self._controls[control.seq] = control
            self._control_cond.notify_all()
        self.report.controls.append({"seq": control.seq, "status": control.status.name,
                                     "version": control.model_version, "rate": control.sample_rate,
                                     "t_update": control.t_update, "message": control.message,
                                     "received_s": received})

    def _on_version(self, version: int) -> None:
        """Loads the slot's weights into the shadow model and swaps it in (inference keeps running)."""
        slot = self.client.slot
        if slot is None:
            return
        manifest_bytes = self.client.manifest_bytes
        if self._manifest is None or self._manifest.to_bytes() != manifest_bytes:
            self._manifest = Manifest.from_bytes(manifest_bytes)
        weights, held = slot.weights()  # pinned read: one consistent version
        with self._swap:
            shadow = self._models[1] if self._active is self._models[0] else self._models[0]
            while self._in_use is shadow:  # the previous model may still be finishing a frame
                self._swap.wait()
        load_weights(shadow, buffer_tensors(self._manifest, weights))
        with self._swap:
            if self.report.model_swaps == 0:
                self.report.initial_bytes_received = self.client.bytes_received
            self._active = shadow
            self.active_version = held
            self.report.model_swaps += 1
            self._swap.notify_all()

    # ---- inference thread -----------------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, frame: np.ndarray) -> np.ndarray:
        """Student labels ``int64 [H, W]`` for one ``uint8 [H, W, 3]`` frame with the active model."""
        with self._swap:
            model = self._active
            self._in_use = model
        try:
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float().div_(255.0)
            return model(x)[0].argmax(0).numpy()
        finally:
            with self._swap:
                self._in_use = None
                self._swap.notify_all()

    def settings(self) -> tuple[float, float]:
        """The sampling rate (frames per second) and ``T_update`` (seconds) the server last set."""
        with self._control_cond:
            return self.rate, self.t_update

    def wait_control(self, seq: int, timeout: float) -> Optional[Control]:
        """Waits for the server's answer to upload ``seq`` (0: JOIN) and for the model version it announces;
        None when it does not come within ``timeout`` seconds or the connection is gone."""
        deadline = time.monotonic() + timeout
        with self._control_cond:
            while seq not in self._controls:
                left = deadline - time.monotonic()
                if left <= 0 or (seq > 0 and not self.client.connected.is_set()):
                    return None  # timed out, or the connection (and with it the answer) is gone
                self._control_cond.wait(timeout=min(left, 0.5))
            control = self._controls[seq]
        # the packet precedes its CONTROL on the stream; the swap follows on the network thread
        target = control.model_version
        while self.active_version < target and time.monotonic() < deadline:
            with self._swap:
                self._swap.wait(timeout=0.05)
        return control

    def upload(self, seq: int, t_end: float, times: list[float], frames: list[np.ndarray]) -> bool:
        """Encodes ``frames`` (taken at ``times``) as one H.264 video and sends it as SAMPLES upload ``seq``;
        False when the connection is down (counted in the report)."""
        upload, payload_bytes = encode_samples(seq, t_end, times, frames, self.rate, self.config)
        body = upload.encode()
        sent = time.monotonic()
        try:
            self.client.send(AMSFrame.SAMPLES, body)
        except ConnectionClosed as exc:
            self._log(f"upload {seq} failed: {exc}")
            self.report.uploads_failed += 1
            return False
        self.report.uploads += 1
        self.report.samples_uploaded += len(times)
        self.report.upload_bytes += len(body) + 6
        self.report.video_payload_bytes += payload_bytes
        self.report.upload_log.append({"seq": seq, "t_end": t_end, "samples": len(times), "bytes": len(body) + 6,
                                       "sent_s": sent})
        return True

    def run(self, frames: Iterable[tuple[float, np.ndarray]], fps: float,
            on_frame: Optional[FrameCallback] = None) -> EdgeReport:
        """Processes a stream of ``(time_s, uint8 [H, W, 3])`` frames at ``fps`` (source rate).

        ``on_frame(index, time_s, labels)`` receives every prediction. Returns the :class:`EdgeReport`.
        """
        cfg = self.config
        it = iter(frames)
        try:
            t_first, first = next(it)
        except StopIteration:
            raise ValueError("AMSEdge.run: the frame source is empty") from None
        if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
            raise ValueError(f"frames: expected uint8 [H, W, 3], got {first.dtype} {list(first.shape)}")
        h, w = first.shape[:2]
        self._join = Join(float(fps), w, h)
        self.client.start()
        try:
            # the server's answer to JOIN sets the first sampling rate and period; live devices wait at most 5 s
            # for it (then run with their shipped model and the defaults until the server is reachable)
            joined = self.wait_control(0, cfg.first_model_timeout_s if cfg.lockstep else
                                        min(5.0, cfg.first_model_timeout_s))
            if joined is None or joined.status != UploadStatus.JOINED:
                if cfg.lockstep:
                    raise ConnectionError(f"no answer to JOIN from {self.client.address} within "
                                          f"{cfg.first_model_timeout_s:.0f} s")
                self._log(f"no answer to JOIN from {self.client.address} yet: running the shipped model")
            self.loop.run(self, t_first, first, self._paced(t_first, first, it), on_frame)
            return self.report
        finally:
            self.report.wire_bytes_sent = self.client.bytes_sent
            self.report.wire_bytes_received = self.client.bytes_received
            self.report.reconnects = max(0, self.client.connections - 1)
            self.client.stop()

    def _paced(self, t_first: float, first: np.ndarray,
               rest: Iterator[tuple[float, np.ndarray]]) -> Iterator[tuple[int, float, np.ndarray]]:
        """``(index, time_s, frame)`` of every frame; with ``config.pace`` each is yielded no earlier than its
        stream time (a live camera's behaviour)."""
        wall0 = time.monotonic()
        for index, (t, frame) in enumerate(itertools.chain([(t_first, first)], rest)):
            if self.config.pace:
                delay = (t - t_first) - (time.monotonic() - wall0)
                if delay > 0:
                    time.sleep(delay)
            yield index, t, frame

    def record_frame(self, index: int, t: float, step: Callable[[], np.ndarray], version: int,
                     on_frame: Optional[FrameCallback]) -> None:
        """Runs the per-frame ``step`` (labels of this frame), records its latency and ``version``."""
        t0 = time.perf_counter()
        labels = step()
        self.report.latency_ms.append((time.perf_counter() - t0) * 1e3)
        self.report.versions.append(version)
        self.report.frames += 1
        if on_frame is not None:
            on_frame(index, t, labels)


def encode_samples(seq: int, t_end: float, times: list[float], frames: list[np.ndarray], rate: float,
                   config: EdgeConfig) -> tuple[SampleUpload, int]:
    """Upload ``seq``: ``frames`` (``uint8 [H, W, 3]`` taken at ``times``, sampled at ``rate`` per second) as one
    libx264 video at ``config``'s uplink bitrate and preset; returns it and its H.264 payload bytes."""
    from edgert.vision.video import encode

    video = encode(np.stack(frames), fps=max(rate, 1e-3), codec="libx264", bitrate_kbps=config.uplink_kbps,
                   preset=config.preset)
    return SampleUpload(seq, t_end, times, video.data), video.payload_bytes


class EdgeLoop(Protocol):
    """What a device does with its frames between JOIN and the end of the stream."""

    def attach(self, edge: AMSEdge) -> None:
        """Called once by :class:`AMSEdge` before it connects (register extension frames here)."""
        ...

    def run(self, edge: AMSEdge, t_first: float, first: np.ndarray,
            frames: Iterator[tuple[int, float, np.ndarray]], on_frame: Optional[FrameCallback]) -> None:
        """Processes ``frames`` (``(index, time_s, frame)``, paced; the first is ``first`` at ``t_first``) and
        reports into ``edge.report``."""
        ...


class ModelStreamingLoop:
    """AMS's device loop: run the streamed student on every frame, upload one buffer of samples per
    ``T_update``; in lockstep, wait for each buffer's model at stream time ``t_end + apply_lag_s``.

    Args:
        infer: False: sample and upload only, never run the student (the simulated devices of a server load
            test, ``bench.bench_ams_load``: updates are still received and swapped in; ``on_frame`` is not
            called and no per-frame latency is recorded).
    """

    def __init__(self, infer: bool = True) -> None:
        self.infer = infer

    def attach(self, edge: AMSEdge) -> None:
        """Nothing to register: model updates arrive as core PACKET frames."""

    def run(self, edge: AMSEdge, t_first: float, first: np.ndarray,
            frames: Iterator[tuple[int, float, np.ndarray]], on_frame: Optional[FrameCallback]) -> None:
        """Runs until ``frames`` ends (see :class:`EdgeLoop`)."""
        cfg = edge.config
        rate, t_update = edge.settings()
        phase_end = t_first + t_update
        next_sample = t_first
        buf_times: list[float] = []
        buf_frames: list[np.ndarray] = []
        pending: Optional[tuple[int, float]] = None  # (seq, stream time at which its update must be in)
        seq = 0
        for index, t, frame in frames:
            if pending is not None and t >= pending[1]:
                if cfg.lockstep and edge.client.connected.is_set():
                    if edge.wait_control(pending[0], cfg.lockstep_timeout_s) is None:
                        edge.report.lockstep_timeouts += 1
                pending = None
            if t >= phase_end:
                if buf_frames:
                    seq += 1
                    if edge.upload(seq, phase_end, buf_times, buf_frames):
                        pending = (seq, phase_end + cfg.apply_lag_s)
                buf_times, buf_frames = [], []
                rate, t_update = edge.settings()
                while phase_end <= t:
                    phase_end += t_update
            if t + 1e-9 >= next_sample:
                buf_times.append(t)
                buf_frames.append(frame)
                next_sample = max(next_sample + 1.0 / rate, t)
            if self.infer:
                edge.record_frame(index, t, lambda: edge.infer(frame), edge.active_version, on_frame)
            else:
                edge.report.frames += 1


__all__ = ["AMSEdge", "EdgeLoop", "EdgeReport", "ModelStreamingLoop", "encode_samples"]
