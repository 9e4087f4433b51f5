"""The model server (``docs/spec/wire-protocol.md``).

:class:`ModelServer` holds one model (manifest + the device-exact weights in a
:class:`~edgert.updates.DeviceMirror`), a bounded history of update packets
and one thread per connected device. It answers each device with the packets
that lead from the device's version to its own, or with a full snapshot, MACs
every packet with that device's key, and pushes new versions as they are
published. Applications add their own frame types with :meth:`ModelServer.register_frame`.
The device side is :class:`edgert.transport.EdgeClient` (Python) or ``firmware/edge_node`` (C++).
"""
from __future__ import annotations

import enum
import json
import os
import secrets
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from edgert.transport.frames import (
    DEFAULT_MAX_FRAME,
    NONCE_BYTES,
    ConnectionClosed,
    ErrorCode,
    FrameRegistry,
    FrameType,
    Hello,
    ProtocolError,
    decode_nack,
    decode_u64,
    device_proof,
    encode_challenge,
    encode_error,
    read_frame,
    send_frame,
    server_proof,
)
from edgert.updates import (
    COMPACT_FORMAT,
    DeviceMirror,
    EncodedPacket,
    Manifest,
    authenticate,
    encode_snapshot,
    encode_update,
    transcode,
)
from edgert.updates.manifest import TensorMap
from edgert.updates.signing import Signer

Log = Callable[[str], None]
ServerHandler = Callable[["_Session", bytes], None]


@dataclass
class DeviceStatus:
    """What the server knows of one device."""

    device_id: str
    connected: bool = False
    acked_version: int = 0
    nacks: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0


class _Stream:
    """One model's stream: manifest, the device-exact weights, the packet history, persistence."""

    def __init__(self, manifest: Manifest, history: int, state_dir: Optional[Path]) -> None:
        self.manifest = manifest
        self.mirror = DeviceMirror(manifest)
        self.history: deque[EncodedPacket] = deque(maxlen=history)
        self.state_dir = state_dir

    @property
    def version(self) -> int:
        return self.mirror.version


def _safe_dir_name(device_id: str) -> str:
    """A device id usable as a folder name (hex-encoded when it holds anything but [A-Za-z0-9._-])."""
    if device_id and device_id[0] != "." and all(c.isascii() and (c.isalnum() or c in "._-") for c in device_id):
        return device_id
    return "hex-" + device_id.encode().hex()


class _Session:
    """One device connection. Extension frame handlers receive it: ``device_id`` and :meth:`send`."""

    def __init__(self, server: "ModelServer", sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.device_id = ""
        self.key = b""
        self.sent_version = 0
        self.max_packet_format = 1  # from HELLO
        self.stream: Optional[_Stream] = None
        self.lock = threading.Lock()  # one writer at a time (session thread and publishers)

    def send(self, frame_type: int, body: bytes = b"") -> None:
        """Writes one frame to this device (any thread)."""
        with self.lock:
            send_frame(self.sock, frame_type, body)
        self.server._account(self.device_id, sent=len(body) + 6)

    def send_packet(self, packet: Union[bytes, EncodedPacket], target_version: int) -> None:
        data = transcode(packet, self.server.manifest, self.max_packet_format)
        if self.server.signer is not None:  # after transcoding: the signature covers the bytes the device decodes
            data = self.server.signer.sign(data)
        self.send(FrameType.PACKET, authenticate(data, self.key))
        self.sent_version = target_version


class ModelServer:
    """Serves one model to many devices (one thread per connection).

    Args:
        manifest: the model's tensor table.
        keys: per-device keys (16..64 bytes), by device id.
        weights: initial weights by tensor name (published as version 1), or None.
        host, port: where to listen (port 0 picks a free one; see :attr:`address`).
        history: how many recent packets are kept to serve update chains.
        value_coding: "fp16" (default), "fp32" or "int8" for sparse updates.
        packet_format: the newest packet format published (2: range-coded when smaller);
            each device gets the packets transcoded down to the format its HELLO announces.
        state_dir: if given, the model state (manifest, weights, version) is saved
            there after every publish and restored on start, so a restarted
            server continues its version sequence.
        per_device: every device gets its own model stream (same manifest, own
            weights and versions, all starting from ``weights``); publish with
            ``device_id=``. State is saved under ``state_dir/<device id>``.
        handlers: extension frames a device may send (application frame type -> ``fn(session, body)``,
            called on the connection's thread; ``session.send(type, body)`` answers); the same as
            calling :meth:`register_frame` for each. Types without a handler are protocol errors.
        on_disconnect: called with the device id when an authenticated connection ends.
        signer: a release key with its delegation (:class:`edgert.updates.signing.Signer`); every packet
            sent is signed with it (after transcoding, before the device's MAC), expiring ``signer.validity``
            seconds later. None sends unsigned packets (devices that pin a root key refuse them).
    """

    def __init__(self, manifest: Manifest, keys: Mapping[str, bytes], weights: Optional[Mapping[str, Any]] = None, *,
                 host: str = "127.0.0.1", port: int = 0, history: int = 64, value_coding: str = "fp16",
                 packet_format: int = COMPACT_FORMAT,
                 state_dir: Optional[Union[str, Path]] = None, max_frame: int = DEFAULT_MAX_FRAME,
                 idle_timeout: float = 30.0, log: Optional[Log] = None, per_device: bool = False,
                 handlers: Optional[Mapping[enum.IntEnum, "ServerHandler"]] = None,
                 on_disconnect: Optional[Callable[[str], None]] = None, signer: Optional[Signer] = None) -> None:
        for device, key in keys.items():
            if not 16 <= len(key) <= 64:
                raise ValueError(f"key of device {device!r} must be 16..64 bytes, got {len(key)}")
        self.manifest = manifest
        self.keys = dict(keys)
        self.value_coding = value_coding
        self.packet_format = packet_format
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.per_device = per_device
        self.frames: FrameRegistry[ServerHandler] = FrameRegistry(dict(handlers or {}))
        self.on_disconnect = on_disconnect
        self.signer = signer
        self.devices: dict[str, DeviceStatus] = {}
        self._log = log or (lambda line: None)
        self._lock = threading.RLock()
        self._sessions: set[_Session] = set()
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        if per_device:
            self._streams = {d: _Stream(manifest, history, None if self._state_dir is None
                                        else self._state_dir / _safe_dir_name(d)) for d in self.keys}
        else:
            self._streams = {"": _Stream(manifest, history, self._state_dir)}
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)
        for device, stream in self._streams.items():
            if stream.state_dir is not None and (stream.state_dir / "state.json").exists():
                self._restore(stream)
            elif weights is not None:
                self.publish_snapshot(weights, device_id=device or None)

    # ---- lifecycle -----------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    def _stream(self, device_id: Optional[str]) -> _Stream:
        if not self.per_device:
            return self._streams[""]
        if device_id is None:
            raise ValueError("this server keeps one model per device: pass device_id")
        if device_id not in self._streams:
            raise KeyError(f"unknown device {device_id!r}")
        return self._streams[device_id]

    @property
    def mirror(self) -> DeviceMirror:
        """The device-exact weights of the shared model (per-device servers: :meth:`mirror_of`)."""
        return self._stream(None).mirror

    @property
    def history(self) -> "deque[EncodedPacket]":
        return self._stream(None).history

    @property
    def version(self) -> int:
        return self._stream(None).version

    def mirror_of(self, device_id: Optional[str] = None) -> DeviceMirror:
        """The weights ``device_id`` holds once in sync (the shared model when not per-device)."""
        return self._stream(device_id).mirror

    def version_of(self, device_id: Optional[str] = None) -> int:
        return self._stream(device_id).version

    def start(self) -> "ModelServer":
        thread = threading.Thread(target=self._accept_loop, name="edgert-model-server", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self, abrupt: bool = False) -> None:
        """Stops listening and closes every connection (``abrupt``: reset, as a killed process would)."""
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            try:
                if abrupt:
                    s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.sock.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- publishing --------------------------------------------------------------------
    def publish(self, updates: TensorMap, device_id: Optional[str] = None) -> EncodedPacket:
        """Encodes the next version from sparse/dense updates and pushes it to connected devices.

        ``device_id`` names the device's own stream on a per-device server (ignored otherwise).
        """
        with self._lock:
            stream = self._stream(device_id)
            packet = encode_update(self.manifest, stream.version, stream.version + 1, updates, self.value_coding,
                                   max_format=self.packet_format)
            return self._commit(stream, packet)

    def publish_snapshot(self, weights: TensorMap, target_version: Optional[int] = None,
                         device_id: Optional[str] = None) -> EncodedPacket:
        """Publishes complete weights as a full snapshot (version + 1, or ``target_version``)."""
        with self._lock:
            stream = self._stream(device_id)
            target = stream.version + 1 if target_version is None else target_version
            packet = encode_snapshot(self.manifest, target, weights, base_version=stream.version)
            return self._commit(stream, packet)

    def weights_bytes(self, device_id: Optional[str] = None) -> bytes:
        """The exact bytes every in-sync device (of ``device_id``'s stream) holds."""
        with self._lock:
            return self._stream(device_id).mirror.weights_bytes()

    def _commit(self, stream: _Stream, packet: EncodedPacket) -> EncodedPacket:
        stream.mirror.apply(packet)
        stream.history.append(packet)
        self._save(stream)
        with self._lock:
            sessions = [s for s in self._sessions if s.stream is stream]
        for s in sessions:
            try:
                self._push(s)
            except ConnectionClosed:
                pass
        return packet

    def _snapshot_packet(self, stream: _Stream) -> EncodedPacket:
        weights = {t.name: stream.mirror.tensor(i) for i, t in enumerate(self.manifest.tensors)}
        return encode_snapshot(self.manifest, stream.version, weights, base_version=0)

    def _push(self, s: _Session) -> None:
        """Sends the session whatever brings it from its last sent version to its stream's."""
        with self._lock:
            stream = s.stream
            if not s.device_id or stream is None or s.sent_version == stream.version:
                return
            chain = self._chain_from(stream, s.sent_version)
            if chain is None:
                s.send_packet(self._snapshot_packet(stream), stream.version)
                return
            for packet in chain:
                s.send_packet(packet, packet.target_version)

    def _chain_from(self, stream: _Stream, version: int) -> Optional[list[EncodedPacket]]:
        """Packets from ``version`` to the stream's, if its history still holds an unbroken chain.

        A full snapshot newer than ``version`` is a valid start: it applies to any older model.
        """
        packets = list(stream.history)
        for i, p in enumerate(packets):
            if p.base_version == version or (p.full_snapshot and p.target_version > version):
                chain = packets[i:]
                linked = all(b.base_version == a.target_version or b.full_snapshot for a, b in zip(chain, chain[1:]))
                return chain if linked else None
        return None

    # ---- persistence ---------------------------------------------------------------------
    def _save(self, stream: _Stream) -> None:
        folder = stream.state_dir
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / "weights.bin"
        tmp = weights.with_suffix(".tmp")
        tmp.write_bytes(stream.mirror.weights_bytes())
        os.replace(tmp, weights)
        (folder / "manifest.bin").write_bytes(self.manifest.to_bytes())
        state = folder / "state.json"
        state.with_suffix(".tmp").write_text(json.dumps({"version": stream.version}))
        os.replace(state.with_suffix(".tmp"), state)

    def _restore(self, stream: _Stream) -> None:
        folder = stream.state_dir
        assert folder is not None
        if (folder / "manifest.bin").read_bytes() != self.manifest.to_bytes():
            raise ValueError(f"{folder} holds the state of a different model")
        stream.mirror.buffer[:] = np.frombuffer((folder / "weights.bin").read_bytes(), dtype=np.uint8)
        stream.mirror.version = json.loads((folder / "state.json").read_text())["version"]
        self._log(f"restored model state of {folder} at version {stream.version}")

    # ---- connections -------------------------------------------------------------------------
    def _account(self, device_id: str, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            st = self.devices.setdefault(device_id, DeviceStatus(device_id))
            st.bytes_sent += sent
            st.bytes_received += received

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(10.0)  # a device that stops reading cannot block publishers forever
            session = _Session(self, sock)
            with self._lock:
                self._sessions.add(session)
            thread = threading.Thread(target=self._serve, args=(session,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, s: _Session) -> None:
        try:
            self._handshake(s)
            self._conversation(s)
        except (ConnectionClosed, ProtocolError, OSError) as exc:
            self._log(f"{s.device_id or 'unauthenticated peer'}: {exc}")
        finally:
            with self._lock:
                self._sessions.discard(s)
                if s.device_id in self.devices:
                    self.devices[s.device_id].connected = False
            try:
                s.sock.close()
            except OSError:
                pass
            if s.device_id and self.on_disconnect is not None:
                self.on_disconnect(s.device_id)

    def _handshake(self, s: _Session) -> None:
        frame_type, body = read_frame(s.sock, 10.0, self.max_frame)
        if frame_type != FrameType.HELLO:
            raise ProtocolError(f"expected HELLO, got {frame_type.name}")
        hello = Hello.decode(body)
        key = self.keys.get(hello.device_id)
        if key is None:
            send_frame(s.sock, FrameType.ERROR,
                       encode_error(ErrorCode.UNKNOWN_DEVICE, f"unknown device {hello.device_id!r}"))
            raise ProtocolError(f"unknown device {hello.device_id!r}")
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        send_frame(s.sock, FrameType.CHALLENGE,
                   encode_challenge(server_nonce, server_proof(key, hello.client_nonce, server_nonce, hello.device_id),
                                    hello.protocol))
        frame_type, body = read_frame(s.sock, 10.0, self.max_frame)
        expected = device_proof(key, server_nonce, hello.client_nonce, hello.device_id)
        if frame_type != FrameType.AUTH or not secrets.compare_digest(body, expected):
            send_frame(s.sock, FrameType.ERROR, encode_error(ErrorCode.AUTH_FAILED, "authentication failed"))
            raise ProtocolError(f"device {hello.device_id!r} failed authentication")
        s.device_id, s.key, s.max_packet_format = hello.device_id, key, hello.max_packet_format
        with self._lock:
            stream = self._stream(hello.device_id)
            s.stream = stream
            st = self.devices.setdefault(hello.device_id, DeviceStatus(hello.device_id))
            st.connected = True
            same_model = hello.model_id == self.manifest.model_id
            if not same_model:
                s.send(FrameType.MANIFEST, self.manifest.to_bytes())
            s.sent_version = hello.active_version if same_model else 0
            if same_model and hello.active_version > stream.version:
                # The device is ahead of us (we lost state): jump past it with a snapshot.
                weights = {t.name: stream.mirror.tensor(i) for i, t in enumerate(self.manifest.tensors)}
                self.publish_snapshot(weights, target_version=hello.active_version + 1,
                                      device_id=hello.device_id if self.per_device else None)
            self._log(f"{hello.device_id}: connected at version {hello.active_version}, server at {stream.version}")
        self._push(s)

    def _conversation(self, s: _Session) -> None:
        while not self._stopping.is_set():
            frame_type, body = read_frame(s.sock, self.idle_timeout, self.max_frame, self.frames)
            self._account(s.device_id, received=len(body) + 6)
            if frame_type == FrameType.ACK:
                version = decode_u64(body, "ACK")
                with self._lock:
                    self.devices[s.device_id].acked_version = version
            elif frame_type == FrameType.NACK:
                version, status, message = decode_nack(body)
                with self._lock:
                    self.devices[s.device_id].nacks.append(message)
                self._log(f"{s.device_id}: rejected a packet at version {version}: {message}")
                self._resync(s, version)
            elif frame_type == FrameType.RESYNC:
                version = decode_u64(body, "RESYNC")
                self._resync(s, version)
            elif frame_type == FrameType.PING:
                s.send(FrameType.PONG, body)
            elif frame_type == FrameType.PONG:
                continue
            else:
                handler = self.frames.handler(frame_type)
                if handler is None:
                    raise ProtocolError(f"unexpected {frame_type.name} from a device")
                handler(s, body)

    def _resync(self, s: _Session, device_version: int) -> None:
        """Answers a NACK or RESYNC: a full snapshot of the device's stream."""
        stream = s.stream
        if stream is None:  # not possible after the handshake, which sets it
            raise ProtocolError("resync before the handshake")
        with self._lock:
            s.sent_version = device_version
            s.send_packet(self._snapshot_packet(stream), stream.version)

    def register_frame(self, frame_type: enum.IntEnum, handler: "ServerHandler") -> None:
        """Accepts the application frame type ``frame_type`` (code 12..255) from devices from now on;
        ``handler(session, body)`` runs on the connection's thread (see :class:`FrameRegistry`)."""
        with self._lock:
            self.frames.register(frame_type, handler)

    def send_to(self, device_id: str, frame_type: int, body: bytes = b"") -> bool:
        """Sends one frame to every connection of ``device_id``; False when none is connected."""
        with self._lock:
            sessions = [s for s in self._sessions if s.device_id == device_id]
        sent = False
        for s in sessions:
            try:
                s.send(frame_type, body)
                sent = True
            except ConnectionClosed:
                pass
        return sent

    # ---- fault injection (tests and drills) -------------------------------------------
    def inject(self, device_id: str, raw: bytes, close: bool = False) -> bool:
        """Writes raw bytes to a connected device's socket (e.g. half a frame), optionally closing it."""
        with self._lock:
            sessions = [s for s in self._sessions if s.device_id == device_id]
        for s in sessions:
            with s.lock:
                try:
                    s.sock.sendall(raw)
                    if close:
                        s.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    return False
        return bool(sessions)
