"""The model-update format, shared by every application (AMS, SRVC, RECL, ...).

* :mod:`~edgert.updates.manifest`: a model's identity and tensor table (the device's buffer layout).
* :mod:`~edgert.updates.packet`: update packets, formats 1 to 3 (server-side encoder, transcoder, MAC);
  :mod:`~edgert.updates.rangecoder`: the range coder of format 2; :mod:`~edgert.updates.rans`: the
  static-table rANS coder of format 3.
* :mod:`~edgert.updates.signing`: release signatures (Ed25519 root, delegated release key, rotations,
  expiry; ``edgert release`` in :mod:`~edgert.updates.release_cli`), imported on use (``cryptography``).
* :mod:`~edgert.updates.mirror`: :class:`DeviceMirror`, the server's bit-exact copy of a device slot.
* :mod:`~edgert.updates.weights`: the one ``nn.Module`` <-> manifest/weights bridge.
* :mod:`~edgert.updates.selection`: sparse-update selection -- masked Adam and gradient-guided coordinates.

The formats are specified in ``docs/spec/update-packet.md``; libedgert decodes, verifies and applies
them on the device (:class:`edgert._edgert.Slot` through the binding).
"""
from __future__ import annotations

from edgert.updates.manifest import FORMAT_VERSION, Manifest, TensorSpec, crc32c
from edgert.updates.mirror import DeviceMirror, PacketEncoder
from edgert.updates.packet import (
    COMPACT_FORMAT,
    RANS_FORMAT,
    EncodedPacket,
    TensorUpdate,
    authenticate,
    binary_entropy,
    encode_snapshot,
    encode_update,
    index_entropy_bound_bits,
    rice_encode,
    transcode,
)
from edgert.updates.selection import (
    AdamConfig,
    CoordinateSelector,
    MaskedAdam,
    SelectionConfig,
    masked_indices,
    top_count_masks,
)
from edgert.updates.weights import (
    buffer_tensors,
    load_weights,
    model_id_for,
    module_manifest,
    module_weights,
    parameter_delta,
)

__all__ = [
    "COMPACT_FORMAT",
    "RANS_FORMAT",
    "FORMAT_VERSION",
    "AdamConfig",
    "CoordinateSelector",
    "DeviceMirror",
    "EncodedPacket",
    "Manifest",
    "MaskedAdam",
    "PacketEncoder",
    "SelectionConfig",
    "TensorSpec",
    "TensorUpdate",
    "authenticate",
    "binary_entropy",
    "buffer_tensors",
    "crc32c",
    "encode_snapshot",
    "encode_update",
    "index_entropy_bound_bits",
    "load_weights",
    "masked_indices",
    "model_id_for",
    "module_manifest",
    "module_weights",
    "parameter_delta",
    "rice_encode",
    "top_count_masks",
    "transcode",
]
