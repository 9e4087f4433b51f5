"""The range coder of packet format 2: the pure-Python reference (round trips, exact stream ends, model
behaviour), and libedgert's encoder (``_edgert.range_encode_v2`` behind ``_payload_v2``) byte for byte
against it."""
from __future__ import annotations

import random
import zlib
from typing import Callable, Optional

import numpy as np
import pytest

import edgert._edgert as _edgert
from edgert.updates.packet import _Entry, _payload_v2, _payload_v2_reference
from edgert.updates.rangecoder import GapModel, RangeDecoder, RangeEncoder, RangeError, TreeModel, encode_symbols


def _encode(gaps: list[int], symbols: list[int], bits: int) -> bytes:
    enc, gap_model, tree = RangeEncoder(), GapModel(), TreeModel(bits)
    for g, x in zip(gaps, symbols):
        gap_model.encode(enc, g)
        tree.encode(enc, x)
    return enc.finish()


def _decode(data: bytes, n: int, bits: int) -> tuple[list[int], list[int]]:
    dec, gap_model, tree = RangeDecoder(data), GapModel(), TreeModel(bits)
    out = [(gap_model.decode(dec), tree.decode(dec)) for _ in range(n)]
    dec.finish()
    return [g for g, _ in out], [x for _, x in out]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000])
@pytest.mark.parametrize("bits", [8, 16])
def test_round_trip(n: int, bits: int) -> None:
    rnd = random.Random(n * 31 + bits)
    gaps = [rnd.choice([0, 0, 1, 7, rnd.getrandbits(rnd.randint(1, 32))]) for _ in range(n)]
    symbols = [rnd.choice([rnd.getrandbits(bits), 3, (1 << bits) - 1]) for _ in range(n)]
    assert _decode(_encode(gaps, symbols, bits), n, bits) == (gaps, symbols)


def test_extreme_gaps() -> None:
    gaps = [0, 2**32 - 1, 2**31, 1, 2**32 - 2]
    assert _decode(_encode(gaps, [0] * len(gaps), 8), len(gaps), 8)[0] == gaps
    with pytest.raises(ValueError, match="32 bits"):
        GapModel().encode(RangeEncoder(), 2**32)


def test_empty_stream_is_four_zero_bytes() -> None:
    assert RangeEncoder().finish() == b"\0\0\0\0"
    RangeDecoder(b"\0\0\0\0").finish()


def test_stream_must_end_exactly() -> None:
    data = _encode([5, 0, 9], [1, 2, 3], 8)
    with pytest.raises(RangeError, match="after its last symbol"):
        _decode(data + b"\0", 3, 8)
    with pytest.raises(RangeError, match="runs past"):
        _decode(data[:-1], 3, 8)
    with pytest.raises(RangeError, match="at least 4"):
        RangeDecoder(b"\0\0\0")
    with pytest.raises(RangeError, match="impossible"):
        RangeDecoder(b"\xff\xff\xff\xff")
    corrupt = bytearray(data)
    corrupt[-1] ^= 0x40
    with pytest.raises(RangeError):
        _decode(bytes(corrupt), 3, 8)


def test_adaptive_models_compress_peaked_data() -> None:
    rnd = random.Random(0)
    peaked = [rnd.choice([0x1400, 0x9400, 0x1800]) for _ in range(4000)]
    uniform = [rnd.getrandbits(16) for _ in range(4000)]
    assert len(encode_symbols(peaked, 16)) < 0.15 * 2 * len(peaked)  # ~1.6 bits of 16
    assert len(encode_symbols(uniform, 16)) <= 1.03 * 2 * len(uniform)  # adaptation noise costs ~1.5%
    runs = [0] * 3000 + [1000] * 10
    enc, model = RangeEncoder(), GapModel()
    for g in runs:
        model.encode(enc, g)
    assert len(enc.finish()) * 8 < 0.1 * len(runs) + 300  # long runs of adjacent indices cost ~nothing


# ---- libedgert's encoder against the reference -------------------------------------------


def _entry(numel: int, symbols: np.ndarray, indices: Optional[np.ndarray] = None, tid: int = 0) -> _Entry:
    """A format 2 entry: ``symbols`` uint16 (fp16 patterns) or int8 (q); ``indices`` None = dense."""
    coding = "fp16" if symbols.dtype == np.uint16 else "int8"
    values = symbols.astype("<u2" if coding == "fp16" else np.int8).tobytes()
    idx = None if indices is None else np.asarray(indices, dtype=np.int64)
    return _Entry(tid, numel, idx, coding, "add", values, 0.25 if coding == "int8" else 0.0)


def _fp16(n: int, rng: np.random.Generator, peaked: bool = False) -> np.ndarray:
    if peaked:  # Adam-like: a few fp16 values
        return rng.choice(np.array([0x1400, 0x9400, 0x1800, 0x9800], dtype=np.uint16), n)
    return rng.integers(0, 1 << 16, n, dtype=np.uint16)


def _int8(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(-127, 128, n).astype(np.int8)


def _mask(numel: int, p: float, rng: np.random.Generator) -> np.ndarray:
    return np.flatnonzero(rng.random(numel) < p)


def _bucket_boundaries() -> np.ndarray:
    gaps = [g for k in range(30) for g in (0, 1, (1 << k) - 1, 1 << k)]
    return np.cumsum(np.array(gaps, dtype=np.int64) + 1) - 1


def _random_mix(rng: np.random.Generator) -> list[_Entry]:
    """Several entries sharing the value models: sparse and dense, fp16 and int8, n = 0, an empty tensor."""
    out = []
    for tid in range(8):
        numel = int(rng.integers(1, 3000))
        dense = tid % 3 == 0
        idx = None if dense else _mask(numel, float(rng.choice([0.01, 0.05, 0.3])), rng)
        n = numel if idx is None else idx.size
        symbols = _int8(n, rng) if tid % 2 else _fp16(n, rng, peaked=tid % 4 == 0)
        out.append(_entry(numel, symbols, idx, tid))
    out.append(_entry(500, _fp16(0, rng), np.array([], dtype=np.int64), 8))  # sparse, no coordinate
    out.append(_entry(0, _int8(0, rng), None, 9))  # empty tensor, dense
    return out


CASES: dict[str, Callable[[np.random.Generator], list[_Entry]]] = {
    "no entries": lambda rng: [],
    "one coordinate": lambda rng: [_entry(100, _fp16(1, rng), np.array([57]))],
    "dense one element fp16": lambda rng: [_entry(1, _fp16(1, rng))],
    "dense one element int8": lambda rng: [_entry(1, _int8(1, rng))],
    "bucket boundary gaps": lambda rng: [_entry(int(_bucket_boundaries()[-1]) + 1, _int8(120, rng),
                                                _bucket_boundaries())],
    "gap 2^32 - 1": lambda rng: [_entry(1 << 32, _fp16(1, rng), np.array([(1 << 32) - 1]))],
    "gaps near 2^32 and 2^31": lambda rng: [
        _entry(1 << 32, _int8(2, rng), np.array([0, (1 << 32) - 1]), 0),
        _entry(1 << 32, _fp16(2, rng), np.array([(1 << 31) - 1, (1 << 32) - 1]), 1),
        _entry(1 << 32, _int8(1, rng), np.array([1 << 31]), 2)],
    "all-equal symbols": lambda rng: [_entry(700, np.full(700, 0x3C00, dtype=np.uint16)),
                                      _entry(900, np.zeros(45, dtype=np.int8), np.arange(0, 900, 20), 1)],
    "all 65536 fp16 patterns": lambda rng: [_entry(1 << 16, np.arange(1 << 16, dtype=np.uint16))],
    "random sparse fp16": lambda rng: [_entry(20000, _fp16(idx.size, rng), idx)
                                       for idx in [_mask(20000, 0.05, rng)]],
    "random dense fp16": lambda rng: [_entry(5000, _fp16(5000, rng))],
    "random sparse int8": lambda rng: [_entry(20000, _int8(idx.size, rng), idx) for idx in [_mask(20000, 0.05, rng)]],
    "random dense int8": lambda rng: [_entry(5000, _int8(5000, rng))],
    "random mix": _random_mix,
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_encoder_matches_reference(case: str) -> None:
    entries = CASES[case](np.random.default_rng(zlib.crc32(case.encode())))
    assert _payload_v2(entries) == _payload_v2_reference(entries)


@pytest.mark.parametrize("seed", range(4))
def test_native_encoder_matches_reference_on_random_packets(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    entries = _random_mix(rng)
    assert _payload_v2(entries) == _payload_v2_reference(entries)


def test_native_encoder_argument_forms() -> None:
    rng = np.random.default_rng(3)
    sym16, idx = _fp16(40, rng), _mask(1000, 0.04, rng)[:40]
    sym16 = sym16[:idx.size]
    expected = _edgert.range_encode_v2([(16, sym16.tobytes(), idx, 1000)])
    assert _edgert.range_encode_v2([(16, sym16, idx, 1000)]) == expected  # uint16 array
    assert _edgert.range_encode_v2([(16, sym16.view(np.float16), idx, 1000)]) == expected  # float16 array
    assert _edgert.range_encode_v2(((16, memoryview(sym16.tobytes()), idx, 1000),)) == expected
    q = _int8(10, rng)
    assert _edgert.range_encode_v2([(8, q, None, 10)]) == _edgert.range_encode_v2([(8, q.view(np.uint8), None, 10)])
    assert _edgert.range_encode_v2([]) == b"\0\0\0\0"


BAD_ENTRIES = {
    "unsorted": (ValueError, "strictly increasing", (8, b"ab", np.array([5, 2]), 10)),
    "duplicate": (ValueError, "strictly increasing", (8, b"ab", np.array([2, 2]), 10)),
    "negative": (ValueError, "out of range", (8, b"a", np.array([-1]), 10)),
    "past numel": (ValueError, "out of range", (8, b"ab", np.array([2, 10]), 10)),
    "gap of 2^32": (ValueError, "does not fit 32 bits", (8, b"a", np.array([1 << 32]), 1 << 33)),
    "dense count": (ValueError, "dense entry", (16, b"abcd", None, 3)),
    "bits": (ValueError, "8 or 16", (12, b"ab", None, 2)),
    "odd fp16 bytes": (ValueError, "symbol bytes", (16, b"abc", None, 1)),
    "index count": (ValueError, "indices for", (8, b"abc", np.array([1, 2]), 10)),
    "int32 indices": (TypeError, "int64", (8, b"ab", np.array([1, 2], dtype=np.int32), 10)),
    "float symbols": (TypeError, "symbols", (16, np.zeros(2, np.float32), None, 4)),
    "not a tuple": (TypeError, "tuple", [8, b"a", None, 1]),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_native_encoder_rejects_bad_entries(case: str) -> None:
    exc, message, bad = BAD_ENTRIES[case]
    good = (16, b"\0\x3c", np.array([4]), 10)
    with pytest.raises(exc, match=rf"entr(y |ies\[)1\]?: .*{message}"):
        _edgert.range_encode_v2([good, bad])


def test_native_encoder_rejects_what_the_reference_cannot_code() -> None:
    for idx, numel in ([5, 2], 10), ([3, 3], 10), ([1 << 32], 1 << 33):
        entries = [_entry(numel, np.zeros(len(idx), dtype=np.uint16), np.array(idx))]
        with pytest.raises(ValueError):
            _payload_v2_reference(entries)
        with pytest.raises(ValueError):
            _payload_v2(entries)
