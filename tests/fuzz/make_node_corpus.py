"""Writes the seed corpus of the firmware node's libFuzzer target (tests/fuzz/fuzz_node.cpp).

    PYTHONPATH=python python tests/fuzz/make_node_corpus.py   # rewrites tests/fuzz/corpus/fuzz_node

Each seed is one control byte and then what a model server sends to a device over one connection, framed by the
Python transport (edgert.transport.frames) around the golden manifest and packets of tests/data/packets, the packets
re-keyed under key.bin (the node's handshake key is also its packet key, so unkeyed packets are refused). Control bit
0 asks the harness to put the right server proof into the leading CHALLENGE (the device's nonce is random), bit 1
sets a 4 KiB frame limit. Deterministic.
"""
from __future__ import annotations

from pathlib import Path

from edgert.transport import frames
from edgert.transport.frames import ErrorCode, FrameType
from edgert.updates import authenticate

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "data" / "packets"
OUT = HERE / "corpus" / "fuzz_node"
CHAIN = ["full_snapshot.bin", "sparse_fp16.bin", "dense_fp32.bin", "int8.bin", "authenticated.bin",
         "v2_sparse_fp16.bin", "v2_int8.bin", "v3_sparse_fp16.bin", "v3_int8.bin", "int4b.bin"]
FIX_PROOF, SMALL_LIMIT = 1, 2


def frame(frame_type: FrameType, body: bytes = b"") -> bytes:
    return frames.encode_frame(frame_type, body)


def challenge(protocol: int = frames.PROTOCOL_VERSION) -> bytes:
    nonce = bytes(range(frames.NONCE_BYTES))
    return frame(FrameType.CHALLENGE, frames.encode_challenge(nonce, bytes(frames.PROOF_BYTES), protocol))


def packets(names: list[str], keyed: bool = True) -> bytes:
    key = (GOLDEN / "key.bin").read_bytes()
    data = [(GOLDEN / name).read_bytes() for name in names]
    return b"".join(frame(FrameType.PACKET, authenticate(p, key) if keyed else p) for p in data)


def seeds() -> dict[str, bytes]:
    manifest = frame(FrameType.MANIFEST, (GOLDEN / "manifest.bin").read_bytes())
    ping = frame(FrameType.PING, frames.encode_u64(7))
    pong = frame(FrameType.PONG, frames.encode_u64(0))
    ok = bytes([FIX_PROOF]) + challenge()
    return {
        "chain.bin": ok + manifest + packets(CHAIN) + ping,
        "chain_small_limit.bin": bytes([FIX_PROOF | SMALL_LIMIT]) + challenge() + manifest + packets(CHAIN[:3]),
        "replay_and_gap.bin": ok + manifest + packets(CHAIN[:2] + CHAIN[1:2] + CHAIN[3:4]) + pong,
        "unkeyed_packet.bin": ok + manifest + packets(CHAIN[:1], keyed=False) + packets(CHAIN[:1]),
        "packet_before_manifest.bin": ok + packets(CHAIN[:1]) + manifest + ping,
        "manifest_twice.bin": ok + manifest + packets(CHAIN[:2]) + manifest + packets(CHAIN[2:3]),
        "server_error_after_auth.bin": ok + manifest + frame(FrameType.ERROR, frames.encode_error(
            ErrorCode.PROTOCOL, "unexpected frame")),
        "unknown_device.bin": bytes([0]) + frame(FrameType.ERROR, frames.encode_error(
            ErrorCode.UNKNOWN_DEVICE, "unknown device 'fuzz-device'")),
        "wrong_proof.bin": bytes([0]) + challenge() + manifest,
        "old_protocol.bin": bytes([FIX_PROOF]) + challenge(protocol=1) + manifest,
        "unexpected_frame.bin": ok + frame(FrameType.RESYNC, frames.encode_u64(3)),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.bin"):
        old.unlink()
    for name, data in seeds().items():
        (OUT / name).write_bytes(data)
        print(f"{OUT / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
