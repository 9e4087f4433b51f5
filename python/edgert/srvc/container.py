"""The SRVC container: one file carrying the content stream and the model stream with timestamps.

Layout (little-endian; spec and rationale in ``docs/spec/srvc-container.md``)::

    file header (16 B): magic "SRVC", u16 version (1), u16 flags (0), u64 record count hint (0 = unknown)
    record*:            header (32 B) | payload | u32 CRC32C(payload)
        header:  type (4 ASCII: HEAD, MANI, CONT, MODL, END_), u32 reserved (0), u64 payload length,
                 u64 first frame (MODL: the first frame the model applies to), f64 time in seconds,
                 u32 CRC32C of the 28 bytes before it

Order: HEAD (JSON: geometry, frame rate, frame count, model config, codec, generic model), MANI (the ``ERTM``
manifest of the model), CONT (the low-resolution H.265 stream, a Matroska file), MODL* (one
``ERTP`` update packet each, ascending first frame; a full snapshot first unless the header names the
generic model the stream starts from, see the spec), END_ (empty).

A header whose CRC fails, a payload that runs past the end of the data, a missing END_ record,
or a bad payload CRC on HEAD/MANI/CONT is a :class:`ContainerError` naming the record index, type
and byte offset. A MODL payload whose CRC fails is *kept* and flagged (``Record.crc_ok``): the
decoder treats it as a bad model packet (rejected, previous model kept), never as fatal.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from edgert.updates import crc32c

MAGIC = b"SRVC"
VERSION = 1
FILE_HEADER = struct.Struct("<4sHHQ")
RECORD_HEADER = struct.Struct("<4sIQQd")  # 28 bytes, followed by its u32 CRC32C
RECORD_HEADER_BYTES = RECORD_HEADER.size + 4
TYPES = (b"HEAD", b"MANI", b"CONT", b"MODL", b"END_")


class ContainerError(ValueError):
    """A truncated or corrupt SRVC container; the message names the record and byte offset."""


@dataclass
class Record:
    """One record: type, payload, model timestamp (first frame, seconds), and where it was read from."""

    type: bytes
    payload: bytes
    first_frame: int = 0
    time_s: float = 0.0
    offset: int = -1  # byte offset of the record header in the file (-1: not read from a file)
    index: int = -1
    crc_ok: bool = True

    def describe(self) -> str:
        return f"record #{self.index} ({self.type.decode()}) at byte {self.offset}"


@dataclass
class Container:
    """A parsed container: the header dictionary, the manifest, the content stream and the model records."""

    header: dict[str, Any]
    manifest: bytes
    content: bytes
    models: list[Record] = field(default_factory=list)
    content_record: Optional[Record] = None

    @property
    def model_bytes(self) -> int:
        """Bytes of all model packets (the model stream's size)."""
        return sum(len(r.payload) for r in self.models)


def _record(type_: bytes, payload: bytes, first_frame: int = 0, time_s: float = 0.0) -> bytes:
    if type_ not in TYPES:
        raise ValueError(f"record type must be one of {TYPES}, got {type_!r}")
    if first_frame < 0 or not math.isfinite(time_s):
        raise ValueError(f"record {type_!r}: first frame must be >= 0 and time finite, got {first_frame}, {time_s}")
    head = RECORD_HEADER.pack(type_, 0, len(payload), first_frame, float(time_s))
    return head + struct.pack("<I", crc32c(head)) + payload + struct.pack("<I", crc32c(payload))


def write_container(header: dict[str, Any], manifest: bytes, content: bytes,
                    models: list[tuple[int, float, bytes]]) -> bytes:
    """Serialises a container.

    Args:
        header: JSON-serialisable stream description (see :mod:`edgert.srvc.encoder`).
        manifest: the model's ``ERTM`` manifest bytes.
        content: the content stream (Matroska bytes).
        models: ``(first_frame, time_s, packet bytes)`` per model update, in ascending first frame.
    """
    frames = [m[0] for m in models]
    if frames != sorted(frames):
        raise ValueError(f"model records must be in ascending first-frame order, got {frames}")
    out = bytearray(FILE_HEADER.pack(MAGIC, VERSION, 0, 4 + len(models)))
    out += _record(b"HEAD", json.dumps(header, sort_keys=True).encode("utf-8"))
    out += _record(b"MANI", bytes(manifest))
    out += _record(b"CONT", bytes(content))
    for first_frame, time_s, packet in models:
        out += _record(b"MODL", bytes(packet), first_frame, time_s)
    out += _record(b"END_", b"")
    return bytes(out)


def iter_records(data: bytes) -> Iterator[Record]:
    """Parses records one by one (a streaming reader would do the same on a socket).

    Raises:
        ContainerError: bad file header, a record header CRC mismatch, unknown type, a payload that
            runs past the data, a fatal payload CRC mismatch, or data ending before END_.
    """
    data = memoryview(bytes(data))
    if len(data) < FILE_HEADER.size:
        raise ContainerError(f"truncated: {len(data)} bytes, the file header alone is {FILE_HEADER.size}")
    magic, version, flags, _ = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ContainerError(f"not an SRVC container: magic {bytes(magic)!r} at byte 0, expected {MAGIC!r}")
    if version != VERSION or flags != 0:
        raise ContainerError(f"unsupported SRVC container version {version} flags {flags:#x} (this decoder reads 1, 0)")
    pos, index = FILE_HEADER.size, 0
    while True:
        if pos == len(data):
            raise ContainerError(f"truncated: data ends at byte {pos} after {index} records, before the END_ record")
        if pos + RECORD_HEADER_BYTES > len(data):
            raise ContainerError(f"truncated: record #{index} header at byte {pos} needs {RECORD_HEADER_BYTES} bytes, "
                                 f"only {len(data) - pos} remain")
        head = bytes(data[pos:pos + RECORD_HEADER.size])
        (stored,) = struct.unpack_from("<I", data, pos + RECORD_HEADER.size)
        if crc32c(head) != stored:
            raise ContainerError(f"corrupt: record #{index} header at byte {pos} fails its CRC32C")
        type_, reserved, length, first_frame, time_s = RECORD_HEADER.unpack(head)
        if type_ not in TYPES or reserved != 0:
            raise ContainerError(f"corrupt: record #{index} at byte {pos} has unknown type {type_!r} or reserved "
                                 f"{reserved}")
        start = pos + RECORD_HEADER_BYTES
        end = start + length + 4
        if end > len(data):
            raise ContainerError(f"truncated: record #{index} ({type_.decode()}) at byte {pos} "
                                 f"announces {length} payload bytes (+4 CRC), only {len(data) - start} remain")
        payload = bytes(data[start:start + length])
        (payload_crc,) = struct.unpack_from("<I", data, start + length)
        rec = Record(type_, payload, first_frame, time_s, pos, index, crc32c(payload) == payload_crc)
        if not rec.crc_ok and type_ != b"MODL":
            raise ContainerError(f"corrupt: {rec.describe()}: payload of {length} bytes "
                                 f"(bytes {start}..{start + length}) fails its CRC32C")
        yield rec
        pos, index = end, index + 1
        if type_ == b"END_":
            if pos != len(data):
                raise ContainerError(f"corrupt: {len(data) - pos} trailing bytes after the END_ record "
                                     f"at byte {rec.offset}")
            return


def read_container(data: bytes) -> Container:
    """Parses and checks a whole container (record order, model timestamps).

    Raises:
        ContainerError: see :func:`iter_records`; also missing/duplicated HEAD, MANI or CONT records,
            a bad HEAD JSON, or model records out of order.
    """
    header: Optional[dict[str, Any]] = None
    manifest: Optional[bytes] = None
    content: Optional[Record] = None
    models: list[Record] = []
    expected = [b"HEAD", b"MANI", b"CONT"]
    for rec in iter_records(data):
        if expected:
            if rec.type != expected[0]:
                raise ContainerError(f"corrupt: {rec.describe()}: expected a {expected[0].decode()} record here")
            expected.pop(0)
        elif rec.type not in (b"MODL", b"END_"):
            raise ContainerError(f"corrupt: {rec.describe()}: only MODL or END_ records may follow CONT")
        if rec.type == b"HEAD":
            try:
                header = json.loads(rec.payload.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ContainerError(f"corrupt: {rec.describe()}: header is not JSON ({exc})") from exc
            if not isinstance(header, dict):
                raise ContainerError(f"corrupt: {rec.describe()}: header must be a JSON object")
        elif rec.type == b"MANI":
            manifest = rec.payload
        elif rec.type == b"CONT":
            content = rec
        elif rec.type == b"MODL":
            if models and rec.first_frame < models[-1].first_frame:
                raise ContainerError(f"corrupt: {rec.describe()}: first frame {rec.first_frame} precedes the previous "
                                     f"model record's {models[-1].first_frame}")
            models.append(rec)
    if header is None or manifest is None or content is None:
        raise ContainerError("corrupt: END_ reached before the HEAD, MANI and CONT records")
    return Container(header, manifest, content.payload, models, content)
