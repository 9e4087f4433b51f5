"""Update packets: the Python encoder against the golden packets, the device (Slot) against the
encoder's DeviceMirror, and the malformed-packet suite through the binding."""
from __future__ import annotations

import importlib.util
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert._edgert import Slot, inspect_packet
from edgert.updates import (
    DeviceMirror,
    Manifest,
    PacketEncoder,
    TensorSpec,
    TensorUpdate,
    crc32c,
    encode_snapshot,
    encode_update,
    index_entropy_bound_bits,
    rans,
    rice_encode,
)
from edgert.updates.packet import (
    COMPACT_VALUE_CODINGS,
    RANS_FORMAT,
    RANS_VALUE_CODINGS,
    VALUE_CODINGS,
    _decode_v2_entries,
    _directory_v2,
    _payload_v2,
    _payload_v2_reference,
    _stream_entries_v3,
    block_quantize,
    transcode,
)

PACKETS = Path(__file__).resolve().parent / "data" / "packets"
CHAIN = ["full_snapshot.bin", "sparse_fp16.bin", "dense_fp32.bin", "int8.bin", "authenticated.bin",
         "v2_sparse_fp16.bin", "v2_int8.bin", "v3_sparse_fp16.bin", "v3_int8.bin", "int4b.bin", "int8b.bin",
         "v2_int4b.bin", "v2_int8b.bin", "v3_blocks.bin", "v3_fp16_delta.bin"]


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", PACKETS / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden(name: str) -> bytes:
    return (PACKETS / name).read_bytes()


def reseal(p: bytearray, key: bytes | None = None) -> bytes:
    """Recomputes CRC (and MAC) after an edit so that the check under test is the one that fires."""
    import hashlib
    import hmac

    (payload,) = struct.unpack_from("<Q", p, 64)
    body = 72 + payload
    struct.pack_into("<I", p, body, crc32c(bytes(p[:body])))
    if key is not None:
        p[body + 4:body + 36] = hmac.new(key, bytes(p[:body + 4]), hashlib.sha256).digest()
    return bytes(p)


def test_crc32c_known_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283


def test_encoder_reproduces_golden_packets_byte_for_byte() -> None:
    generated = _golden_module().generate()
    assert sorted(generated) == sorted(p.name for p in PACKETS.glob("*.bin"))
    for name, data in generated.items():
        assert data == golden(name), f"{name} differs from the checked-in golden file"


def test_manifest_roundtrip() -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    assert m.to_bytes() == golden("manifest.bin")
    assert m.tensors[2] == TensorSpec("fc.weight", "float16", (10, 20))
    assert m.weights_size == Slot(golden("manifest.bin")).weights_size


def test_manifest_from_module() -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Linear(4, 2).half())
    m = Manifest.from_module(net, b"\x01" * 16)
    assert [(t.name, t.dtype, t.shape) for t in m.tensors] == [
        ("0.weight", "float32", (4, 3, 3, 3)), ("0.bias", "float32", (4,)),
        ("2.weight", "float16", (2, 4)), ("2.bias", "float16", (2,))]
    slot = Slot(m.to_bytes())
    assert slot.tensor_info("2.weight")["dtype"] == "float16"


def test_manifest_pack_is_the_slot_layout() -> None:
    rng = np.random.default_rng(3)
    m = Manifest(b"\x07" * 16, (TensorSpec("a", "float32", (5, 3)), TensorSpec("b", "float16", (7,)),
                                TensorSpec("c", "float32", (1,))))
    weights = {t.name: rng.standard_normal(t.shape) for t in m.tensors}  # float64 in, converted per tensor
    slot = Slot(m.to_bytes())
    slot.apply(encode_snapshot(m, 1, weights).data)
    mirror = DeviceMirror(m)
    mirror.apply(encode_snapshot(m, 1, weights))
    assert m.pack(weights) == slot.weights()[0] == mirror.weights_bytes()
    assert m.offsets()[1] == 64  # "a" is 60 bytes: padding the packed layout must reproduce
    with pytest.raises(KeyError):
        m.pack({"a": weights["a"]})
    with pytest.raises(ValueError, match="expected 7 values"):
        m.pack({**weights, "b": np.zeros(6)})


def test_golden_chain_through_binding() -> None:
    slot = Slot(golden("manifest.bin"))
    versions = []
    slot.set_hook(lambda version, ids: versions.append((version, ids)))
    for v, name in enumerate(CHAIN, 1):
        if name == "authenticated.bin":
            slot.set_key(golden("key.bin"))
        slot.apply(golden(name))
        weights, version = slot.weights()
        assert version == v == slot.version
        assert weights == golden(f"weights_v{v}.bin"), name
    assert versions[2] == (3, [1, 2])
    header = inspect_packet(golden("authenticated.bin"))
    assert header["authenticated"] and not header["full_snapshot"]
    assert (header["base_version"], header["target_version"], header["tensor_count"]) == (4, 5, 2)


def test_rice_coding_close_to_entropy_bound() -> None:
    rng = np.random.default_rng(0)
    numel = 1 << 20
    idx = np.flatnonzero(rng.random(numel) < 0.05)
    data, k = rice_encode(idx)
    bound = index_entropy_bound_bits(numel, idx.size)
    assert bound / numel == pytest.approx(0.286, abs=0.002)
    assert len(data) * 8 <= 1.05 * bound  # Golomb-Rice with the best k is within ~3% here
    assert k == 4


def test_encoder_rejects_unsorted_duplicate_and_out_of_range_indices() -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_update(m, 1, 2, {"conv.bias": (np.array([2, 1]), np.ones(2))})
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_update(m, 1, 2, {"conv.bias": (np.array([1, 1]), np.ones(2))})
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        encode_update(m, 1, 2, {"conv.bias": (np.array([4]), np.ones(1))})
    with pytest.raises(ValueError, match="base"):
        encode_update(m, 2, 2, {})


@pytest.mark.parametrize("coding,max_format", [("fp16", 1), ("fp32", 1), ("int8", 1), ("fp16", 2), ("int8", 2),
                                              ("int4b", 1), ("int8b", 1), ("int4b", 2), ("int8b", 2)])
def test_mirror_matches_device_over_many_packets(coding: str, max_format: int) -> None:
    rng = np.random.default_rng(1)
    m = Manifest(b"\x42" * 16, (TensorSpec("a", "float32", (300, 7)), TensorSpec("b", "float16", (513,)),
                                TensorSpec("c", "float32", (1,))))
    enc = PacketEncoder(m, value_coding=coding, max_format=max_format)
    slot = Slot(m.to_bytes())
    slot.apply(enc.snapshot({t.name: rng.standard_normal(t.shape) for t in m.tensors}).data)
    for step in range(40):
        updates = {}
        for t in m.tensors:
            if rng.random() < 0.3:
                continue
            density = rng.choice([0.01, 0.05, 0.5, 1.0])
            idx = np.flatnonzero(rng.random(t.numel) < density)
            mode = "set" if rng.random() < 0.2 else "add"
            updates[t.name] = TensorUpdate(values=0.1 * rng.standard_normal(idx.size), indices=idx, mode=mode)
        pkt = enc.update(updates)
        assert pkt.format_version <= max_format
        slot.apply(pkt.data)
        weights, version = slot.weights()
        assert version == enc.version == step + 2
        assert weights == enc.mirror.weights_bytes(), f"step {step}"
    for i, _ in enumerate(m.tensors):
        np.testing.assert_array_equal(slot.read_tensor(i)[0], enc.mirror.tensor(i))


def _rejects(slot: Slot, packet: bytes, status_name: str) -> None:
    before, version = slot.weights()
    with pytest.raises(edgert.PacketError) as info:
        slot.apply(packet)
    assert info.value.status_name == status_name, str(info.value)
    assert isinstance(info.value, ValueError)
    assert slot.weights() == (before, version)


@pytest.fixture
def slot_v1() -> Slot:
    slot = Slot(golden("manifest.bin"))
    slot.apply(golden("full_snapshot.bin"))
    return slot


def test_malformed_every_truncation_point(slot_v1: Slot) -> None:
    p = golden("sparse_fp16.bin")
    for n in range(len(p)):
        _rejects(slot_v1, p[:n], "EDGERT_ERR_PACKET_TRUNCATED")


def test_malformed_packets(slot_v1: Slot) -> None:
    p = golden("sparse_fp16.bin")
    m = Manifest.from_bytes(golden("manifest.bin"))
    cases = []
    b = bytearray(p); b[0] ^= 1; cases.append((bytes(b), "EDGERT_ERR_PACKET_BAD_MAGIC"))  # noqa: E702
    b = bytearray(p); struct.pack_into("<H", b, 4, 3); cases.append((reseal(b), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION"))  # noqa: E501,E702
    b = bytearray(p); b[7] |= 0x40; cases.append((reseal(b), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION"))  # noqa: E702
    b = bytearray(p); b[9] ^= 1; cases.append((reseal(b), "EDGERT_ERR_PACKET_WRONG_MODEL"))  # noqa: E702
    b = bytearray(p); b[30] ^= 1; cases.append((reseal(b), "EDGERT_ERR_PACKET_WRONG_MODEL"))  # noqa: E702
    b = bytearray(p); b[40:48] = struct.pack("<Q", 0); cases.append((reseal(b), "EDGERT_ERR_PACKET_VERSION_MISMATCH"))  # noqa: E501,E702
    b = bytearray(p); b[-1] ^= 1; cases.append((bytes(b), "EDGERT_ERR_PACKET_BAD_CRC"))  # noqa: E702
    b = bytearray(p); b[72 + 24:72 + 32] = struct.pack("<Q", 2**64 - 1); cases.append((reseal(b), "EDGERT_ERR_PACKET_MALFORMED"))  # noqa: E501,E702
    b = bytearray(p); b[72:76] = struct.pack("<I", 77); cases.append((reseal(b), "EDGERT_ERR_PACKET_BAD_TENSOR"))  # noqa: E702
    b = bytearray(p); b[72 + 8:72 + 16] = struct.pack("<Q", 109); cases.append((reseal(b), "EDGERT_ERR_PACKET_BAD_TENSOR"))  # noqa: E501,E702
    # Duplicate tensor: the same entry twice (encoder refuses, so splice by hand).
    one = encode_update(m, 1, 2, {"conv.bias": (np.array([0, 3]), np.ones(2))}).data
    entry = one[72:-4]
    dup = bytearray(one[:72] + entry + entry + b"\0" * 4)
    struct.pack_into("<I", dup, 56, 2)
    struct.pack_into("<Q", dup, 64, 2 * len(entry))
    cases.append((reseal(dup), "EDGERT_ERR_PACKET_BAD_TENSOR"))
    # Index out of range: conv.bias has 4 elements; gap 4 with k = 0 is 1111 0.
    oor = bytearray(one)
    struct.pack_into("<Q", oor, 72 + 16, 1)  # count 1
    struct.pack_into("<B", oor, 72 + 7, 0)  # k = 0
    body = bytearray(oor[:72 + 48]) + bytes([0x0F]) + np.float16(1).tobytes()
    struct.pack_into("<QQ", body, 72 + 24, 1, 2)
    struct.pack_into("<Q", body, 64, len(body) - 72)
    cases.append((reseal(bytearray(body + b"\0" * 4)), "EDGERT_ERR_PACKET_MALFORMED"))
    for packet, status in cases:
        _rejects(slot_v1, packet, status)
    slot_v1.apply(p)
    _rejects(slot_v1, p, "EDGERT_ERR_PACKET_STALE")


def test_authentication(slot_v1: Slot) -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    key = golden("key.bin")
    update = {"conv.bias": (np.array([1]), np.array([0.5]))}
    slot_v1.set_key(key)
    _rejects(slot_v1, encode_update(m, 1, 2, update).data, "EDGERT_ERR_PACKET_MAC_REQUIRED")
    _rejects(slot_v1, encode_update(m, 1, 2, update, key=bytes(32)).data, "EDGERT_ERR_PACKET_BAD_MAC")
    good = bytearray(encode_update(m, 1, 2, update, key=key).data)
    good[-1] ^= 1
    _rejects(slot_v1, bytes(good), "EDGERT_ERR_PACKET_BAD_MAC")
    good[-1] ^= 1
    slot_v1.apply(bytes(good))
    assert slot_v1.version == 2
    with pytest.raises(ValueError):
        slot_v1.set_key(b"short")


def test_save_load(tmp_path: Path, slot_v1: Slot) -> None:
    path = tmp_path / "model.snap"
    slot_v1.save(str(path))
    other = Slot(golden("manifest.bin"))
    other.load(str(path))
    assert other.weights() == slot_v1.weights()
    data = bytearray(path.read_bytes())
    data[200] ^= 1
    path.write_bytes(bytes(data))
    before = other.weights()
    with pytest.raises(edgert.EdgertError):
        other.load(str(path))
    assert other.weights() == before


def test_hook_exception_propagates_after_apply(slot_v1: Slot) -> None:
    def hook(version: int, ids: list[int]) -> None:
        raise RuntimeError(f"hook saw {version}")

    slot_v1.set_hook(hook)
    with pytest.raises(RuntimeError, match="hook saw 2"):
        slot_v1.apply(golden("sparse_fp16.bin"))
    assert slot_v1.version == 2  # the swap happened before the hook ran


def test_readers_see_consistent_versions() -> None:
    m = Manifest(b"\x07" * 16, (TensorSpec("x", "float32", (2048,)), TensorSpec("y", "float16", (100,))))
    slot = Slot(m.to_bytes())
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            x, vx = slot.read_tensor("x")
            if not np.all(x == np.float32(vx)):
                errors.append(f"x at version {vx}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for v in range(1, 60):
        slot.apply(encode_snapshot(m, v, {"x": np.full(2048, v), "y": np.full(100, v)}, base_version=v - 1).data)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert slot.version == 59


# ---- format 2 ------------------------------------------------------------------------


def _adam_like_update(m: Manifest, rng: np.random.Generator) -> dict:
    """Clustered masks and peaked values, the structure of real gradient-guided Adam updates."""
    out = {}
    for t in m.tensors:
        if t.numel == 0:
            continue
        rows = -(-t.numel // 64)
        chosen = rng.random(rows) < 0.1
        mask = np.repeat(chosen, 64)[:t.numel] & (rng.random(t.numel) < 0.8)
        idx = np.flatnonzero(mask)
        out[t.name] = (idx, rng.choice([1e-3, -1e-3, 2e-3, -2e-3, 5e-4], idx.size)
                       * (1 + 0.01 * rng.integers(0, 4, idx.size)))
    return out


@pytest.mark.parametrize("coding", ["fp16", "int8", "int4b", "int8b"])
def test_format2_is_smaller_and_carries_exactly_the_format1_values(coding: str) -> None:
    rng = np.random.default_rng(5)
    m = Manifest(b"\x07" * 16, (TensorSpec("w", "float32", (256, 64)), TensorSpec("h", "float16", (4096,)),
                                TensorSpec("b", "float32", (1,)), TensorSpec("e", "float32", (0,))))
    update = _adam_like_update(m, rng)
    update["b"] = TensorUpdate(values=np.array([0.5]), mode="set")  # dense entry
    update["e"] = (np.array([], dtype=np.int64), np.array([]))  # n = 0
    v1 = encode_update(m, 3, 4, update, coding)
    v2 = encode_update(m, 3, 4, update, coding, max_format=2)
    assert (v1.format_version, v2.format_version) == (1, 2)
    assert len(v2) < 0.6 * len(v1)
    assert transcode(v2, m) == v1.data  # exact: the same fp16 patterns / int8 q and scales
    assert transcode(v1, m) == v1.data and transcode(v2, m, max_format=2) == v2.data
    for a, b in zip(v1.applied, v2.applied):
        np.testing.assert_array_equal(a.values, b.values)


def test_format2_falls_back_when_not_smaller_or_not_expressible() -> None:
    m = Manifest(b"\x07" * 16, (TensorSpec("w", "float32", (64,)),))
    fp32 = encode_update(m, 1, 2, {"w": (np.array([1, 5]), np.ones(2))}, "fp32", max_format=2)
    assert fp32.format_version == 1  # no range-coded fp32 values
    snapshot = encode_snapshot(m, 1, {"w": np.ones(64)}, max_format=2)
    assert snapshot.format_version == 1  # a lossless fp32 snapshot stays format 1
    with pytest.raises(ValueError, match="max_format"):
        encode_update(m, 1, 2, {}, max_format=4)


@pytest.mark.parametrize("name", ["v2_sparse_fp16.bin", "v2_int8.bin", "v2_int4b.bin", "v2_int8b.bin"])
def test_format2_golden_payloads_reencode_byte_for_byte(name: str) -> None:
    """libedgert's stream encoder (behind _payload_v2) and the Python reference rebuild each golden payload."""
    m = Manifest.from_bytes(golden("manifest.bin"))
    data = golden(name)
    (count,) = struct.unpack_from("<I", data, 56)
    (length,) = struct.unpack_from("<Q", data, 64)
    payload = data[72:72 + length]
    entries = _decode_v2_entries(m, payload, count)
    assert _payload_v2(entries) == payload
    assert _payload_v2_reference(entries) == payload


def test_format2_reference_decoder_rejects_malformed_directories() -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    good = golden("v2_sparse_fp16.bin")
    (count,) = struct.unpack_from("<I", good, 56)
    payload = good[72:-36]
    assert len(_decode_v2_entries(m, payload, count)) == count
    cases = {
        "unknown or repeated": b"\x09" + payload[1:],
        "non-minimal": b"\x80\x00" + payload[1:],
        "longer than 10": b"\xff" * 11,
        "runs past": payload[:len(payload) - 6],
        "after its last symbol": payload + b"\0",
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            _decode_v2_entries(m, bad, count)


def test_format2_through_the_device(slot_v1: Slot) -> None:
    """The C++ decoder applies format 2 exactly like the mirror, and rejects its corruptions intact."""
    assert edgert._edgert.packet_max_format() == 3
    m = Manifest.from_bytes(golden("manifest.bin"))
    rng = np.random.default_rng(9)
    mirror = DeviceMirror(m)
    mirror.apply(encode_snapshot(m, 1, {t.name: slot_v1.read_tensor(i)[0] for i, t in enumerate(m.tensors)}))
    pkt = encode_update(m, 1, 2, _adam_like_update(m, rng), "fp16", max_format=2)
    assert pkt.format_version == 2
    for n in range(len(pkt.data)):
        _rejects(slot_v1, pkt.data[:n], "EDGERT_ERR_PACKET_TRUNCATED")
    body = bytearray(pkt.data)
    body[-5] ^= 0x10  # last stream byte
    _rejects(slot_v1, reseal(body), "EDGERT_ERR_PACKET_MALFORMED")
    body = bytearray(pkt.data)
    body[72 + 1] = 1  # first entry's index coding: Rice is not a format 2 coding
    _rejects(slot_v1, reseal(body), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")
    slot_v1.apply(pkt.data)
    mirror.apply(pkt)
    assert slot_v1.weights() == (mirror.weights_bytes(), 2)


# ---- block-scaled values (INT4_BLOCK, INT8_BLOCK) ----------------------------------------------------


def _block_reference(v: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (64) symmetric quantisation in float64 with the scale rounded up to fp16: (q, scales)."""
    q = np.zeros(v.size, dtype=np.int64)
    scales = []
    for b in range(0, v.size, 64):
        block = v[b:b + 64].astype(np.float64)
        peak = np.abs(block).max()
        s = np.float16(peak / qmax)
        while float(s) * qmax < peak:
            s = np.nextafter(s, np.float16(np.inf))
        scales.append(s)
        if s > 0:
            q[b:b + 64] = np.clip(np.rint(block / float(s)), -qmax, qmax)
    return q, np.array(scales, dtype=np.float16)


@pytest.mark.parametrize("coding,qmax", [("int4b", 7), ("int8b", 127)])
@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 129, 1000])
def test_block_quantize_matches_reference(coding: str, qmax: int, n: int) -> None:
    rng = np.random.default_rng(n)
    v = (rng.standard_normal(n) * 10.0 ** rng.uniform(-7, 1, n)).astype(np.float32)
    if n > 64:
        v[64:128] = 0.0  # an all-zero block: scale 0, q 0
    q, scales = block_quantize(v, coding)
    ref_q, ref_scales = _block_reference(v, qmax)
    np.testing.assert_array_equal(scales.view(np.uint16), ref_scales.view(np.uint16))
    np.testing.assert_array_equal(q, ref_q)
    assert q.dtype == np.int8 and np.all(np.abs(q) <= qmax)
    s = np.repeat(scales.astype(np.float64), 64)[:n]
    assert np.all(np.abs(q * s - v) <= s / 2 + 1e-30)  # nearest rounding: at most half a step off, never clipped
    smaller = np.nextafter(scales, np.float16(0)).astype(np.float64) * qmax  # the next smaller scale would clip
    peaks = [np.abs(v[b:b + 64]).max() for b in range(0, n, 64)]
    assert all(p == 0 or sm < p for sm, p in zip(smaller, peaks))


def test_block_codings_reject_what_they_cannot_express() -> None:
    m = Manifest(b"\x07" * 16, (TensorSpec("w", "float32", (100,)),))
    with pytest.raises(ValueError, match="finite"):
        encode_update(m, 1, 2, {"w": (np.array([3]), np.array([np.nan]))}, "int4b")
    with pytest.raises(ValueError, match="fp16 scale range"):
        encode_update(m, 1, 2, {"w": (np.array([3]), np.array([1e6]))}, "int4b")
    big = encode_update(m, 1, 2, {"w": (np.array([3]), np.array([4e5]))}, "int4b")  # 4e5 < 65504 * 7: fits
    assert abs(float(big.applied[0].values[0]) - 4e5) <= 4e5 / 7 / 2
    with pytest.raises(ValueError, match="value coding"):
        encode_update(m, 1, 2, {"w": np.zeros(100)}, "int3b")


def _v1_block_packet(m: Manifest, coding: str, n: int) -> bytes:
    rng = np.random.default_rng(3)
    idx = np.sort(rng.choice(m.tensors[0].numel, n, replace=False))
    return encode_update(m, 1, 2, {m.tensors[0].name: (idx, 0.01 * rng.standard_normal(n))}, coding).data


def test_block_codings_through_the_device_and_their_corruptions(slot_v1: Slot) -> None:
    """Every truncation point, a non-finite scale, a non-zero padding nibble, a wrong value-section length and
    an unknown coding are rejected with their exact status and leave the slot untouched; q = -8 applies."""
    m = Manifest.from_bytes(golden("manifest.bin"))
    p4 = _v1_block_packet(m, "int4b", 71)  # conv.weight: two blocks, odd n
    for n in range(len(p4)):
        _rejects(slot_v1, p4[:n], "EDGERT_ERR_PACKET_TRUNCATED")
    entry = 72
    (index_bytes,) = struct.unpack_from("<Q", p4, entry + 24)
    values_at = entry + 48 + index_bytes
    b = bytearray(p4); struct.pack_into("<H", b, values_at + 2, 0x7C00)  # second block scale = +inf  # noqa: E702
    _rejects(slot_v1, reseal(b), "EDGERT_ERR_PACKET_MALFORMED")
    b = bytearray(p4); b[values_at + 4 + 35] |= 0x30  # 71 values: the last byte's high nibble is padding  # noqa: E702
    _rejects(slot_v1, reseal(b), "EDGERT_ERR_PACKET_MALFORMED")
    b = bytearray(p4); b[entry + 5] = 11  # no value coding 11 (yet)  # noqa: E702
    _rejects(slot_v1, reseal(b), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")
    b = bytearray(p4); b[entry + 5] = VALUE_CODINGS["int8b"]  # INT8_BLOCK needs 71 q bytes, not 36  # noqa: E702
    _rejects(slot_v1, reseal(b), "EDGERT_ERR_PACKET_MALFORMED")
    b = bytearray(p4); struct.pack_into("<f", b, entry + 40, 1.0)  # the per-tensor scale field must be 0  # noqa: E702
    _rejects(slot_v1, reseal(b), "EDGERT_ERR_PACKET_MALFORMED")
    # q = -8 (never written by the encoder) is a valid value: v = -8 * s
    b = bytearray(p4); b[values_at + 4] = 0x88  # values 0 and 1: nibble 8 = -8  # noqa: E702
    scale = float(np.frombuffer(bytes(b[values_at:values_at + 2]), dtype="<f2")[0])
    idx0 = int(np.sort(np.random.default_rng(3).choice(108, 71, replace=False))[0])
    before = slot_v1.read_tensor(0)[0].ravel().copy()
    slot_v1.apply(reseal(b))
    after = slot_v1.read_tensor(0)[0].ravel()
    assert after[idx0] == np.float32(before[idx0] + np.float32(-8 * scale))


def test_format2_block_codings_through_the_device(slot_v1: Slot) -> None:
    m = Manifest.from_bytes(golden("manifest.bin"))
    rng = np.random.default_rng(11)
    mirror = DeviceMirror(m)
    mirror.apply(encode_snapshot(m, 1, {t.name: slot_v1.read_tensor(i)[0] for i, t in enumerate(m.tensors)}))
    runs = np.concatenate([np.arange(0, 40), np.arange(60, 101)])  # 81 coordinates: two blocks
    update = {"conv.weight": (runs, rng.choice([1e-3, -1e-3, 2e-3], runs.size)),
              "fc.weight": TensorUpdate(values=rng.choice([1e-2, -1e-2, 0.0], 200))}
    pkt = encode_update(m, 1, 2, update, "int4b", max_format=2)
    assert pkt.format_version == 2
    for n in range(len(pkt.data)):
        _rejects(slot_v1, pkt.data[:n], "EDGERT_ERR_PACKET_TRUNCATED")
    # directory of the first entry: varint tid, 3 coding bytes, varint n, then the fp16 block scales
    count, pos = rans.read_varint(pkt.data, 72 + 4, "n")
    assert count == runs.size
    body = bytearray(pkt.data); struct.pack_into("<H", body, pos, 0xFC00)  # scale 0 = -inf  # noqa: E702
    _rejects(slot_v1, reseal(body), "EDGERT_ERR_PACKET_MALFORMED")
    body = bytearray(pkt.data); body[72 + 2] = VALUE_CODINGS["int4b"]  # raw INT4_BLOCK: not format 2  # noqa: E702
    _rejects(slot_v1, reseal(body), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")
    slot_v1.apply(pkt.data)
    mirror.apply(pkt)
    assert slot_v1.weights() == (mirror.weights_bytes(), 2)
    assert transcode(pkt, m) == encode_update(m, 1, 2, update, "int4b").data


@pytest.mark.parametrize("coding", ["int4b", "int8b"])
def test_format3_block_codings_through_the_device(slot_v1: Slot, coding: str) -> None:
    """Format 3 carries the block codings (ids 11, 12; q on the shared q table, int4 q as a sign-extended byte):
    the device applies what the mirror predicts, transcoding gives the format 2 and 1 packets byte for byte,
    every truncation is TRUNCATED, format 1/2 block ids in a format 3 directory are UNSUPPORTED_VERSION, and an
    int4 q byte outside -8..7 is MALFORMED (device and reference decoder)."""
    m = Manifest.from_bytes(golden("manifest.bin"))
    rng = np.random.default_rng(12)
    mirror = DeviceMirror(m)
    mirror.apply(encode_snapshot(m, 1, {t.name: slot_v1.read_tensor(i)[0] for i, t in enumerate(m.tensors)}))
    runs = np.concatenate([np.arange(0, 40), np.arange(60, 101)])  # 81 coordinates: two blocks
    update = {"conv.weight": (runs, 0.01 * rng.standard_normal(runs.size)),
              "fc.weight": TensorUpdate(values=rng.choice([1e-2, -1e-2, 0.0], 200))}
    pkt = encode_update(m, 1, 2, update, coding, max_format=3, packet_format=3)
    assert pkt.format_version == 3 and pkt.data[72 + 2] == RANS_VALUE_CODINGS[coding]
    assert transcode(pkt, m, 2) == encode_update(m, 1, 2, update, coding, max_format=2, packet_format=2).data
    assert transcode(pkt, m, 1) == encode_update(m, 1, 2, update, coding).data
    for n in range(len(pkt.data)):
        _rejects(slot_v1, pkt.data[:n], "EDGERT_ERR_PACKET_TRUNCATED")
    for other in (VALUE_CODINGS[coding], COMPACT_VALUE_CODINGS[coding]):
        body = bytearray(pkt.data); body[72 + 2] = other  # noqa: E702
        _rejects(slot_v1, reseal(body), "EDGERT_ERR_PACKET_UNSUPPORTED_VERSION")
        with pytest.raises(ValueError, match="unknown coding"):
            _decode_v2_entries(m, bytes(body[72:-4]), 2, 3)
    if coding == "int4b":  # the same directory over a stream whose first q byte is 0x08 (not an int4)
        entries = _decode_v2_entries(m, pkt.data[72:-4], 2, 3)
        stream_entries = _stream_entries_v3(entries)
        stream_entries[0].symbols[0] = 0x08
        tables = rans.build_tables(stream_entries)
        payload = (_directory_v2(entries, RANS_FORMAT) + b"".join(rans.write_table(f) for f in tables.values())
                   + rans.encode_steps_reference(*rans.coding_steps(stream_entries, tables)))
        bad = bytearray(pkt.data[:72]) + payload + bytes(4)
        struct.pack_into("<Q", bad, 64, len(payload))
        _rejects(slot_v1, reseal(bad), "EDGERT_ERR_PACKET_MALFORMED")
        with pytest.raises(ValueError, match="outside -8..7"):
            _decode_v2_entries(m, payload, 2, 3)
    slot_v1.apply(pkt.data)
    mirror.apply(pkt)
    assert slot_v1.weights() == (mirror.weights_bytes(), 2)



def test_mask_fp16_gzip_reference_is_the_papers_coding() -> None:
    """The size reference decompresses to the 1-bit mask over all parameters, then the fp16 values in order."""
    import gzip

    from edgert.updates.reference import mask_fp16_gzip, mask_fp16_gzip_bytes

    m = Manifest(b"\x07" * 16, (TensorSpec("a", "float32", (10,)), TensorSpec("b", "float16", (3, 3)),
                                TensorSpec("c", "float32", (0,))))
    update = {"b": TensorUpdate(values=np.arange(9) / 8), "a": (np.array([1, 9]), np.array([0.5, -2.0]))}
    raw = gzip.decompress(mask_fp16_gzip(m, update))
    mask = np.zeros(19, dtype=bool)
    mask[[1, 9]] = True
    mask[10:] = True
    values = np.concatenate([[0.5, -2.0], np.arange(9) / 8]).astype("<f2")
    assert raw == np.packbits(mask).tobytes() + values.tobytes()
    assert mask_fp16_gzip_bytes(m, update) == len(mask_fp16_gzip(m, update))
    with pytest.raises(ValueError, match="2 values for 1 indices"):
        mask_fp16_gzip(m, {"a": (np.array([10]), np.array([1.0, 2.0]))})
