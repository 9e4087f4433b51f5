"""The model server (``docs/spec/wire-protocol.md``).

:class:`ModelServer` holds one model (manifest + the device-exact weights in a
:class:`~edgert.updates.DeviceMirror`) and a bounded history of update packets, and
serves every connection from one I/O loop (asyncio on epoll, optionally TLS 1.3 with
mutual authentication) with a small pool of worker threads for per-device work. It
answers each device with the packets that lead from the device's version to its own,
or with a full snapshot, MACs every packet with that device's key, and pushes new
versions as they are published. Applications add their own frame types with
:meth:`ModelServer.register_frame`; see ``docs/design/transport.md``.
The device side is :class:`edgert.transport.EdgeClient` (Python) or ``firmware/edge_node`` (C++).
"""
from __future__ import annotations

import asyncio
import enum
import json
import os
import secrets
import socket
import ssl
import struct
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from edgert.transport.frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
    NONCE_BYTES,
    ConnectionClosed,
    ErrorCode,
    FrameRegistry,
    FrameType,
    Hello,
    ProtocolError,
    UnsupportedProtocol,
    decode_nack,
    decode_u64,
    device_proof,
    encode_challenge,
    encode_error,
    encode_frame,
    parse_header,
    server_proof,
)
from edgert.transport.tls import TLSConfig, peer_device_id
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


@dataclass
class ServerStats:
    """Connection counters of a :class:`ModelServer` (:meth:`ModelServer.stats`)."""

    accepted: int = 0  # TCP connections accepted
    refused_over_limit: int = 0  # closed at once: ``max_unauthenticated`` connections were still in their handshake
    tls_failed: int = 0  # TLS handshake failed (bad, expired, revoked or missing certificate, not TLS 1.3)
    handshake_timeouts: int = 0  # not authenticated within ``handshake_timeout``
    auth_failed: int = 0  # HELLO/AUTH refused (unknown device, wrong key, certificate for another device)
    authenticated: int = 0
    version_ahead: int = 0  # refused after AUTH: claimed a version above its shared stream's (ERROR VERSION_AHEAD)
    open: int = 0  # connections now open
    unauthenticated: int = 0  # of those, still in their handshake
    preauth_reads: int = 0  # reads of connections in their handshake (each one a wakeup of the I/O loop)
    preauth_throttled: int = 0  # times such a connection's reading was paused after part of a frame
    preauth_held: int = 0  # times part of a plain-TCP handshake frame was left in the kernel until complete


#: pending connections the kernel queues for accept (it clamps this to net.core.somaxconn)
LISTEN_BACKLOG = 4096
#: the largest frame read before a device has authenticated (HELLO is at most 114 bytes, AUTH 32)
PREAUTH_MAX_FRAME = 256


class _Session:
    """One device connection. Extension frame handlers receive it: ``device_id`` and :meth:`send`."""

    def __init__(self, server: "ModelServer", conn: "_Connection") -> None:
        self.server = server
        self.conn = conn
        self.device_id = ""
        self.key = b""
        self.sent_version = 0
        self.max_packet_format = 1  # from HELLO
        self.stream: Optional[_Stream] = None

    def send(self, frame_type: int, body: bytes = b"") -> None:
        """Writes one frame to this device (any thread). Blocks while the device is slow to read (backpressure,
        up to the server's send timeout); raises :class:`ConnectionClosed` when the connection is gone."""
        self.conn.write(encode_frame(frame_type, body))
        self.server._account(self.device_id, sent=len(body) + 6)

    def send_packet(self, packet: Union[bytes, EncodedPacket], target_version: int) -> None:
        data = transcode(packet, self.server.manifest, self.max_packet_format)
        if self.server.signer is not None:  # after transcoding: the signature covers the bytes the device decodes
            data = self.server.signer.sign(data)
        self.send(FrameType.PACKET, authenticate(data, self.key))
        self.sent_version = target_version


class _Connection(asyncio.Protocol):
    """The I/O loop's side of one connection: TLS, framing, the handshake, core frames; the rest (the
    synchronisation after AUTH, NACK/RESYNC, application frames) runs on the server's workers, one item at a
    time per connection, with reading paused meanwhile so frames are handled in order."""

    def __init__(self, server: "ModelServer") -> None:
        self.server = server
        self.loop = server._loop
        self.transport: Optional[asyncio.Transport] = None
        self.session = _Session(server, self)
        self.buffer = bytearray()
        self.state = "new"  # new -> tls -> hello -> auth -> ready -> closed
        self.counted = False  # counted among the unauthenticated
        self.deadline = 0.0
        self.last_rx = 0.0
        self.hello: Optional[Hello] = None
        self.hello_body = b""  # as received: the proofs cover it
        self.server_nonce = b""
        self.work: deque[Callable[[], None]] = deque()
        self.busy = False
        self.writable = threading.Event()  # cleared while the transport's buffer is over its high-water mark
        self.writable.set()
        self.closed = False
        self.peer = "unauthenticated peer"
        # TLS: the session over memory BIOs on the raw transport (asyncio's start_tls would allocate a 256 KiB
        # read buffer per connection: 2.5 GiB for 10,000 devices); certified = its certificate's device id
        self.tls: Optional[ssl.SSLObject] = None
        self.tls_in = ssl.MemoryBIO()
        self.tls_out = ssl.MemoryBIO()
        self.certified: Optional[str] = None
        self.throttle: Optional[asyncio.TimerHandle] = None  # resumes reading after a partial handshake frame
        self.low_water = 1  # the socket's SO_RCVLOWAT: > 1 while a partial handshake frame waits in the kernel

    # ---- asyncio callbacks (loop thread) ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        srv = self.server
        self.transport = transport
        srv._stats.accepted += 1
        if srv._stats.unauthenticated >= srv.max_unauthenticated:
            srv._stats.refused_over_limit += 1
            self.closed, self.state = True, "closed"
            transport.abort()
            return
        srv._stats.unauthenticated += 1
        srv._stats.open += 1
        self.counted = True
        now = time.monotonic()
        self.deadline, self.last_rx = now + srv.handshake_timeout, now
        srv._conns.add(self)
        if srv._tls_context is not None:
            self.state = "tls"
            self.tls = srv._tls_context.wrap_bio(self.tls_in, self.tls_out, server_side=True)
        else:
            self.state = "hello"

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        if self.low_water > 1:  # woken: the frame is complete (or the peer closed); read normally again
            self._set_low_water(1)
        eof = False
        partial_record = False
        if self.tls is not None:
            in_tls_handshake = self.state == "tls"  # its last flight may share a segment with part of a record
            data, eof = self._decrypt(data)
            partial_record = not data and not eof and not in_tls_handshake  # OpenSSL holds the part it read
        self.buffer += data
        if self.state == "ready":
            self._process()
        else:
            self.server._stats.preauth_reads += 1
            self._process()
            if self.state in ("hello", "auth") and not self.closed and (self.buffer or partial_record):
                if not (self.tls is None and self._hold_in_kernel()):
                    self._throttle()
        if eof:
            self.close(graceful=True)

    def _decrypt(self, data: bytes) -> tuple[bytes, bool]:
        """TLS: feeds ``data`` to the session (completing its handshake first: the client certificate must
        name a known device); returns the plaintext it completes and whether the peer closed the session."""
        tls, srv = self.tls, self.server
        assert tls is not None
        self.tls_in.write(data)
        if self.state == "tls":
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_tls()
                return b"", False
            except (ssl.SSLError, OSError) as exc:  # a bad, expired, revoked or missing certificate; not TLS 1.3
                srv._stats.tls_failed += 1
                self._flush_tls()  # the alert tells the device why
                self.close(f"TLS handshake refused: {exc}", graceful=True)
                return b"", False
            self.certified = peer_device_id(tls.getpeercert())
            if self.certified not in srv.keys:  # refused before any frame is read
                srv._stats.tls_failed += 1
                self.close(f"TLS certificate of unknown device {self.certified!r}")
                return b"", False
            self.state = "hello"
        chunks, eof = [], False
        try:
            while True:
                chunk = tls.read(1 << 16)
                if not chunk:  # close_notify
                    eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self.close(f"TLS: {exc}")
        self._flush_tls()  # what the session answers on its own (session tickets, key updates)
        return b"".join(chunks), eof

    def _flush_tls(self) -> None:
        if self.tls_out.pending and self.transport is not None and not self.closed:
            self.transport.write(self.tls_out.read())

    def _throttle(self) -> None:
        """Part of a handshake frame arrived: read this connection again only ``preauth_read_interval`` later
        (what the peer sends meanwhile waits in the kernel and is read at once then), and before its handshake
        deadline. Devices send each frame whole, so only a peer that trickles its handshake is paused: each then
        costs the loop at most one read per interval however fast it trickles, and authenticated devices keep
        the loop (``docs/design/transport.md``)."""
        srv = self.server
        now = time.monotonic()
        delay = min(srv.preauth_read_interval, self.deadline - min(1.0, srv.handshake_timeout / 10) - now)
        if delay <= 0:
            return
        srv._stats.preauth_throttled += 1
        self._pause(True)
        self.throttle = self.loop.call_later(delay, self._unthrottle)

    def _hold_in_kernel(self) -> bool:
        """Plain TCP, part of a handshake frame read: set the socket's receive low-water mark (``SO_RCVLOWAT``)
        to the bytes the frame still lacks (to the end of its header while that is incomplete), so the kernel
        wakes the loop only when they have all arrived, the peer closes, or never (the handshake deadline then
        closes it). A peer that trickles its HELLO costs at most two reads per frame however it trickles,
        instead of the pause's one per ``preauth_read_interval``. False where the option cannot be set; the
        caller then pauses instead. (TLS records are read by OpenSSL from our buffer, so TLS keeps the pause.)"""
        have = len(self.buffer)
        if have < HEADER.size:
            missing = HEADER.size - have
        else:
            _, _, length = HEADER.unpack(bytes(self.buffer[:HEADER.size]))  # <= PREAUTH_MAX_FRAME: checked
            missing = HEADER.size + length - have
        if missing == 1:  # the next byte completes the frame: the default mark already waits for it
            return True
        if not self._set_low_water(missing):
            return False
        self.server._stats.preauth_held += 1
        return True

    def _set_low_water(self, nbytes: int) -> bool:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None or not hasattr(socket, "SO_RCVLOWAT"):
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError:
            return False
        self.low_water = nbytes
        return True

    def _unthrottle(self) -> None:
        self.throttle = None
        if not self.busy:
            self._pause(False)

    def eof_received(self) -> Optional[bool]:
        return False  # close our side too

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.state == "closed" and not self.counted:
            return
        srv = self.server
        self.closed = True
        self.writable.set()  # wakes writers, which now see `closed`
        if self.throttle is not None:
            self.throttle.cancel()
            self.throttle = None
        srv._conns.discard(self)
        if self.counted:
            srv._stats.open -= 1
            if self.state != "ready":
                srv._stats.unauthenticated -= 1
            self.counted = False
        was_ready = self.state == "ready"
        self.state = "closed"
        if was_ready:
            s = self.session
            srv._detach(s)
            if srv.on_disconnect is not None:
                on_disconnect = srv.on_disconnect
                self._queue(lambda: on_disconnect(s.device_id))

    # ---- frames (loop thread) ----------------------------------------------------------------------------
    def _process(self) -> None:
        srv = self.server
        while not self.busy and self.state in ("hello", "auth", "ready"):
            if len(self.buffer) < HEADER.size:
                return
            ready = self.state == "ready"
            try:
                frame_type, length = parse_header(bytes(self.buffer[:HEADER.size]),
                                                  srv.max_frame if ready else PREAUTH_MAX_FRAME,
                                                  srv.frames if ready else None)
                if len(self.buffer) < HEADER.size + length:
                    return
                body = bytes(self.buffer[HEADER.size:HEADER.size + length])
                del self.buffer[:HEADER.size + length]
                if ready:
                    self._frame(frame_type, body)
                else:
                    self._handshake(frame_type, body)
            except (ProtocolError, ConnectionClosed) as exc:
                self.close(str(exc))
                return

    def _handshake(self, frame_type: enum.IntEnum, body: bytes) -> None:
        srv = self.server
        if self.state == "hello":
            if frame_type != FrameType.HELLO:
                raise ProtocolError(f"expected HELLO, got {frame_type.name}")
            try:
                hello = Hello.decode(body)
            except UnsupportedProtocol as exc:
                self._refuse(ErrorCode.PROTOCOL, str(exc), f"refused: {exc}")
                return
            key = srv.keys.get(hello.device_id)
            if key is None:
                self._refuse(ErrorCode.UNKNOWN_DEVICE, f"unknown device {hello.device_id!r}")
                return
            if self.tls is not None and self.certified != hello.device_id:
                self._refuse(ErrorCode.AUTH_FAILED, f"the TLS certificate is for device {self.certified!r}, "
                                                    f"HELLO says {hello.device_id!r}")
                return
            self.hello, self.hello_body, self.server_nonce = hello, body, secrets.token_bytes(NONCE_BYTES)
            self._write_now(encode_frame(FrameType.CHALLENGE, encode_challenge(
                self.server_nonce, server_proof(key, self.server_nonce, body), hello.protocol)))
            self.state = "auth"
            return
        greeted = self.hello
        assert greeted is not None
        key = srv.keys[greeted.device_id]
        # AUTH proves the device sent exactly the HELLO we received (its version and model id included)
        expected = device_proof(key, self.server_nonce, self.hello_body)
        if frame_type != FrameType.AUTH or not secrets.compare_digest(body, expected):
            self._refuse(ErrorCode.AUTH_FAILED, "authentication failed",
                         f"device {greeted.device_id!r} failed authentication")
            return
        self.state = "ready"
        srv._stats.unauthenticated -= 1
        srv._stats.authenticated += 1
        s = self.session
        s.device_id, s.key, s.max_packet_format = greeted.device_id, key, greeted.max_packet_format
        self.peer = greeted.device_id
        srv._attach(s)
        self._queue(lambda: srv._welcome(s, greeted))

    def _refuse(self, code: ErrorCode, message: str, log: str = "") -> None:
        self.server._stats.auth_failed += 1
        self._write_now(encode_frame(FrameType.ERROR, encode_error(code, message)))
        self.close(log or message, graceful=True)

    def _frame(self, frame_type: enum.IntEnum, body: bytes) -> None:
        srv, s = self.server, self.session
        srv._account(s.device_id, received=len(body) + HEADER.size)
        if frame_type == FrameType.ACK:
            srv._acked(s.device_id, decode_u64(body, "ACK"))
        elif frame_type == FrameType.PING:
            self._write_now(encode_frame(FrameType.PONG, body))
        elif frame_type == FrameType.PONG:
            return
        elif frame_type == FrameType.NACK:
            version, _, message = decode_nack(body)
            srv._nacked(s.device_id, message)
            srv._log(f"{s.device_id}: rejected a packet at version {version}: {message}")
            self._queue(lambda: srv._resync(s, version))
        elif frame_type == FrameType.RESYNC:
            version = decode_u64(body, "RESYNC")
            self._queue(lambda: srv._resync(s, version))
        else:
            handler = srv.frames.handler(frame_type)
            if handler is None:
                raise ProtocolError(f"unexpected {frame_type.name} from a device")
            self._queue(lambda: handler(s, body))

    # ---- work off the loop -----------------------------------------------------------------------------
    def _queue(self, job: Callable[[], None]) -> None:
        """Runs ``job`` on a worker after this connection's earlier jobs; reading pauses until it is done."""
        self.work.append(job)
        if not self.busy:
            self.busy = True
            self._pause(True)
            self._submit()

    def _submit(self) -> None:
        try:
            self.server._workers.submit(self._run, self.work[0])
        except RuntimeError:  # the server is stopping: its workers are shut down
            self.work.clear()

    def _run(self, job: Callable[[], None]) -> None:
        error: Optional[BaseException] = None
        try:
            job()
        except (ConnectionClosed, ProtocolError, OSError) as exc:
            error = exc
        except Exception as exc:  # an application handler's bug closes its connection, not the server
            error = exc
            self.server._log(f"{self.peer}: handler failed: {traceback.format_exc()}")
        try:
            self.loop.call_soon_threadsafe(self._done, error)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    def _done(self, error: Optional[BaseException]) -> None:
        self.work.popleft()
        if error is not None and not self.closed:
            self.close(str(error))
        if self.work:
            self._submit()
            return
        self.busy = False
        if not self.closed:
            self.last_rx = time.monotonic()
            self._pause(False)
            self._process()

    def _pause(self, paused: bool) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        try:
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()
        except (RuntimeError, AttributeError):
            pass

    # ---- writing (any thread) ----------------------------------------------------------------------------
    def _write_now(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        if self.tls is not None:
            if self.state == "tls":  # nothing is written before the TLS handshake completes
                return
            view = memoryview(data)
            while view:
                view = view[self.tls.write(view):]
            data = self.tls_out.read()
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        """Queues ``data`` for the peer. Off the loop it then waits (at most the server's ``send_timeout``)
        while the connection's write buffer is over its high-water mark, as ``sendall`` would block."""
        if self.closed:
            raise ConnectionClosed("connection closed")
        if self.server._on_loop():
            self._write_now(data)
            return
        written = threading.Event()

        def put() -> None:
            self._write_now(data)
            written.set()

        try:
            self.loop.call_soon_threadsafe(put)
        except RuntimeError as exc:
            raise ConnectionClosed("server stopped") from exc
        timeout = self.server.send_timeout
        deadline = time.monotonic() + timeout
        for event in (written, self.writable):
            while not event.wait(0.1):
                if self.closed or self.server._stopping.is_set():
                    raise ConnectionClosed("connection closed")
                if time.monotonic() > deadline:
                    self.server._call(lambda: self.close(f"the device did not read for {timeout:.1f} s"))
                    raise ConnectionClosed(f"the device did not read for {timeout:.1f} s")
        if self.closed:
            raise ConnectionClosed("connection closed")

    def close(self, reason: str = "", graceful: bool = False, abrupt: bool = False) -> None:
        """Closes the connection (loop thread): ``graceful`` flushes what is queued, ``abrupt`` resets."""
        if self.state == "closed" and self.closed:
            return
        if reason:
            self.server._log(f"{self.peer}: {reason}")
        transport = self.transport
        if transport is None:
            return
        if abrupt:
            raw = transport.get_extra_info("socket")
            if raw is not None:
                try:
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        if graceful:
            if self.tls is not None and self.state not in ("tls", "closed") and not transport.is_closing():
                try:
                    self.tls.unwrap()  # our close_notify; the peer's is not awaited
                except ssl.SSLError:
                    pass
                self._flush_tls()
            transport.close()
        else:
            transport.abort()


class ModelServer:
    """Serves one model to many devices from one I/O loop.

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
            called on a worker thread, one frame at a time per connection and in order;
            ``session.send(type, body)`` answers); the same as calling :meth:`register_frame` for each.
            Types without a handler are protocol errors.
        on_disconnect: called (on a worker, after the connection's pending frames) with the device id when an
            authenticated connection ends.
        tls: TLS 1.3 with a client certificate required (its subject CN must be the HELLO's device id);
            the HMAC handshake runs inside it. None: plain TCP (HMAC-authenticated, not encrypted).
        max_unauthenticated: connections allowed in their handshake (TLS, HELLO, AUTH) at once; more are
            closed as they arrive.
        handshake_timeout: seconds a connection has to complete TLS and AUTH before it is closed.
        preauth_read_interval: a connection in its handshake that has sent part of a frame is read again only
            this many seconds later (but before its handshake deadline), so a peer trickling its handshake
            (slowloris) costs the I/O loop at most one read per interval; devices send frames whole and are
            never paused.
        workers: threads that run per-device work (synchronisation after AUTH, resync snapshots,
            application frame handlers, ``on_disconnect``) off the I/O loop.
        send_timeout: how long a send waits for a device that does not read before closing it.
        on_ack: called on the I/O loop with (device id, version) for every ACK; it must not block
            (delivery-time measurements: ``bench/transport_load.py``).
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
                 on_disconnect: Optional[Callable[[str], None]] = None, tls: Optional[TLSConfig] = None,
                 max_unauthenticated: int = 1024, handshake_timeout: float = 10.0, workers: int = 4,
                 send_timeout: float = 10.0, on_ack: Optional[Callable[[str, int], None]] = None,
                 signer: Optional[Signer] = None, preauth_read_interval: float = 5.0) -> None:
        for device, key in keys.items():
            if not 16 <= len(key) <= 64:
                raise ValueError(f"key of device {device!r} must be 16..64 bytes, got {len(key)}")
        if (max_unauthenticated < 1 or handshake_timeout <= 0 or workers < 1 or send_timeout <= 0
                or preauth_read_interval <= 0):
            raise ValueError(f"max_unauthenticated ({max_unauthenticated}) and workers ({workers}) must be >= 1, "
                             f"handshake_timeout ({handshake_timeout}), send_timeout ({send_timeout}) and "
                             f"preauth_read_interval ({preauth_read_interval}) > 0")
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
        self.tls = tls
        self.max_unauthenticated = max_unauthenticated
        self.handshake_timeout = handshake_timeout
        self.preauth_read_interval = preauth_read_interval
        self.send_timeout = send_timeout
        self.on_ack = on_ack
        self._tls_context = tls.server_context() if tls is not None else None
        self._log = log or (lambda line: None)
        # _lock: the streams, publishing and pushing (held across sends, so the I/O loop never takes it);
        # _state_lock: sessions, device statuses, counters (never held across a send or a wait)
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._stats = ServerStats()
        self._conns: set[_Connection] = set()  # loop thread only
        self._stopping = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._loop_thread: Optional[threading.Thread] = None
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="edgert-model-server-worker")
        if per_device:
            self._streams = {d: _Stream(manifest, history, None if self._state_dir is None
                                        else self._state_dir / _safe_dir_name(d)) for d in self.keys}
        else:
            self._streams = {"": _Stream(manifest, history, self._state_dir)}
        self._listener = socket.create_server((host, port), backlog=LISTEN_BACKLOG)
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
        """Starts the I/O loop on its own thread; returns self."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(self._loop.create_server(
                    lambda: _Connection(self), sock=self._listener, backlog=LISTEN_BACKLOG))
            except BaseException as exc:  # surfaced in start()
                failure.append(exc)
                ready.set()
                return
            self._loop.call_soon(self._sweep)
            ready.set()
            self._loop.run_forever()

        self._loop_thread = threading.Thread(target=run, name="edgert-model-server", daemon=True)
        self._loop_thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self, abrupt: bool = False) -> None:
        """Stops listening and closes every connection (``abrupt``: reset, as a killed process would)."""
        self._stopping.set()
        thread = self._loop_thread
        if thread is None or not thread.is_alive():
            self._listener.close()
            self._workers.shutdown(wait=False, cancel_futures=True)
            return
        done = threading.Event()

        def shutdown() -> None:
            self._server.close()
            for conn in list(self._conns):
                conn.close(abrupt=abrupt)
            self._loop.call_later(0.05, stop_loop)

        def stop_loop() -> None:
            self._loop.stop()
            done.set()

        self._loop.call_soon_threadsafe(shutdown)
        done.wait(5)
        thread.join(timeout=5)
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._listener.close()
        if not self._loop.is_running():
            self._loop.close()

    def stats(self) -> ServerStats:
        """A copy of the connection counters."""
        return ServerStats(**vars(self._stats))

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
        with self._state_lock:
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
    def _on_loop(self) -> bool:
        return self._loop_thread is not None and threading.current_thread() is self._loop_thread

    def _call(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` on the I/O loop (at once when called there)."""
        if self._on_loop():
            fn()
            return
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed
            pass

    def _sweep(self) -> None:
        """Closes connections past their handshake deadline and authenticated ones silent past ``idle_timeout``."""
        now = time.monotonic()
        for conn in list(self._conns):
            if conn.state == "ready":
                if not conn.busy and now - conn.last_rx > self.idle_timeout:
                    conn.close(f"silent for {self.idle_timeout:.1f} s")
            elif now > conn.deadline:
                self._stats.handshake_timeouts += 1
                conn.close(f"no authentication within {self.handshake_timeout:.1f} s")
        self._loop.call_later(min(0.5, self.handshake_timeout / 4, self.idle_timeout / 4), self._sweep)

    def _account(self, device_id: str, sent: int = 0, received: int = 0) -> None:
        with self._state_lock:
            st = self.devices.setdefault(device_id, DeviceStatus(device_id))
            st.bytes_sent += sent
            st.bytes_received += received

    def _attach(self, s: _Session) -> None:
        with self._state_lock:
            self._sessions.add(s)
            self.devices.setdefault(s.device_id, DeviceStatus(s.device_id)).connected = True

    def _detach(self, s: _Session) -> None:
        with self._state_lock:
            self._sessions.discard(s)
            if s.device_id in self.devices and not any(o.device_id == s.device_id for o in self._sessions):
                self.devices[s.device_id].connected = False

    def _acked(self, device_id: str, version: int) -> None:
        with self._state_lock:
            self.devices[device_id].acked_version = version
        if self.on_ack is not None:
            self.on_ack(device_id, version)

    def _nacked(self, device_id: str, message: str) -> None:
        with self._state_lock:
            self.devices[device_id].nacks.append(message)

    def _welcome(self, s: _Session, hello: Hello) -> None:
        """After AUTH (on a worker): the manifest if the device holds another model, then what brings it to
        its stream's version.

        A device's claim never moves a stream that other devices share: one that claims a version above its
        shared stream's (the server lost its state, or a device misbehaves) is refused with ERROR
        ``VERSION_AHEAD`` and logged, and is served again once the stream has been published past that
        version. A snapshot at the stream's version cannot bring it back: the slot refuses any packet whose
        target is not above its active version (rollback protection). A per-device stream is the device's
        own, so its claim moves that stream alone, with a snapshot past it, as before."""
        with self._lock:
            stream = self._stream(hello.device_id)
            same_model = hello.model_id == self.manifest.model_id
            if same_model and hello.active_version > stream.version and not self.per_device:
                with self._state_lock:
                    self._stats.version_ahead += 1
                self._log(f"{hello.device_id}: refused: it claims version {hello.active_version}, above the "
                          f"shared stream's {stream.version}")
                s.send(FrameType.ERROR, encode_error(
                    ErrorCode.VERSION_AHEAD, f"device version {hello.active_version} is ahead of the server's "
                    f"version {stream.version}; it is served again once the server publishes past it"))
                self._call(lambda: s.conn.close(graceful=True))
                return
            s.stream = stream
            if not same_model:
                s.send(FrameType.MANIFEST, self.manifest.to_bytes())
            s.sent_version = hello.active_version if same_model else 0
            if same_model and hello.active_version > stream.version:
                # Its own stream is behind it (we lost state): jump past it with a snapshot.
                weights = {t.name: stream.mirror.tensor(i) for i, t in enumerate(self.manifest.tensors)}
                self.publish_snapshot(weights, target_version=hello.active_version + 1, device_id=hello.device_id)
            self._log(f"{hello.device_id}: connected at version {hello.active_version}, server at {stream.version}")
        self._push(s)

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
        ``handler(session, body)`` runs on a worker thread, in order per connection (see :class:`FrameRegistry`)."""
        with self._lock:
            self.frames.register(frame_type, handler)

    def send_to(self, device_id: str, frame_type: int, body: bytes = b"") -> bool:
        """Sends one frame to every connection of ``device_id`` (any thread); False when none is connected."""
        with self._state_lock:
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
        """Writes raw bytes to a connected device (e.g. half a frame), optionally closing the connection after
        them; returns when done (False: no such device connected)."""
        with self._state_lock:
            conns = [s.conn for s in self._sessions if s.device_id == device_id]
        if not conns:
            return False
        done = threading.Event()

        def put() -> None:
            for conn in conns:
                conn._write_now(raw)
                if close:
                    conn.close(graceful=True)
            done.set()

        self._call(put)
        return done.wait(self.send_timeout)
