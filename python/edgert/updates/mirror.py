"""The server's exact copy of a device's model slot, and a per-device packet encoder built on it."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from edgert.updates.manifest import FORMAT_VERSION, Manifest, TensorMap
from edgert.updates.packet import EncodedPacket, UpdateMap, encode_snapshot, encode_update


class DeviceMirror:
    """The server's exact copy of a device slot: same buffer layout, same arithmetic.

    After applying the same packets, :meth:`weights_bytes` equals the device's
    ``Slot.weights()`` byte for byte.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.buffer = np.zeros(manifest.weights_size, dtype=np.uint8)
        self.version = 0
        self._views = [
            self.buffer[off:off + t.nbytes].view(t.np_dtype)
            for off, t in zip(manifest.offsets(), manifest.tensors)
        ]

    def tensor(self, key: Union[int, str]) -> np.ndarray:
        """A copy of one tensor, shaped as in the manifest."""
        tid = self.manifest.tensor_id(key)
        return self._views[tid].reshape(self.manifest.tensors[tid].shape).copy()

    def weights_bytes(self) -> bytes:
        return self.buffer.tobytes()

    def apply(self, packet: EncodedPacket) -> None:
        """Applies an encoded packet as the device would (checks the version chain)."""
        if packet.target_version <= self.version:
            raise ValueError(f"stale packet: target {packet.target_version} <= mirror version {self.version}")
        if not packet.full_snapshot and packet.base_version != self.version:
            raise ValueError(f"packet base {packet.base_version} != mirror version {self.version}")
        for u in packet.applied:
            w = self._views[u.tensor_id]
            sel = slice(None) if u.indices is None else u.indices
            if w.dtype == np.float32:
                w[sel] = u.values if u.mode == "set" else w[sel] + u.values
            else:
                new = u.values if u.mode == "set" else w[sel].astype(np.float32) + u.values
                w[sel] = new.astype(np.float16)
        self.version = packet.target_version



class PacketEncoder:
    """Server-side encoder for one device: tracks the version chain and keeps a :class:`DeviceMirror`."""

    def __init__(self, manifest: Manifest, value_coding: str = "fp16", key: Optional[bytes] = None,
                 max_format: int = FORMAT_VERSION) -> None:
        self.manifest = manifest
        self.value_coding = value_coding
        self.key = key
        self.max_format = max_format
        self.mirror = DeviceMirror(manifest)

    @property
    def version(self) -> int:
        return self.mirror.version

    def update(self, updates: UpdateMap) -> EncodedPacket:
        """Encodes the next packet (version + 1) and applies it to the mirror."""
        pkt = encode_update(self.manifest, self.version, self.version + 1, updates, self.value_coding, self.key,
                            max_format=self.max_format)
        self.mirror.apply(pkt)
        return pkt

    def snapshot(self, weights: TensorMap) -> EncodedPacket:
        """Encodes a full snapshot (version + 1) and applies it to the mirror."""
        pkt = encode_snapshot(self.manifest, self.version + 1, weights, key=self.key, base_version=self.version)
        self.mirror.apply(pkt)
        return pkt

