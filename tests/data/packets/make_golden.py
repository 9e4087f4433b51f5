"""Generates the golden update packets shared by tests/cpp/test_packet.cpp and tests/test_packet.py.

    PYTHONPATH=python python tests/data/packets/make_golden.py   # rewrites the files here

Deterministic (fixed seed, fixed versions). The chain, applied in order to a fresh slot:

    full_snapshot.bin  v0 -> v1  every tensor dense set-mode, own dtype (lossless)
    sparse_fp16.bin    v1 -> v2  ~10% Rice-coded masks, fp16 values, add
    dense_fp32.bin     v2 -> v3  dense fp32: add on conv.bias, set on fc.weight
    int8.bin           v3 -> v4  Rice-coded masks, int8 values with per-tensor scale, add
    authenticated.bin  v4 -> v5  sparse fp16 with HMAC-SHA256 under key.bin

Format 2 (range-coded; the chain continues, so these carry a MAC under key.bin too):

    v2_sparse_fp16.bin v5 -> v6  clustered masks (runs) on conv.weight and fc.weight, fp16 values
                                 from a small set (as Adam deltas are), dense fc.bias set, add
    v2_int8.bin        v6 -> v7  sparse int8 on conv.weight and gain (n = 1), add; empty
                                 tensor with n = 0

Format 3 (static-table rANS; the chain continues, MAC under key.bin):

    v3_sparse_fp16.bin v7 -> v8  runs and single coordinates on conv.weight, a gap of 149 on
                                 fc.weight (an escape: bucket symbol + raw bits), dense fc.bias set
    v3_int8.bin        v8 -> v9  sparse int8 on conv.weight and gain (n = 1); empty tensor n = 0

Block-scaled values (one fp16 scale per 64 values; the chain continues after format 3, same key):

    int4b.bin          v9 -> v10  format 1 INT4_BLOCK: 71 sparse coordinates of conv.weight (odd n, two
                                 blocks), fc.weight dense (fp16 weights, a short last block), gain = 0
                                 (an all-zero block, scale 0), empty with n = 0
    int8b.bin          v10 -> v11 format 1 INT8_BLOCK: sparse conv.weight, dense fc.bias set
    v2_int4b.bin       v11 -> v12 format 2 INT4_BLOCK_AC: clustered runs on conv.weight and fc.weight
    v2_int8b.bin       v12 -> v13 format 2 INT8_BLOCK_AC: clustered runs on conv.weight, dense fc.bias
    v3_blocks.bin      v13 -> v14 format 3, one q table shared by INT4_BLOCK_RANS (71 sparse coordinates
                                 of conv.weight: odd n, two blocks, negative q), INT8_BLOCK_RANS (dense
                                 fc.bias set) and INT8_RANS (gain)
    v3_fp16_delta.bin  v14 -> v15 format 3 fp16 with the hi-delta mode (values ramping over binades, signs
                                 mixed, repeats as ring hits), and a second entry whose ring starts afresh

weights_vN.bin is the whole device weight buffer after the packet reaching vN.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgert.updates import DeviceMirror, Manifest, TensorSpec, TensorUpdate, encode_snapshot, encode_update

HERE = Path(__file__).resolve().parent
SEED = 20240611
MODEL_ID = bytes(range(0xA0, 0xB0))
KEY = bytes(range(1, 33))

MANIFEST = Manifest(MODEL_ID, (
    TensorSpec("conv.weight", "float32", (4, 3, 3, 3)),
    TensorSpec("conv.bias", "float32", (4,)),
    TensorSpec("fc.weight", "float16", (10, 20)),
    TensorSpec("fc.bias", "float16", (10,)),
    TensorSpec("gain", "float32", ()),
    TensorSpec("empty", "float32", (0,)),
))


def _mask(rng: np.random.Generator, numel: int, p: float) -> np.ndarray:
    idx = np.flatnonzero(rng.random(numel) < p)
    return idx if idx.size else np.array([numel - 1], dtype=np.int64)


def generate() -> dict[str, bytes]:
    """Every golden file's bytes, by file name."""
    rng = np.random.default_rng(SEED)
    mirror = DeviceMirror(MANIFEST)
    out: dict[str, bytes] = {"manifest.bin": MANIFEST.to_bytes(), "key.bin": KEY}

    def emit(name: str, pkt) -> None:
        out[name] = pkt.data
        mirror.apply(pkt)
        out[f"weights_v{pkt.target_version}.bin"] = mirror.weights_bytes()

    weights = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in MANIFEST.tensors}
    emit("full_snapshot.bin", encode_snapshot(MANIFEST, 1, weights))

    sparse = {}
    for t in MANIFEST.tensors[:4]:
        idx = _mask(rng, t.numel, 0.1)
        sparse[t.name] = (idx, 0.05 * rng.standard_normal(idx.size))
    emit("sparse_fp16.bin", encode_update(MANIFEST, 1, 2, sparse, value_coding="fp16"))

    dense = {
        "conv.bias": TensorUpdate(values=0.01 * rng.standard_normal(4)),
        "fc.weight": TensorUpdate(values=rng.standard_normal(200), mode="set"),
    }
    emit("dense_fp32.bin", encode_update(MANIFEST, 2, 3, dense, value_coding="fp32"))

    q = {}
    for t in (MANIFEST.tensors[0], MANIFEST.tensors[2], MANIFEST.tensors[4]):
        idx = _mask(rng, t.numel, 0.3)
        q[t.name] = (idx, 0.02 * rng.standard_normal(idx.size))
    emit("int8.bin", encode_update(MANIFEST, 3, 4, q, value_coding="int8"))

    idx = np.array([0, 7, 8, 9, 100, 107])
    auth = {"conv.weight": (idx, 0.1 * rng.standard_normal(idx.size)), "fc.bias": (np.array([3]), np.array([1.5]))}
    emit("authenticated.bin", encode_update(MANIFEST, 4, 5, auth, value_coding="fp16", key=KEY))

    conv_runs = np.concatenate([np.arange(10, 30), np.arange(50, 54), [100, 107]])
    fc_runs = np.concatenate([np.arange(0, 40), np.arange(120, 125), [199]])
    palette = np.array([0.001, -0.001, 0.002, -0.0005, 0.03])
    compact = {
        "conv.weight": (conv_runs, rng.choice(palette, conv_runs.size)),
        "fc.weight": (fc_runs, rng.choice(palette, fc_runs.size)),
        "fc.bias": TensorUpdate(values=rng.standard_normal(10), mode="set"),
    }
    emit("v2_sparse_fp16.bin", _compact(encode_update(MANIFEST, 5, 6, compact, value_coding="fp16", key=KEY,
                                                      max_format=2)))
    q2 = {
        "conv.weight": (np.array([0, 1, 2, 3, 64, 65, 107]), 0.01 * rng.standard_normal(7)),
        "gain": (np.array([0]), np.array([0.25])),
        "empty": (np.array([], dtype=np.int64), np.array([])),
    }
    emit("v2_int8.bin", _compact(encode_update(MANIFEST, 6, 7, q2, value_coding="int8", key=KEY, max_format=2)))

    conv3 = np.concatenate([np.arange(0, 12), np.arange(40, 44), [90, 107]])
    fc3 = np.array([0, 1, 2, 152, 199])
    rans = {
        "conv.weight": (conv3, rng.choice(palette, conv3.size)),
        "fc.weight": (fc3, 0.01 * rng.standard_normal(fc3.size)),
        "fc.bias": TensorUpdate(values=rng.standard_normal(10), mode="set"),
    }
    emit("v3_sparse_fp16.bin", _compact(encode_update(MANIFEST, 7, 8, rans, value_coding="fp16", key=KEY,
                                                      max_format=3, packet_format=3), 3))
    q3 = {
        "conv.weight": (np.array([3, 4, 5, 70, 100]), 0.01 * rng.standard_normal(5)),
        "gain": (np.array([0]), np.array([-0.5])),
        "empty": (np.array([], dtype=np.int64), np.array([])),
    }
    emit("v3_int8.bin", _compact(encode_update(MANIFEST, 8, 9, q3, value_coding="int8", key=KEY, max_format=3,
                                               packet_format=3), 3))

    conv_idx = np.sort(rng.choice(108, 71, replace=False))
    q4 = {
        "conv.weight": (conv_idx, 0.01 * rng.standard_normal(71)),
        "fc.weight": TensorUpdate(values=0.05 * rng.standard_normal(200)),
        "gain": (np.array([0]), np.array([0.0])),
        "empty": (np.array([], dtype=np.int64), np.array([])),
    }
    emit("int4b.bin", encode_update(MANIFEST, 9, 10, q4, value_coding="int4b", key=KEY))
    q8b = {
        "conv.weight": (np.sort(rng.choice(108, 90, replace=False)), 0.01 * rng.standard_normal(90)),
        "fc.bias": TensorUpdate(values=rng.standard_normal(10), mode="set"),
    }
    emit("int8b.bin", encode_update(MANIFEST, 10, 11, q8b, value_coding="int8b", key=KEY))
    q4c = {
        "conv.weight": (conv_runs, rng.choice(palette, conv_runs.size)),
        "fc.weight": (fc_runs, rng.choice(palette, fc_runs.size)),
    }
    emit("v2_int4b.bin", _compact(encode_update(MANIFEST, 11, 12, q4c, value_coding="int4b", key=KEY,
                                                max_format=2)))
    q8c = {
        "conv.weight": (conv_runs, rng.choice(palette, conv_runs.size)),
        "fc.bias": TensorUpdate(values=rng.choice(palette, 10)),
    }
    emit("v2_int8b.bin", _compact(encode_update(MANIFEST, 12, 13, q8c, value_coding="int8b", key=KEY,
                                                max_format=2)))
    q3b = {
        "conv.weight": (np.sort(rng.choice(108, 71, replace=False)), 0.01 * rng.standard_normal(71)),
        "fc.bias": TensorUpdate(values=rng.standard_normal(10), mode="set", value_coding="int8b"),
        "gain": TensorUpdate(values=np.array([0.125]), indices=np.array([0]), value_coding="int8"),
    }
    emit("v3_blocks.bin", _compact(encode_update(MANIFEST, 13, 14, q3b, value_coding="int4b", key=KEY,
                                                 max_format=3, packet_format=3), 3))
    conv3d = np.concatenate([np.arange(0, 40), np.arange(50, 108, 3)])
    ramp = 1e-4 * 2.0 ** (np.arange(conv3d.size) / 6) * rng.choice([1.0, 1.0, 1.0, -1.0], conv3d.size)
    ramp[10:14] = ramp[9]  # repeats: ring hits
    d3 = {
        "conv.weight": (conv3d, ramp),
        "fc.weight": (np.array([5, 6, 7, 190]), np.array([0.5, 0.5, 0.25, 0.5])),
    }
    delta = _compact(encode_update(MANIFEST, 14, 15, d3, value_coding="fp16", key=KEY, max_format=3,
                                   packet_format=3), 3)
    assert delta.data[72 + 10] == 1, "v3_fp16_delta.bin must use the hi-delta mode"  # after the 10-byte directory
    emit("v3_fp16_delta.bin", delta)
    return out


def _compact(pkt, version: int = 2):
    assert pkt.format_version == version, f"the format {version} golden packets must use format {version}"
    return pkt


def main() -> int:
    for name, data in generate().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
