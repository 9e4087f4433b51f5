"""RECL over the edgert wire protocol (``docs/spec/wire-protocol.md``, "RECL extension"): the server and the device.

RECL registers three extension frame types with the transport (codes 20..22; AMS holds 12..15):

* **WINDOW** (device -> server): one model-update window of sampled frames, each frame a PNG or JPEG image, or
  all of them one H.264 video (Matroska, the AMS uplink's container) -- :class:`WindowUpload`; with the
  ``SCENE_CUT`` flag, the frames a camera sampled after a scene cut it detected, answered at once by a selection
  (:meth:`RECLController.reselect`: no window, no retraining);
* **DECISION** (server -> device): the answer to a WINDOW: which model the device now runs (a zoo expert or its
  own), its accuracy on the window, how it was delivered and the SHA-256 of the weights the device must hold --
  :class:`DecisionFrame`. The model itself arrives first, as a core PACKET on the same connection;
* **REJECT** (server -> device): a WINDOW the server could not use (no frames, frames that do not decode, a
  malformed body, a window already pending, a failed window); nothing changed -- :class:`Reject`.

The server (:class:`RECLServer`) is a per-device :class:`edgert.transport.ModelServer` over the task's expert
manifest (every device starts on the generic expert, version 1) with a :class:`RECLController` behind it. Uploads
are decoded on the connection threads; a worker thread gathers one upload per device into a window (it closes
when every expected device has uploaded, or ``gather_s`` after the first upload) and runs the controller. As soon
as a device's decision is made, the server publishes the model to that device's stream as an update packet --
a *delta* against the device's current model (the coordinates whose bits differ, set exactly in fp32) when that
packet is smaller, else a *full snapshot* -- and then sends DECISION. The transport does the rest: a device with
another or no model id gets the manifest and a snapshot at connection, a device that missed a version is resynced
with a snapshot, every packet is MAC'd with the device's key and applied atomically by libedgert's slot.

The device (:class:`RECLDevice`) is an :class:`edgert.transport.EdgeClient` with the RECL frames registered:
:meth:`RECLDevice.send_window` uploads frames, :meth:`RECLDevice.wait` returns the DECISION (checking that the
slot's weights hash to the announced digest) or raises :class:`WindowRejected`.
"""
from __future__ import annotations

import enum
import hashlib
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Optional, Union

import numpy as np

from edgert.recl.controller import Decision, RECLController, WindowReport
from edgert.transport import DEFAULT_MAX_FRAME, ConnectionClosed, EdgeClient, ModelServer, ProtocolError, TLSConfig
from edgert.updates import COMPACT_FORMAT, Manifest, TensorUpdate, encode_snapshot, encode_update
from edgert.updates.signing import Signer
from edgert.updates.weights import buffer_tensors, load_weights

Log = Callable[[str], None]


class RECLFrame(enum.IntEnum):
    """RECL's extension frame types (application codes 20..22)."""

    WINDOW = 20  # device -> server: one window of sampled frames
    DECISION = 21  # server -> device: the model the device now runs (after its PACKET)
    REJECT = 22  # server -> device: the window was not used; nothing changed


class FrameCodec(enum.IntEnum):
    """How a WINDOW carries its frames."""

    PNG = 1  # one lossless PNG per frame
    JPEG = 2  # one JPEG per frame
    H264 = 3  # one H.264 video in Matroska holding every frame


class RejectCode(enum.IntEnum):
    """Why a WINDOW was rejected."""

    EMPTY = 1  # the window holds no frames
    BAD_FRAMES = 2  # a frame (or the video) does not decode, or decodes to another size/count than announced
    BAD_WINDOW = 3  # malformed body, unsupported version/codec, too many frames, or another frame size
    BUSY = 4  # this device already has a window waiting to be processed
    FAILED = 5  # the controller failed on the window (the message says why); the device's model is unchanged


class Delivery(enum.IntEnum):
    """How the decision's model reached the device."""

    UNCHANGED = 0  # the device already runs it: no packet
    DELTA = 1  # a packet setting the coordinates that differ (fp32, exact)
    SNAPSHOT = 2  # a full snapshot


WINDOW_VERSION = 1
WINDOW_HEAD = struct.Struct("<HBBIHHH")  # version, codec, flags, seq, count, width, height
#: WINDOW flag: the frames follow a scene cut the camera detected; the server answers with a selection only
SCENE_CUT = 0x01
_KNOWN_FLAGS = SCENE_CUT
DECISION_HEAD = struct.Struct("<IIBBHQqfI32s")  # seq, window, status, delivery, reserved, version, expert, acc, bytes
REJECT_HEAD = struct.Struct("<IH")  # seq, code
MAX_WINDOW_FRAMES = 4096
MAX_TEXT = 1024
NO_EXPERT = -1


# ------------------------------------------------------------------------------------------------- frame codecs


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv-python-headless is in the [video] extra
        raise ImportError("PNG/JPEG windows need OpenCV: pip install 'opencv-python-headless<5' (extra [video])") \
            from exc
    return cv2


def encode_frames(frames: np.ndarray, codec: FrameCodec = FrameCodec.PNG, *, jpeg_quality: int = 90,
                  fps: float = 1.0, crf: float = 18.0) -> bytes:
    """The payload of a WINDOW: ``frames`` (``uint8 [N, H, W, 3]`` RGB, N >= 1) as images or one video.

    PNG is lossless; JPEG (``jpeg_quality``) and H.264 (``crf``; needs even width and height) are lossy: the server
    labels and trains on what it decodes.
    """
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames: expected uint8 [N >= 1, H, W, 3] RGB, got {arr.dtype} {list(arr.shape)}")
    codec = FrameCodec(codec)
    if codec == FrameCodec.H264:
        from edgert.vision.video import encode

        return encode(arr, fps=fps, codec="libx264", crf=crf, preset="veryfast").data
    cv2 = _cv2()
    ext, params = (".png", [cv2.IMWRITE_PNG_COMPRESSION, 6]) if codec == FrameCodec.PNG else (
        ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    parts = []
    for f in arr:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(f[..., ::-1]), params)
        if not ok:
            raise ValueError(f"frames: {codec.name} encoding failed")
        data = buf.tobytes()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def decode_frames(payload: bytes, codec: FrameCodec, count: int, width: int, height: int) -> np.ndarray:
    """The frames of a WINDOW payload, checked against the announced count and size.

    Raises:
        ValueError: the payload is malformed, an image or the video does not decode, or the frames are not
            ``count`` frames of ``width`` x ``height``.
    """
    if codec == FrameCodec.H264:
        from edgert.vision.video import VideoError, decode

        try:
            frames = decode(payload)
        except VideoError as exc:
            raise ValueError(f"the H.264 video does not decode: {exc}") from exc
    else:
        cv2 = _cv2()
        out = []
        pos = 0
        for i in range(count):
            if len(payload) - pos < 4:
                raise ValueError(f"frame {i}: truncated length ({len(payload) - pos} bytes left)")
            (n,) = struct.unpack_from("<I", payload, pos)
            pos += 4
            if n == 0 or n > len(payload) - pos:
                raise ValueError(f"frame {i}: length {n} does not fit the {len(payload) - pos} bytes left")
            img = cv2.imdecode(np.frombuffer(payload, np.uint8, count=n, offset=pos), cv2.IMREAD_COLOR)
            pos += n
            if img is None or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"frame {i}: {n} bytes that do not decode as a {codec.name} color image")
            out.append(np.ascontiguousarray(img[..., ::-1]))
        if pos != len(payload):
            raise ValueError(f"{len(payload) - pos} trailing bytes after {count} frames")
        frames = np.stack(out) if out else np.empty((0, height, width, 3), np.uint8)
    if frames.shape[0] != count or frames.shape[1:3] != (height, width):
        raise ValueError(f"decoded {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, the window "
                         f"announced {count} of {width}x{height}")
    return frames


# ------------------------------------------------------------------------------------------------------- frames


@dataclass
class WindowUpload:
    """WINDOW (device -> server): ``count`` frames of ``width`` x ``height`` in ``payload`` (see
    :func:`encode_frames`); ``seq`` is the device's upload number, echoed in the answer; ``scene_cut``: the
    frames follow a scene cut (flag :data:`SCENE_CUT`), answered by a selection only."""

    seq: int
    codec: FrameCodec
    count: int
    width: int
    height: int
    payload: bytes
    scene_cut: bool = False

    @classmethod
    def of(cls, seq: int, frames: np.ndarray, codec: FrameCodec = FrameCodec.PNG, *, scene_cut: bool = False,
           **options: Any) -> "WindowUpload":
        """The upload of ``frames`` (``uint8 [N, H, W, 3]``; N may be 0 to send an empty window)."""
        arr = np.asarray(frames)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 [N, H, W, 3] RGB, got {arr.dtype} {list(arr.shape)}")
        payload = encode_frames(arr, codec, **options) if arr.shape[0] else b""
        return cls(seq, FrameCodec(codec), int(arr.shape[0]), int(arr.shape[2]), int(arr.shape[1]), payload,
                   scene_cut)

    def encode(self) -> bytes:
        return WINDOW_HEAD.pack(WINDOW_VERSION, int(self.codec), SCENE_CUT if self.scene_cut else 0, self.seq,
                                self.count, self.width, self.height) + self.payload

    @classmethod
    def decode(cls, body: bytes) -> "WindowUpload":
        """Parses the header (the payload is decoded by :meth:`frames`).

        Raises:
            ProtocolError: truncated, unsupported version or codec, unknown flags, too many frames, a zero size, or
                a payload without frames.
        """
        if len(body) < WINDOW_HEAD.size:
            raise ProtocolError(f"WINDOW: {len(body)} bytes, the header alone is {WINDOW_HEAD.size}")
        version, codec, flags, seq, count, width, height = WINDOW_HEAD.unpack_from(body)
        if version != WINDOW_VERSION:
            raise ProtocolError(f"WINDOW: unsupported version {version}; this side speaks {WINDOW_VERSION}")
        if flags & ~_KNOWN_FLAGS:
            raise ProtocolError(f"WINDOW: unknown flags 0x{flags:02x} (this side knows 0x{_KNOWN_FLAGS:02x})")
        if codec not in FrameCodec.__members__.values():
            raise ProtocolError(f"WINDOW: unknown frame codec {codec}")
        if count > MAX_WINDOW_FRAMES:
            raise ProtocolError(f"WINDOW: {count} frames, at most {MAX_WINDOW_FRAMES}")
        if count and (width == 0 or height == 0):
            raise ProtocolError(f"WINDOW: frames of {width}x{height}")
        payload = body[WINDOW_HEAD.size:]
        if count and not payload:
            raise ProtocolError(f"WINDOW: {count} frames announced, no payload")
        if not count and payload:
            raise ProtocolError(f"WINDOW: no frames announced, {len(payload)} payload bytes")
        return cls(seq, FrameCodec(codec), count, width, height, payload, bool(flags & SCENE_CUT))

    def frames(self) -> np.ndarray:
        """The decoded frames ``uint8 [count, height, width, 3]`` (ValueError: see :func:`decode_frames`)."""
        return decode_frames(self.payload, self.codec, self.count, self.width, self.height)


@dataclass
class DecisionFrame:
    """DECISION (server -> device): the answer to upload ``seq``, processed as the controller's ``window``.

    ``version`` is the model version the device runs once the packet before this frame is applied; ``expert_id``
    the zoo expert (-1: the device's own model, ``source`` says which); ``digest`` the SHA-256 of the weight buffer
    the device must hold (the slot's bytes); ``packet_bytes`` the size of the packet that carried it.
    """

    seq: int
    window: int
    delivery: Delivery
    version: int
    expert_id: int
    accuracy: float
    packet_bytes: int
    digest: bytes
    source: str = ""
    status: int = 0

    def encode(self) -> bytes:
        return DECISION_HEAD.pack(self.seq, self.window, self.status, int(self.delivery), 0, self.version,
                                  self.expert_id, self.accuracy, self.packet_bytes, self.digest) \
            + self.source.encode()[:MAX_TEXT]

    @classmethod
    def decode(cls, body: bytes) -> "DecisionFrame":
        if not DECISION_HEAD.size <= len(body) <= DECISION_HEAD.size + MAX_TEXT:
            raise ProtocolError(f"DECISION: expected {DECISION_HEAD.size}..{DECISION_HEAD.size + MAX_TEXT} bytes, "
                                f"got {len(body)}")
        seq, window, status, delivery, reserved, version, expert, acc, nbytes, digest = DECISION_HEAD.unpack_from(body)
        if delivery not in Delivery.__members__.values() or reserved != 0 or status != 0:
            raise ProtocolError(f"DECISION: unknown delivery {delivery} / status {status} (reserved {reserved})")
        return cls(seq, window, Delivery(delivery), version, expert, float(acc), nbytes, digest,
                   body[DECISION_HEAD.size:].decode(errors="replace"), status)


@dataclass
class Reject:
    """REJECT (server -> device): upload ``seq`` was not used, for ``code``; the device's model is unchanged."""

    seq: int
    code: RejectCode
    message: str = ""

    def encode(self) -> bytes:
        return REJECT_HEAD.pack(self.seq, int(self.code)) + self.message.encode()[:MAX_TEXT]

    @classmethod
    def decode(cls, body: bytes) -> "Reject":
        if not REJECT_HEAD.size <= len(body) <= REJECT_HEAD.size + MAX_TEXT:
            raise ProtocolError(f"REJECT: expected {REJECT_HEAD.size}..{REJECT_HEAD.size + MAX_TEXT} bytes, "
                                f"got {len(body)}")
        seq, code = REJECT_HEAD.unpack_from(body)
        if code not in RejectCode.__members__.values():
            raise ProtocolError(f"REJECT: unknown code {code}")
        return cls(seq, RejectCode(code), body[REJECT_HEAD.size:].decode(errors="replace"))


class WindowRejected(RuntimeError):
    """The server rejected a window (``reject`` says why); the device's model is unchanged."""

    def __init__(self, reject: Reject) -> None:
        super().__init__(f"window {reject.seq} rejected ({reject.code.name}): {reject.message}")
        self.reject = reject


# ------------------------------------------------------------------------------------------------------ packets


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1).view(np.uint32)


def delta_updates(manifest: Manifest, current: Mapping[str, np.ndarray],
                  target: Mapping[str, np.ndarray]) -> dict[str, TensorUpdate]:
    """The exact updates taking ``current`` to ``target``: per tensor, the coordinates whose float32 bits differ,
    set to the target's values (fp32, so the device's buffer equals ``target`` bit for bit). Unchanged tensors are
    left out (an empty dict: nothing to send)."""
    out: dict[str, TensorUpdate] = {}
    for spec in manifest.tensors:
        old, new = _bits(current[spec.name]), _bits(target[spec.name])
        idx = np.flatnonzero(old != new)
        if idx.size:
            values = new.view(np.float32)
            out[spec.name] = TensorUpdate(values=values[idx] if idx.size < values.size else values,
                                          indices=idx if idx.size < values.size else None, mode="set",
                                          value_coding="fp32")
    return out


@dataclass
class PacketChoice:
    """The packet a decision is delivered with: its kind, its size, and both candidates' sizes."""

    delivery: Delivery
    packet_bytes: int
    delta_bytes: int
    snapshot_bytes: int
    changed_coordinates: int
    updates: dict[str, TensorUpdate] = field(default_factory=dict, repr=False)


def choose_packet(manifest: Manifest, current: Mapping[str, np.ndarray], target: Mapping[str, np.ndarray],
                  version: int, max_format: int = COMPACT_FORMAT) -> PacketChoice:
    """Delta or snapshot for moving a device at ``version`` from ``current`` to ``target``: the smaller packet
    (ties: the snapshot, which also repairs a device whose copy drifted). Both are encoded to be measured."""
    updates = delta_updates(manifest, current, target)
    if not updates:
        return PacketChoice(Delivery.UNCHANGED, 0, 0, 0, 0)
    changed = sum(int(u.indices.size) if u.indices is not None else int(np.asarray(u.values).size)
                  for u in updates.values())
    delta = len(encode_update(manifest, version, version + 1, updates, "fp32", max_format=max_format).data)
    snap = len(encode_snapshot(manifest, version + 1, dict(target), base_version=version, max_format=max_format).data)
    if delta < snap:
        return PacketChoice(Delivery.DELTA, delta, delta, snap, changed, updates)
    return PacketChoice(Delivery.SNAPSHOT, snap, delta, snap, changed, updates)


# ------------------------------------------------------------------------------------------------------- server


@dataclass
class _Pending:
    seq: int
    frames: np.ndarray
    received: float


class RECLServer:
    """RECL's network server: a per-device model stream for each device in ``keys`` and the controller behind it
    (see the module docstring).

    Args:
        controller: the controller (its task's generic expert is every device's version 1; devices it already
            knows start on their current model).
        keys: per-device keys (16..64 bytes) by device id: the devices this server serves.
        expected: the devices a window waits for (default: every device in ``keys``).
        gather_s: a window closes this long after its first upload even if expected devices are missing.
        host, port: where to listen (port 0 picks a free one; see :attr:`address`).
        max_upload_bytes: the largest WINDOW frame accepted.
        tls: TLS 1.3 with client certificates for every connection (:class:`~edgert.transport.TLSConfig`).
        signer: sign every packet sent with this release key (:class:`~edgert.updates.signing.Signer`).
        packet_format: the newest packet format published (devices get theirs).
        log: optional line logger.

    Reports of the windows processed are in :attr:`reports` (with ``delivery`` filled in per device), the
    decisions of scene-cut uploads in :attr:`reselections`.
    """

    def __init__(self, controller: RECLController, keys: Mapping[str, bytes], *,
                 expected: Optional[Collection[str]] = None, gather_s: float = 5.0, host: str = "127.0.0.1",
                 port: int = 0, max_upload_bytes: int = DEFAULT_MAX_FRAME, packet_format: int = COMPACT_FORMAT,
                 log: Optional[Log] = None, tls: Optional[TLSConfig] = None,
                 signer: Optional[Signer] = None) -> None:
        if gather_s <= 0:
            raise ValueError(f"gather_s: expected > 0, got {gather_s}")
        self.controller = controller
        self.manifest = controller.manifest
        self.expected = set(keys if expected is None else expected)
        unknown = sorted(self.expected - set(keys))
        if unknown:
            raise ValueError(f"expected devices {unknown} have no key")
        self.gather_s = float(gather_s)
        self.packet_format = packet_format
        self._log = log or (lambda line: None)
        for device in keys:
            if device not in controller.devices:
                controller.register_device(device)
        self.models = ModelServer(self.manifest, keys, controller.generic, host=host, port=port, history=1,
                                  value_coding="fp32", packet_format=packet_format, per_device=True, log=self._log,
                                  max_frame=max(max_upload_bytes, DEFAULT_MAX_FRAME), tls=tls,
                                  signer=signer)
        for device in keys:  # devices the controller already knew run their own model
            state = controller.devices[device]
            if self.models.weights_bytes(device) != self.manifest.pack(state.weights):
                self.models.publish_snapshot(state.weights, device_id=device)
        self.models.register_frame(RECLFrame.WINDOW, self._on_window)
        self.reports: list[WindowReport] = []
        self.rejects: list[tuple[str, Reject]] = []
        self._pending: "OrderedDict[str, _Pending]" = OrderedDict()
        self._cuts: "OrderedDict[str, _Pending]" = OrderedDict()  # scene-cut uploads, answered before windows
        self.reselections: list[Decision] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._flush = False

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self.models.address

    def start(self) -> "RECLServer":
        self._worker = threading.Thread(target=self._work, name="edgert-recl-worker", daemon=True)
        self._worker.start()
        self.models.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.models.stop()
        if self._worker is not None:
            self._worker.join(timeout=60)

    def __enter__(self) -> "RECLServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def close_window(self) -> None:
        """Closes the gathering window now (its pending uploads are processed without waiting for the others)."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    # ---- connection threads: decode, check, queue ----------------------------------------------------------
    def _reject(self, session: Any, seq: int, code: RejectCode, message: str) -> None:
        reject = Reject(seq, code, message)
        with self._cond:
            self.rejects.append((session.device_id, reject))
        self._log(f"{session.device_id}: window {seq} rejected ({code.name}): {message}")
        session.send(RECLFrame.REJECT, reject.encode())

    def _on_window(self, session: Any, body: bytes) -> None:
        seq = int.from_bytes(body[4:8], "little") if len(body) >= 8 else 0
        try:
            upload = WindowUpload.decode(body)
        except ProtocolError as exc:
            self._reject(session, seq, RejectCode.BAD_WINDOW, str(exc))
            return
        if upload.count == 0:
            self._reject(session, seq, RejectCode.EMPTY, "the window holds no frames")
            return
        limit = self.controller.config.max_window_frames
        if upload.count > limit:
            self._reject(session, seq, RejectCode.BAD_WINDOW, f"{upload.count} frames, at most {limit} per window")
            return
        shape = self.controller.frame_shape
        if shape is not None and (upload.height, upload.width) != tuple(shape[:2]):
            self._reject(session, seq, RejectCode.BAD_WINDOW, f"frames of {upload.width}x{upload.height}, this "
                         f"server's windows are {shape[1]}x{shape[0]}")
            return
        try:
            frames = upload.frames()
        except (ValueError, ImportError) as exc:
            self._reject(session, seq, RejectCode.BAD_FRAMES, str(exc))
            return
        try:
            if upload.scene_cut:
                self.controller.check_scene_cut(session.device_id, frames)
            else:
                self.controller.check_window({session.device_id: frames})
        except ValueError as exc:
            self._reject(session, seq, RejectCode.BAD_WINDOW, str(exc))
            return
        queue, what = (self._cuts, "scene-cut upload") if upload.scene_cut else (self._pending, "window")
        with self._cond:
            if session.device_id in queue:
                busy = True
            else:
                busy = False
                queue[session.device_id] = _Pending(upload.seq, frames, time.monotonic())
                self._cond.notify_all()
        if busy:
            self._reject(session, seq, RejectCode.BUSY, f"a {what} of this device is already waiting")

    # ---- the worker: windows ---------------------------------------------------------------------------
    def _ready(self) -> bool:
        if not self._pending:
            return False
        if self._flush or self.expected <= set(self._pending):
            return True
        first = min(p.received for p in self._pending.values())
        return time.monotonic() - first >= self.gather_s

    def _work(self) -> None:
        while not self._stopping.is_set():
            cut: Optional[tuple[str, _Pending]] = None
            batch: dict[str, _Pending] = {}
            with self._cond:
                while not self._stopping.is_set() and not self._cuts and not self._ready():
                    self._cond.wait(timeout=0.05)
                if self._stopping.is_set():
                    return
                if self._cuts:  # a selection takes a fraction of a window's work: it goes first
                    cut = self._cuts.popitem(last=False)
                else:
                    batch = dict(self._pending)
                    self._pending.clear()
                    self._flush = False
            if cut is not None:
                self._reselect(*cut)
            else:
                self._process(batch)

    def _reselect(self, device: str, upload: _Pending) -> None:
        """Answers a scene-cut upload: the controller's selection for its frames, delivered like a window's."""
        def record(decision: Decision) -> None:
            # before the DECISION frame goes out: whoever hears the answer finds the decision recorded
            with self._cond:
                self.reselections.append(decision)
                self._cond.notify_all()

        try:
            self._deliver(self.controller.reselect(device, upload.frames), upload.seq, on_published=record)
        except Exception as exc:  # the upload is rejected; the server goes on
            self._log(f"{device}: scene-cut upload {upload.seq} failed: {type(exc).__name__}: {exc}")
            self._fail(device, upload.seq, exc)

    def _process(self, batch: Mapping[str, _Pending]) -> None:
        frames = {d: p.frames for d, p in batch.items()}
        sent: set[str] = set()

        def deliver(decision: Decision) -> None:
            self._deliver(decision, batch[decision.device].seq)
            sent.add(decision.device)

        try:
            report = self.controller.run_window(frames, on_decision=deliver)
        except Exception as exc:  # a controller failure rejects the window's uploads; the server goes on
            self._log(f"window failed: {type(exc).__name__}: {exc}")
            for d, p in batch.items():
                if d not in sent:
                    self._fail(d, p.seq, exc)
            return
        with self._cond:
            self.reports.append(report)
            self._cond.notify_all()

    def _fail(self, device: str, seq: int, exc: Exception) -> None:
        """Rejects upload ``seq`` of ``device`` as FAILED (the controller raised ``exc``); its model is unchanged."""
        reject = Reject(seq, RejectCode.FAILED, f"{type(exc).__name__}: {exc}")
        with self._cond:
            self.rejects.append((device, reject))
        self.models.send_to(device, RECLFrame.REJECT, reject.encode())

    def _deliver(self, decision: Decision, seq: int,
                 on_published: Optional[Callable[[Decision], None]] = None) -> None:
        """Publishes the decision's model to the device's stream (delta or snapshot), calls ``on_published`` (the
        report's delivery filled in), then sends DECISION."""
        d = decision.device
        mirror = self.models.mirror_of(d)
        version = self.models.version_of(d)
        current = {s.name: mirror.tensor(i) for i, s in enumerate(self.manifest.tensors)}
        choice = choose_packet(self.manifest, current, decision.weights, version, self.packet_format)
        if choice.delivery == Delivery.DELTA:
            self.models.publish(choice.updates, device_id=d)
        elif choice.delivery == Delivery.SNAPSHOT:
            self.models.publish_snapshot(decision.weights, device_id=d)
        digest = hashlib.sha256(self.models.weights_bytes(d)).digest()
        if digest.hex() != decision.digest:  # the mirror is the device's exact copy: this would be a bug
            raise RuntimeError(f"{d}: the published model hashes to {digest.hex()}, the decision to {decision.digest}")
        decision.report.delivery = {"kind": choice.delivery.name.lower(), "packet_bytes": choice.packet_bytes,
                                    "delta_bytes": choice.delta_bytes, "snapshot_bytes": choice.snapshot_bytes,
                                    "changed_coordinates": choice.changed_coordinates,
                                    "version": self.models.version_of(d)}
        frame = DecisionFrame(seq, decision.window, choice.delivery, self.models.version_of(d),
                              NO_EXPERT if decision.expert_id is None else decision.expert_id,
                              decision.accuracy, choice.packet_bytes, digest, decision.report.chosen_source)
        if on_published is not None:
            on_published(decision)
        self.models.send_to(d, RECLFrame.DECISION, frame.encode())

    def wait_reports(self, count: int, timeout: float = 60.0) -> list[WindowReport]:
        """Waits until ``count`` windows have been processed; returns the reports (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.reports) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.reports)} of {count} windows processed after {timeout} s")
                self._cond.wait(timeout=min(left, 0.1))
            return list(self.reports)


# ------------------------------------------------------------------------------------------------------- device


@dataclass
class DeviceDecision:
    """A DECISION as the device saw it: the frame, and whether its slot's weights matched the announced digest
    when it arrived (the slot's version then too)."""

    frame: DecisionFrame
    verified: bool
    slot_version: int


class RECLDevice:
    """The device side: an :class:`edgert.transport.EdgeClient` (libedgert slot, verified atomic updates) that
    uploads windows and receives decisions.

    Args:
        address: the server's ``(host, port)``.
        device_id, key: the device's identity and key.
        codec: how windows carry frames (:class:`FrameCodec`); ``codec_options`` go to :func:`encode_frames`.
        log: optional line logger.
        client_options: more :class:`EdgeClient` arguments (``max_packet_format``, timeouts).
    """

    def __init__(self, address: tuple[str, int], device_id: str, key: bytes, *,
                 codec: Union[FrameCodec, str] = FrameCodec.PNG, codec_options: Optional[Mapping[str, Any]] = None,
                 log: Optional[Log] = None, **client_options: Any) -> None:
        self.codec = FrameCodec[codec.upper()] if isinstance(codec, str) else FrameCodec(codec)
        self.codec_options = dict(codec_options or {})
        self.client = EdgeClient(address, device_id, key, log=log,
                                 handlers={RECLFrame.DECISION: self._on_decision, RECLFrame.REJECT: self._on_reject},
                                 **client_options)
        self._cond = threading.Condition()
        self._answers: dict[int, Union[DeviceDecision, Reject]] = {}
        self._seq = 0
        self.upload_bytes = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.client.device_id

    def start(self) -> "RECLDevice":
        self.client.start()
        return self

    def stop(self) -> None:
        self.client.stop()

    def __enter__(self) -> "RECLDevice":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Waits until connected with a model in the slot (the generic expert or what the server holds for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.connected.is_set() and self.client.slot is not None and self.client.version > 0:
                return True
            time.sleep(0.01)
        return False

    # ---- the model -------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.client.version

    def weights_bytes(self) -> bytes:
        """The slot's weight buffer (empty before the first model)."""
        slot = self.client.slot
        return bytes(slot.weights()[0]) if slot is not None else b""

    def weights_digest(self) -> str:
        """SHA-256 (hex) of :meth:`weights_bytes`."""
        return hashlib.sha256(self.weights_bytes()).hexdigest()

    def weights(self) -> dict[str, np.ndarray]:
        """The slot's tensors by name (copies)."""
        manifest = Manifest.from_bytes(self.client.manifest_bytes)
        return {k: np.array(v) for k, v in buffer_tensors(manifest, self.weights_bytes()).items()}

    def load_into(self, module: Any) -> Any:
        """Copies the slot's weights into ``module`` (the task's expert architecture) and returns it."""
        load_weights(module, self.weights())
        return module

    # ---- windows ---------------------------------------------------------------------------------
    def send_window(self, frames: np.ndarray, seq: Optional[int] = None, *, scene_cut: bool = False) -> int:
        """Uploads one window of ``frames`` (``uint8 [N, H, W, 3]`` RGB), or with ``scene_cut`` the frames
        sampled after a scene cut (answered by a selection only); returns its sequence number.

        Raises:
            ConnectionClosed: not connected.
        """
        with self._cond:
            self._seq = self._seq + 1 if seq is None else int(seq)
            number = self._seq
            self._answers.pop(number, None)
        body = WindowUpload.of(number, frames, self.codec, scene_cut=scene_cut, **self.codec_options).encode()
        self.send_raw(body)
        return number

    def send_raw(self, body: bytes) -> None:
        """Sends a WINDOW body as is (tests of the server's checks)."""
        self.client.send(RECLFrame.WINDOW, body)
        self.upload_bytes += len(body) + 6

    def wait(self, seq: int, timeout: float = 60.0) -> DeviceDecision:
        """The answer to upload ``seq``.

        Raises:
            WindowRejected: the server rejected it. TimeoutError: no answer in time.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.device_id}: no answer to window {seq} after {timeout} s")
                self._cond.wait(timeout=min(left, 0.1))
            answer = self._answers[seq]
        if isinstance(answer, Reject):
            raise WindowRejected(answer)
        return answer

    def _on_decision(self, body: bytes) -> None:
        frame = DecisionFrame.decode(body)
        # runs on the network thread after the PACKET before it was applied: the slot holds the new model now
        answer = DeviceDecision(frame, hashlib.sha256(self.weights_bytes()).digest() == frame.digest, self.version)
        with self._cond:
            self._answers[frame.seq] = answer
            self._cond.notify_all()

    def _on_reject(self, body: bytes) -> None:
        reject = Reject.decode(body)
        with self._cond:
            self._answers[reject.seq] = reject
            self._cond.notify_all()


__all__ = ["DECISION_HEAD", "WINDOW_HEAD", "ConnectionClosed", "Delivery", "DecisionFrame", "DeviceDecision",
           "FrameCodec", "PacketChoice", "SCENE_CUT", "RECLDevice", "RECLFrame", "RECLServer", "Reject", "RejectCode",
           "WindowRejected", "WindowUpload", "choose_packet", "decode_frames", "delta_updates", "encode_frames"]
