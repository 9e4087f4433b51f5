"""Model-update packets, server side: encode, transcode, authenticate.

Format: ``docs/spec/update-packet.md`` (little-endian throughout). This module is the
server-side half (encode); libedgert is the device-side half (verify, decode,
apply). Both test suites share the golden packets in ``tests/data/packets``.

Device arithmetic (what :class:`~edgert.updates.mirror.DeviceMirror` reproduces bit for bit):

* a value ``v`` is an fp32 number: fp16 values widen exactly, fp32 values are
  taken as is, int8 values are ``v = float32(q) * scale`` (one fp32 rounding);
  int4b/int8b values are ``v = float32(q) * float32(s_b)`` with the fp16 scale of their
  block of 64 (exact: the product has at most 19 significant bits);
* fp32 weights: add ``w = w + v`` (fp32), set ``w = v``;
* fp16 weights: add ``w = fp16(fp32(w) + v)``, set ``w = fp16(v)``
  (round-to-nearest-even, once per update).
"""
from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

import edgert._edgert as _edgert
from edgert.updates import rans
from edgert.updates.manifest import FORMAT_VERSION, Manifest, TensorMap, crc32c
from edgert.updates.rangecoder import GapModel, RangeDecoder, RangeEncoder, RangeError, TreeModel

PACKET_MAGIC = b"ERTP"
COMPACT_FORMAT = 2  # packets with a varint directory and one range-coded stream
RANS_FORMAT = 3  # packets with a varint directory, static frequency tables and one rANS stream
NEWEST_FORMAT = RANS_FORMAT
PACKET_HEADER_BYTES = 72
ENTRY_HEADER_BYTES = 48
MAC_BYTES = 32
MAX_RICE_PARAMETER = 31

FLAG_AUTHENTICATED = 1
FLAG_FULL_SNAPSHOT = 2
FLAG_SIGNED = 4  # release signature block before the CRC (updates.signing); header bytes 60..63 = its length
INDEX_DENSE, INDEX_RICE, INDEX_GAP_AC, INDEX_GAP_RANS = 0, 1, 2, 3
#: value coding ids share one space across formats; each format accepts only its own
VALUE_CODINGS = {"fp16": 0, "fp32": 1, "int8": 2, "int4b": 7, "int8b": 8}
#: format 2 value codings (entropy-coded fp16 patterns / q), by format 1 coding name
COMPACT_VALUE_CODINGS = {"fp16": 3, "int8": 4, "int4b": 9, "int8b": 10}
#: format 3 value codings (the same values, rANS-coded), by format 1 coding name
RANS_VALUE_CODINGS = {"fp16": 5, "int8": 6, "int4b": 11, "int8b": 12}
#: per compact format: (sparse index coding, value codings by name)
_COMPACT_CODINGS = {COMPACT_FORMAT: (INDEX_GAP_AC, COMPACT_VALUE_CODINGS),
                    RANS_FORMAT: (INDEX_GAP_RANS, RANS_VALUE_CODINGS)}
#: block-scaled codings: q bits and largest |q| (values per block: :data:`QUANT_BLOCK`, one fp16 scale each)
BLOCK_CODINGS = {"int4b": (4, 7), "int8b": (8, 127)}
QUANT_BLOCK = 64
MODES = {"add": 0, "set": 1}


# ---- index coding ----------------------------------------------------------------


def rice_cost_bits(gaps: np.ndarray, k: int) -> int:
    """Bits of Golomb-Rice coding ``gaps`` with parameter ``k``: sum(g >> k) + n (1 + k)."""
    return int(np.sum(gaps >> np.uint64(k), dtype=np.uint64)) + gaps.size * (1 + k)


def best_rice_parameter(gaps: np.ndarray) -> int:
    """The k in 0..31 minimising the coded size (exact search; ties pick the smaller k)."""
    if gaps.size == 0:
        return 0
    costs = [rice_cost_bits(gaps, k) for k in range(MAX_RICE_PARAMETER + 1)]
    return int(np.argmin(costs))


def rice_encode(indices: np.ndarray, k: Optional[int] = None) -> tuple[bytes, int]:
    """Golomb-Rice codes strictly increasing indices as gaps (i_j - i_{j-1} - 1, i_{-1} = -1).

    Each gap g = (q << k) | r is written as q one-bits, a zero bit, then r in k
    bits, least significant first; bits fill bytes from bit 0; padding is zero.
    Returns (bytes, k).
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    if idx.size and idx[0] < 0:
        raise ValueError(f"indices must be non-negative, got {idx[0]}")
    gaps_signed = np.diff(idx, prepend=-1) - 1
    if np.any(gaps_signed < 0):
        bad = int(np.argmax(gaps_signed < 0))
        raise ValueError(f"indices must be strictly increasing: position {bad} holds {idx[bad]} after {idx[bad - 1]}")
    gaps = gaps_signed.astype(np.uint64)
    if k is None:
        k = best_rice_parameter(gaps)
    if not 0 <= k <= MAX_RICE_PARAMETER:
        raise ValueError(f"Rice parameter must be in [0, {MAX_RICE_PARAMETER}], got {k}")
    n = gaps.size
    if n == 0:
        return b"", k
    q = (gaps >> np.uint64(k)).astype(np.int64)
    r = gaps & np.uint64((1 << k) - 1)
    lengths = q + 1 + k
    starts = np.cumsum(lengths) - lengths
    total = int(starts[-1] + lengths[-1])
    bits = np.zeros(total, dtype=np.uint8)
    n_ones = int(q.sum())
    if n_ones:
        run_start = np.repeat(starts, q)
        offset_in_run = np.arange(n_ones, dtype=np.int64) - np.repeat(np.cumsum(q) - q, q)
        bits[run_start + offset_in_run] = 1
    if k:
        pos = (starts + q + 1)[:, None] + np.arange(k, dtype=np.int64)[None, :]
        vals = ((r[:, None] >> np.arange(k, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(np.uint8)
        bits[pos.ravel()] = vals.ravel()
    return np.packbits(bits, bitorder="little").tobytes(), k


def binary_entropy(p: float) -> float:
    """H(p) in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def index_entropy_bound_bits(numel: int, count: int) -> float:
    """Entropy bound for coding which ``count`` of ``numel`` coordinates changed: numel * H(count/numel)."""
    return numel * binary_entropy(count / numel) if numel else 0.0


# ---- values ------------------------------------------------------------------------


def _encode_values(values: np.ndarray, coding: str) -> tuple[bytes, float, np.ndarray]:
    """Returns (value bytes, int8 scale or 0.0, the fp32 values the device will use)."""
    v = np.asarray(values, dtype=np.float32).ravel()
    if coding == "fp16":
        h = v.astype("<f2")
        return h.tobytes(), 0.0, h.astype(np.float32)
    if coding == "fp32":
        f = v.astype("<f4")
        return f.tobytes(), 0.0, f.astype(np.float32)
    if coding == "int8":
        if not np.all(np.isfinite(v)):
            raise ValueError("int8 value coding needs finite values")
        peak = float(np.max(np.abs(v))) if v.size else 0.0
        scale = np.float32(peak / 127.0)
        if scale == 0 or not np.isfinite(scale):
            scale = np.float32(0.0)
            q = np.zeros(v.size, dtype=np.int8)
        else:
            q = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
        applied = q.astype(np.float32) * scale  # fp32 product, exactly as the device computes it
        return q.tobytes(), float(scale), applied.astype(np.float32)
    if coding in BLOCK_CODINGS:
        return _encode_block_values(v, coding)
    raise ValueError(f"value coding must be one of {sorted(VALUE_CODINGS)}, got {coding!r}")


def block_quantize(values: np.ndarray, coding: str) -> tuple[np.ndarray, np.ndarray]:
    """Block-scaled quantisation of float ``values`` ``[n]`` for ``coding`` 'int4b' or 'int8b'.

    Blocks are runs of :data:`QUANT_BLOCK` consecutive values (the last may be shorter). Each block's
    scale ``s`` is the smallest fp16 number with ``s * qmax >= max|block|`` (qmax 7 or 127; 0 for an
    all-zero block), and ``q = clip(rint(v / s), -qmax, qmax)`` (round to nearest, ties to even).
    Returns (``int8 [n]`` q, ``float16 [ceil(n / 64)]`` scales). Raises ValueError for non-finite
    values or a block whose scale would overflow fp16 (``max|v| > 65504 * qmax``).
    """
    bits, qmax = BLOCK_CODINGS[coding]
    v = np.asarray(values, dtype=np.float32).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{coding} value coding needs finite values")
    blocks = -(-v.size // QUANT_BLOCK)
    padded = np.zeros(blocks * QUANT_BLOCK, dtype=np.float64)
    padded[:v.size] = np.abs(v)
    peak = padded.reshape(blocks, QUANT_BLOCK).max(axis=1) if blocks else np.zeros(0)
    with np.errstate(over="ignore"):
        scales = (peak / qmax).astype(np.float16)
    short = scales.astype(np.float64) * qmax < peak  # fp16 rounded down: step up one ulp so no value clips
    scales[short] = np.nextafter(scales[short], np.float16(np.inf))
    if not np.all(np.isfinite(scales)):
        bad = int(np.argmax(~np.isfinite(scales)))
        raise ValueError(f"{coding}: block {bad} peaks at {peak[bad]:.6g}, beyond the fp16 scale range "
                         f"(max |value| {65504.0 * qmax:g}); use fp16, fp32 or int8")
    s = np.repeat(scales.astype(np.float64), QUANT_BLOCK)[:v.size]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.clip(np.rint(v / s), -qmax, qmax), 0.0)
    return q.astype(np.int8), scales


def _encode_block_values(v: np.ndarray, coding: str) -> tuple[bytes, float, np.ndarray]:
    q, scales = block_quantize(v, coding)
    applied = q.astype(np.float32) * np.repeat(scales.astype(np.float32), QUANT_BLOCK)[:v.size]
    if coding == "int8b":
        packed = q.tobytes()
    else:
        nibbles = (q.astype(np.uint8) & 0x0F)
        if nibbles.size % 2:
            nibbles = np.append(nibbles, np.uint8(0))
        packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
    return scales.astype("<f2").tobytes() + packed, 0.0, applied.astype(np.float32)


def _block_sections(value_bytes: bytes, coding: str, n: int) -> tuple[bytes, np.ndarray]:
    """A format 1 block-coded value section -> (fp16 scale bytes, ``int8 [n]`` q)."""
    split = 2 * (-(-n // QUANT_BLOCK))
    scales, packed = value_bytes[:split], np.frombuffer(value_bytes, dtype=np.uint8, offset=split)
    if coding == "int8b":
        return scales, packed.view(np.int8).copy()
    nibbles = np.empty(2 * packed.size, dtype=np.uint8)
    nibbles[0::2], nibbles[1::2] = packed & 0x0F, packed >> 4
    return scales, ((nibbles[:n].astype(np.int16) ^ 8) - 8).astype(np.int8)


def block_values_bytes(coding: str, n: int) -> int:
    """Bytes of a format 1 value section of ``n`` values in block coding ``coding``."""
    bits, _ = BLOCK_CODINGS[coding]
    return 2 * (-(-n // QUANT_BLOCK)) + (n if bits == 8 else -(-n // 2))


# ---- packets -------------------------------------------------------------------------


@dataclass
class TensorUpdate:
    """An update of one tensor: ``indices`` (strictly increasing flat indices, or None for all
    coordinates in order), ``values`` (float, one per index or numel), ``mode`` 'add'|'set',
    and an optional per-tensor ``value_coding`` overriding the packet's."""

    values: np.ndarray
    indices: Optional[np.ndarray] = None
    mode: str = "add"
    value_coding: Optional[str] = None


@dataclass
class AppliedUpdate:
    """What the device will do to one tensor: indices (None = all), fp32 values, mode."""

    tensor_id: int
    indices: Optional[np.ndarray]
    values: np.ndarray
    mode: str


@dataclass
class EncodedPacket:
    """An encoded packet plus the exact updates the device will apply
    (for :class:`~edgert.updates.mirror.DeviceMirror`)."""

    data: bytes
    base_version: int
    target_version: int
    full_snapshot: bool
    applied: list[AppliedUpdate] = field(default_factory=list)
    index_bits: int = 0  # format 1: bits spent on Golomb-Rice index sections (without padding)
    format_version: int = FORMAT_VERSION

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)


UpdateLike = Union[TensorUpdate, np.ndarray, tuple]
#: updates by tensor name or id
UpdateMap = Union[Mapping[str, UpdateLike], Mapping[int, UpdateLike], Mapping[Union[int, str], UpdateLike]]


def _as_update(u: UpdateLike) -> TensorUpdate:
    if isinstance(u, TensorUpdate):
        return u
    if isinstance(u, tuple):
        return TensorUpdate(values=u[1], indices=u[0], mode=u[2] if len(u) > 2 else "add")
    return TensorUpdate(values=np.asarray(u))


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass
class _Entry:
    """One tensor entry, coding-independent: what both packet formats serialise."""

    tensor_id: int
    numel: int
    indices: Optional[np.ndarray]  # None: every coordinate in order (dense)
    coding: str  # format 1 value coding name
    mode: str
    value_bytes: bytes  # the format 1 value section (fp16/fp32 patterns, int8 q)
    scale: float


def _header(manifest_ids: tuple[bytes, bytes], version: int, flags: int, base: int, target: int, count: int,
            payload: bytes, key: Optional[bytes]) -> bytes:
    model_id, table_hash = manifest_ids
    if key is not None:
        flags |= FLAG_AUTHENTICATED
    body = PACKET_MAGIC + struct.pack("<HH", version, flags) + model_id + table_hash
    body += struct.pack("<QQIIQ", base, target, count, 0, len(payload)) + payload
    body += struct.pack("<I", crc32c(body))
    if key is not None:
        body += hmac.new(key, body, hashlib.sha256).digest()
    return body


def _payload_v1(entries: Sequence[_Entry]) -> tuple[bytes, int]:
    payload = bytearray()
    index_bits = 0
    for e in entries:
        if e.indices is None:
            index_bytes, k, coding_id = b"", 0, INDEX_DENSE
        else:
            index_bytes, k = rice_encode(e.indices)
            coding_id = INDEX_RICE
            gaps = (np.diff(e.indices, prepend=-1) - 1).astype(np.uint64)
            index_bits += rice_cost_bits(gaps, k) if gaps.size else 0
        count = e.numel if e.indices is None else e.indices.size
        payload += struct.pack("<IBBBBQQQQfI", e.tensor_id, coding_id, VALUE_CODINGS[e.coding], MODES[e.mode], k,
                               e.numel, count, len(index_bytes), len(e.value_bytes), e.scale, 0)
        payload += index_bytes + e.value_bytes
    return bytes(payload), index_bits


def _symbols(e: _Entry) -> np.ndarray:
    """The format 2 value symbols: fp16 patterns, int8 q bytes, or 4-bit q nibbles (one per byte)."""
    if e.coding in BLOCK_CODINGS:
        q = _block_sections(e.value_bytes, e.coding, _count(e))[1]
        return q.view(np.uint8) & (0x0F if e.coding == "int4b" else 0xFF)
    return np.frombuffer(e.value_bytes, dtype="<u2" if e.coding == "fp16" else np.uint8)


def _count(e: _Entry) -> int:
    return e.numel if e.indices is None else int(e.indices.size)


def _symbol_bits(coding: str) -> int:
    return {"fp16": 16, "int4b": 4}.get(coding, 8)


def _directory_v2(entries: Sequence[_Entry], version: int = COMPACT_FORMAT) -> bytes:
    """The directory of a format 2 or 3 payload (same layout, the format's coding numbers)."""
    sparse_coding, value_codings = _COMPACT_CODINGS[version]
    directory = bytearray()
    for e in entries:
        count = e.numel if e.indices is None else e.indices.size
        directory += rans.varint(e.tensor_id)
        directory += bytes((INDEX_DENSE if e.indices is None else sparse_coding, value_codings[e.coding],
                            MODES[e.mode]))
        directory += rans.varint(count)
        if e.coding == "int8":
            directory += struct.pack("<f", e.scale)
        elif e.coding in BLOCK_CODINGS:
            directory += _block_sections(e.value_bytes, e.coding, count)[0]
    return bytes(directory)


def _payload_v2(entries: Sequence[_Entry]) -> bytes:
    """The format 2 payload: the directory (here), then the range-coded stream from libedgert's encoder
    (``_edgert.range_encode_v2``, GIL released), byte for byte what :func:`_payload_v2_reference` writes."""
    stream = _edgert.range_encode_v2([
        (_symbol_bits(e.coding), e.value_bytes if e.coding in ("fp16", "int8") else _symbols(e),
         None if e.indices is None else np.ascontiguousarray(e.indices, dtype=np.int64), e.numel)
        for e in entries])
    return _directory_v2(entries) + stream


def _value_models() -> dict[str, TreeModel]:
    """Format 2 value models by coding; int8 and int8b share one 8-bit tree."""
    int8 = TreeModel(8)
    return {"fp16": TreeModel(16), "int8": int8, "int8b": int8, "int4b": TreeModel(4)}


def _payload_v2_reference(entries: Sequence[_Entry]) -> bytes:
    """The format 2 payload with the pure-Python coder of :mod:`edgert.updates.rangecoder` (the ground truth)."""
    enc = RangeEncoder()
    models = _value_models()
    for e in entries:
        symbols = _symbols(e).tolist()
        model = models[e.coding]
        if e.indices is None:
            for x in symbols:
                model.encode(enc, x)
        else:
            gap_model = GapModel()
            gaps = (np.diff(e.indices, prepend=-1) - 1).tolist()
            for g, x in zip(gaps, symbols):
                gap_model.encode(enc, g)
                model.encode(enc, x)
    return _directory_v2(entries) + enc.finish()


def _symbols_v3(e: _Entry) -> np.ndarray:
    """The format 3 value symbols: fp16 patterns, or q bytes (block int4 q sign-extended to a byte)."""
    if e.coding in BLOCK_CODINGS:
        return _block_sections(e.value_bytes, e.coding, _count(e))[1].view(np.uint8)
    return _symbols(e)


def _stream_entries_v3(entries: Sequence[_Entry]) -> list[rans.StreamEntry]:
    return [rans.StreamEntry(_symbols_v3(e), None if e.indices is None else np.asarray(e.indices, dtype=np.int64),
                             e.coding == "fp16") for e in entries]


def _payload_v3(entries: Sequence[_Entry], reference: bool = False) -> bytes:
    """The format 3 payload: directory, the hi mode byte (if an entry is fp16), the frequency tables the
    directory uses, then the rANS stream from libedgert's encoder (``_edgert.rans_encode_v3``) or, with
    ``reference``, the pure-Python one. With fp16 entries both hi modes are coded and the smaller kept
    (ties: plain high bytes)."""
    stream_entries = _stream_entries_v3(entries)
    fp16 = any(e.fp16 for e in stream_entries)
    best = b""
    for hi_delta in (False, True) if fp16 else (False,):
        tables = rans.build_tables(stream_entries, hi_delta)
        steps = rans.coding_steps(stream_entries, tables, hi_delta)
        stream = rans.encode_steps_reference(*steps) if reference else _edgert.rans_encode_v3(*steps)
        body = (bytes([hi_delta]) if fp16 else b"") + b"".join(rans.write_table(f) for f in tables.values()) + stream
        if not best or len(body) < len(best):
            best = body
    return _directory_v2(entries, RANS_FORMAT) + best


def _payload(entries: Sequence[_Entry], version: int) -> bytes:
    if version == COMPACT_FORMAT:
        return _payload_v2(entries)
    if version == RANS_FORMAT:
        return _payload_v3(entries)
    return _payload_v1(entries)[0]


def encode_update(manifest: Manifest, base_version: int, target_version: int,
                  updates: UpdateMap, value_coding: str = "fp16",
                  key: Optional[bytes] = None, *, full_snapshot: bool = False,
                  max_format: int = FORMAT_VERSION, packet_format: Optional[int] = None) -> EncodedPacket:
    """Encodes one update packet moving ``manifest``'s model from ``base_version`` to ``target_version``.

    ``updates`` maps tensor name or id to a :class:`TensorUpdate`, an ``(indices, values[, mode])``
    tuple, or a dense array of numel deltas (add mode). An index set covering every coordinate is
    sent dense. ``key`` (16..64 bytes) appends an HMAC-SHA256. Entries are written in tensor-id
    order, so equal inputs give equal bytes.

    ``max_format`` is the newest packet format the receiving device decodes. Format 1 Golomb-Rice
    codes the indices and sends values raw; formats 2 (adaptive range coder: smallest on real updates)
    and 3 (static-table rANS: ~10x faster to decode than 2) carry the same fp16/int8/int4b/int8b values
    entropy-coded (fp32 is format 1 only). By default the smallest format up to ``max_format`` that
    expresses the packet is written (ties: the older). ``packet_format`` writes exactly that format instead
    (it must be <= ``max_format`` and able to express the packet), e.g. 3 where decode time matters.

    ``value_coding``: 'fp16', 'fp32', 'int8' (per-tensor scale) or the lossy block codings 'int4b' /
    'int8b' (4- / 8-bit q, one fp16 scale per 64 values, see :func:`block_quantize`); decoders built
    before these codings existed reject them with UNSUPPORTED_VERSION (send them only to devices known to
    decode them: every decoder whose maximum format is >= 3 does).
    """
    if not 0 <= base_version < target_version < 2**64:
        raise ValueError(f"versions must satisfy 0 <= base ({base_version}) < target ({target_version}) < 2^64")
    if key is not None and not 16 <= len(key) <= 64:
        raise ValueError(f"key must be 16..64 bytes, got {len(key)}")
    if max_format not in (FORMAT_VERSION, COMPACT_FORMAT, RANS_FORMAT):
        raise ValueError(f"max_format must be {FORMAT_VERSION}, {COMPACT_FORMAT} or {RANS_FORMAT}, got {max_format}")
    if packet_format is not None and not FORMAT_VERSION <= packet_format <= max_format:
        raise ValueError(f"packet_format must be in [{FORMAT_VERSION}, max_format = {max_format}], got {packet_format}")
    by_id: dict[int, TensorUpdate] = {}
    for name, u in updates.items():
        tid = manifest.tensor_id(name)
        if tid in by_id:
            raise ValueError(f"tensor {name!r} updated twice")
        by_id[tid] = _as_update(u)
    entries: list[_Entry] = []
    applied: list[AppliedUpdate] = []
    for tid in sorted(by_id):
        spec, u = manifest.tensors[tid], by_id[tid]
        coding = u.value_coding or value_coding
        if u.mode not in MODES:
            raise ValueError(f"tensor {spec.name!r}: mode must be 'add' or 'set', got {u.mode!r}")
        values = _to_numpy(u.values).astype(np.float32, copy=False).ravel()
        indices = None if u.indices is None else _to_numpy(u.indices).astype(np.int64, copy=False).ravel()
        if indices is not None and indices.size and (indices[-1] >= spec.numel or indices.min() < 0):
            raise ValueError(f"tensor {spec.name!r}: indices must lie in [0, {spec.numel})")
        if indices is not None and indices.size and np.any(np.diff(indices) <= 0):
            bad = int(np.argmax(np.diff(indices) <= 0)) + 1
            raise ValueError(f"tensor {spec.name!r}: indices must be strictly increasing: position {bad} holds "
                             f"{indices[bad]} after {indices[bad - 1]}")
        if indices is not None and indices.size == spec.numel and spec.numel > 0:
            if np.array_equal(indices, np.arange(spec.numel)):
                indices = None
        count = spec.numel if indices is None else indices.size
        if values.size != count:
            raise ValueError(f"tensor {spec.name!r}: {values.size} values for {count} coordinates")
        if full_snapshot and (indices is not None or u.mode != "set"):
            raise ValueError(f"tensor {spec.name!r}: a full snapshot sends every tensor dense in set mode")
        value_bytes, scale, applied_values = _encode_values(values, coding)
        entries.append(_Entry(tid, spec.numel, indices, coding, u.mode, value_bytes, scale))
        applied.append(AppliedUpdate(tid, indices, applied_values, u.mode))
    flags = FLAG_FULL_SNAPSHOT if full_snapshot else 0
    ids = (manifest.model_id, manifest.table_hash)

    def expresses(fmt: int) -> bool:
        return all(e.coding in _COMPACT_CODINGS[fmt][1] for e in entries)

    if packet_format is not None and packet_format > FORMAT_VERSION and not expresses(packet_format):
        carried = "/".join(_COMPACT_CODINGS[packet_format][1])
        other = sorted({e.coding for e in entries} - set(_COMPACT_CODINGS[packet_format][1]))
        raise ValueError(f"packet format {packet_format} carries {carried} values only, not {'/'.join(other)}; "
                         f"use format 1")
    payload, index_bits = _payload_v1(entries)
    version = FORMAT_VERSION
    if packet_format is not None and packet_format > FORMAT_VERSION:
        payload, index_bits, version = _payload(entries, packet_format), 0, packet_format
    elif packet_format is None:
        for candidate in range(COMPACT_FORMAT, max_format + 1):
            if not expresses(candidate):
                continue
            compact = _payload(entries, candidate)
            if len(compact) < len(payload):
                payload, index_bits, version = compact, 0, candidate
    data = _header(ids, version, flags, base_version, target_version, len(entries), payload, key)
    return EncodedPacket(data, base_version, target_version, full_snapshot, applied, index_bits, version)


def _decode_v2_entries(manifest: Manifest, payload: bytes, count: int, version: int = COMPACT_FORMAT) -> list[_Entry]:
    """Parses and decodes a format 2 or 3 payload (the reference decoder; raises ValueError)."""
    pos = 0
    directory = []
    seen: set[int] = set()
    sparse_coding, value_codings = _COMPACT_CODINGS[version]
    inverse_codings = {v: k for k, v in value_codings.items()}
    inverse_modes = {v: k for k, v in MODES.items()}
    for j in range(count):
        tid, pos = rans.read_varint(payload, pos, f"entry {j} tensor id")
        if tid >= len(manifest.tensors) or tid in seen:
            raise ValueError(f"entry {j}: tensor id {tid} unknown or repeated")
        seen.add(tid)
        if pos + 3 > len(payload):
            raise ValueError(f"entry {j}: directory runs past the payload")
        index_coding, value_coding, mode = payload[pos:pos + 3]
        pos += 3
        if index_coding not in (INDEX_DENSE, sparse_coding) or value_coding not in inverse_codings \
                or mode not in inverse_modes:
            raise ValueError(f"entry {j}: unknown coding {index_coding}/{value_coding} or mode {mode}")
        n, pos = rans.read_varint(payload, pos, f"entry {j} count")
        numel = manifest.tensors[tid].numel
        if n > numel or (index_coding == INDEX_DENSE and n != numel):
            raise ValueError(f"entry {j}: {n} coordinates for {numel} elements")
        scale = 0.0
        scales = b""
        coding = inverse_codings[value_coding]
        if coding == "int8":
            if pos + 4 > len(payload):
                raise ValueError(f"entry {j}: directory runs past the payload")
            (scale,) = struct.unpack_from("<f", payload, pos)
            pos += 4
            if not math.isfinite(scale):
                raise ValueError(f"entry {j}: non-finite int8 scale")
        elif coding in BLOCK_CODINGS:
            end = pos + 2 * (-(-n // QUANT_BLOCK))
            if end > len(payload):
                raise ValueError(f"entry {j}: directory runs past the payload")
            scales = payload[pos:end]
            pos = end
            if not np.all(np.isfinite(np.frombuffer(scales, dtype="<f2"))):
                raise ValueError(f"entry {j}: non-finite block scale")
        directory.append((tid, numel, index_coding == sparse_coding, coding, inverse_modes[mode], n, scale, scales))
    if version == RANS_FORMAT:
        return _decode_v3_stream(payload, pos, directory)
    try:
        dec = RangeDecoder(payload[pos:])
        models = _value_models()
        entries = []
        for tid, numel, sparse, coding, mode_name, n, scale, scales in directory:
            model = models[coding]
            symbols = np.empty(n, dtype=np.int64)
            positions = np.empty(n, dtype=np.int64)
            gap_model, prev = GapModel(), -1
            for t in range(n):
                if sparse:
                    prev += gap_model.decode(dec) + 1
                    if prev >= numel:
                        raise ValueError(f"tensor {tid}: index {prev} out of range [0, {numel})")
                    positions[t] = prev
                symbols[t] = model.decode(dec)
            if coding == "int4b":
                nibbles = np.append(symbols, 0) if n % 2 else symbols
                raw = scales + (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
            else:
                raw = scales + symbols.astype("<u2" if coding == "fp16" else np.uint8).tobytes()
            entries.append(_Entry(tid, numel, positions if sparse else None, coding, mode_name, raw, scale))
        dec.finish()
    except RangeError as exc:
        raise ValueError(str(exc)) from None
    return entries


def _decode_v3_stream(payload: bytes, pos: int, directory: list) -> list[_Entry]:
    """Format 3 after the directory: the fp16 hi mode byte (if an entry is fp16), the tables it uses, then the
    rANS stream (reference; raises ValueError)."""
    uses: set[int] = set()
    for _, _, sparse, coding, _, _, _, _ in directory:
        if sparse:
            uses.update(range(rans.TABLE_GAP, rans.TABLE_HI))
        uses.update(range(rans.TABLE_HI, rans.TABLE_LO + 1) if coding == "fp16" else [rans.TABLE_Q])
    hi_delta = False
    if any(d[3] == "fp16" for d in directory):
        if pos >= len(payload):
            raise ValueError("the fp16 hi mode byte runs past the payload")
        if payload[pos] > 1:
            raise ValueError(f"unknown fp16 hi mode {payload[pos]} (0 plain, 1 delta)")
        hi_delta = payload[pos] == 1
        pos += 1
    tables = {}
    for t in sorted(uses):
        tables[t], pos = rans.read_table(payload, pos, rans.alphabet(t))
    dec = rans.RansStreamDecoder(payload[pos:])
    entries = []
    for tid, numel, sparse, coding, mode_name, n, scale, scales in directory:
        try:
            positions, symbols = rans.decode_entry(dec, tables, n, numel, sparse, coding == "fp16", hi_delta)
        except rans.RansError as exc:
            raise ValueError(f"tensor {tid}: {exc}") from None
        if coding == "int4b":
            bad = (symbols >= 8) & (symbols < 248)
            if np.any(bad):
                raise ValueError(f"tensor {tid}: 4-bit q byte {int(symbols[np.argmax(bad)]):#04x} outside -8..7")
            nibbles = np.append(symbols & 0x0F, 0) if n % 2 else symbols & 0x0F
            raw = scales + (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
        else:
            raw = scales + symbols.astype("<u2" if coding == "fp16" else np.uint8).tobytes()
        entries.append(_Entry(tid, numel, positions, coding, mode_name, raw, scale))
    dec.finish()
    return entries


def transcode(packet: Union[bytes, EncodedPacket], manifest: Manifest, max_format: int = FORMAT_VERSION) -> bytes:
    """``packet`` in a format a device that decodes up to ``max_format`` understands.

    Formats 2 and 3 carry exactly the values of format 1 (fp16 patterns, int8 q and scale, block q and
    scales), so the result applies bit-identically: format 3 becomes format 2 for a device that decodes 2,
    format 1 for one that decodes only 1. A packet already old enough is returned unchanged; a
    transcoded one loses its MAC and its release signature (sign it again with
    :func:`edgert.updates.signing.sign_packet`, then :func:`authenticate`).
    """
    data = bytes(packet)
    if len(data) < PACKET_HEADER_BYTES + 4 or data[:4] != PACKET_MAGIC:
        raise ValueError("not an edgert update packet")
    version, flags = struct.unpack_from("<HH", data, 4)
    if version <= max_format:
        return data
    if version not in (COMPACT_FORMAT, RANS_FORMAT):
        raise ValueError(f"cannot transcode packet format {version}")
    model_id, table_hash = data[8:24], data[24:40]
    if model_id != manifest.model_id or table_hash != manifest.table_hash:
        raise ValueError("packet was encoded for another model")
    base, target, count, _, length = struct.unpack_from("<QQIIQ", data, 40)
    payload = data[PACKET_HEADER_BYTES:PACKET_HEADER_BYTES + length]
    if len(payload) != length:
        raise ValueError("truncated packet")
    entries = _decode_v2_entries(manifest, payload, count, version)
    target_format = max(FORMAT_VERSION, min(max_format, COMPACT_FORMAT))
    return _header((model_id, table_hash), target_format, flags & ~(FLAG_AUTHENTICATED | FLAG_SIGNED), base, target,
                   count,
                   _payload(entries, target_format), None)


def encode_snapshot(manifest: Manifest, target_version: int, weights: TensorMap,
                    value_coding: Optional[str] = None, key: Optional[bytes] = None,
                    base_version: int = 0, max_format: int = FORMAT_VERSION) -> EncodedPacket:
    """A full-snapshot packet: every tensor dense in set mode (device resync).

    ``weights`` maps every tensor (name or id) to its values. ``value_coding`` None sends each tensor in
    its own dtype (lossless); 'fp16' or 'int8' trade exactness for size.
    """
    ids = {manifest.tensor_id(k) for k in weights}
    if len(ids) != len(manifest.tensors):
        missing = [t.name for i, t in enumerate(manifest.tensors) if i not in ids]
        raise ValueError(f"a snapshot needs every tensor; missing {missing}")
    updates = {}
    for key_, w in weights.items():
        spec = manifest.tensors[manifest.tensor_id(key_)]
        coding = value_coding or ("fp32" if spec.dtype == "float32" else "fp16")
        updates[key_] = TensorUpdate(values=_to_numpy(w), indices=None, mode="set", value_coding=coding)
    return encode_update(manifest, base_version, target_version, updates, key=key, full_snapshot=True,
                         max_format=max_format)


def authenticate(packet: Union[bytes, EncodedPacket], key: bytes) -> bytes:
    """The same packet with an HMAC-SHA256 under ``key`` (per-device keys on a shared stream).

    Sets the authenticated flag, recomputes the CRC32C and appends the MAC, exactly as
    :func:`encode_update` with ``key`` would. An already authenticated packet is re-keyed.
    """
    data = bytes(packet)
    if not 16 <= len(key) <= 64:
        raise ValueError(f"key must be 16..64 bytes, got {len(key)}")
    if len(data) < PACKET_HEADER_BYTES + 4 or data[:4] != PACKET_MAGIC:
        raise ValueError("not an edgert update packet")
    (flags,) = struct.unpack_from("<H", data, 6)
    body_end = len(data) - 4 - (32 if flags & FLAG_AUTHENTICATED else 0)
    body = bytearray(data[:body_end])
    struct.pack_into("<H", body, 6, flags | FLAG_AUTHENTICATED)
    body += struct.pack("<I", crc32c(bytes(body)))
    return bytes(body) + hmac.new(key, bytes(body), hashlib.sha256).digest()
