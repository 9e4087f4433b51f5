"""The AMS paper's update coding, as the size reference for edgert's packets.

The original AMS code sends an update as a 1-bit mask over every parameter (in manifest order,
``np.packbits`` big-endian bit order) followed by the changed values as fp16, the whole compressed
with gzip (``gzip.compress``, level 9). :func:`mask_fp16_gzip_bytes` computes that size for the same
update an edgert packet carries, so both are measured on identical deltas.
"""
from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from edgert.updates.manifest import Manifest
from edgert.updates.packet import UpdateMap, _as_update, _to_numpy


def mask_fp16_gzip(manifest: Manifest, updates: UpdateMap) -> bytes:
    """``updates`` (as :func:`~edgert.updates.packet.encode_update` takes them, add mode) coded as mask +
    fp16 values + gzip. Tensors absent from ``updates`` have an all-zero mask."""
    numel = [t.numel for t in manifest.tensors]
    offsets = np.concatenate([[0], np.cumsum(numel)]).astype(np.int64)
    mask = np.zeros(int(offsets[-1]), dtype=bool)
    by_id: dict[int, Any] = {manifest.tensor_id(k): _as_update(u) for k, u in updates.items()}
    values = []
    for tid in sorted(by_id):
        u = by_id[tid]
        v = _to_numpy(u.values).astype(np.float32, copy=False).ravel()
        if u.indices is None:
            idx = np.arange(numel[tid], dtype=np.int64)
        else:
            idx = _to_numpy(u.indices).astype(np.int64, copy=False).ravel()
        if idx.size != v.size or (idx.size and (idx.min() < 0 or idx.max() >= numel[tid])):
            raise ValueError(f"tensor {manifest.tensors[tid].name!r}: {v.size} values for {idx.size} indices "
                             f"in [0, {numel[tid]})")
        mask[offsets[tid] + idx] = True
        values.append(v[np.argsort(idx, kind="stable")].astype("<f2"))
    payload = np.packbits(mask).tobytes() + (np.concatenate(values).tobytes() if values else b"")
    return gzip.compress(payload)


def mask_fp16_gzip_bytes(manifest: Manifest, updates: UpdateMap) -> int:
    """Bytes of :func:`mask_fp16_gzip`."""
    return len(mask_fp16_gzip(manifest, updates))
