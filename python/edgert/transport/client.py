"""The device side of the wire protocol in Python (``docs/spec/wire-protocol.md``).

:class:`EdgeClient` keeps an :class:`edgert._edgert.Slot` in sync with a
:class:`~edgert.transport.ModelServer`: libedgert verifies and applies every
packet, exactly as the C++ device (``firmware/edge_node``) does.
"""
from __future__ import annotations

import enum
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import edgert._edgert as _edgert
from edgert.transport.frames import (
    DEFAULT_MAX_FRAME,
    MODEL_ID_BYTES,
    NONCE_BYTES,
    ConnectionClosed,
    FrameRegistry,
    FrameType,
    Hello,
    ProtocolError,
    backoff_delays,
    decode_challenge,
    device_proof,
    encode_nack,
    encode_u64,
    read_frame,
    send_frame,
    server_proof,
    wait_readable,
)
from edgert.transport.tls import TLSConfig
from edgert.updates.signing import Trust, resume_trust, save_trust

Log = Callable[[str], None]
ClientHandler = Callable[[bytes], None]


class EdgeClient:
    """The device side in Python: keeps an :class:`edgert._edgert.Slot` in sync with a server.

    Runs in a background thread with reconnect and exponential backoff; the slot
    (``self.slot``) is readable at any time. ``on_version`` is called after each
    applied version. Like the firmware node it pings after ``ping_after`` seconds
    without traffic and drops the connection after ``silence_timeout``.

    Extensions (application frames such as the AMS uplink): ``on_connect()`` runs on the
    network thread right after a successful handshake, ``handlers`` maps application frame
    types the server may send to ``fn(body)`` (or call :meth:`register_frame`), and
    :meth:`send` writes a frame from any thread.

    ``max_packet_format`` (default: what the linked libedgert decodes) is announced in HELLO;
    a lower value makes the server transcode, as it does for older devices.

    ``tls``: connect with TLS 1.3, presenting the device certificate (subject CN = ``device_id``) and checking
    the server's against the CA bundle and the host name; the HMAC handshake then runs inside TLS. A failed
    TLS handshake counts as a failed connection (logged, retried with backoff).

    ``trust`` (pinned root key, root version, delegation floor) makes the slot refuse every packet
    without a valid release signature (libedgert's ``edgert_slot_set_trust``); :attr:`trust` follows
    the root rotations and delegations of the packets applied, and carries over to a new model's slot.

    ``state_dir`` (with ``trust``): the trust is saved there as ``trust.bin`` (the firmware node's file, written
    atomically) after every applied packet that changed it, and resumed from there on construction when its root
    version is not below the pinned one -- so a restarted edge keeps refusing a rotated-out root or a revoked
    delegation. A ``trust.bin`` that exists but is truncated or corrupted raises
    :class:`~edgert.updates.signing.TrustStateError` here (no silent fall-back to the pinned root). The model
    itself is not saved: a restarted client resyncs from the server.
    """

    def __init__(self, address: tuple[str, int], device_id: str, key: bytes, *,
                 on_version: Optional[Callable[[int], None]] = None, max_frame: int = DEFAULT_MAX_FRAME,
                 log: Optional[Log] = None, on_connect: Optional[Callable[[], None]] = None,
                 handlers: Optional[Mapping[enum.IntEnum, ClientHandler]] = None,
                 ping_after: float = 5.0, silence_timeout: float = 15.0,
                 max_packet_format: Optional[int] = None, tls: Optional[TLSConfig] = None,
                 trust: Optional[Trust] = None, state_dir: Optional[Union[str, Path]] = None) -> None:
        self.address = address
        self.tls = tls
        self._tls_context = tls.client_context() if tls is not None else None
        self.max_packet_format = _edgert.packet_max_format() if max_packet_format is None else max_packet_format
        self.device_id = device_id
        self.key = key
        self._log = log or (lambda line: None)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        resumed_from_file = False
        if trust is not None and self.state_dir is not None:
            trust, resumed_from_file = resume_trust(self.state_dir, trust)
            if resumed_from_file:
                self._log(f"{device_id}: resumed trust: root version {trust.root_version}, delegations >= "
                          f"{trust.min_release_version}")
        self.trust = trust
        self._saved_trust = trust if resumed_from_file else None
        self.slot: Optional[Any] = None
        self._manifest = b""
        self.on_version = on_version
        self.on_connect = on_connect
        self.frames: FrameRegistry[ClientHandler] = FrameRegistry(dict(handlers or {}))
        self.max_frame = max_frame
        self.ping_after = ping_after
        self.silence_timeout = silence_timeout
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sock: Optional[socket.socket] = None
        self._send_lock = threading.Lock()
        self.connected = threading.Event()
        self.connections = 0  # successful handshakes so far
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def version(self) -> int:
        return self.slot.version if self.slot is not None else 0

    @property
    def manifest_bytes(self) -> bytes:
        """The manifest of the model in :attr:`slot` (empty before the first one arrives)."""
        return self._manifest

    def start(self) -> "EdgeClient":
        self._thread = threading.Thread(target=self._run, name=f"edgert-edge-{self.device_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the network thread's poll()
            except OSError:
                pass
            try:
                self._sock.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def register_frame(self, frame_type: enum.IntEnum, handler: ClientHandler) -> None:
        """Accepts the application frame type ``frame_type`` (code 12..255) from the server;
        ``handler(body)`` runs on the network thread. Register before :meth:`start`."""
        self.frames.register(frame_type, handler)

    def send(self, frame_type: int, body: bytes = b"") -> None:
        """Writes one frame on the current connection (any thread); raises ConnectionClosed when there is none."""
        sock = self._sock
        if sock is None or not self.connected.is_set():
            raise ConnectionClosed("not connected")
        self._write(sock, frame_type, body)

    def _write(self, sock: socket.socket, frame_type: int, body: bytes = b"") -> None:
        with self._send_lock:
            send_frame(sock, frame_type, body)
            self.bytes_sent += len(body) + 6

    def _run(self) -> None:
        delays = backoff_delays()
        while not self._stopping.is_set():
            try:
                with self._connect() as sock:
                    self._sock = sock
                    try:
                        self._session(sock)
                    finally:
                        self.connected.clear()
                    delays = backoff_delays()
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                self._log(f"{self.device_id}: {exc}")
            except ValueError as exc:  # poll() on a socket that stop() closed
                if not self._stopping.is_set():
                    raise
                self._log(f"{self.device_id}: stopped ({exc})")
            self._stopping.wait(next(delays))

    def _connect(self) -> socket.socket:
        """A connected socket, TLS-wrapped (handshake done) when configured."""
        sock = socket.create_connection(self.address, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls_context is None:
            return sock
        assert self.tls is not None
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=self.tls.server_hostname or self.address[0])
        except BaseException:
            sock.close()
            raise

    def _read(self, sock: socket.socket) -> tuple[enum.IntEnum, bytes]:
        """Next frame; pings when the server is quiet, gives up after ``silence_timeout``."""
        quiet_since = time.monotonic()
        pinged = False
        while True:
            if wait_readable(sock, self.ping_after):
                break
            if self._stopping.is_set():
                raise ConnectionClosed("stopping")
            if time.monotonic() - quiet_since >= self.silence_timeout:
                raise ConnectionClosed(f"server silent for {self.silence_timeout:.1f} s")
            if not pinged:
                self._write(sock, FrameType.PING, encode_u64(int(quiet_since)))
                pinged = True
        frame_type, body = read_frame(sock, self.silence_timeout, self.max_frame, self.frames)
        self.bytes_received += len(body) + 6
        return frame_type, body

    def _session(self, sock: socket.socket) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        model_id = bytes(self.slot.model_id) if self.slot is not None else bytes(MODEL_ID_BYTES)
        hello = Hello(self.device_id, model_id, self.version, nonce, self.max_packet_format).encode()
        self._write(sock, FrameType.HELLO, hello)  # the proofs cover these exact bytes
        frame_type, body = read_frame(sock, 10.0, self.max_frame)
        if frame_type != FrameType.CHALLENGE:
            raise ProtocolError(f"expected CHALLENGE, got {frame_type.name}")
        server_nonce, proof = decode_challenge(body)
        if not secrets.compare_digest(proof, server_proof(self.key, server_nonce, hello)):
            raise ProtocolError("the server does not know this device's key, or our HELLO changed on the way")
        self._write(sock, FrameType.AUTH, device_proof(self.key, server_nonce, hello))
        self.connected.set()
        self.connections += 1
        if self.on_connect is not None:
            self.on_connect()
        while not self._stopping.is_set():
            frame_type, body = self._read(sock)
            if frame_type == FrameType.MANIFEST:
                if body != self._manifest or self.slot is None:
                    slot = _edgert.Slot(body)
                    slot.set_key(self.key)
                    if self.trust is not None:
                        t = self.trust
                        slot.set_trust(t.root_key, t.root_version, t.min_release_version, t.now or 0)
                    self.slot, self._manifest = slot, body
            elif frame_type == FrameType.PACKET:
                self._apply(sock, body)
            elif frame_type == FrameType.PING:
                self._write(sock, FrameType.PONG, body)
            elif frame_type == FrameType.PONG:
                continue
            elif frame_type == FrameType.ERROR:
                raise ProtocolError(f"server error: {body[4:].decode(errors='replace')}")
            else:
                handler = self.frames.handler(frame_type)
                if handler is None:
                    raise ProtocolError(f"unexpected {frame_type.name} from the server")
                handler(body)

    def _apply(self, sock: socket.socket, packet: bytes) -> None:
        if self.slot is None:
            self._write(sock, FrameType.RESYNC, encode_u64(0))
            return
        try:
            self.slot.apply(packet)
        except _edgert.PacketError as exc:
            if exc.status_name == "EDGERT_ERR_PACKET_STALE":
                self._write(sock, FrameType.ACK, encode_u64(self.version))
            elif exc.status_name == "EDGERT_ERR_PACKET_VERSION_MISMATCH":
                self._write(sock, FrameType.RESYNC, encode_u64(self.version))
            else:
                # "STATUS_NAME: message", as the firmware node words it
                self._write(sock, FrameType.NACK, encode_nack(self.version, exc.status, f"{exc.status_name}: {exc}"))
            return
        if self.trust is not None:
            t = self.slot.trust()
            trust = Trust(t["root_key"], t["root_version"], t["min_release_version"], self.trust.now)
            self.trust = trust
            if self.state_dir is not None and trust != self._saved_trust:
                try:
                    save_trust(self.state_dir, trust)
                    self._saved_trust = trust
                except OSError as exc:  # kept in memory; retried after the next applied packet
                    self._log(f"{self.device_id}: warning: could not save trust.bin: {exc}")
        self._write(sock, FrameType.ACK, encode_u64(self.version))
        if self.on_version is not None:
            self.on_version(self.version)
