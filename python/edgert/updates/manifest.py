"""The model manifest: a model's 128-bit identity and its tensor table (``docs/spec/update-packet.md``).

The manifest fixes the device's weight-buffer layout (tensors packed in order, 64-byte aligned) and is
the first thing a device receives; every update packet names the manifest it was encoded for by its
model id and table hash.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np

import edgert._edgert as _edgert

MANIFEST_MAGIC = b"ERTM"
FORMAT_VERSION = 1  # manifests and snapshot files; packets: FORMAT_VERSION, COMPACT_FORMAT or RANS_FORMAT
HASH_BYTES = 16
MODEL_ID_BYTES = 16
TENSOR_ALIGNMENT = 64
MAX_TENSOR_NUMEL = 0xFFFFFFFF
DTYPES = {"float32": 0, "float16": 1}
#: a tensor of a manifest, addressed by name or by id (its index in the tensor table)
TensorKey = Union[int, str]
#: tensors by name or id (Mapping is invariant in its key type, so each kind is listed)
TensorMap = Union[Mapping[str, Any], Mapping[int, Any], Mapping[TensorKey, Any]]
_NP_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def crc32c(data: Union[bytes, bytearray, memoryview], crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc`` (libedgert's implementation)."""
    return _edgert.crc32c(bytes(data), crc)



@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model: UTF-8 name (1..127 bytes), dtype 'float32'|'float16', shape (<= 8 dims)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        encoded = self.name.encode("utf-8")
        if not 1 <= len(encoded) <= 127 or b"\0" in encoded:
            raise ValueError(f"tensor name must be 1..127 UTF-8 bytes without NUL, got {self.name!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: dtype must be float32 or float16, got {self.dtype!r}")
        if len(self.shape) > 8 or any(int(d) < 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: shape must have <= 8 non-negative dims, got {self.shape}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.numel > MAX_TENSOR_NUMEL:
            raise ValueError(f"tensor {self.name!r}: {self.numel} elements, at most {MAX_TENSOR_NUMEL}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "float32" else 2

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def np_dtype(self) -> np.dtype:
        return _NP_DTYPES[self.dtype]


@dataclass(frozen=True)
class Manifest:
    """A model's identity (128-bit id) and tensor table; tensor ids are indices into ``tensors``."""

    model_id: bytes
    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        if len(self.model_id) != MODEL_ID_BYTES:
            raise ValueError(f"model_id must be {MODEL_ID_BYTES} bytes, got {len(self.model_id)}")
        object.__setattr__(self, "tensors", tuple(self.tensors))
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError("tensor names must be unique")

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], model_id: bytes, dtype: Optional[str] = None) -> "Manifest":
        """Manifest of every floating tensor in a state dict (torch tensors or numpy arrays), in order.

        ``dtype`` ('float32'|'float16') overrides the device storage type; by default
        float16 tensors stay float16 and every other floating type is stored as float32.
        """
        specs = []
        for name, value in state.items():
            arr_dtype = str(value.dtype).replace("torch.", "")
            if not (arr_dtype.startswith("float") or arr_dtype.startswith("bfloat")):
                continue
            chosen = dtype or ("float16" if arr_dtype == "float16" else "float32")
            specs.append(TensorSpec(name, chosen, tuple(value.shape)))
        return cls(model_id, tuple(specs))

    @classmethod
    def from_module(cls, module: Any, model_id: bytes, dtype: Optional[str] = None) -> "Manifest":
        """Manifest of a torch module's named parameters (trainable state streamed to devices)."""
        return cls.from_state_dict({n: p.detach() for n, p in module.named_parameters()}, model_id, dtype)

    def pack(self, weights: Mapping[str, Any]) -> bytes:
        """``weights`` laid out as a device slot holds them: each tensor in its dtype at its 64-byte aligned
        :meth:`offsets`, zero padding between (what ``Slot.weights()`` and
        :meth:`edgert.updates.DeviceMirror.weights_bytes` return for the same weights)."""
        buffer = np.zeros(self.weights_size, dtype=np.uint8)
        for offset, t in zip(self.offsets(), self.tensors):
            values = np.ascontiguousarray(weights[t.name], dtype=t.np_dtype).reshape(-1)
            if values.size != t.numel:
                raise ValueError(f"tensor {t.name!r}: expected {t.numel} values, got {values.size}")
            buffer[offset:offset + t.nbytes] = values.view(np.uint8)
        return buffer.tobytes()

    def table_bytes(self) -> bytes:
        """Canonical tensor-table encoding (u32 count, then name/dtype/ndim/shape per tensor)."""
        out = bytearray(struct.pack("<I", len(self.tensors)))
        for t in self.tensors:
            name = t.name.encode("utf-8")
            out += struct.pack("<B", len(name)) + name + struct.pack("<BB", DTYPES[t.dtype], len(t.shape))
            out += struct.pack(f"<{len(t.shape)}Q", *t.shape)
        return bytes(out)

    @property
    def table_hash(self) -> bytes:
        """First 16 bytes of SHA-256 over :meth:`table_bytes`."""
        return hashlib.sha256(self.table_bytes()).digest()[:HASH_BYTES]

    def to_bytes(self) -> bytes:
        body = MANIFEST_MAGIC + struct.pack("<HH", FORMAT_VERSION, 0) + self.model_id + self.table_hash
        body += self.table_bytes()
        return body + struct.pack("<I", crc32c(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        """Parses a serialized manifest (checks magic, version, CRC, table hash)."""
        if len(data) < 48 or data[:4] != MANIFEST_MAGIC:
            raise ValueError("not an edgert manifest (bad magic or too short)")
        version, flags = struct.unpack_from("<HH", data, 4)
        if version != FORMAT_VERSION or flags != 0:
            raise ValueError(f"manifest format version {version} flags {flags:#x}: this encoder writes version 1")
        if crc32c(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
            raise ValueError("manifest CRC32C mismatch")
        model_id, table_hash = bytes(data[8:24]), bytes(data[24:40])
        (count,) = struct.unpack_from("<I", data, 40)
        pos, specs = 44, []
        for _ in range(count):
            n = data[pos]
            name = data[pos + 1:pos + 1 + n].decode("utf-8")
            pos += 1 + n
            dtype_code, ndim = data[pos], data[pos + 1]
            pos += 2
            shape = struct.unpack_from(f"<{ndim}Q", data, pos)
            pos += 8 * ndim
            specs.append(TensorSpec(name, {v: k for k, v in DTYPES.items()}[dtype_code], shape))
        if pos != len(data) - 4:
            raise ValueError("manifest has trailing bytes after the tensor table")
        manifest = cls(model_id, tuple(specs))
        if manifest.table_hash != table_hash:
            raise ValueError("manifest table hash does not match its tensor table")
        return manifest

    def tensor_id(self, key: Union[int, str]) -> int:
        if isinstance(key, (int, np.integer)):
            if not 0 <= int(key) < len(self.tensors):
                raise KeyError(f"tensor id {key} out of range [0, {len(self.tensors)})")
            return int(key)
        for i, t in enumerate(self.tensors):
            if t.name == key:
                return i
        raise KeyError(f"no tensor named {key!r} in the manifest")

    def offsets(self) -> list[int]:
        """Byte offset of each tensor in the device's weight buffer (64-byte aligned, packed in order)."""
        out, pos = [], 0
        for t in self.tensors:
            out.append(pos)
            pos += -(-t.nbytes // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT
        return out

    @property
    def weights_size(self) -> int:
        return sum(-(-t.nbytes // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT for t in self.tensors)

