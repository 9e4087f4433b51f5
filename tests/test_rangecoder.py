"""The reference range coder of packet format 2: round trips, exact stream ends, model behaviour."""
from __future__ import annotations

import random

import pytest

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
