"""AMS: adaptive model streaming (Khani et al., "Real-Time Video Inference on Edge Devices via Adaptive
Model Streaming"), server and edge client over the edgert wire protocol.

**Server** (:class:`AMSServer`, Algorithms 2 and 3 of the paper). Each device uploads, once per
``T_update``, the frames it sampled, compressed as one H.264 video (a SAMPLES frame). The server decodes
them, labels them with the teacher, appends them to the device's time-stamped buffer, trains the
device's copy of the student for ``K`` Adam iterations on minibatches drawn uniformly from the last
``T_horizon`` seconds, changing only the fraction ``gamma`` of coordinates chosen by the gradient-guided
rule (:mod:`edgert.stream.coordinate`), and publishes the change as one sparse update packet on the
device's own model stream (:class:`edgert.stream.ModelServer` with ``per_device=True``). The phi-scores of
the labels drive the device's sampling rate and the training period (:mod:`edgert.stream.sampling`);
the new settings go back in a CONTROL frame. One worker thread owns the compute and serves devices
round-robin, one phase at a time; connection threads only receive and queue.

**Edge** (:class:`AMSEdge`). Runs the student on every frame, samples frames at the server's rate,
buffers one ``T_update`` of them, encodes them with libx264 at the uplink bitrate and uploads; update
packets are verified and applied by the C++ slot (:class:`edgert._edgert.Slot`, through
:class:`edgert.stream.EdgeClient`), loaded into a shadow copy of the model on the network thread and
swapped in between two frames, so inference never waits for an update. When the server is down or
sends a bad packet the edge keeps its last good model and reconnects with backoff.

Variants for the evaluation share this code: ``trainer="ams"`` with ``selection.strategy="full"`` is
full-model streaming, ``trainer="jit"`` is Just-In-Time (train on the newest frame until the student
reaches a target mIoU on it, then send the whole model).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Union

import numpy as np
import torch
from torch import nn

from edgert.stream.coordinate import AdamConfig, CoordinateSelector, MaskedAdam, SelectionConfig, masked_indices
from edgert.stream.packet import Manifest, TensorUpdate
from edgert.stream.protocol import (
    DEFAULT_MAX_FRAME,
    ConnectionClosed,
    Control,
    FrameType,
    Join,
    ProtocolError,
    SampleUpload,
    UploadStatus,
)
from edgert.stream.sampling import ASRConfig, ATRConfig, SamplingController
from edgert.stream.server import EdgeClient, ModelServer

Log = Callable[[str], None]


class Teacher(Protocol):
    """What the server needs of a teacher (``edgert.vision.teachers.Teacher`` satisfies it)."""

    num_classes: int

    def label(self, frames: np.ndarray) -> np.ndarray:
        """``uint8 [N, H, W, 3]`` -> ``int64 [N, H, W]`` class labels."""
        ...


# ---- configuration ---------------------------------------------------------------------------------


@dataclass
class AMSConfig:
    """Server-side AMS settings; defaults are the paper's (T_update in :attr:`atr`, rates in :attr:`asr`).

    Attributes:
        trainer: ``ams`` (K iterations over the horizon per phase), ``jit`` (Just-In-Time baseline) or ``remote``
            (remote inference: no training; the teacher's label map of every uploaded frame goes back in a
            LABELS frame, :mod:`edgert.stream.flow`).
        t_horizon_s: training samples are drawn from the last T_horizon seconds (240 s).
        iterations: K, Adam iterations per phase (20).
        batch_size: minibatch size (8).
        selection: which coordinates a phase changes (gradient-guided, gamma = 5 %).
        adam: optimizer settings (lr 1e-3).
        asr, atr: adaptive sampling and training rate.
        value_coding: update values on the wire, ``fp16`` (default), ``fp32`` or ``int8``.
        packet_format: newest update-packet format the server writes (2: range-coded when smaller;
            devices announcing format 1 get transcoded packets).
        jit_target_miou: JIT trains on a frame until the student's mIoU on it reaches this.
        jit_max_iterations: ... or this many iterations per frame.
        queue_depth: uploads queued per device before new ones are refused (BUSY).
        session_ttl_s: training state of a device disconnected this long is freed (its model stream is kept).
        max_upload_bytes: largest SAMPLES frame accepted.
        seed: minibatch sampling and random coordinate sets.
    """

    trainer: str = "ams"
    t_horizon_s: float = 240.0
    iterations: int = 20
    batch_size: int = 8
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    atr: ATRConfig = field(default_factory=ATRConfig)
    value_coding: str = "fp16"
    packet_format: int = 2
    jit_target_miou: float = 0.8
    jit_max_iterations: int = 20
    queue_depth: int = 4
    session_ttl_s: float = 60.0
    max_upload_bytes: int = 32 << 20
    seed: int = 0

    def validate(self) -> None:
        if self.trainer not in ("ams", "jit", "remote"):
            raise ValueError(f"trainer: expected 'ams', 'jit' or 'remote', got {self.trainer!r}")
        if not self.t_horizon_s > 0:
            raise ValueError(f"t_horizon_s: expected > 0, got {self.t_horizon_s}")
        if self.iterations < 1 or self.batch_size < 1 or self.jit_max_iterations < 1:
            raise ValueError("iterations, batch_size and jit_max_iterations must be >= 1")
        if self.value_coding not in ("fp16", "fp32", "int8"):
            raise ValueError(f"value_coding: expected fp16, fp32 or int8, got {self.value_coding!r}")
        if self.packet_format not in (1, 2):
            raise ValueError(f"packet_format: expected 1 or 2, got {self.packet_format}")
        if self.queue_depth < 1:
            raise ValueError(f"queue_depth: expected >= 1, got {self.queue_depth}")
        self.selection.validate()
        self.adam.validate()
        self.asr.validate()
        self.atr.validate()

    def scaled(self, factor: float) -> "AMSConfig":
        """Every time constant times ``factor`` and every rate divided by it (short clips: ``factor`` 0.1
        plays a 10 s clip as 100 s of the paper's clock). Iterations per phase are unchanged."""
        if not factor > 0:
            raise ValueError(f"time scale: expected > 0, got {factor}")
        return dataclasses.replace(self, t_horizon_s=self.t_horizon_s * factor, asr=self.asr.scaled(factor),
                                   atr=self.atr.scaled(factor))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AMSConfig":
        d = dict(d)
        nested = {"selection": SelectionConfig, "adam": AdamConfig, "asr": ASRConfig, "atr": ATRConfig}
        for key, kind in nested.items():
            if key in d and isinstance(d[key], Mapping):
                sub = dict(d[key])
                if key == "adam" and "betas" in sub:
                    sub["betas"] = tuple(sub["betas"])
                d[key] = kind(**sub)
        return cls(**d)


@dataclass
class EdgeConfig:
    """Edge-side settings.

    Attributes:
        uplink_kbps: libx264 target bitrate of the sample buffers in kbit per second of stream time
            (paper: ~200 kbps).
        preset: libx264 preset (the paper allows ``slow``).
        lockstep: evaluation mode: after uploading a buffer, the edge blocks at stream time
            ``t_end + apply_lag_s`` until the server's answer (and its model) arrived, so results do not
            depend on how fast a shared CPU trains. False: never wait (live operation).
        apply_lag_s: the modelled delay between the end of a buffer and its update taking effect.
        lockstep_timeout_s: the longest a lockstep wait lasts (then the edge goes on with its current model).
        first_model_timeout_s: how long :meth:`AMSEdge.run` waits for the server's first model (lockstep).
        pace: sleep so frames are processed no faster than the source frame rate (live camera behaviour).
    """

    uplink_kbps: float = 200.0
    preset: str = "slow"
    lockstep: bool = True
    apply_lag_s: float = 2.0
    lockstep_timeout_s: float = 300.0
    first_model_timeout_s: float = 60.0
    pace: bool = False

    def validate(self) -> None:
        if not self.uplink_kbps > 0:
            raise ValueError(f"uplink_kbps: expected > 0, got {self.uplink_kbps}")
        if self.apply_lag_s < 0:
            raise ValueError(f"apply_lag_s: expected >= 0, got {self.apply_lag_s}")

    def scaled(self, factor: float) -> "EdgeConfig":
        """Bitrate per stream second divided by ``factor`` (same bits per sample), lag times ``factor``."""
        return dataclasses.replace(self, uplink_kbps=self.uplink_kbps / factor, apply_lag_s=self.apply_lag_s * factor)


def model_id_for(manifest_table: bytes, tag: str = "edgert-ams") -> bytes:
    """A stable 128-bit model id for a student architecture (a restarted server keeps it)."""
    return hashlib.sha256(tag.encode() + manifest_table).digest()[:16]


def student_manifest(student: nn.Module, tag: str = "edgert-ams") -> Manifest:
    """The manifest of a student's trainable parameters (fp32 on the device), with a stable model id."""
    draft = Manifest.from_module(student, bytes(16), dtype="float32")
    return Manifest.from_module(student, model_id_for(draft.table_bytes(), tag), dtype="float32")


def load_weights(model: nn.Module, manifest: Manifest, weights: bytes) -> None:
    """Copies a device weight buffer (layout of ``manifest``) into ``model``'s parameters (names must match)."""
    params = dict(model.named_parameters())
    offsets = manifest.offsets()
    if len(weights) != manifest.weights_size:
        raise ValueError(f"weights: expected {manifest.weights_size} bytes, got {len(weights)}")
    with torch.no_grad():
        for off, spec in zip(offsets, manifest.tensors):
            if spec.name not in params:
                raise ValueError(f"the model has no parameter {spec.name!r} named in the manifest")
            arr = np.frombuffer(weights, dtype=spec.np_dtype, count=spec.numel, offset=off).reshape(spec.shape)
            params[spec.name].copy_(torch.from_numpy(arr.astype(np.float32)))


def check_label_space(student: nn.Module, teacher: Teacher, size: tuple[int, int]) -> None:
    """Fails early when the student's output classes differ from the teacher's labels."""
    w, h = size
    was = student.training
    student.eval()
    try:
        with torch.no_grad():
            out = student(torch.zeros(1, 3, h, w))
    finally:
        student.train(was)
    if out.ndim != 4 or out.shape[-2:] != (h, w):
        raise ValueError(f"student: expected logits [1, C, {h}, {w}] for a {w}x{h} frame, got {list(out.shape)}")
    if out.shape[1] != teacher.num_classes:
        raise ValueError(f"student predicts {out.shape[1]} classes but the teacher labels {teacher.num_classes}: "
                         f"build the student with num_classes={teacher.num_classes}")


# ---- server ----------------------------------------------------------------------------------------


@dataclass
class DeviceReport:
    """Per-device counters the server keeps (JSON-ready via :func:`dataclasses.asdict`)."""

    device_id: str
    uploads: int = 0
    uploads_rejected: int = 0
    uploads_dropped: int = 0
    samples: int = 0
    phases: int = 0
    updates: int = 0
    upload_bytes: int = 0
    update_bytes: int = 0
    update_sizes: dict[int, int] = field(default_factory=dict)  # target version -> packet bytes
    train_seconds: float = 0.0
    label_seconds: float = 0.0
    rate_history: list[dict[str, float]] = field(default_factory=list)
    t_update_history: list[float] = field(default_factory=list)
    last_error: str = ""


class _Device:
    """Training state of one device: its student copy, optimizer, selector, buffer and controller."""

    def __init__(self, server: "AMSServer", device_id: str) -> None:
        cfg = server.config
        self.device_id = device_id
        self.model = copy.deepcopy(server.student)
        self.model.eval()
        load_weights(self.model, server.manifest, server.models.weights_bytes(device_id))
        self.params = [p for _, p in self.model.named_parameters()]
        self.names = [n for n, _ in self.model.named_parameters()]
        self.optimizer = MaskedAdam(self.params, cfg.adam)
        self.selector = CoordinateSelector([p.shape for p in self.params],
                                           dataclasses.replace(cfg.selection, seed=cfg.selection.seed + _seed(device_id)))
        self.controller = SamplingController(cfg.asr, cfg.atr)
        self.rng = np.random.default_rng(cfg.seed + _seed(device_id))
        self.times: deque[float] = deque()
        self.frames: deque[np.ndarray] = deque()
        self.labels: deque[np.ndarray] = deque()
        self.queue: deque[SampleUpload] = deque()
        self.join: Optional[Join] = None
        self.connected = True
        self.disconnected_at = 0.0
        self.phase = 0


def _seed(device_id: str) -> int:
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:4], "little")


class AMSServer:
    """The AMS server: one model stream per device, one compute worker, round-robin over devices.

    Args:
        student: the student architecture with its initial weights (published as version 1 to every
            device); each device trains its own copy. Trainable parameters are streamed; BatchNorm layers
            stay in eval mode (their statistics are part of the initial model and never change).
        teacher: labels frames (``num_classes`` must equal the student's output channels).
        keys: per-device keys (16..64 bytes) by device id: the devices this server serves.
        config: :class:`AMSConfig`.
        size: ``(width, height)`` of the frames devices upload (checked against every upload).
        host, port: where to listen (port 0 picks a free one; see :attr:`address`).
        state_dir: persist each device's model version and weights there (a restarted server resumes them).
        log: optional line logger.

    Raises:
        ValueError: bad config, keys, or a student/teacher label-space mismatch.
    """

    def __init__(self, student: nn.Module, teacher: Teacher, keys: Mapping[str, bytes], config: Optional[AMSConfig] = None,
                 *, size: tuple[int, int], host: str = "127.0.0.1", port: int = 0,
                 state_dir: Optional[Union[str, Path]] = None, log: Optional[Log] = None) -> None:
        self.config = config or AMSConfig()
        self.config.validate()
        self.size = (int(size[0]), int(size[1]))
        self.student = student
        self.teacher = teacher
        check_label_space(student, teacher, self.size)
        if self.config.trainer == "remote" and teacher.num_classes > 256:
            raise ValueError(f"trainer 'remote' sends uint8 label maps: {teacher.num_classes} classes do not fit")
        self.manifest = student_manifest(student)
        self._log = log or (lambda line: None)
        initial = {n: p.detach().cpu().numpy() for n, p in student.named_parameters()}
        self.models = ModelServer(
            self.manifest, keys, initial, host=host, port=port, value_coding=self.config.value_coding,
            packet_format=self.config.packet_format, state_dir=state_dir, per_device=True, log=self._log,
            max_frame=max(self.config.max_upload_bytes, DEFAULT_MAX_FRAME),
            handlers={FrameType.JOIN: self._on_join, FrameType.SAMPLES: self._on_samples},
            on_disconnect=self._on_disconnect)
        self.reports: dict[str, DeviceReport] = {d: DeviceReport(d) for d in keys}
        self._devices: dict[str, _Device] = {}
        self._order: deque[str] = deque()  # round-robin order of devices with queued work
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self.models.address

    def start(self) -> "AMSServer":
        self._worker = threading.Thread(target=self._work, name="edgert-ams-worker", daemon=True)
        self._worker.start()
        self.models.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.models.stop()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def __enter__(self) -> "AMSServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def active_sessions(self) -> list[str]:
        """Devices whose training state is held (connected, or disconnected less than the TTL ago)."""
        with self._cond:
            return sorted(self._devices)

    def report(self) -> dict[str, Any]:
        """Per-device counters plus the wire totals the model server measured."""
        out: dict[str, Any] = {}
        for device, rep in self.reports.items():
            st = self.models.devices.get(device)
            d = dataclasses.asdict(rep)
            d["wire_bytes_to_device"] = st.bytes_sent if st else 0
            d["wire_bytes_from_device"] = st.bytes_received if st else 0
            d["model_version"] = self.models.version_of(device)
            out[device] = d
        return out

    # ---- connection threads: receive and queue only ----------------------------------------------------
    def _control(self, dev: _Device, seq: int, status: UploadStatus, message: str = "") -> Control:
        return Control(seq, status, self.models.version_of(dev.device_id), dev.controller.rate,
                       dev.controller.t_update, message)

    def _device(self, device_id: str) -> _Device:
        with self._cond:
            dev = self._devices.get(device_id)
            if dev is None:
                dev = self._devices[device_id] = _Device(self, device_id)
            dev.connected = True
            return dev

    def _on_join(self, session: Any, body: bytes) -> None:
        join = Join.decode(body)
        if (join.width, join.height) != self.size:
            raise ProtocolError(f"JOIN: device frames are {join.width}x{join.height}, this server trains on "
                                f"{self.size[0]}x{self.size[1]}")
        dev = self._device(session.device_id)
        dev.join = join
        session.send(FrameType.CONTROL, self._control(dev, 0, UploadStatus.JOINED).encode())

    def _on_samples(self, session: Any, body: bytes) -> None:
        rep = self.reports[session.device_id]
        rep.upload_bytes += len(body) + 6
        dev = self._device(session.device_id)
        if dev.join is None:
            raise ProtocolError("SAMPLES before JOIN")
        try:
            upload = SampleUpload.decode(body)
        except ProtocolError as exc:
            rep.uploads_rejected += 1
            rep.last_error = str(exc)
            seq = int.from_bytes(body[:4], "little") if len(body) >= 4 else 0
            session.send(FrameType.CONTROL, self._control(dev, seq, UploadStatus.BAD_UPLOAD, str(exc)).encode())
            return
        rep.uploads += 1
        with self._cond:
            if len(dev.queue) >= self.config.queue_depth:
                rep.uploads_dropped += 1
                busy = self._control(dev, upload.seq, UploadStatus.BUSY, "server busy: upload dropped")
            else:
                busy = None
                dev.queue.append(upload)
                if dev.device_id not in self._order:
                    self._order.append(dev.device_id)
                self._cond.notify_all()
        if busy is not None:
            session.send(FrameType.CONTROL, busy.encode())

    def _on_disconnect(self, device_id: str) -> None:
        with self._cond:
            dev = self._devices.get(device_id)
            if dev is not None:
                dev.connected = False
                dev.disconnected_at = time.monotonic()
                dev.queue.clear()  # nobody is listening for the answers
                dev.join = None
                self._cond.notify_all()

    # ---- the compute worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        torch.manual_seed(self.config.seed)
        while not self._stopping.is_set():
            with self._cond:
                self._free_idle()
                while not self._order and not self._stopping.is_set():
                    self._cond.wait(timeout=1.0)
                    self._free_idle()
                if self._stopping.is_set():
                    return
                device_id = self._order.popleft()
                dev = self._devices.get(device_id)
                upload = dev.queue.popleft() if dev is not None and dev.queue else None
                if dev is not None and dev.queue:
                    self._order.append(device_id)  # round robin: one phase per device per turn
            if dev is None or upload is None:
                continue
            try:
                control = self._phase(dev, upload)
            except Exception as exc:  # a failing phase must not take the server down
                self._log(f"{device_id}: phase failed: {exc!r}")
                self.reports[device_id].last_error = repr(exc)
                control = self._control(dev, upload.seq, UploadStatus.NO_UPDATE, f"phase failed: {exc}")
            self.models.send_to(device_id, FrameType.CONTROL, control.encode())

    def _free_idle(self) -> None:
        now = time.monotonic()
        for device_id in [d for d, dev in self._devices.items()
                          if not dev.connected and now - dev.disconnected_at >= self.config.session_ttl_s]:
            del self._devices[device_id]
            self._log(f"{device_id}: session freed")

    def _decode(self, dev: _Device, upload: SampleUpload) -> Union[np.ndarray, Control]:
        from edgert.vision.video import VideoError, decode

        rep = self.reports[dev.device_id]
        try:
            frames = decode(upload.video)
        except VideoError as exc:
            rep.uploads_rejected += 1
            rep.last_error = str(exc)
            return self._control(dev, upload.seq, UploadStatus.BAD_VIDEO, str(exc))
        w, h = self.size
        if frames.shape[0] != len(upload.times) or frames.shape[1:3] != (h, w):
            rep.uploads_rejected += 1
            msg = (f"upload {upload.seq}: {len(upload.times)} timestamps for {frames.shape[0]} decoded frames of "
                   f"{frames.shape[2]}x{frames.shape[1]} (expected {w}x{h})")
            rep.last_error = msg
            return self._control(dev, upload.seq, UploadStatus.BAD_UPLOAD, msg)
        return frames

    def _phase(self, dev: _Device, upload: SampleUpload) -> Control:
        cfg = self.config
        rep = self.reports[dev.device_id]
        frames = self._decode(dev, upload)
        if isinstance(frames, Control):
            return frames
        t0 = time.perf_counter()
        labels = np.asarray(self.teacher.label(frames))
        rep.label_seconds += time.perf_counter() - t0
        if labels.shape != frames.shape[:3]:
            raise ValueError(f"teacher returned labels {list(labels.shape)} for frames {list(frames.shape)}")
        if cfg.trainer == "remote":
            return self._send_labels(dev, upload, labels)
        label_dtype = np.uint8 if self.teacher.num_classes <= 255 else np.int16
        for t, f, y in zip(upload.times, frames, labels):
            if dev.times and t <= dev.times[-1]:
                continue  # a replayed or overlapping upload
            dev.times.append(t)
            dev.frames.append(f)
            dev.labels.append(y.astype(label_dtype))
            dev.controller.observe(t, y)
            rep.samples += 1
        while dev.times and dev.times[0] < upload.t_end - cfg.t_horizon_s:
            dev.times.popleft()
            dev.frames.popleft()
            dev.labels.popleft()
        dev.phase += 1
        rep.phases += 1
        t0 = time.perf_counter()
        trained = self._train_jit(dev, frames[-1], labels[-1]) if cfg.trainer == "jit" else self._train_ams(dev)
        rep.train_seconds += time.perf_counter() - t0
        status = UploadStatus.NO_UPDATE
        if trained is not None:
            packet = self.models.publish(trained, device_id=dev.device_id)
            rep.updates += 1
            rep.update_bytes += len(packet)
            rep.update_sizes[packet.target_version] = len(packet)
            status = UploadStatus.OK
        # the training copy continues from exactly what the device holds (fp16 deltas round)
        load_weights(dev.model, self.manifest, self.models.weights_bytes(dev.device_id))
        dev.controller.end_phase()
        rep.rate_history = list(dev.controller.history)
        rep.t_update_history.append(dev.controller.t_update)
        return self._control(dev, upload.seq, status)

    def _send_labels(self, dev: _Device, upload: SampleUpload, labels: np.ndarray) -> Control:
        """Remote inference: one LABELS frame per uploaded frame (before the CONTROL answer)."""
        from edgert.stream.flow import encode_labels

        rep = self.reports[dev.device_id]
        rep.phases += 1
        rep.samples += len(upload.times)
        for t, y in zip(upload.times, labels):
            body = encode_labels(upload.seq, t, y.astype(np.uint8))
            self.models.send_to(dev.device_id, FrameType.LABELS, body)
            rep.update_bytes += len(body) + 6
        rep.updates += len(upload.times)
        return self._control(dev, upload.seq, UploadStatus.OK)

    def _step(self, dev: _Device, frames: np.ndarray, labels: np.ndarray) -> float:
        from edgert.vision.distill import distill_step

        return distill_step(dev.model, dev.optimizer, frames, labels.astype(np.int64), freeze_bn=True).loss

    def _train_ams(self, dev: _Device) -> Optional[dict[str, Any]]:
        cfg = self.config
        n = len(dev.times)
        if n == 0:
            return None
        first = dev.phase == 1 or dev.optimizer.steps == 0
        masks = dev.selector.next_masks(None if first else dev.optimizer.accumulated)
        dev.optimizer.set_masks(None if cfg.selection.strategy == "full" else masks)
        dev.optimizer.reset_accumulator()
        frames, labels = list(dev.frames), list(dev.labels)
        for _ in range(cfg.iterations):
            idx = dev.rng.integers(0, n, size=min(cfg.batch_size, n)) if n > cfg.batch_size else np.arange(n)
            self._step(dev, np.stack([frames[i] for i in idx]), np.stack([labels[i] for i in idx]))
        return self._delta(dev, masks, dense=cfg.selection.strategy == "full")

    def _train_jit(self, dev: _Device, frame: np.ndarray, label: np.ndarray) -> Optional[dict[str, Any]]:
        from edgert.vision.distill import predict_labels
        from edgert.vision.metrics import confusion_matrix, mean_iou

        cfg = self.config
        dev.optimizer.set_masks(None)
        trained = False
        for _ in range(cfg.jit_max_iterations):
            pred = predict_labels(dev.model, frame[None])
            if mean_iou(confusion_matrix(label[None].astype(np.int64), pred, self.teacher.num_classes)) >= cfg.jit_target_miou:
                break
            self._step(dev, frame[None], label[None])
            trained = True
        if not trained:
            return None
        return self._delta(dev, None, dense=True)

    def _delta(self, dev: _Device, masks: Optional[list[torch.Tensor]], dense: bool) -> dict[str, Any]:
        mirror = self.models.mirror_of(dev.device_id)
        updates: dict[str, Any] = {}
        for i, (name, p) in enumerate(zip(dev.names, dev.params)):
            delta = (p.detach().cpu().numpy().astype(np.float32) - mirror.tensor(name)).ravel()
            if dense or masks is None:
                updates[name] = TensorUpdate(values=delta)
                continue
            idx = masked_indices(masks[i])
            if idx.size:
                updates[name] = TensorUpdate(values=delta[idx], indices=idx)
        return updates


# ---- edge --------------------------------------------------------------------------------------------


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
    model_swaps: int = 0
    versions: list[int] = field(default_factory=list)  # active version per frame
    latency_ms: list[float] = field(default_factory=list)  # student inference per frame
    controls: list[dict[str, Any]] = field(default_factory=list)
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
    """

    def __init__(self, address: tuple[str, int], device_id: str, key: bytes, student: nn.Module,
                 config: Optional[EdgeConfig] = None, *, log: Optional[Log] = None) -> None:
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
                                 on_connect=self._on_connect, handlers={FrameType.CONTROL: self._on_control})

    # ---- network thread ---------------------------------------------------------------------------------
    def _on_connect(self) -> None:
        if self._join is not None:
            self.client.send(FrameType.JOIN, self._join.encode())

    def _on_control(self, body: bytes) -> None:
        control = Control.decode(body)
        with self._control_cond:
            self.rate, self.t_update = control.sample_rate, control.t_update
            self._controls[control.seq] = control
            self._control_cond.notify_all()
        self.report.controls.append({"seq": control.seq, "status": control.status.name,
                                     "version": control.model_version, "rate": control.sample_rate,
                                     "t_update": control.t_update, "message": control.message})

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
        load_weights(shadow, self._manifest, weights)
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

    def _wait_control(self, seq: int, timeout: float) -> Optional[Control]:
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

    def _upload(self, seq: int, t_end: float, times: list[float], frames: list[np.ndarray]) -> bool:
        from edgert.vision.video import encode

        rate = max(self.rate, 1e-3)
        video = encode(np.stack(frames), fps=rate, codec="libx264", bitrate_kbps=self.config.uplink_kbps,
                       preset=self.config.preset)
        body = SampleUpload(seq, t_end, times, video.data).encode()
        try:
            self.client.send(FrameType.SAMPLES, body)
        except ConnectionClosed as exc:
            self._log(f"upload {seq} failed: {exc}")
            self.report.uploads_failed += 1
            return False
        self.report.uploads += 1
        self.report.samples_uploaded += len(times)
        self.report.upload_bytes += len(body) + 6
        self.report.video_payload_bytes += video.payload_bytes
        return True

    def run(self, frames: Iterable[tuple[float, np.ndarray]], fps: float,
            on_frame: Optional[Callable[[int, float, np.ndarray], None]] = None) -> EdgeReport:
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
            joined = self._wait_control(0, cfg.first_model_timeout_s if cfg.lockstep else
                                        min(5.0, cfg.first_model_timeout_s))
            if joined is None or joined.status != UploadStatus.JOINED:
                if cfg.lockstep:
                    raise ConnectionError(f"no answer to JOIN from {self.client.address} within "
                                          f"{cfg.first_model_timeout_s:.0f} s")
                self._log(f"no answer to JOIN from {self.client.address} yet: running the shipped model")
            return self._loop(t_first, first, it, fps, on_frame)
        finally:
            self.report.wire_bytes_sent = self.client.bytes_sent
            self.report.wire_bytes_received = self.client.bytes_received
            self.report.reconnects = max(0, self.client.connections - 1)
            self.client.stop()

    def _loop(self, t_first: float, first: np.ndarray, it: Any, fps: float,
              on_frame: Optional[Callable[[int, float, np.ndarray], None]]) -> EdgeReport:
        cfg = self.config
        with self._control_cond:
            rate, t_update = self.rate, self.t_update
        phase_end = t_first + t_update
        next_sample = t_first
        buf_times: list[float] = []
        buf_frames: list[np.ndarray] = []
        pending: Optional[tuple[int, float]] = None  # (seq, stream time at which its update must be in)
        seq = 0
        wall0 = time.monotonic()
        index = 0
        item: Optional[tuple[float, np.ndarray]] = (t_first, first)
        while item is not None:
            t, frame = item
            if cfg.pace:
                delay = (t - t_first) - (time.monotonic() - wall0)
                if delay > 0:
                    time.sleep(delay)
            if pending is not None and t >= pending[1]:
                if cfg.lockstep and self.client.connected.is_set():
                    if self._wait_control(pending[0], cfg.lockstep_timeout_s) is None:
                        self.report.lockstep_timeouts += 1
                pending = None
            if t >= phase_end:
                if buf_frames:
                    seq += 1
                    if self._upload(seq, phase_end, buf_times, buf_frames):
                        pending = (seq, phase_end + cfg.apply_lag_s)
                buf_times, buf_frames = [], []
                with self._control_cond:
                    rate, t_update = self.rate, self.t_update
                while phase_end <= t:
                    phase_end += t_update
            if t + 1e-9 >= next_sample:
                buf_times.append(t)
                buf_frames.append(frame)
                next_sample = max(next_sample + 1.0 / rate, t)
            self._step_frame(index, t, lambda: self.infer(frame), self.active_version, on_frame)
            index += 1
            item = next(it, None)
        return self.report

    def _step_frame(self, index: int, t: float, step: Callable[[], np.ndarray], version: int,
                    on_frame: Optional[Callable[[int, float, np.ndarray], None]]) -> None:
        """Runs the per-frame ``step`` (labels of this frame), records its latency and ``version``."""
        t0 = time.perf_counter()
        labels = step()
        self.report.latency_ms.append((time.perf_counter() - t0) * 1e3)
        self.report.versions.append(version)
        self.report.frames += 1
        if on_frame is not None:
            on_frame(index, t, labels)
