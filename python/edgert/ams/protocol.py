"""AMS's extension frames of the wire protocol (``docs/spec/wire-protocol.md``, "AMS extension").

The AMS application registers these frame types with the transport (:class:`edgert.transport.FrameRegistry`);
the core protocol does not know them. A server sends CONTROL and LABELS only to a device that sent JOIN, so
devices that never join (the firmware edge node) never see a frame type they do not know. The bytes on the
wire are those of protocol 2's frames 12..15 (unchanged in protocol 3).
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgert.transport import ProtocolError


class AMSFrame(enum.IntEnum):
    """AMS's frame types (application codes 12..15)."""

    JOIN = 12  # device -> server: upload samples and receive CONTROL frames
    CONTROL = 13  # server -> device: the answer to JOIN or an upload, and the device's next settings
    SAMPLES = 14  # device -> server: one buffer of sampled frames as a compressed video
    LABELS = 15  # server -> device: a label map (the remote-inference baseline, :mod:`edgert.ams.flow`)


UPLINK_VERSION = 1
JOIN_STRUCT = struct.Struct("<HHfHH")
CONTROL_STRUCT = struct.Struct("<IIQff")
SAMPLES_HEAD = struct.Struct("<IId")
MAX_SAMPLES_PER_UPLOAD = 4096


class UploadStatus(enum.IntEnum):
    """CONTROL status: how the server handled an upload (or JOIN)."""

    OK = 0  # samples labelled, phase trained, model version published
    JOINED = 1  # answer to JOIN: the starting rate and period
    BAD_VIDEO = 2  # the video bytes did not decode (the model is unchanged)
    BAD_UPLOAD = 3  # frame count or timestamps inconsistent with the video
    BUSY = 4  # the device's queue was full: the upload was dropped
    NO_UPDATE = 5  # processed, nothing worth sending this phase


@dataclass
class Join:
    """JOIN (device -> server): the device uploads samples and wants CONTROL frames."""

    fps: float
    width: int
    height: int

    def encode(self) -> bytes:
        return JOIN_STRUCT.pack(UPLINK_VERSION, 0, self.fps, self.width, self.height)

    @classmethod
    def decode(cls, body: bytes) -> "Join":
        if len(body) != JOIN_STRUCT.size:
            raise ProtocolError(f"JOIN: expected {JOIN_STRUCT.size} bytes, got {len(body)}")
        version, reserved, fps, width, height = JOIN_STRUCT.unpack(body)
        if version != UPLINK_VERSION or reserved != 0:
            raise ProtocolError(f"JOIN: unsupported uplink version {version} (reserved {reserved})")
        if not (fps > 0 and width > 0 and height > 0):
            raise ProtocolError(f"JOIN: fps, width, height must be positive, got {fps}, {width}, {height}")
        return cls(float(fps), width, height)


@dataclass
class Control:
    """CONTROL (server -> device): the answer to upload ``seq`` (0 for JOIN) and the device's next settings."""

    seq: int
    status: UploadStatus
    model_version: int
    sample_rate: float
    t_update: float
    message: str = ""

    def encode(self) -> bytes:
        return CONTROL_STRUCT.pack(self.seq, int(self.status), self.model_version, self.sample_rate,
                                   self.t_update) + self.message.encode()[:255]

    @classmethod
    def decode(cls, body: bytes) -> "Control":
        if not CONTROL_STRUCT.size <= len(body) <= CONTROL_STRUCT.size + 255:
            raise ProtocolError(f"CONTROL: expected {CONTROL_STRUCT.size}..{CONTROL_STRUCT.size + 255} bytes, "
                                f"got {len(body)}")
        seq, status, version, rate, t_update = CONTROL_STRUCT.unpack_from(body)
        if status not in UploadStatus.__members__.values():
            raise ProtocolError(f"CONTROL: unknown status {status}")
        if not (rate > 0 and t_update > 0):
            raise ProtocolError(f"CONTROL: rate and t_update must be positive, got {rate}, {t_update}")
        return cls(seq, UploadStatus(status), version, float(rate), float(t_update),
                   body[CONTROL_STRUCT.size:].decode(errors="replace"))


@dataclass
class SampleUpload:
    """SAMPLES (device -> server): one buffer of sampled frames as a compressed video.

    ``times`` are the frames' stream timestamps (seconds, increasing), ``t_end`` the end of the buffered
    window; ``video`` is a complete container (Matroska, H.264) holding exactly ``len(times)`` frames.
    """

    seq: int
    t_end: float
    times: list[float]
    video: bytes

    def encode(self) -> bytes:
        return (SAMPLES_HEAD.pack(self.seq, len(self.times), self.t_end)
                + struct.pack(f"<{len(self.times)}d", *self.times) + self.video)

    @classmethod
    def decode(cls, body: bytes) -> "SampleUpload":
        if len(body) < SAMPLES_HEAD.size:
            raise ProtocolError("SAMPLES: truncated header")
        seq, count, t_end = SAMPLES_HEAD.unpack_from(body)
        if not 1 <= count <= MAX_SAMPLES_PER_UPLOAD:
            raise ProtocolError(f"SAMPLES: frame count must be 1..{MAX_SAMPLES_PER_UPLOAD}, got {count}")
        end = SAMPLES_HEAD.size + 8 * count
        if len(body) <= end:
            raise ProtocolError(f"SAMPLES: {len(body)} bytes cannot hold {count} timestamps and a video")
        times = list(struct.unpack_from(f"<{count}d", body, SAMPLES_HEAD.size))
        if any(not (b > a) for a, b in zip(times, times[1:])) or not all(t == t for t in times):
            raise ProtocolError("SAMPLES: timestamps must be strictly increasing")
        if not t_end >= times[-1]:
            raise ProtocolError(f"SAMPLES: t_end {t_end} before the last frame {times[-1]}")
        return cls(seq, float(t_end), times, body[end:])


LABELS_HEAD = struct.Struct("<Id")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def opencv() -> Any:
    """The ``cv2`` module, or an ImportError saying how to install it."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv-python-headless is a dependency of the eval
        raise ImportError("LABELS frames and optical flow need OpenCV: pip install 'opencv-python-headless<5'") from exc
    return cv2


def encode_labels(seq: int, time_s: float, labels: np.ndarray) -> bytes:
    """LABELS body: seq u32, frame time f64, the ``uint8`` label map as PNG (lossless, deflate)."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels: expected uint8 [H, W], got {labels.dtype} {list(labels.shape)}")
    ok, png = opencv().imencode(".png", labels, [opencv().IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError("labels: PNG encoding failed")
    return LABELS_HEAD.pack(seq, time_s) + png.tobytes()


def decode_labels(body: bytes, shape: tuple[int, int]) -> tuple[int, float, np.ndarray]:
    """Parses a LABELS body; raises :class:`ProtocolError` when it is not a ``shape`` label map."""
    if len(body) <= LABELS_HEAD.size or body[LABELS_HEAD.size:LABELS_HEAD.size + 8] != PNG_MAGIC:
        raise ProtocolError("LABELS: truncated or not a PNG label map")
    seq, time_s = LABELS_HEAD.unpack_from(body)
    cv2 = opencv()
    labels = cv2.imdecode(np.frombuffer(body, np.uint8, offset=LABELS_HEAD.size), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.dtype != np.uint8 or labels.shape != tuple(shape):
        got = None if labels is None else f"{labels.dtype} {list(labels.shape)}"
        raise ProtocolError(f"LABELS: expected a uint8 {list(shape)} map, got {got}")
    return seq, float(time_s), labels


__all__ = ["AMSFrame", "Control", "Join", "SampleUpload", "UploadStatus", "decode_labels", "encode_labels"]
