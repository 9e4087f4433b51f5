"""The edgert wire protocol (``docs/spec/wire-protocol.md``): frames, core messages, handshake proofs.

Shared by :mod:`edgert.transport.server` and :mod:`edgert.transport.client` and matched byte for byte
by ``firmware/edge_node`` (C++). The core protocol owns frame types 1..11; codes 12..255 belong to
applications, which register theirs (with a handler) in an endpoint's :class:`FrameRegistry`. An
endpoint rejects a frame type it has not registered, so a device that never asks for an application's
frames (the firmware node) never receives one.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import select
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generic, Iterator, Optional, TypeVar

if TYPE_CHECKING:
    import random

#: 3: the handshake proofs cover the HELLO body (model id, version, packet format); 2 added max_packet_format
PROTOCOL_VERSION = 3
SUPPORTED_PROTOCOLS = (3,)  # 1 and 2 left HELLO unauthenticated: a server refuses them with ERROR
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


#: the first frame type code applications may register (12..255)
FIRST_EXTENSION_CODE = 12
LAST_FRAME_CODE = 255

Handler = TypeVar("Handler", bound=Callable[..., None])


class FrameRegistry(Generic[Handler]):
    """The frame types one endpoint accepts: the core protocol's, plus application extension types.

    An application defines its frame types as an :class:`enum.IntEnum` with codes in 12..255 and
    registers each with the handler that receives its bodies (:meth:`ModelServer.register_frame
    <edgert.transport.ModelServer.register_frame>`, :meth:`EdgeClient.register_frame
    <edgert.transport.EdgeClient.register_frame>`). :func:`parse_header` rejects every other code.
    """

    def __init__(self, handlers: Optional[dict[enum.IntEnum, Handler]] = None) -> None:
        self._types: dict[int, enum.IntEnum] = {int(t): t for t in FrameType}
        self._handlers: dict[int, Handler] = {}
        for frame_type, handler in (handlers or {}).items():
            self.register(frame_type, handler)

    def register(self, frame_type: enum.IntEnum, handler: Handler) -> None:
        """Accept ``frame_type`` from now on and pass its bodies to ``handler``.

        Raises:
            ValueError: the code is a core one or outside 12..255, or another type already holds it.
        """
        code = int(frame_type)
        if not FIRST_EXTENSION_CODE <= code <= LAST_FRAME_CODE:
            raise ValueError(f"{frame_type!r}: extension frame types use codes {FIRST_EXTENSION_CODE}.."
                             f"{LAST_FRAME_CODE} (1..{FIRST_EXTENSION_CODE - 1} are the core protocol's)")
        held = self._types.get(code)
        if held is not None and held is not frame_type:
            raise ValueError(f"frame type code {code} is already registered as {held.name}")
        self._types[code] = frame_type
        self._handlers[code] = handler

    def lookup(self, code: int) -> Optional[enum.IntEnum]:
        """The registered type with this code (None: unknown here)."""
        return self._types.get(code)

    def handler(self, frame_type: int) -> Optional[Handler]:
        """The handler of an extension frame type (None for core types and unknown codes)."""
        return self._handlers.get(int(frame_type))

    def extensions(self) -> list[enum.IntEnum]:
        """The registered extension types, by code."""
        return [self._types[c] for c in sorted(self._handlers)]


class ErrorCode(enum.IntEnum):
    UNKNOWN_DEVICE = 1
    AUTH_FAILED = 2
    PROTOCOL = 3  # e.g. a protocol version the server does not speak
    VERSION_AHEAD = 4  # the device claims a version above its shared stream's


class ProtocolError(ValueError):
    """A malformed or unexpected frame: the connection is closed."""


class UnsupportedProtocol(ProtocolError):
    """A HELLO in a protocol version this side does not speak (``protocol``): the server answers ERROR."""

    def __init__(self, message: str, protocol: int) -> None:
        super().__init__(message)
        self.protocol = protocol


class ConnectionClosed(ConnectionError):
    """The peer closed the connection or went silent past the timeout."""


def encode_frame(frame_type: int, body: bytes = b"") -> bytes:
    """One frame: type u8, reserved u8 (0), length u32 LE, body."""
    return HEADER.pack(int(frame_type), 0, len(body)) + body


def parse_header(header: bytes, max_frame: int = DEFAULT_MAX_FRAME,
                 registry: Optional[FrameRegistry] = None) -> tuple[enum.IntEnum, int]:
    """Validates a 6-byte header before anything is allocated for the body.

    ``registry``: the frame types this endpoint accepts (None: the core protocol's only).
    """
    code, reserved, length = HEADER.unpack(header)
    frame_type = registry.lookup(code) if registry is not None else (
        FrameType(code) if code in FrameType.__members__.values() else None)
    if frame_type is None:
        raise ProtocolError(f"unknown frame type {code}")
    if reserved != 0:
        raise ProtocolError(f"reserved header byte is {reserved}, not 0")
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return frame_type, length


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """True when ``sock`` has data (or EOF) within ``timeout`` seconds.

    ``poll`` rather than ``select``: ``select`` cannot watch descriptors >= 1024 (FD_SETSIZE) and raised
    ``ValueError: filedescriptor out of range`` once a server held ~1,000 connections. A closed socket raises
    ``ValueError`` as ``select`` did. A TLS socket may hold decrypted bytes the descriptor no longer shows.
    """
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket
    if pending is not None and pending() > 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000.0))


def recv_exact(sock: socket.socket, n: int, timeout: float) -> bytes:
    """Reads exactly n bytes; raises ConnectionClosed on EOF or when a chunk takes longer than timeout."""
    chunks = bytearray()
    while len(chunks) < n:
        if not wait_readable(sock, timeout):
            raise ConnectionClosed(f"peer silent for {timeout:.1f} s")
        try:
            data = sock.recv(min(n - len(chunks), 1 << 20))
        except OSError as exc:
            raise ConnectionClosed(str(exc)) from exc
        if not data:
            raise ConnectionClosed("connection closed by peer")
        chunks += data
    return bytes(chunks)


def read_frame(sock: socket.socket, timeout: float, max_frame: int = DEFAULT_MAX_FRAME,
               registry: Optional[FrameRegistry] = None) -> tuple[enum.IntEnum, bytes]:
    """Reads one frame (header checked against ``registry`` before the body is read)."""
    frame_type, length = parse_header(recv_exact(sock, HEADER.size, timeout), max_frame, registry)
    return frame_type, recv_exact(sock, length, timeout) if length else b""


def send_frame(sock: socket.socket, frame_type: int, body: bytes = b"") -> None:
    """Writes one frame; raises :class:`ConnectionClosed` when the socket fails."""
    try:
        sock.sendall(encode_frame(frame_type, body))
    except OSError as exc:
        raise ConnectionClosed(str(exc)) from exc


@dataclass
class Hello:
    """HELLO. ``max_packet_format`` is the newest update-packet format the device decodes. ``protocol`` is
    what the device speaks; only :data:`SUPPORTED_PROTOCOLS` decode (an older one is built only to be refused).
    The handshake proofs cover the encoded body exactly as sent, so no field can change on the way."""

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
        """Parses a HELLO body. Raises :class:`UnsupportedProtocol` for another protocol version,
        :class:`ProtocolError` for anything malformed."""
        if len(body) < 8 or body[:4] != HELLO_MAGIC:
            raise ProtocolError("HELLO: bad magic or truncated")
        protocol, id_len = struct.unpack_from("<HH", body, 4)
        if protocol not in SUPPORTED_PROTOCOLS:
            raise UnsupportedProtocol(
                f"HELLO: unsupported protocol version {protocol} (this server speaks {PROTOCOL_VERSION} only: "
                f"protocol {PROTOCOL_VERSION} authenticates the HELLO in the handshake proofs)", protocol)
        if not 1 <= id_len <= MAX_DEVICE_ID:
            raise ProtocolError(f"HELLO: device id must be 1..{MAX_DEVICE_ID} bytes, got {id_len}")
        expected = 8 + id_len + MODEL_ID_BYTES + 8 + 2 + NONCE_BYTES
        if len(body) != expected:
            raise ProtocolError(f"HELLO: expected {expected} bytes, got {len(body)}")
        device = body[8:8 + id_len].decode(errors="replace")
        off = 8 + id_len
        model_id = body[off:off + MODEL_ID_BYTES]
        off += MODEL_ID_BYTES
        version, max_format = struct.unpack_from("<QH", body, off)
        off += 10
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


def server_proof(key: bytes, server_nonce: bytes, hello: bytes) -> bytes:
    """CHALLENGE's proof: HMAC-SHA256(key, "edgert-server-v3" ‖ server_nonce ‖ SHA-256(HELLO body)).

    ``hello`` is the HELLO body exactly as sent (device id, model id, active version, packet format and
    client nonce), so a device sees at once when any of it changed on the way."""
    return _proof(key, b"edgert-server-v3", server_nonce, hello)


def device_proof(key: bytes, server_nonce: bytes, hello: bytes) -> bytes:
    """AUTH's proof: HMAC-SHA256(key, "edgert-device-v3" ‖ server_nonce ‖ SHA-256(HELLO body)).

    The server trusts the HELLO it received only once this matches."""
    return _proof(key, b"edgert-device-v3", server_nonce, hello)


def _proof(key: bytes, label: bytes, server_nonce: bytes, hello: bytes) -> bytes:
    if len(server_nonce) != NONCE_BYTES:
        raise ValueError(f"server nonce must be {NONCE_BYTES} bytes, got {len(server_nonce)}")
    return hmac.new(key, label + server_nonce + hashlib.sha256(hello).digest(), hashlib.sha256).digest()


def backoff_delays(minimum: float = 0.1, maximum: float = 5.0, jitter: float = 0.25,
                   rng: Optional["random.Random"] = None) -> Iterator[float]:
    """Exponential backoff with ±jitter: 0.1, 0.2, 0.4 ... capped at maximum."""
    import random

    rng = rng or random.Random()
    delay = minimum
    while True:
        yield delay * rng.uniform(1 - jitter, 1 + jitter)
        delay = min(delay * 2, maximum)

