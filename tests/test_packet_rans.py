"""Update-packet format 3 (static-table rANS): the Python reference coder against libedgert's encoder and
decoder, the golden packets, exact values, and every malformed-input class (exact status, weights intact)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import edgert._edgert
from edgert._edgert import Slot
from edgert.updates import DeviceMirror, Manifest, TensorSpec, TensorUpdate, encode_snapshot, encode_update, rans
from edgert.updates.packet import _decode_v2_entries, _directory_v2, _payload_v3, _stream_entries_v3, transcode
from test_packet import _adam_like_update, _rejects, golden, reseal


def _payload(data: bytes) -> tuple[bytes, int]:
    (count,) = struct.unpack_from("<I", data, 56)
    (length,) = struct.unpack_from("<Q", data, 64)
    return data[72:72 + length], count


@pytest.fixture
def slot_v1() -> Slot:
    slot = Slot(golden("manifest.bin"))
    slot.apply(golden("full_snapshot.bin"))
    return slot


def _model() -> Manifest:
    """Odd sizes, both dtypes, a scalar, an empty tensor, and one tensor past 2^12 * 2^12 for 3-chunk escapes."""
    return Manifest(b"\x33" * 16, (TensorSpec("w", "float32", (37, 29)), TensorSpec("h", "float16", (1001,)),
                                   TensorSpec("s", "float32", ()), TensorSpec("e", "float32", (0,)),
                                   TensorSpec("big", "float16", (1 << 25,))))


def _update(rng: np.random.Generator, density: float) -> dict:
    m = _model()
    out: dict = {}
    for t in m.tensors[:2]:
        idx = np.flatnonzero(rng.random(t.numel) < density)
        out[t.name] = (idx, 1e-3 * rng.standard_normal(idx.size))
    out["s"] = (np.array([0]), np.array([0.25]))  # n = 1
    out["e"] = (np.array([], dtype=np.int64), np.array([]))  # n = 0
    # gaps of every escape length: 63 (direct limit), 64, 4095..4097 (one and two chunks), 2^24 + 5 (three)
    big = np.cumsum([62, 64, 4096, 4097, 1 << 24, 5]) - 1
    out["big"] = (big, rng.standard_normal(big.size))
    return out


# ---- the coder --------------------------------------------------------------------------


def test_normalize_and_tables_round_trip() -> None:
    rng = np.random.default_rng(0)
    for size in (rans.GAP_ALPHABET, 256):
        for counts in (np.zeros(size, np.int64), rng.integers(0, 3, size) * rng.integers(0, 1000, size),
                       np.eye(1, size, size - 1, dtype=np.int64)[0] * 7, np.ones(size, np.int64)):
            f = rans.normalize(counts)
            assert f.sum() == rans.TOTAL and np.all((f > 0) == ((counts > 0) if counts.any() else np.eye(1, size)[0]))
            data = rans.write_table(f)
            back, end = rans.read_table(data + b"\xaa", 0, size)
            assert end == len(data) and np.array_equal(back, f)


def test_read_table_rejects_every_malformation() -> None:
    size = 256
    good = rans.write_table(rans.normalize(np.eye(1, size, 3, dtype=np.int64)[0]))  # 0 r2, 4096, 0 r251
    assert np.array_equal(rans.read_table(good, 0, size)[0], np.eye(1, size, 3, dtype=np.int64)[0] * 4096)
    cases = {
        "sum to 2048": b"\x80\x10" + b"\x00\xfe\x01",  # 2048 + 255 zeros
        "past the 256": b"\x80\x20" + b"\x00\xff\x01",  # a run of 256 zeros after one symbol
        "two zero runs": b"\x00\x00\x00\x00\x80\x20\x00\xfb\x01",
        "frequency 4097": b"\x81\x20",
        "non-minimal": b"\x80\x00",
        "runs past the payload": good[:-1],
    }
    for message, data in cases.items():
        with pytest.raises(rans.RansError, match=message):
            rans.read_table(data, 0, size)


def test_libedgert_encoder_matches_the_reference_and_rejects_bad_steps() -> None:
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 1000):
        freqs = rng.integers(1, 4097, n).astype(np.uint16)
        starts = (rng.random(n) * (4097 - freqs)).astype(np.uint16)
        states = rng.integers(0, 3, n).astype(np.uint8)
        assert edgert._edgert.rans_encode_v3(states, starts, freqs) == \
            rans.encode_steps_reference(states, starts, freqs)
    assert edgert._edgert.rans_encode_v3(np.zeros(0, np.uint8), np.zeros(0, np.uint16),
                                         np.zeros(0, np.uint16)) == struct.pack("<3I", 1 << 16, 1 << 16, 1 << 16)
    for states, starts, freqs, what in [([3], [0], [1], "state 3, start 0, frequency 1"),
                                        ([0], [0], [0], "state 0, start 0, frequency 0"),
                                        ([0], [4000], [97], "state 0, start 4000, frequency 97")]:
        with pytest.raises(ValueError, match=f"step 0: {what} "):
            edgert._edgert.rans_encode_v3(np.array(states, np.uint8), np.array(starts, np.uint16),
                                          np.array(freqs, np.uint16))
    with pytest.raises(ValueError, match="equal length"):
        edgert._edgert.rans_encode_v3(np.zeros(2, np.uint8), np.zeros(1, np.uint16), np.zeros(1, np.uint16))


# ---- packets ----------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["fp16", "int8"])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_format3_carries_exactly_the_format1_values(coding: str, density: float) -> None:
    """Randomised shapes through the device and the reference decoder: same weights as formats 1 and 2."""
    rng = np.random.default_rng(int(density * 100) + len(coding))
    m = _model()
    update = _update(rng, density)
    update["w"] = TensorUpdate(values=rng.standard_normal(m.tensors[0].numel), mode="set") if density == 1.0 \
        else update["w"]
    packets = {f: encode_update(m, 0, 1, update, coding, max_format=3, packet_format=f) for f in (1, 2, 3)}
    assert [p.format_version for p in packets.values()] == [1, 2, 3]
    weights = []
    for p in packets.values():
        slot = Slot(m.to_bytes())
        slot.apply(p.data)
        weights.append(slot.weights())
    assert weights[0] == weights[1] == weights[2]
    mirror = DeviceMirror(m)
    mirror.apply(packets[3])
    assert weights[2] == (mirror.weights_bytes(), 1)
    assert transcode(packets[3], m) == packets[1].data
    assert transcode(packets[3], m, max_format=2) == packets[2].data
    assert transcode(packets[3], m, max_format=3) == packets[3].data
    payload, count = _payload(packets[3].data)
    entries = _decode_v2_entries(m, payload, count, 3)
    assert _payload_v3(entries) == payload == _payload_v3(entries, reference=True)


def test_encoder_picks_the_smallest_allowed_format() -> None:
    rng = np.random.default_rng(2)
    m = Manifest(b"\x07" * 16, (TensorSpec("w", "float32", (256, 64)), TensorSpec("h", "float16", (4096,))))
    update = _adam_like_update(m, rng)
    sizes = {f: len(encode_update(m, 3, 4, update, max_format=3, packet_format=f)) for f in (1, 2, 3)}
    best = encode_update(m, 3, 4, update, max_format=3)
    assert len(best) == min(sizes.values()) and best.format_version == min(sizes, key=lambda f: (sizes[f], f))
    assert encode_update(m, 3, 4, update, max_format=2).format_version in (1, 2)
    with pytest.raises(ValueError, match="packet_format must be in"):
        encode_update(m, 3, 4, update, max_format=2, packet_format=3)
    with pytest.raises(ValueError, match="fp16/int8/int4b/int8b values only, not fp32"):
        encode_update(m, 3, 4, update, "fp32", max_format=3, packet_format=3)
    snapshot = encode_snapshot(m, 1, {"w": np.ones(256 * 64), "h": np.ones(4096)}, max_format=3)
    assert snapshot.format_version == 1  # a lossless fp32 snapshot stays format 1


def test_random_update_is_not_larger_than_format2() -> None:
    """On a random 5% mask with Gaussian values static tables lose nothing to format 2's adaptive models
    once the packet is large enough to pay for its ~1 KB of tables (here 1M parameters)."""
    rng = np.random.default_rng(3)
    m = Manifest(b"\x07" * 16, (TensorSpec("w", "float32", (1024, 1024)),))
    idx = np.flatnonzero(rng.random(1024 * 1024) < 0.05)
    update = {"w": (idx, 1e-3 * rng.standard_normal(idx.size))}
    v2 = encode_update(m, 0, 1, update, max_format=3, packet_format=2)
    v3 = encode_update(m, 0, 1, update, max_format=3, packet_format=3)
    assert len(v3) <= len(v2)


@pytest.mark.parametrize("name", ["v3_sparse_fp16.bin", "v3_int8.bin", "v3_blocks.bin", "v3_fp16_delta.bin"])
def test_golden_payloads_reencode_byte_for_byte(name: str) -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    payload, count = _payload(golden(name))
    entries = _decode_v2_entries(m, payload, count, 3)
    assert _payload_v3(entries) == payload
    assert _payload_v3(entries, reference=True) == payload


def test_fp16_model_ring_hits_and_both_hi_modes(slot_v1: Slot) -> None:
    """Repeated values are ring hits (one symbol, no low byte); the encoder keeps the smaller hi mode: plain
    high bytes for independent Gaussian values, deltas for values drifting over binades; both decode on the
    device to the mirror's weights. A literal that repeats a ring entry (a second encoding of a hit) is
    MALFORMED, on the device and in the reference decoder."""
    m = Manifest.from_bytes(golden("manifest.bin"))
    rng = np.random.default_rng(11)
    idx = np.arange(0, 108, 2)
    drifting = 1e-4 * 2.0 ** (np.arange(idx.size) / 6) * rng.choice([1.0, -1.0], idx.size)
    drifting[5:9] = drifting[4]
    modes = {}
    for name, values in (("gaussian", 1e-3 * rng.standard_normal(idx.size)), ("drifting", drifting)):
        pkt = encode_update(m, 1, 2, {"conv.weight": (idx, values)}, "fp16", max_format=3, packet_format=3)
        payload, count = _payload(pkt.data)
        entries = _decode_v2_entries(m, payload, count, 3)
        modes[name] = payload[len(_directory_v2(entries, 3))]
        slot = Slot(golden("manifest.bin"))
        slot.apply(golden("full_snapshot.bin"))
        mirror = DeviceMirror(m)
        mirror.apply(encode_snapshot(m, 1, {t.name: slot.read_tensor(i)[0] for i, t in enumerate(m.tensors)}))
        slot.apply(pkt.data)
        mirror.apply(pkt)
        assert slot.weights() == (mirror.weights_bytes(), 2)
    assert modes == {"gaussian": 0, "drifting": 1}
    hit_sym, ctx = _stream_entries_v3(entries)[0].ring_model()
    assert np.count_nonzero(hit_sym == 256) >= 4  # the repeats
    # The same packet with every value coded literally (no ring hits): the repeats are literals in the ring.
    stream_entries = _stream_entries_v3(entries)
    patterns = stream_entries[0].symbols.astype(np.int64).tolist()
    prev = [0] + patterns[:-1]
    stream_entries[0]._ring = (np.full(len(patterns), -1), np.array([rans.hi_context(p, False) for p in prev]))
    tables = rans.build_tables(stream_entries, True)
    bad_payload = (_directory_v2(entries, 3) + b"\x01" + b"".join(rans.write_table(f) for f in tables.values())
                   + rans.encode_steps_reference(*rans.coding_steps(stream_entries, tables, True)))
    bad = bytearray(pkt.data[:72]) + bad_payload + bytes(4)
    struct.pack_into("<Q", bad, 64, len(bad_payload))
    _rejects(slot_v1, reseal(bad), "EDGERT_ERR_PACKET_MALFORMED")
    with pytest.raises(ValueError, match="is in the ring"):
        _decode_v2_entries(m, bad_payload, count, 3)


def test_reference_decoder_rejects_malformed_payloads() -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    payload, count = _payload(golden("v3_sparse_fp16.bin"))
    cases = {
        "unknown coding": payload[:1] + b"\x02" + payload[2:],  # GAP_AC is format 2's coding
        "after the last symbol": payload + b"\0\0",
        "runs past its end": payload[:-2],
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            _decode_v2_entries(m, bad, count, 3)


def _stream_offset(payload: bytes, count: int, m: Manifest) -> int:
    """Offset of the rANS stream in a format 3 payload (directory and tables re-encoded)."""
    entries = _decode_v2_entries(m, payload, count, 3)
    stream_entries = _stream_entries_v3(entries)
    at = len(_directory_v2(entries, 3))
    fp16 = any(e.fp16 for e in stream_entries)
    tables = rans.build_tables(stream_entries, fp16 and payload[at] == 1)
    return at + fp16 + sum(len(rans.write_table(f)) for f in tables.values())


def test_format3_through_the_device(slot_v1: Slot) -> None:
    """Every truncation point, corrupt codings, tables, states and words: the exact status, weights intact."""
    assert edgert._edgert.packet_max_format() == 3
    m = Manifest.from_bytes(golden("manifest.bin"))
    rng = np.random.default_rng(9)
    mirror = DeviceMirror(m)
    mirror.apply(encode_snapshot(m, 1, {t.name: slot_v1.read_tensor(i)[0] for i, t in enumerate(m.tensors)}))
    pkt = encode_update(m, 1, 2, _adam_like_update(m, rng), "fp16", max_format=3, packet_format=3)
    for n in range(len(pkt.data)):
        _rejects(slot_v1, pkt.data[:n], "EDGERT_ERR_PACKET_TRUNCATED")
    payload, count = _payload(pkt.data)
    entries = _decode_v2_entries(m, payload, count, 3)
    mode_at = 72 + len(_directory_v2(entries, 3))  # the fp16 hi mode byte
    tables_at = mode_at + 1
    stream_at = 72 + _stream_offset(payload, count, m)
    end = 72 + len(payload)

    def edited(at: int, value: int) -> bytes:
        body = bytearray(pkt.data)
        body[at] = value
        return reseal(body)

    _rejects(slot_v1, edited(72 + 1, 2), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")  # GAP_AC is format 2's
    _rejects(slot_v1, edited(72 + 2, 3), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")  # FP16_AC is format 2's
    _rejects(slot_v1, edited(mode_at, 2), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")  # an unknown hi mode
    _rejects(slot_v1, edited(tables_at, pkt.data[tables_at] ^ 1), "EDGERT_ERR_PACKET_MALFORMED")  # table sum
    _rejects(slot_v1, edited(stream_at + 2, 0), "EDGERT_ERR_PACKET_MALFORMED")  # state 0 below 2^16
    _rejects(slot_v1, edited(end - 1, pkt.data[end - 1] ^ 0x40), "EDGERT_ERR_PACKET_MALFORMED")  # last word
    body = bytearray(pkt.data)
    body[stream_at:stream_at + 4] = struct.pack("<I", 0xFFFFFFFF)
    _rejects(slot_v1, reseal(body), "EDGERT_ERR_PACKET_MALFORMED")  # a state that cannot end at 2^16
    slot_v1.apply(pkt.data)
    mirror.apply(pkt)
    assert slot_v1.weights() == (mirror.weights_bytes(), 2)
