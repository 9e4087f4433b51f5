"""The AMS server (Khani et al., "Real-Time Video Inference on Edge Devices via Adaptive Model Streaming",
Algorithms 2 and 3), on the transport's model server.

Each device uploads, once per ``T_update``, the frames it sampled, compressed as one H.264 video (a SAMPLES
frame). The server decodes them, labels them with the teacher and hands them to its upload policy
(:mod:`edgert.ams.policies`): AMS appends them to the device's time-stamped buffer, trains the device's copy
of the student for ``K`` Adam iterations on minibatches drawn uniformly from the last ``T_horizon`` seconds,
changing only the fraction ``gamma`` of coordinates chosen by the gradient-guided rule
(:mod:`edgert.updates.selection`), and publishes the change as one sparse update packet on the device's own
model stream (:class:`edgert.transport.ModelServer` with ``per_device=True``). The phi-scores of the labels
drive the device's sampling rate and the training period (:mod:`edgert.ams.sampling`); the new settings go
back in a CONTROL frame. One worker thread owns the compute and serves devices round-robin; connection
threads only receive and queue. With ``AMSConfig.executor = "thread"`` the worker trains one phase at a time
itself; with ``"ray"`` it sends each phase's training to Ray (:mod:`edgert.harness.executors`) and keeps up to
``max_parallel_phases`` devices' phases in flight, labelling, publishing and answering on the server.
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
from typing import Any, Callable, Collection, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from edgert.ams.config import AMSConfig
from edgert.ams.policies import PhasePlan, TrainingPolicy, UploadPolicy, policy_for, train_phase_task
from edgert.ams.protocol import AMSFrame, Control, Join, SampleUpload, UploadStatus
from edgert.ams.sampling import SamplingController
from edgert.harness.executors import RayExecutor, TaskExecutor, TaskHandle, TaskResult
from edgert.transport import DEFAULT_MAX_FRAME, ModelServer, ProtocolError, TLSConfig
from edgert.updates import (
    CoordinateSelector,
    MaskedAdam,
    TensorUpdate,
    buffer_tensors,
    load_weights,
    module_manifest,
    module_weights,
)
from edgert.updates.packet import encode_update
from edgert.updates.reference import mask_fp16_gzip_bytes
from edgert.updates.signing import Signer
from edgert.vision.distill import check_label_space
from edgert.vision.teachers import Teacher

Log = Callable[[str], None]
#: model ids of AMS students are derived from this tag and the tensor table (stable across restarts)
MODEL_TAG = "edgert-ams"


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
    #: target version -> bytes of the same update as 1-bit mask + fp16 values + gzip (the AMS paper's coding)
    reference_sizes: dict[int, int] = field(default_factory=dict)
    #: target version -> {"<value coding>/f<max format>": packet bytes} for AMSConfig.size_codings (encoded, not
    #: sent; f1: format 1, f2: the smaller of formats 1 and 2; without MAC, like update_sizes)
    coding_sizes: dict[int, dict[str, int]] = field(default_factory=dict)
    train_seconds: float = 0.0
    label_seconds: float = 0.0
    train_spans: list[tuple[float, float]] = field(default_factory=list)  # time.time() of each phase's training
    rate_history: list[dict[str, float]] = field(default_factory=list)
    t_update_history: list[float] = field(default_factory=list)
    last_error: str = ""


class DeviceState:
    """Training state of one device: its student copy, optimizer, selector, buffer and controller."""

    def __init__(self, server: "AMSServer", device_id: str) -> None:
        cfg = server.config
        self.device_id = device_id
        self.device_seed = _seed(device_id)
        self.model = copy.deepcopy(server.student)
        self.model.eval()
        load_weights(self.model, buffer_tensors(server.manifest, server.models.weights_bytes(device_id)))
        self.params = [p for _, p in self.model.named_parameters()]
        self.names = [n for n, _ in self.model.named_parameters()]
        self.optimizer = MaskedAdam(self.params, cfg.adam)
        self.selector = CoordinateSelector(
            [p.shape for p in self.params],
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


@dataclass
class _Flight:
    """A phase whose training runs as a task."""

    dev: DeviceState
    upload: SampleUpload
    plan: PhasePlan
    handle: TaskHandle


def _seed(device_id: str) -> int:
    """A per-device seed offset that is the same in every process (unlike ``hash()``)."""
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
        policy: what the server does with a labelled upload (default: :func:`~edgert.ams.policies.policy_for`
            ``config.trainer``).
        executor: runs the training phases as tasks (:mod:`edgert.harness.executors`), whatever
            ``config.executor`` says; it stays the caller's (:meth:`stop` does not shut it down). ``None``:
            ``config.executor = "ray"`` makes a :class:`~edgert.harness.executors.RayExecutor` at
            :meth:`start` (and shuts it down at :meth:`stop`); ``"thread"`` trains in the worker thread.
        tls: TLS 1.3 with client certificates for every connection (:class:`~edgert.transport.TLSConfig`).
        signer: sign every packet sent with this release key (:class:`~edgert.updates.signing.Signer`).

    Raises:
        ValueError: bad config, keys, or a student/teacher label-space mismatch.
    """

    def __init__(self, student: nn.Module, teacher: Teacher, keys: Mapping[str, bytes],
                 config: Optional[AMSConfig] = None, *, size: tuple[int, int], host: str = "127.0.0.1", port: int = 0,
                 state_dir: Optional[Union[str, Path]] = None, log: Optional[Log] = None,
                 policy: Optional[UploadPolicy] = None, executor: Optional[TaskExecutor] = None,
                 tls: Optional[TLSConfig] = None, signer: Optional[Signer] = None) -> None:
        self.config = config or AMSConfig()
        self.config.validate()
        self.policy = policy or policy_for(self.config)
        self.size = (int(size[0]), int(size[1]))
        self.student = student
        self.teacher = teacher
        check_label_space(student, teacher.num_classes, self.size)
        self.policy.check(self)
        self.manifest = module_manifest(student, tag=MODEL_TAG)
        self._log = log or (lambda line: None)
        self.models = ModelServer(
            self.manifest, keys, module_weights(student), host=host, port=port, value_coding=self.config.value_coding,
            packet_format=self.config.packet_format, state_dir=state_dir, per_device=True, log=self._log,
            max_frame=max(self.config.max_upload_bytes, DEFAULT_MAX_FRAME), on_disconnect=self._on_disconnect, tls=tls,
            signer=signer)
        self.models.register_frame(AMSFrame.JOIN, self._on_join)
        self.models.register_frame(AMSFrame.SAMPLES, self._on_samples)
        self.reports: dict[str, DeviceReport] = {d: DeviceReport(d) for d in keys}
        self._devices: dict[str, DeviceState] = {}
        self._order: deque[str] = deque()  # round-robin order of devices with queued work
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._tasks: Optional[TaskExecutor] = executor
        self._owns_tasks = False

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self.models.address

    @property
    def executor(self) -> Optional[TaskExecutor]:
        """The executor phases train on (None: the worker thread trains them itself)."""
        return self._tasks

    def start(self) -> "AMSServer":
        cfg = self.config
        if self._tasks is None and cfg.executor == "ray":
            self._tasks = RayExecutor(cfg.ray_address, cfg.ray_num_cpus, cpus_per_task=cfg.ray_cpus_per_phase)
            self._owns_tasks = True
        work = self._work if self._tasks is None else self._work_tasks
        self._worker = threading.Thread(target=work, name="edgert-ams-worker", daemon=True)
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
        if self._owns_tasks and self._tasks is not None:
            self._tasks.shutdown()
            self._tasks, self._owns_tasks = None, False

    def __enter__(self) -> "AMSServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def active_sessions(self) -> list[str]:
        """Devices whose training state is held (connected, or disconnected less than the TTL ago)."""
        with self._cond:
            return sorted(self._devices)

    def queued(self) -> dict[str, int]:
        """Uploads waiting for a phase, by device (the server's backlog; a phase in progress is not counted)."""
        with self._cond:
            return {device_id: len(dev.queue) for device_id, dev in self._devices.items()}

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
    def control(self, dev: DeviceState, seq: int, status: UploadStatus, message: str = "") -> Control:
        """The CONTROL answer to upload ``seq`` of ``dev`` with the device's current settings."""
        return Control(seq, status, self.models.version_of(dev.device_id), dev.controller.rate,
                       dev.controller.t_update, message)

    def _device(self, device_id: str) -> DeviceState:
        with self._cond:
            dev = self._devices.get(device_id)
            if dev is None:
                dev = self._devices[device_id] = DeviceState(self, device_id)
            dev.connected = True
            return dev

    def _on_join(self, session: Any, body: bytes) -> None:
        join = Join.decode(body)
        if (join.width, join.height) != self.size:
            raise ProtocolError(f"JOIN: device frames are {join.width}x{join.height}, this server trains on "
                                f"{self.size[0]}x{self.size[1]}")
        dev = self._device(session.device_id)
        dev.join = join
        session.send(AMSFrame.CONTROL, self.control(dev, 0, UploadStatus.JOINED).encode())

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
            session.send(AMSFrame.CONTROL, self.control(dev, seq, UploadStatus.BAD_UPLOAD, str(exc)).encode())
            return
        rep.uploads += 1
        with self._cond:
            if len(dev.queue) >= self.config.queue_depth:
                rep.uploads_dropped += 1
                busy = self.control(dev, upload.seq, UploadStatus.BUSY, "server busy: upload dropped")
            else:
                busy = None
                dev.queue.append(upload)
                if dev.device_id not in self._order:
                    self._order.append(dev.device_id)
                self._cond.notify_all()
        if busy is not None:
            session.send(AMSFrame.CONTROL, busy.encode())

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
                control = self._failed(dev, upload, exc)
            self.models.send_to(device_id, AMSFrame.CONTROL, control.encode())

    def _failed(self, dev: DeviceState, upload: SampleUpload, exc: Union[Exception, str]) -> Control:
        """A phase that raised (here, or in its task: ``exc`` is then the task's error message)."""
        what = repr(exc) if isinstance(exc, Exception) else exc
        self._log(f"{dev.device_id}: phase failed: {what}")
        self.reports[dev.device_id].last_error = what
        return self.control(dev, upload.seq, UploadStatus.NO_UPDATE, f"phase failed: {exc}")

    # ---- the compute worker with an executor: phases of different devices in flight at once -------------
    def _work_tasks(self) -> None:
        tasks = self._tasks
        assert tasks is not None
        limit = self.config.max_parallel_phases or tasks.slots
        flying: dict[str, _Flight] = {}
        while not self._stopping.is_set():
            with self._cond:
                self._free_idle(busy=flying)  # a device's state stays while its phase is in flight
                picked = self._pick(set(flying), limit - len(flying))
                if not picked and not flying:
                    self._cond.wait(timeout=1.0)
                    continue
            for dev, upload in picked:
                try:
                    started = self._begin(tasks, dev, upload)
                except Exception as exc:  # a failing phase must not take the server down
                    started = self._failed(dev, upload, exc)
                if isinstance(started, Control):
                    self.models.send_to(dev.device_id, AMSFrame.CONTROL, started.encode())
                else:
                    flying[dev.device_id] = started
            if flying:
                ready = tasks.wait([f.handle for f in flying.values()], timeout=0.05)
                for device_id in [d for d, f in flying.items() if any(f.handle is h for h in ready)]:
                    flight = flying.pop(device_id)
                    try:
                        control = self._land(flight, tasks.result(flight.handle))
                    except Exception as exc:
                        control = self._failed(flight.dev, flight.upload, exc)
                    self.models.send_to(device_id, AMSFrame.CONTROL, control.encode())

    def _pick(self, busy: set[str], room: int) -> list[tuple[DeviceState, SampleUpload]]:
        """Round robin over devices with queued uploads and no phase in flight: at most ``room`` of them,
        one upload each (called under the lock)."""
        picked: list[tuple[DeviceState, SampleUpload]] = []
        for device_id in list(self._order):
            if len(picked) >= room:
                break
            if device_id in busy:
                continue
            self._order.remove(device_id)
            dev = self._devices.get(device_id)
            upload = dev.queue.popleft() if dev is not None and dev.queue else None
            if dev is not None and dev.queue:
                self._order.append(device_id)
            if dev is not None and upload is not None:
                picked.append((dev, upload))
                busy.add(device_id)
        return picked

    def _begin(self, tasks: TaskExecutor, dev: DeviceState, upload: SampleUpload) -> Union[Control, "_Flight"]:
        """The server's part before training (decode, label, buffer, plan) and the task sent; a Control when
        the phase ends here (bad upload, nothing to train, a policy that does not train)."""
        frames = self._decode(dev, upload)
        if isinstance(frames, Control):
            return frames
        return self._dispatch(tasks, dev, upload, frames, self._label(dev, frames))

    def _dispatch(self, tasks: TaskExecutor, dev: DeviceState, upload: SampleUpload, frames: np.ndarray,
                  labels: np.ndarray) -> Union[Control, "_Flight"]:
        if not isinstance(self.policy, TrainingPolicy):
            return self.policy.handle(self, dev, upload, frames, labels)
        self.add_samples(dev, upload, frames, labels)
        plan = self.policy.plan(self, dev, frames, labels)
        if plan is None:
            return self.finish_phase(dev, upload.seq, None)
        handle = tasks.submit(train_phase_task, plan.fn, plan.args, plan.seed, dev.model,
                              dev.optimizer.state_dict(), self.config.adam, self.config.ray_cpus_per_phase)
        return _Flight(dev, upload, plan, handle)

    def _land(self, flight: "_Flight", result: TaskResult) -> Control:
        """A phase's trained weights and optimizer state back into the device's copy; then publish."""
        dev, rep = flight.dev, self.reports[flight.dev.device_id]
        if result.error is not None:
            return self._failed(dev, flight.upload, result.error)
        params, optimizer_state, stats = result.value
        with torch.no_grad():
            for name, p in dev.model.named_parameters():
                p.copy_(params[name])
        dev.optimizer.load_state_dict(optimizer_state)
        rep.train_seconds += result.wall_s
        rep.train_spans.append((result.started, result.ended))
        assert isinstance(self.policy, TrainingPolicy)
        return self.finish_phase(dev, flight.upload.seq, self.policy.updates(self, dev, flight.plan, stats))

    def _free_idle(self, busy: Collection[str] = ()) -> None:
        now = time.monotonic()
        for device_id in [d for d, dev in self._devices.items() if d not in busy
                          and not dev.connected and now - dev.disconnected_at >= self.config.session_ttl_s]:
            del self._devices[device_id]
            self._log(f"{device_id}: session freed")

    def _decode(self, dev: DeviceState, upload: SampleUpload) -> Union[np.ndarray, Control]:
        from edgert.vision.video import VideoError, decode

        rep = self.reports[dev.device_id]
        try:
            frames = decode(upload.video)
        except VideoError as exc:
            rep.uploads_rejected += 1
            rep.last_error = str(exc)
            return self.control(dev, upload.seq, UploadStatus.BAD_VIDEO, str(exc))
        w, h = self.size
        if frames.shape[0] != len(upload.times) or frames.shape[1:3] != (h, w):
            rep.uploads_rejected += 1
            msg = (f"upload {upload.seq}: {len(upload.times)} timestamps for {frames.shape[0]} decoded frames of "
                   f"{frames.shape[2]}x{frames.shape[1]} (expected {w}x{h})")
            rep.last_error = msg
            return self.control(dev, upload.seq, UploadStatus.BAD_UPLOAD, msg)
        return frames

    def _phase(self, dev: DeviceState, upload: SampleUpload) -> Control:
        frames = self._decode(dev, upload)
        if isinstance(frames, Control):
            return frames
        return self.policy.handle(self, dev, upload, frames, self._label(dev, frames))

    def _label(self, dev: DeviceState, frames: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        labels = np.asarray(self.teacher.label(frames))
        self.reports[dev.device_id].label_seconds += time.perf_counter() - t0
        if labels.shape != frames.shape[:3]:
            raise ValueError(f"teacher returned labels {list(labels.shape)} for frames {list(frames.shape)}")
        return labels

    # ---- what the training policies share ----------------------------------------------------------------
    def add_samples(self, dev: DeviceState, upload: SampleUpload, frames: np.ndarray, labels: np.ndarray) -> None:
        """Appends a labelled upload to the device's buffer (drops samples older than T_horizon) and starts
        a phase."""
        cfg = self.config
        rep = self.reports[dev.device_id]
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

    def finish_phase(self, dev: DeviceState, seq: int, updates: Optional[Mapping[str, TensorUpdate]]) -> Control:
        """Publishes a phase's ``updates`` (None: nothing to send) on the device's model stream, resets the
        training copy to what the device will hold, and closes the phase of the sampling controller."""
        rep = self.reports[dev.device_id]
        status = UploadStatus.NO_UPDATE
        if updates is not None:
            packet = self.models.publish(updates, device_id=dev.device_id)
            rep.updates += 1
            rep.update_bytes += len(packet)
            rep.update_sizes[packet.target_version] = len(packet)
            rep.reference_sizes[packet.target_version] = mask_fp16_gzip_bytes(self.manifest, updates)
            if self.config.size_codings:
                rep.coding_sizes[packet.target_version] = {
                    f"{c}/f{f}": len(encode_update(self.manifest, 0, 1, updates, c, max_format=f))
                    for c in self.config.size_codings for f in sorted({1, self.config.packet_format})}
            status = UploadStatus.OK
        # the training copy continues from exactly what the device holds (fp16 deltas round)
        load_weights(dev.model, buffer_tensors(self.manifest, self.models.weights_bytes(dev.device_id)))
        dev.controller.end_phase()
        rep.rate_history = list(dev.controller.history)
        rep.t_update_history.append(dev.controller.t_update)
        return self.control(dev, seq, status)
