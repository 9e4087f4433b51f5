"""The edgert wire protocol (``docs/wire-protocol.md``): frames, messages, handshake proofs.

Shared by :mod:`edgert.stream.server` (model server, Python edge client) and
matched byte for byte by ``firmware/edge_node`` (C++).
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import select
import socket
import struct
from dataclasses import dataclass
from typing import Optional

PROTOCOL_VERSION = 2  # what this side sends; servers also accept protocol 1 devices
SUPPORTED_PROTOCOLS = (1, 2)
HEADER = struct.Struct("<BBI")
DEFAULT_MAX_FRAME = 64 << 20
NONCE_BYTES = 16
PROOF_BYTES = 32
MODEL_ID_BYTES = 16
MAX_DEVICE_ID = 64
HELLO_MAGIC = b"ERTW"


class FrameType(enum.IntEnum):
    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    MANIFEST = 4
    PACKET = 5
    ACK = 6
    NACK = 7
    RESYNC = 8
    PING = 9
    PONG = 10
    ERROR = 11
    # AMS uplink extension (docs/wire-protocol.md): a server sends CONTROL only to a device that sent JOIN,
    # so devices that never join (the firmware edge node) never see a frame type they do not know.
    JOIN = 12
    CONTROL = 13
    SAMPLES = 14
    LABELS = 15  # remote-inference baseline (edgert.stream.flow): sent only to a device that sent JOIN


class ErrorCode(enum.IntEnum):
    UNKNOWN_DEVICE = 1
    AUTH_FAILED = 2
    PROTOCOL = 3


class ProtocolError(ValueError):
    """A malformed or unexpected frame: the connection is closed."""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection or went silent past the timeout."""


def encode_frame(frame_type: FrameType, body: bytes = b"") -> bytes:
    """One frame: type u8, reserved u8 (0), length u32 LE, body."""
    return HEADER.pack(int(frame_type), 0, len(body)) + body


def parse_header(header: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[FrameType, int]:
    """Validates a 6-byte header before anything is allocated for the body."""
    frame_type, reserved, length = HEADER.unpack(header)
    if frame_type not in FrameType.__members__.values():
        raise ProtocolError(f"unknown frame type {frame_type}")
    if reserved != 0:
        raise ProtocolError(f"reserved header byte is {reserved}, not 0")
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return FrameType(frame_type), length


def recv_exact(sock: socket.socket, n: int, timeout: float) -> bytes:
    """Reads exactly n bytes; raises ConnectionClosed on EOF or when a chunk takes longer than timeout."""
    chunks = bytearray()
    while len(chunks) < n:
        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            raise ConnectionClosed(f"peer silent for {timeout:.1f} s")
        try:
            data = sock.recv(min(n - len(chunks), 1 << 20))
        except OSError as exc:
            raise ConnectionClosed(str(exc)) from exc
        if not data:
            raise ConnectionClosed("connection closed by peer")
        chunks += data
    return bytes(chunks)


def read_frame(sock: socket.socket, timeout: float, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[FrameType, bytes]:
    """Reads one frame (header checked before the body is read)."""
    frame_type, length = parse_header(recv_exact(sock, HEADER.size, timeout), max_frame)
    return frame_type, recv_exact(sock, length, timeout) if length else b""


def send_frame(sock: socket.socket, frame_type: FrameType, body: bytes = b"") -> None:
    try:
        sock.sendall(encode_frame(frame_type, body))
    except OSError as exc:
        raise ConnectionClosed(str(exc)) from exc


@dataclass
class Hello:
    """HELLO. Protocol 2 adds ``max_packet_format`` (the newest update-packet format the device
    decodes); a protocol 1 device decodes format 1 only."""

    device_id: str
    model_id: bytes
    active_version: int
    client_nonce: bytes
    max_packet_format: int = 1
    protocol: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        device = self.device_id.encode()
        body = (HELLO_MAGIC + struct.pack("<HH", self.protocol, len(device)) + device + self.model_id
                + struct.pack("<Q", self.active_version))
        if self.protocol >= 2:
            body += struct.pack("<H", self.max_packet_format)
        return body + self.client_nonce

    @classmethod
    def decode(cls, body: bytes) -> "Hello":
        if len(body) < 8 or body[:4] != HELLO_MAGIC:
            raise ProtocolError("HELLO: bad magic or truncated")
        protocol, id_len = struct.unpack_from("<HH", body, 4)
        if protocol not in SUPPORTED_PROTOCOLS:
            raise ProtocolError(f"HELLO: unsupported protocol version {protocol} (this server speaks "
                                f"{min(SUPPORTED_PROTOCOLS)}..{max(SUPPORTED_PROTOCOLS)})")
        if not 1 <= id_len <= MAX_DEVICE_ID:
            raise ProtocolError(f"HELLO: device id must be 1..{MAX_DEVICE_ID} bytes, got {id_len}")
        format_bytes = 2 if protocol >= 2 else 0
        expected = 8 + id_len + MODEL_ID_BYTES + 8 + format_bytes + NONCE_BYTES
        if len(body) != expected:
            raise ProtocolError(f"HELLO: expected {expected} bytes, got {len(body)}")
        device = body[8:8 + id_len].decode(errors="replace")
        off = 8 + id_len
        model_id = body[off:off + MODEL_ID_BYTES]
        off += MODEL_ID_BYTES
        (version,) = struct.unpack_from("<Q", body, off)
        off += 8
        max_format = 1
        if format_bytes:
            (max_format,) = struct.unpack_from("<H", body, off)
            off += 2
            if max_format < 1:
                raise ProtocolError(f"HELLO: max packet format {max_format} (at least 1)")
        return cls(device, model_id, version, body[off:], max_format, protocol)


def encode_challenge(server_nonce: bytes, proof: bytes, protocol: int = PROTOCOL_VERSION) -> bytes:
    """CHALLENGE in the device's protocol version (the server answers in the version it was greeted in)."""
    return struct.pack("<H", protocol) + server_nonce + proof


def decode_challenge(body: bytes, protocol: int = PROTOCOL_VERSION) -> tuple[bytes, bytes]:
    if len(body) != 2 + NONCE_BYTES + PROOF_BYTES:
        raise ProtocolError("CHALLENGE: wrong length")
    (answered,) = struct.unpack_from("<H", body)
    if answered != protocol:
        raise ProtocolError(f"CHALLENGE: protocol version {answered}, expected {protocol}")
    return body[2:2 + NONCE_BYTES], body[2 + NONCE_BYTES:]


def encode_u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def decode_u64(body: bytes, what: str) -> int:
    if len(body) != 8:
        raise ProtocolError(f"{what}: expected 8 bytes, got {len(body)}")
    return struct.unpack("<Q", body)[0]


def encode_nack(active_version: int, status: int, message: str) -> bytes:
    return struct.pack("<QI", active_version, status) + message.encode()[:255]


def decode_nack(body: bytes) -> tuple[int, int, str]:
    if len(body) < 12:
        raise ProtocolError("NACK: truncated")
    version, status = struct.unpack_from("<QI", body)
    return version, status, body[12:].decode(errors="replace")


def encode_error(code: int, message: str) -> bytes:
    return struct.pack("<I", code) + message.encode()


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


def server_proof(key: bytes, client_nonce: bytes, server_nonce: bytes, device_id: str) -> bytes:
    return hmac.new(key, b"edgert-server" + client_nonce + server_nonce + device_id.encode(), hashlib.sha256).digest()


def device_proof(key: bytes, server_nonce: bytes, client_nonce: bytes, device_id: str) -> bytes:
    return hmac.new(key, b"edgert-device" + server_nonce + client_nonce + device_id.encode(), hashlib.sha256).digest()


def backoff_delays(minimum: float = 0.1, maximum: float = 5.0, jitter: float = 0.25,
                   rng: Optional[object] = None):
    """Exponential backoff with ±jitter: 0.1, 0.2, 0.4 ... capped at maximum."""
    import random

    rng = rng or random.Random()
    delay = minimum
    while True:
        yield delay * rng.uniform(1 - jitter, 1 + jitter)  # type: ignore[attr-defined]
        delay = min(delay * 2, maximum)

