"""The transport: the edgert wire protocol between a model server and its devices.

* :mod:`~edgert.transport.frames`: framing, the core frame types, handshake messages and proofs, and
  :class:`FrameRegistry`, through which applications add their own frame types.
* :mod:`~edgert.transport.server`: :class:`ModelServer` (one model stream, or one per device; packet
  history, resync, persistence).
* :mod:`~edgert.transport.client`: :class:`EdgeClient`, the device side in Python on libedgert's slot.
* :mod:`~edgert.transport.tls`: :class:`TLSConfig`, TLS 1.3 with mutual authentication for both;
  :mod:`~edgert.transport.certs` (``edgert keys``, needs ``cryptography``) is the CA that issues the certificates.

Specified in ``docs/spec/wire-protocol.md``; ``firmware/edge_node`` speaks the same core protocol in C++.
"""
from __future__ import annotations

from edgert.transport.client import EdgeClient
from edgert.transport.frames import (
    DEFAULT_MAX_FRAME,
    FIRST_EXTENSION_CODE,
    PROTOCOL_VERSION,
    ConnectionClosed,
    FrameRegistry,
    FrameType,
    ProtocolError,
)
from edgert.transport.server import DeviceStatus, ModelServer, ServerStats
from edgert.transport.tls import TLSConfig, TLSConfigError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FIRST_EXTENSION_CODE",
    "PROTOCOL_VERSION",
    "ConnectionClosed",
    "DeviceStatus",
    "EdgeClient",
    "FrameRegistry",
    "FrameType",
    "ModelServer",
    "ProtocolError",
    "ServerStats",
    "TLSConfig",
    "TLSConfigError",
]
