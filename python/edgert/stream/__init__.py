"""Model streaming: the update-packet codec (server-side encoder, device mirror).

The binary formats are specified in ``docs/update-packet.md``; libedgert decodes
and applies them on the device (:class:`edgert.Slot` through the binding).
"""
from __future__ import annotations

from edgert.stream.packet import (
    DeviceMirror,
    authenticate,
    EncodedPacket,
    Manifest,
    PacketEncoder,
    TensorSpec,
    TensorUpdate,
    binary_entropy,
    crc32c,
    encode_snapshot,
    encode_update,
    index_entropy_bound_bits,
    rice_encode,
)

from edgert.stream.server import DeviceStatus, EdgeClient, ModelServer

__all__ = [
    "DeviceMirror",
    "DeviceStatus",
    "EdgeClient",
    "ModelServer",
    "authenticate",
    "EncodedPacket",
    "Manifest",
    "PacketEncoder",
    "TensorSpec",
    "TensorUpdate",
    "binary_entropy",
    "crc32c",
    "encode_snapshot",
    "encode_update",
    "index_entropy_bound_bits",
    "rice_encode",
]
